//! Watches files by content. Kubernetes updates Secret and ConfigMap volumes by swapping a
//! `..data` symlink, so inotify events are unreliable; comparing contents on a short
//! interval is simple and always right.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Calls `on_change` with the files' contents whenever they differ from what was last seen,
/// starting from `loaded`: the contents the caller already acted on, so a change made between
/// loading and the first tick is not missed. Unreadable files are retried on the next tick.
pub async fn watch_files<F>(
    paths: Vec<PathBuf>,
    interval: Duration,
    loaded: Vec<Vec<u8>>,
    on_change: F,
) where
    F: FnMut(Vec<Vec<u8>>) + Send,
{
    watch(paths, Missing::Wait, interval, loaded, on_change).await;
}

/// As [`watch_files`], but a missing file reads as empty (an optional Secret key that a
/// rotation adds or removes).
pub async fn watch_files_allow_missing<F>(
    paths: Vec<PathBuf>,
    interval: Duration,
    loaded: Vec<Vec<u8>>,
    on_change: F,
) where
    F: FnMut(Vec<Vec<u8>>) + Send,
{
    watch(paths, Missing::Empty, interval, loaded, on_change).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Retry on the next tick.
    Wait,
    /// Read as empty contents.
    Empty,
}

async fn watch<F>(
    paths: Vec<PathBuf>,
    missing: Missing,
    interval: Duration,
    loaded: Vec<Vec<u8>>,
    mut on_change: F,
) where
    F: FnMut(Vec<Vec<u8>>) + Send,
{
    let mut last = digest(&Some(loaded));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let contents = read_all(&paths, missing).await;
        let now = digest(&contents);
        if now.is_some() && now != last {
            last = now;
            if let Some(contents) = contents {
                on_change(contents);
            }
        }
    }
}

async fn read_all(paths: &[PathBuf], missing: Missing) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match tokio::fs::read(p).await {
            Ok(bytes) => out.push(bytes),
            Err(e) if missing == Missing::Empty && e.kind() == std::io::ErrorKind::NotFound => {
                out.push(Vec::new())
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "cannot read watched file");
                return None;
            }
        }
    }
    Some(out)
}

fn digest(contents: &Option<Vec<Vec<u8>>>) -> Option<Vec<u8>> {
    contents.as_ref().map(|files| {
        let mut h = Sha256::new();
        for f in files {
            h.update((f.len() as u64).to_le_bytes());
            h.update(f);
        }
        h.finalize().to_vec()
    })
}

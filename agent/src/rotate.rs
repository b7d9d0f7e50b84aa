//! pcapng files in `--out-dir`, rotated by size and age, the oldest deleted past `--keep`
//! files or `--max-total` bytes. An output that cannot be written (missing, read-only, full)
//! is logged once per change of state, its packets counted as dropped, and retried now and
//! then; capture goes on either way.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::metrics::{Drop, Metrics};
use crate::pcapng;
use crate::Ts;

#[derive(Debug, Clone)]
pub struct RotateConfig {
    pub dir: PathBuf,
    /// File names are `<prefix>-<UTC time>-<seq>.pcapng`.
    pub prefix: String,
    pub rotate_size: u64,
    pub rotate_every: Duration,
    pub keep: usize,
    pub max_total: u64,
    pub linktype: u16,
    pub snaplen: u32,
    pub interface: String,
}

/// How long an unwritable output waits before it is tried again.
const RETRY: u64 = 10_000_000_000;

struct Current {
    file: BufWriter<File>,
    path: PathBuf,
    size: u64,
    opened: Ts,
}

pub struct Rotator {
    cfg: RotateConfig,
    current: Option<Current>,
    /// Closed files, oldest first, with their sizes.
    done: VecDeque<(PathBuf, u64)>,
    done_bytes: u64,
    seq: u64,
    /// Set while the output is unwritable: when to try again.
    retry_at: Option<Ts>,
    metrics: Metrics,
    header: Vec<u8>,
}

fn is_ours(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && name.ends_with(".pcapng")
}

impl Rotator {
    pub fn new(cfg: RotateConfig, metrics: Metrics) -> Rotator {
        let header = pcapng::file_header(
            cfg.linktype,
            cfg.snaplen,
            &cfg.interface,
            concat!("whisperer ", env!("CARGO_PKG_VERSION")),
        );
        let mut r = Rotator {
            cfg,
            current: None,
            done: VecDeque::new(),
            done_bytes: 0,
            seq: 0,
            retry_at: None,
            metrics,
            header,
        };
        r.adopt_existing();
        r
    }

    /// Files a previous run of this agent left (a restarted sidecar) count against the budget.
    fn adopt_existing(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.cfg.dir) else {
            return;
        };
        let mut found: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
            .flatten()
            .filter(|e| is_ours(&e.file_name().to_string_lossy(), &self.cfg.prefix))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, e.path(), meta.len()))
            })
            .collect();
        found.sort();
        for (_, path, size) in found {
            self.done_bytes += size;
            self.done.push_back((path, size));
        }
    }

    fn budget_file_size(&self) -> u64 {
        self.cfg.rotate_size.min(self.cfg.max_total).max(4096)
    }

    /// Deletes the oldest closed files until one more file of full size fits.
    fn make_room(&mut self) {
        let file = self.budget_file_size();
        while let Some((path, size)) = self.done.front().cloned() {
            let too_many = self.done.len() + 1 > self.cfg.keep.max(1);
            let too_big = self.done_bytes + file > self.cfg.max_total;
            if !too_many && !too_big {
                break;
            }
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete an old capture file");
                }
            }
            self.done.pop_front();
            self.done_bytes -= size;
        }
    }

    fn file_name(&mut self, ts: Ts) -> PathBuf {
        let t =
            jiff::Timestamp::from_nanosecond(i128::from(ts)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        self.seq += 1;
        let stamp = t.strftime("%Y%m%dT%H%M%SZ");
        self.cfg.dir.join(format!(
            "{}-{stamp}-{:04}.pcapng",
            self.cfg.prefix, self.seq
        ))
    }

    fn open(&mut self, ts: Ts) -> std::io::Result<()> {
        self.make_room();
        let path = self.file_name(ts);
        let file = File::options().write(true).create_new(true).open(&path)?;
        let mut file = BufWriter::with_capacity(256 << 10, file);
        file.write_all(&self.header)?;
        self.metrics.pcap_files.inc();
        self.metrics.pcap_bytes.inc_by(self.header.len() as u64);
        self.current = Some(Current {
            file,
            path,
            size: self.header.len() as u64,
            opened: ts,
        });
        Ok(())
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some(mut c) = self.current.take() {
            let flushed = c.file.flush();
            self.done_bytes += c.size;
            self.done.push_back((c.path, c.size));
            flushed?;
        }
        Ok(())
    }

    fn fail(&mut self, ts: Ts, what: &str, e: &std::io::Error) {
        if self.retry_at.is_none() {
            tracing::warn!(
                dir = %self.cfg.dir.display(),
                error = %e,
                "pcapng output unavailable ({what}); capture and JSON lines go on, packets not written are counted in whisperer_dropped{{what=\"pcap_unwritable\"}}"
            );
        }
        // Drop the handle without flushing again: the error would only repeat.
        if let Some(c) = self.current.take() {
            let (_file, _buf) = c.file.into_parts();
            self.done_bytes += c.size;
            self.done.push_back((c.path, c.size));
        }
        self.retry_at = Some(ts.saturating_add(RETRY));
    }

    /// Writes one frame; a frame that cannot be written is counted, never an error.
    pub fn write(&mut self, ts: Ts, data: &[u8], orig_len: u32) {
        if let Some(at) = self.retry_at {
            if ts < at {
                self.metrics.drop(Drop::pcap_unwritable, 1);
                return;
            }
        }
        let block = pcapng::packet_block_len(data.len()) as u64;
        let rotate = self.current.as_ref().is_some_and(|c| {
            c.size + block > self.budget_file_size()
                || Duration::from_nanos(ts.saturating_sub(c.opened)) >= self.cfg.rotate_every
        });
        if rotate {
            if let Err(e) = self.close_current() {
                self.fail(ts, "closing a file", &e);
                self.metrics.drop(Drop::pcap_unwritable, 1);
                return;
            }
        }
        if self.current.is_none() {
            if let Err(e) = self.open(ts) {
                self.fail(ts, "opening a file", &e);
                self.metrics.drop(Drop::pcap_unwritable, 1);
                return;
            }
            if self.retry_at.take().is_some() {
                tracing::info!(dir = %self.cfg.dir.display(), "pcapng output writable again");
            }
        }
        let Some(c) = self.current.as_mut() else {
            return;
        };
        match pcapng::write_packet(&mut c.file, ts, data, orig_len) {
            Ok(n) => {
                c.size += n as u64;
                self.metrics.pcap_bytes.inc_by(n as u64);
            }
            Err(e) => {
                self.fail(ts, "writing", &e);
                self.metrics.drop(Drop::pcap_unwritable, 1);
            }
        }
    }

    /// Pushes buffered bytes to the file (on idle ticks, so a reader sees recent packets).
    pub fn flush(&mut self, ts: Ts) {
        if let Some(c) = self.current.as_mut() {
            if let Err(e) = c.file.flush() {
                self.fail(ts, "flushing", &e);
            }
        }
    }

    /// Flushes and closes the current file.
    pub fn close(&mut self, ts: Ts) {
        if let Err(e) = self.close_current() {
            self.fail(ts, "closing a file", &e);
        }
    }

    /// Files written or adopted, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.done.iter().map(|(p, _)| p.clone()).collect();
        v.extend(self.current.as_ref().map(|c| c.path.clone()));
        v
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> RotateConfig {
        RotateConfig {
            dir: dir.to_path_buf(),
            prefix: "whisperer-test".into(),
            rotate_size: 10_000,
            rotate_every: Duration::from_secs(600),
            keep: 3,
            max_total: 1 << 30,
            linktype: 113,
            snaplen: 65535,
            interface: "any".into(),
        }
    }

    fn total(dir: &Path) -> (usize, u64) {
        let files: Vec<_> = std::fs::read_dir(dir).expect("dir").flatten().collect();
        let bytes = files
            .iter()
            .map(|f| f.metadata().expect("meta").len())
            .sum();
        (files.len(), bytes)
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::default();
        let mut r = Rotator::new(cfg(dir.path()), m.clone());
        for i in 0..200u64 {
            r.write(1_000 + i, &[7u8; 500], 500);
        }
        r.close(2_000);
        let (n, bytes) = total(dir.path());
        assert_eq!(n, 3, "keep 3 files");
        assert!(bytes <= 3 * 10_000, "{bytes}");
        assert!(m.pcap_files.get() > 3);
        assert_eq!(m.dropped(Drop::pcap_unwritable), 0);
    }

    #[test]
    fn max_total_caps_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(dir.path());
        c.keep = 100;
        c.max_total = 25_000;
        let mut r = Rotator::new(c, Metrics::default());
        for i in 0..500u64 {
            r.write(i, &[1u8; 300], 300);
            let (_, bytes) = total(dir.path());
            assert!(bytes <= 25_000 + 256 * 1024, "{bytes}");
        }
        r.close(600);
        let (_, bytes) = total(dir.path());
        assert!(bytes <= 25_000, "{bytes}");
    }

    #[test]
    fn rotates_by_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(dir.path());
        c.rotate_every = Duration::from_secs(1);
        let mut r = Rotator::new(c, Metrics::default());
        r.write(1_000_000_000, &[1; 60], 60);
        r.write(1_500_000_000, &[1; 60], 60);
        r.write(2_100_000_000, &[1; 60], 60);
        r.close(3_000_000_000);
        assert_eq!(total(dir.path()).0, 2);
    }

    #[test]
    fn missing_directory_counts_drops_and_never_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::default();
        let mut r = Rotator::new(cfg(&dir.path().join("absent")), m.clone());
        for i in 0..10 {
            r.write(i, &[0; 100], 100);
        }
        r.close(11);
        assert_eq!(m.dropped(Drop::pcap_unwritable), 10);
        assert!(r.files().is_empty());
    }
}

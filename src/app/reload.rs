//! Config and certificate reloads: a bad new file is logged and counted, and whatever was
//! loaded before stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::control::{KeyPair, TokenKeys};
use crate::metrics::ReloadKind;
use crate::tls::{self, SwappableCert};
use crate::webhook::WebhookState;

pub fn certificate(
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<SwappableCert>,
    state: Arc<WebhookState>,
    interval: Duration,
    loaded: Vec<Vec<u8>>,
) -> JoinHandle<()> {
    let paths = vec![cert.clone(), key.clone()];
    tokio::spawn(crate::reload::watch_files(
        paths,
        interval,
        loaded,
        move |files| {
            let parsed = tls::parse_pem(
                &files[0],
                &files[1],
                &cert.display().to_string(),
                &key.display().to_string(),
            );
            match parsed {
                Ok(loaded) => {
                    resolver.swap(loaded.key);
                    if let Some(t) = loaded.not_after {
                        state.metrics.cert_expiry.set(t);
                    }
                    state.metrics.reload(ReloadKind::certificate, true);
                    tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                }
                Err(e) => {
                    // Often a half-written pair: the next tick sees both files updated.
                    state.metrics.reload(ReloadKind::certificate, false);
                    tracing::error!(error = %e, "new certificate rejected; still serving the previous one");
                }
            }
        },
    ))
}

/// Told about every new config that was accepted (DNS host aliases, reconciler ...).
pub type SettingsListener = Box<dyn Fn(&crate::engine::Settings) + Send + Sync>;

pub fn config(
    path: PathBuf,
    state: Arc<WebhookState>,
    args: ServeArgs,
    listeners: Vec<SettingsListener>,
    loaded: Vec<u8>,
) -> JoinHandle<()> {
    let interval = args.reload_interval;
    tokio::spawn(crate::reload::watch_files(
        vec![path.clone()],
        interval,
        vec![loaded],
        move |files| {
            let origin = path.display().to_string();
            let parsed = Config::from_bytes(&files[0], &origin);
            match parsed {
                Ok(cfg) => {
                    let mut next = super::settings_for(cfg, &args);
                    // Facts read from the cluster at start outlive a config reload.
                    next.server_version = state.settings.load().server_version;
                    let settings = Arc::new(next);
                    for listener in &listeners {
                        listener(&settings);
                    }
                    state.settings.store(settings);
                    state.metrics.reload(ReloadKind::config, true);
                    tracing::info!(config = %origin, "config reloaded");
                }
                Err(e) => {
                    state.metrics.reload(ReloadKind::config, false);
                    tracing::error!(error = %e, "new config rejected; the last good config stays in force");
                }
            }
        },
    ))
}

/// The agent token keys: a new pair is swapped in whole; a bad one (a key too short, a
/// half-written Secret) is counted and the pair in force stays.
pub fn token_keys(
    dir: PathBuf,
    keys: TokenKeys,
    state: Arc<WebhookState>,
    interval: Duration,
    loaded: Vec<Vec<u8>>,
) -> JoinHandle<()> {
    tokio::spawn(crate::reload::watch_files_allow_missing(
        KeyPair::files(&dir).to_vec(),
        interval,
        loaded,
        move |files| match KeyPair::parse(&dir, &files[0], &files[1]) {
            Ok(pair) => {
                let has_previous = pair.previous.is_some();
                keys.swap(pair);
                state.metrics.reload(ReloadKind::agent_token_keys, true);
                tracing::info!(dir = %dir.display(), has_previous, "agent token keys reloaded");
            }
            Err(e) => {
                state.metrics.reload(ReloadKind::agent_token_keys, false);
                tracing::error!(error = %e, "new agent token keys rejected; the keys in force stay");
            }
        },
    ))
}

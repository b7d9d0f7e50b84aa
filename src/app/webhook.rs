use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::engine::Settings;
use crate::metrics::ReloadKind;
use crate::tls::{self, SwappableCert, TlsError};
use crate::webhook::{self, ServeError, ServerOptions, WebhookState};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

pub struct RunningWebhook {
    pub addr: SocketAddr,
    /// PEM of the generated CA when no certificate files were given.
    pub generated_ca: Option<String>,
    pub state: Arc<WebhookState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    reloaders: Vec<JoinHandle<()>>,
}

impl RunningWebhook {
    /// Stops accepting, lets in-flight requests finish, and returns when drained.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        for r in &self.reloaders {
            r.abort();
        }
    }
}

impl Drop for RunningWebhook {
    fn drop(&mut self) {
        for r in &self.reloaders {
            r.abort();
        }
        self.task.abort();
    }
}

fn settings_for(cfg: Config, args: &ServeArgs) -> Settings {
    let mut s = Settings::new(Arc::new(cfg), &args.namespace);
    s.inject_by_default = args.inject_by_default;
    s.dns_server = args.dns_server_address.clone();
    s
}

pub async fn start_webhook(
    args: &ServeArgs,
    registry: Registry,
) -> Result<RunningWebhook, AppError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let state = WebhookState::new(settings_for(config, args), registry);

    let (loaded, generated_ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => (tls::load_files(cert, key)?, None),
        _ => {
            let s = tls::self_signed()?;
            let loaded = tls::parse_pem(
                s.cert_pem.as_bytes(),
                s.key_pem.as_bytes(),
                "generated",
                "generated",
            )?;
            (loaded, Some(s.ca_pem))
        }
    };
    if let Some(t) = loaded.not_after {
        state.metrics.cert_expiry.set(t);
    }
    let resolver = SwappableCert::new(loaded.key);
    let tls_config = Arc::new(tls::server_config(resolver.clone())?);

    let mut reloaders = Vec::new();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        reloaders.push(spawn_cert_reload(
            cert.clone(),
            key.clone(),
            resolver,
            state.clone(),
            args,
        ));
    }
    if let Some(path) = &args.config {
        reloaders.push(spawn_config_reload(path.clone(), state.clone(), args));
    }

    let listener = webhook::server::bind(args.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;
    let router = webhook::router(state.clone(), args.request_timeout);
    let opts = ServerOptions {
        h2_max_concurrent_streams: args.h2_max_concurrent_streams,
        drain_timeout: args.drain_timeout,
        ..ServerOptions::default()
    };
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(webhook::serve(
        listener,
        tls_config,
        router,
        state.clone(),
        opts,
        async {
            let _ = rx.await;
        },
    ));
    Ok(RunningWebhook {
        addr,
        generated_ca,
        state,
        shutdown: Some(tx),
        task,
        reloaders,
    })
}

fn spawn_cert_reload(
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<SwappableCert>,
    state: Arc<WebhookState>,
    args: &ServeArgs,
) -> JoinHandle<()> {
    let paths = vec![cert.clone(), key.clone()];
    tokio::spawn(crate::reload::watch_files(
        paths,
        args.reload_interval,
        move |files| {
            let (c, k) = (&files[0], &files[1]);
            match tls::parse_pem(
                c,
                k,
                &cert.display().to_string(),
                &key.display().to_string(),
            ) {
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

fn spawn_config_reload(
    path: PathBuf,
    state: Arc<WebhookState>,
    args: &ServeArgs,
) -> JoinHandle<()> {
    let args = args.clone();
    tokio::spawn(crate::reload::watch_files(
        vec![path.clone()],
        args.reload_interval,
        move |files| {
            let origin = path.display().to_string();
            let parsed = std::str::from_utf8(&files[0])
                .map_err(|e| ConfigError::Parse {
                    path: origin.clone(),
                    message: e.to_string(),
                })
                .and_then(|text| Config::parse(text, &origin));
            match parsed {
                Ok(cfg) => {
                    state.settings.store(Arc::new(settings_for(cfg, &args)));
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

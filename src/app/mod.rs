//! Wiring for `serve`: builds each component from flags, shares one settings snapshot and
//! one metrics registry between them, and connects file reloads.

mod reload;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::engine::Settings;
use crate::metrics::WebhookMetrics;
use crate::tls::{self, SwappableCert, TlsError};
use crate::webhook::{self, ServeError, ServerOptions, SharedSettings, WebhookState};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A started `serve`: every component runs until [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    /// PEM of the generated CA when no certificate files were given.
    pub generated_ca: Option<String>,
    pub state: Arc<WebhookState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and returns when drained.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.background {
            t.abort();
        }
        self.server.abort();
    }
}

pub(crate) fn settings_for(cfg: Config, args: &ServeArgs) -> Settings {
    let mut s = Settings::new(Arc::new(cfg), &args.namespace);
    s.inject_by_default = args.inject_by_default;
    s.dns_server = args.dns_server_address.clone();
    s
}

pub async fn start(args: &ServeArgs) -> Result<Running, AppError> {
    let started = std::time::Instant::now();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let settings: SharedSettings = Arc::new(ArcSwap::from_pointee(settings_for(config, args)));
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::new(&mut registry);
    let registry = Arc::new(registry);
    let state = WebhookState::new(settings.clone(), metrics, registry);

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

    let mut background = Vec::new();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        background.push(reload::certificate(
            cert.clone(),
            key.clone(),
            resolver,
            state.clone(),
            args.reload_interval,
        ));
    }
    if let Some(path) = &args.config {
        background.push(reload::config(path.clone(), state.clone(), args.clone()));
    }

    let listener = webhook::server::bind(args.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;
    let status = crate::status::StatusState {
        started,
        components: vec!["webhook".to_string()],
        sources: Vec::new(),
    };
    let router =
        webhook::router(state.clone(), args.request_timeout).merge(crate::status::router(status));
    let opts = ServerOptions {
        h2_max_concurrent_streams: args.h2_max_concurrent_streams,
        drain_timeout: args.drain_timeout,
        ..ServerOptions::default()
    };
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(webhook::serve(
        listener,
        tls_config,
        router,
        state.clone(),
        opts,
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running {
        addr,
        generated_ca,
        state,
        shutdown: Some(tx),
        server,
        background,
    })
}

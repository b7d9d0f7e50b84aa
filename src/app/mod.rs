//! Wiring for `serve`: builds each component from flags, shares one settings snapshot and
//! one metrics registry between them, and connects file reloads.

mod reload;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::{ServeArgs, Toggle};
use crate::config::{Config, ConfigError};
use crate::dns::{DnsConfig, DnsServer, NameTable};
use crate::engine::Settings;
use crate::metrics::WebhookMetrics;
use crate::status::StatusSource;
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
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error("cannot reach Kubernetes (needed by --reconciler on / --dns on): {0}")]
    Kube(#[from] kube::Error),
}

/// A started `serve`: every component runs until [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    /// UDP and TCP address of the DNS proxy, when it runs.
    pub dns_addr: Option<SocketAddr>,
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

/// Cluster credentials for the components that watch the API, per their toggles.
async fn cluster_client(args: &ServeArgs) -> Result<Option<kube::Client>, AppError> {
    let toggles = [args.reconciler, args.dns];
    if toggles.iter().all(|t| *t == Toggle::Off) {
        return Ok(None);
    }
    match kube::Client::try_default().await {
        Ok(c) => Ok(Some(c)),
        Err(e) if toggles.contains(&Toggle::On) => Err(AppError::Kube(e)),
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes credentials found: running the webhook only (reconciler and DNS proxy need the API)");
            Ok(None)
        }
    }
}

fn wanted(toggle: Toggle, client: &Option<kube::Client>) -> Option<kube::Client> {
    match toggle {
        Toggle::Off => None,
        Toggle::On | Toggle::Auto => client.clone(),
    }
}

fn all_host_aliases(s: &Settings) -> Vec<k8s_openapi::api::core::v1::HostAlias> {
    s.config
        .profiles
        .values()
        .flat_map(|p| p.host_aliases.iter().cloned())
        .collect()
}

struct DnsStatus(Arc<NameTable>);

impl StatusSource for DnsStatus {
    fn watched(&self) -> Vec<(String, usize)> {
        let (pods, services) = self.0.counts();
        vec![("Pod".into(), pods), ("Service".into(), services)]
    }
}

async fn start_dns(
    args: &ServeArgs,
    client: kube::Client,
    settings: &SharedSettings,
    registry: &mut Registry,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<(SocketAddr, Arc<NameTable>), AppError> {
    let opts = &args.dns_opts;
    let table = Arc::new(NameTable::try_new(&opts.cluster_domain)?);
    table.set_host_aliases(&all_host_aliases(&settings.load()));
    let upstreams = if opts.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::dns::upstreams_from_resolv_conf(&text)
    } else {
        opts.dns_upstreams.clone()
    };
    let cfg = DnsConfig {
        listen: opts.dns_listen,
        cluster_domain: opts.cluster_domain.clone(),
        upstreams,
        upstream_timeout: opts.dns_upstream_timeout,
    };
    let server = DnsServer::bind(cfg, table.clone(), registry).await?;
    let addr = server.local_addr();
    background.push(tokio::spawn(async move {
        if let Err(e) = server.run(std::future::pending()).await {
            tracing::error!(error = %e, "DNS proxy stopped");
        }
    }));
    let watched = table.clone();
    background.push(tokio::spawn(async move {
        if let Err(e) = crate::dns::watch_cluster(client, watched).await {
            tracing::error!(error = %e, "DNS proxy's cluster watch stopped");
        }
    }));
    Ok((addr, table))
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
    let client = cluster_client(args).await?;
    let mut background = Vec::new();
    let mut components = vec!["webhook".to_string()];
    let mut sources: Vec<Arc<dyn StatusSource>> = Vec::new();
    let mut listeners: Vec<reload::SettingsListener> = Vec::new();

    let mut dns_addr = None;
    if let Some(client) = wanted(args.dns, &client) {
        let (addr, table) =
            start_dns(args, client, &settings, &mut registry, &mut background).await?;
        dns_addr = Some(addr);
        components.push("dns".into());
        sources.push(Arc::new(DnsStatus(table.clone())));
        listeners.push(Box::new(move |s: &Settings| {
            table.set_host_aliases(&all_host_aliases(s))
        }));
    }

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
        background.push(reload::config(
            path.clone(),
            state.clone(),
            args.clone(),
            listeners,
        ));
    }

    let listener = webhook::server::bind(args.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;
    let status = crate::status::StatusState {
        started,
        components,
        sources,
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
        dns_addr,
        generated_ca,
        state,
        shutdown: Some(tx),
        server,
        background,
    })
}

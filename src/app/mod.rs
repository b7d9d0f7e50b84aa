//! Wiring for `serve`: builds each component from flags, shares one settings snapshot and
//! one metrics registry between them, and connects file reloads.

mod dns;
mod managed_tls;
mod reconciler;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{ServeArgs, Toggle};
use crate::config::{Config, ConfigError};
use crate::engine::Settings;
use crate::metrics::{Listener, WebhookMetrics};
use crate::status::StatusSource;
use crate::tls::{self, SwappableCert, TlsError};

use crate::engine::SharedSettings;
use crate::webhook::{self, ServeError, WebhookState};

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
    #[error("cannot reach Kubernetes (needed by --reconciler on / --dns on / --pod-security-check on): {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeclient::ClientError),
    #[error(transparent)]
    Reconciler(crate::reconciler::ReconcilerError),
    #[error(transparent)]
    AgentKey(#[from] crate::control::TokenKeyError),
    #[error(transparent)]
    ManagedTls(#[from] managed_tls::ManagedTlsError),
}

/// A started `serve`: every component runs until [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    /// Plain-HTTP admin listener: `/metrics`, `/status`.
    pub admin_addr: SocketAddr,
    /// UDP and TCP address of the DNS proxy, when it runs.
    pub dns_addr: Option<SocketAddr>,
    /// PEM of the generated CA when no certificate files were given.
    pub generated_ca: Option<String>,
    pub state: Arc<WebhookState>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    reconciler: Option<crate::reconciler::ReconcilerHandle>,
    /// The self-managed TLS keeper (`--tls-secret`); releases its Lease on shutdown.
    tls_keeper: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and returns when drained.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.server).await;
        let _ = (&mut self.admin).await;
        if let Some(r) = self.reconciler.take() {
            r.shutdown().await;
        }
        if let Some(k) = self.tls_keeper.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), k).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in self.background.iter().chain(&self.tls_keeper) {
            t.abort();
        }
        self.server.abort();
        self.admin.abort();
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
    // Self-managed TLS cannot work without the API: it counts as a component turned on.
    let managed = if args.managed_tls.tls_secret.is_some() {
        Toggle::On
    } else {
        Toggle::Off
    };
    let toggles = [args.reconciler, args.dns, args.pod_security_check, managed];
    if toggles.iter().all(|t| *t == Toggle::Off) {
        return Ok(None);
    }
    // A kubeconfig the user named must work; only the implicit search may come up empty.
    if let Some(path) = &args.kubeconfig {
        return Ok(Some(crate::kubeclient::client(Some(path)).await?));
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

/// `major.minor` of the API server (`"29+"` minors as managed clusters report them); `None`
/// when it cannot be read, which the engine takes as a current server.
async fn server_version(client: &kube::Client) -> Option<(u32, u32)> {
    match client.apiserver_version().await {
        Ok(info) => {
            let num = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
            let v = num(&info.major).zip(num(&info.minor));
            tracing::info!(version = %info.git_version, parsed = ?v, "API server version");
            v
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the API server version; assuming native sidecars work");
            None
        }
    }
}

fn wanted(toggle: Toggle, client: &Option<kube::Client>) -> Option<kube::Client> {
    match toggle {
        Toggle::Off => None,
        Toggle::On | Toggle::Auto => client.clone(),
    }
}

/// Scrapers and operators only; a small number keeps the admin port from being a way in.
const ADMIN_MAX_CONNECTIONS: usize = 64;

async fn bind(want: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AppError> {
    let listener = webhook::server::bind(want).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: want, source })?;
    Ok((listener, addr))
}

pub async fn start(args: &ServeArgs) -> Result<Running, AppError> {
    let started = std::time::Instant::now();
    // Files are read once here; the reload watchers start from these very bytes.
    let (config, config_bytes) = match &args.config {
        Some(path) => {
            let (cfg, bytes) = Config::load_with_bytes(path)?;
            (cfg, Some(bytes))
        }
        None => (Config::default(), None),
    };
    let settings: SharedSettings = Arc::new(ArcSwap::from_pointee(settings_for(config, args)));

    let mut tls_bytes = Vec::new();
    let (loaded, generated_ca) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (loaded, bytes) = tls::load_files(cert, key)?;
            tls_bytes = bytes;
            (loaded, None)
        }
        _ => {
            // With --tls-secret this pair only fills the gap until the Secret's is served
            // (readiness stays false meanwhile), so its CA is neither printed nor handed out.
            let s = tls::self_signed()?;
            let loaded = tls::parse_pem(
                s.cert_pem.as_bytes(),
                s.key_pem.as_bytes(),
                "generated",
                "generated",
            )?;
            let ca = args.managed_tls.tls_secret.is_none().then_some(s.ca_pem);
            (loaded, ca)
        }
    };
    let managed = match &args.managed_tls.tls_secret {
        Some(secret) => Some(managed_tls::config(args, secret)?),
        None => None,
    };
    let cert_expiry = loaded.not_after;
    let resolver = SwappableCert::new(loaded.key);
    let tls_config = Arc::new(tls::server_config(resolver.clone())?);

    // Every component registers its metrics before the registry is shared.
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::new(&mut registry);
    let keeper_metrics = managed
        .as_ref()
        .map(|_| crate::tls::managed::KeeperMetrics::new(&mut registry));
    let client = cluster_client(args).await?;
    if let Some(client) = &client {
        let version = server_version(client).await;
        let mut s = (**settings.load()).clone();
        s.server_version = version;
        settings.store(Arc::new(s));
    }
    let mut background = Vec::new();
    let mut components = vec!["webhook".to_string()];
    let mut sources: Vec<Arc<dyn StatusSource>> = Vec::new();
    let mut listeners: Vec<reload::SettingsListener> = Vec::new();

    let mut dns_addr = None;
    if let Some(client) = wanted(args.dns, &client) {
        let (addr, table) =
            dns::start_dns(args, client, &settings, &mut registry, &mut background).await?;
        dns_addr = Some(addr);
        components.push("dns".into());
        sources.push(Arc::new(dns::DnsStatus(table.clone())));
        listeners.push(Box::new(move |s: &Settings| dns::apply_settings(&table, s)));
    }

    let mut reconciler_handle = None;
    let mut control = None;
    let mut token_keys = None;
    let control_ca = Arc::new(arc_swap::ArcSwapOption::from(
        reconciler::control_ca(args, generated_ca.as_deref())?.map(Arc::new),
    ));
    if let Some(client) = wanted(args.reconciler, &client) {
        let (keys, key_bytes) = reconciler::token_keys(args)?;
        token_keys = key_bytes.map(|b| (keys.clone(), b));
        if let Some((handle, state)) = reconciler::start(
            args,
            client,
            settings.clone(),
            &mut registry,
            keys,
            control_ca.clone(),
        )
        .await?
        {
            components.push("reconciler".into());
            sources.push(handle.status_source());
            reconciler_handle = Some(handle);
            control = Some(state);
        }
    }

    let registry = Arc::new(registry);
    let state = WebhookState::new(
        settings.clone(),
        metrics,
        registry,
        args.limits.review_limits(),
    );
    if let Some(client) = wanted(args.pod_security_check, &client) {
        const WAIT: &str = "the Pod Security levels of namespaces (first list)";
        state.readiness.wait_for(WAIT);
        let st = state.clone();
        background.push(
            state
                .pod_security
                .watch(client, move || st.readiness.done(WAIT)),
        );
        components.push("pod-security".into());
    }
    if let Some(t) = cert_expiry.filter(|_| managed.is_none()) {
        state.metrics.cert_expiry.set(t);
    }
    let (tx, rx) = watch::channel(false);
    let tls_keeper = match (managed.zip(keeper_metrics), &client) {
        (Some(keeper), Some(client)) => Some(managed_tls::start(
            args,
            keeper,
            client.clone(),
            managed_tls::Targets {
                resolver: resolver.clone(),
                state: state.clone(),
                control_ca,
            },
            rx.clone(),
            &mut background,
        )),
        (Some(_), None) => return Err(managed_tls::ManagedTlsError::NoCluster.into()),
        (None, _) => None,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        background.push(reload::certificate(
            cert.clone(),
            key.clone(),
            resolver,
            state.clone(),
            args.reload_interval,
            tls_bytes,
        ));
    }
    if let (Some(dir), Some((keys, bytes))) = (&args.agent_token_keys, token_keys) {
        background.push(reload::token_keys(
            dir.clone(),
            keys,
            state.clone(),
            args.reload_interval,
            bytes,
        ));
    }
    if let (Some(path), Some(bytes)) = (&args.config, config_bytes) {
        background.push(reload::config(
            path.clone(),
            state.clone(),
            args.clone(),
            listeners,
            bytes,
        ));
    }

    let (listener, addr) = bind(args.listen).await?;
    let (admin_listener, admin_addr) = bind(args.admin_listen).await?;
    let status = crate::status::StatusState {
        started,
        components,
        sources,
    };
    let mut router = webhook::router(state.clone(), args.request_timeout);
    if let Some(control) = control {
        router = router.merge(crate::control::router(control));
    }
    let admin_router = webhook::admin_router(state.clone()).merge(crate::status::router(status));
    let opts = args
        .limits
        .server_options(args.h2_max_concurrent_streams, args.drain_timeout);
    let mut admin_opts = opts.clone();
    admin_opts.limits.max_connections = ADMIN_MAX_CONNECTIONS;
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(webhook::serve(
        listener,
        Some(tls_config),
        router,
        state.clone(),
        Listener::webhook,
        opts,
        stopped(rx.clone()),
    ));
    let admin = tokio::spawn(webhook::serve(
        admin_listener,
        None,
        admin_router,
        state.clone(),
        Listener::admin,
        admin_opts,
        stopped(rx),
    ));
    tracing::info!(%addr, %admin_addr, "listening");
    Ok(Running {
        reconciler: reconciler_handle,
        tls_keeper,
        addr,
        admin_addr,
        admin,
        dns_addr,
        generated_ca,
        state,
        shutdown: tx,
        server,
        background,
    })
}

//! `serve --tls-secret`: wires [`crate::tls::managed`] into the server (a Secret watch on
//! every replica, the keeper under its own Lease, readiness until the first pair is served).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::AppError;
use crate::cli::ServeArgs;
use crate::metrics::ReloadKind;
use crate::reconciler::{self, Elector, LeaseConfig, LeaseHooks};
use crate::tls::managed::{self, KeeperMetrics, ManagedTls};
use crate::tls::pki::PkiPolicy;
use crate::tls::SwappableCert;
use crate::webhook::WebhookState;

/// The keeper's Lease: separate from the reconciler's, so TLS is kept even where the
/// reconciler does not run.
pub const TLS_LEASE_NAME: &str = "whisperer-injector-tls";

const WAIT: &str = "the serving certificate from the TLS Secret";

#[derive(Debug, thiserror::Error)]
pub enum ManagedTlsError {
    #[error(
        "--tls-secret needs cluster credentials (a kubeconfig or the in-cluster service account)"
    )]
    NoCluster,
    #[error("--{flag}: {value:?} is too long")]
    Lifetime {
        flag: &'static str,
        value: std::time::Duration,
    },
    #[error("--tls-cert-lifetime ({cert:?}) must be shorter than --tls-ca-lifetime ({ca:?})")]
    CertOutlivesCa {
        cert: std::time::Duration,
        ca: std::time::Duration,
    },
}

pub(super) fn config(args: &ServeArgs, secret: &str) -> Result<ManagedTls, AppError> {
    let m = &args.managed_tls;
    let span = |flag: &'static str, value: std::time::Duration| {
        certs_gen::Duration::try_from(value).map_err(|_| ManagedTlsError::Lifetime { flag, value })
    };
    if m.tls_cert_lifetime >= m.tls_ca_lifetime {
        return Err(ManagedTlsError::CertOutlivesCa {
            cert: m.tls_cert_lifetime,
            ca: m.tls_ca_lifetime,
        }
        .into());
    }
    let mut request = certs_gen::CertRequest::new(m.tls_service.clone(), args.namespace.clone());
    for san in &m.tls_extra_sans {
        match san.parse::<std::net::IpAddr>() {
            Ok(ip) => request.extra_ips.push(ip),
            Err(_) => request.extra_dns.push(san.clone()),
        }
    }
    // Bad names fail at start, not on the first renewal.
    certs_gen::validate_request(&request)
        .map_err(|e| AppError::Tls(crate::tls::TlsError::Managed(e.to_string())))?;
    Ok(ManagedTls {
        namespace: args.namespace.clone(),
        secret: secret.to_string(),
        webhook_config: m.webhook_config.clone(),
        policy: PkiPolicy {
            request,
            cert_lifetime: span("tls-cert-lifetime", m.tls_cert_lifetime)?,
            ca_lifetime: span("tls-ca-lifetime", m.tls_ca_lifetime)?,
            overlap: span("tls-roll-overlap", m.tls_roll_overlap)?,
        },
        interval: args.reload_interval,
        token_keys_secret: m.agent_token_keys_secret.clone(),
    })
}

/// Where what the Secret holds goes on each replica.
pub(super) struct Targets {
    pub resolver: Arc<SwappableCert>,
    pub state: Arc<WebhookState>,
    /// Follows the Secret's `ca.crt`: what attached agents verify the control API with.
    pub control_ca: Arc<ArcSwapOption<String>>,
}

/// Starts the Secret watch (readiness waits for its first pair) and the keeper. The returned
/// task ends after `stop`, Lease released.
pub(super) fn start(
    args: &ServeArgs,
    (cfg, metrics): (ManagedTls, KeeperMetrics),
    client: kube::Client,
    targets: Targets,
    stop: watch::Receiver<bool>,
    background: &mut Vec<JoinHandle<()>>,
) -> JoinHandle<()> {
    let Targets {
        resolver,
        state,
        control_ca,
    } = targets;
    let state = &state;
    state.readiness.wait_for(WAIT);
    let (served, rejected) = (state.clone(), state.clone());
    background.push(managed::follow(
        client.clone(),
        &cfg,
        resolver,
        move |s| {
            if let Some(t) = s.cert.not_after {
                served.metrics.cert_expiry.set(t);
            }
            served.metrics.reload(ReloadKind::certificate, true);
            control_ca.store(Some(Arc::new(s.ca_bundle.clone())));
            served.readiness.done(WAIT);
        },
        move || rejected.metrics.reload(ReloadKind::certificate, false),
    ));
    let opts = &args.reconciler_opts;
    if !opts.leader_election {
        metrics.leading.set(1);
        return tokio::spawn(managed::keep(client, cfg, metrics, stop));
    }
    let lease = LeaseConfig {
        namespace: opts
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| args.namespace.clone()),
        name: TLS_LEASE_NAME.into(),
        identity: opts
            .leader_election_identity
            .clone()
            .unwrap_or_else(reconciler::default_identity),
        lease_duration: opts.leader_election_lease_duration,
        renew_deadline: opts.leader_election_renew_deadline,
        retry_period: opts.leader_election_retry_period,
    };
    let gauge = metrics.leading.clone();
    let hooks = LeaseHooks {
        // Lease failures are logged by the holder; the gauge shows who leads.
        on_error: Arc::new(|| {}),
        leading: Arc::new(move |on| {
            gauge.set(i64::from(on));
        }),
    };
    let elector = Elector::new(client.clone(), lease);
    tokio::spawn(reconciler::hold(elector, hooks, stop, move |rx| {
        managed::keep(client.clone(), cfg.clone(), metrics.clone(), rx)
    }))
}

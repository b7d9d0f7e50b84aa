//! Leader election through a `coordination.k8s.io/v1` Lease, written with plain get /
//! create / replace (optimistic concurrency on resourceVersion), like client-go's
//! leaderelection: a standby takes the Lease once it has seen the same record unchanged for
//! a whole lease duration (measured on its own clock, so clock skew between replicas does not
//! matter), the leader renews every retry period and stops working when it could not renew
//! within the renew deadline, and a clean shutdown releases the Lease so a standby takes over
//! at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::handle::{stopped, AbortOnDrop};
use super::lead::{lead, Worker};
use super::metrics::{ErrorKind, ReconcilerMetrics};

pub const LEASE_NAME: &str = "whisperer-injector";

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last record seen (holder, renew time, transitions) and when it was first seen.
    observed: Option<(Option<String>, Option<Timestamp>, Instant)>,
}

/// `$POD_NAME` or the host name, with a random suffix so two replicas never share one.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "whisperer-injector".into());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{base}_{:08x}", h.finish() & 0xffff_ffff)
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn spec_for_us(
        &self,
        now: Timestamp,
        transitions: i32,
        acquired: Option<MicroTime>,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(seconds(self.cfg.lease_duration)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires or renews; `Ok(true)` while we hold the Lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_for_us(now, 0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let record = (holder.clone(), renewed);
        let first_seen = match &self.observed {
            Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record.0.clone(), record.1, at));
                at
            }
        };
        let ours = holder.as_deref() == Some(self.cfg.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.lease_duration);
        let expired = first_seen.elapsed() > duration;
        if !ours && holder.is_some() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if ours {
            self.spec_for_us(now, transitions, spec.acquire_time.clone())
        } else {
            self.spec_for_us(now, transitions.saturating_add(1), None)
        });
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                let s = written.spec.unwrap_or_default();
                self.observed =
                    Some((s.holder_identity, s.renew_time.map(|t| t.0), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it, so a standby takes over without waiting.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
/// What a lease holder reports: failed Lease requests, and whether it leads.
#[derive(Clone)]
pub(crate) struct LeaseHooks {
    pub(crate) on_error: std::sync::Arc<dyn Fn() + Send + Sync>,
    pub(crate) leading: std::sync::Arc<dyn Fn(bool) + Send + Sync>,
}

impl LeaseHooks {
    pub(super) fn for_reconciler(metrics: &ReconcilerMetrics) -> LeaseHooks {
        let (m1, m2) = (metrics.clone(), metrics.clone());
        LeaseHooks {
            on_error: std::sync::Arc::new(move || m1.error(ErrorKind::lease)),
            leading: std::sync::Arc::new(move |on| {
                m2.leader.set(i64::from(on));
            }),
        }
    }
}

/// One Lease request, bounded by the renew deadline; `None` on failure.
async fn attempt(elector: &mut Elector, hooks: &LeaseHooks) -> Option<bool> {
    let deadline = elector.config().renew_deadline;
    match tokio::time::timeout(deadline, elector.try_acquire_or_renew()).await {
        Ok(Ok(ours)) => Some(ours),
        Ok(Err(e)) => {
            (hooks.on_error)();
            tracing::warn!(error = %e, lease = %elector.config().name, "leader lease request failed");
            None
        }
        Err(_) => {
            (hooks.on_error)();
            tracing::warn!(lease = %elector.config().name, "leader lease request timed out");
            None
        }
    }
}

/// Standby until the Lease is ours, run `lead` while it stays ours (it is told to stop
/// through its receiver when leadership ends), release the Lease on shutdown.
pub(crate) async fn hold<F, Fut>(
    mut elector: Elector,
    hooks: LeaseHooks,
    mut stop: watch::Receiver<bool>,
    lead: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cfg = elector.config().clone();
    let lease = format!("{}/{}", cfg.namespace, cfg.name);
    loop {
        tracing::info!(identity = %cfg.identity, %lease, "waiting for the leader lease");
        loop {
            if attempt(&mut elector, &hooks).await == Some(true) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        tracing::info!(identity = %cfg.identity, %lease, "became leader");
        (hooks.leading)(true);
        let (lead_stop_tx, lead_stop_rx) = watch::channel(false);
        let mut running = AbortOnDrop(tokio::spawn(lead(lead_stop_rx)));
        let mut last_renew = Instant::now();
        let shutdown = loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = stopped(&mut stop) => break true,
                _ = &mut running.0 => {
                    tracing::warn!(%lease, "the leader's work stopped unexpectedly; giving up the lease");
                    break false;
                }
            }
            match attempt(&mut elector, &hooks).await {
                Some(true) => last_renew = Instant::now(),
                Some(false) => {
                    tracing::warn!(%lease, "another replica holds the lease");
                    break false;
                }
                None if last_renew.elapsed() > cfg.renew_deadline => {
                    tracing::warn!(%lease, "could not renew the lease within the renew deadline");
                    break false;
                }
                None => {}
            }
        };
        let _ = lead_stop_tx.send(true);
        drop(running);
        (hooks.leading)(false);
        if shutdown {
            if let Err(e) = elector.release().await {
                (hooks.on_error)();
                tracing::warn!(error = %e, %lease, "cannot release the leader lease");
            }
            tracing::info!(%lease, "stopped; lease released");
            return;
        }
        tracing::warn!(identity = %cfg.identity, %lease, "lost leadership; stopped");
    }
}

/// The reconciler's leadership: its caches, controller and backstop run while it leads.
pub(super) async fn elected(worker: Worker, elector: Elector, stop: watch::Receiver<bool>) {
    let hooks = LeaseHooks::for_reconciler(&worker.metrics);
    hold(elector, hooks, stop, move |rx| lead(worker.clone(), rx)).await;
}

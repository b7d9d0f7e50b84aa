//! Runtime attachment: the `Attachment` custom resource and its ephemeral-container
//! reconciler, plus the backstop for pods the webhook missed. See docs/reconciler.md.
//!
//! [`start`] runs, while this replica leads (a `coordination.k8s.io/v1` Lease), one watch per
//! kind feeding pruned caches and a reconcile queue, a kube-runtime `applier` (the engine of
//! `Controller`) over Attachments, the backstop and a metrics observer.

mod agent;
mod args;
mod attach;
mod backstop;
mod controller;
mod crd;
mod deadline;
mod informers;
mod leader;
mod memory;
mod metrics;
mod podcache;
mod podview;
mod podwork;
mod ratelimit;
mod status;
mod targets;

pub use agent::{control_api_env, AgentEnv, AttachmentCache, ReconcilerStatus};
pub use args::ReconcilerArgs;
pub use backstop::BACKSTOP_IDENTITY;
pub use crd::{
    crd, crd_yaml, Attachment, AttachmentSpec, AttachmentStatus, Phase, PodAttachment, PodState,
    TargetKind, TargetRef, FINALIZER,
};
pub use leader::LEASE_NAME;
pub use podview::PodView;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller as kcontroller;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::webhook::SharedSettings;
use controller::Ctx;
use leader::{Elector, LeaseConfig};
use metrics::{ErrorKind, ReconcilerMetrics, WatchedKind};

#[derive(Debug, thiserror::Error)]
pub enum ReconcilerError {
    #[error("invalid reconciler flags: {0}")]
    Args(String),
    #[error(
        "the CustomResourceDefinition attachments.whisperer.dev is not installed \
         (kubectl apply -f manifests/crd-attachments.yaml)"
    )]
    CrdMissing,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Attachment has no namespace")]
    NoNamespace,
    #[error("writing the status of Attachment {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing a status: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<ReconcilerError>>),
}

/// A running reconciler. [`ReconcilerHandle::shutdown`] stops it and releases the Lease;
/// dropping the handle stops it abruptly (as a crash would: the Lease is left to expire).
pub struct ReconcilerHandle {
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    cache: AttachmentCache,
    metrics: ReconcilerMetrics,
    _cache_task: AbortOnDrop,
}

impl ReconcilerHandle {
    /// Attachments as this replica sees them (leader or not), for the agent control API.
    pub fn attachment_lookup(&self) -> Arc<dyn crate::control::AttachmentLookup> {
        Arc::new(self.cache.clone())
    }

    /// The reconciler's part of `GET /status`.
    pub fn status_source(&self) -> Arc<dyn crate::status::StatusSource> {
        Arc::new(ReconcilerStatus {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Stops the controllers and the backstop, then releases the Lease.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for ReconcilerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Aborts a task when dropped, so aborting a parent stops its children.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a leader needs to run.
#[derive(Clone)]
struct Worker {
    client: Client,
    settings: SharedSettings,
    args: ReconcilerArgs,
    metrics: ReconcilerMetrics,
    identity: String,
    agent_env: Option<AgentEnv>,
}

/// Starts the reconciler (after checking the CRD is installed) and returns at once; with
/// leader election it reconciles only while it holds the Lease.
pub async fn start(
    client: Client,
    settings: SharedSettings,
    own_namespace: String,
    args: &ReconcilerArgs,
    registry: &mut Registry,
) -> Result<ReconcilerHandle, ReconcilerError> {
    start_with_agent_env(client, settings, own_namespace, args, registry, None).await
}

/// [`start`], and every Attachment's Whisperer also gets `agent_env(namespace, name, uid)`
/// (see [`control_api_env`] for the control API's URL and token).
pub async fn start_with_agent_env(
    client: Client,
    settings: SharedSettings,
    own_namespace: String,
    args: &ReconcilerArgs,
    registry: &mut Registry,
    agent_env: Option<AgentEnv>,
) -> Result<ReconcilerHandle, ReconcilerError> {
    args.validate().map_err(ReconcilerError::Args)?;
    match Api::<Attachment>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(ReconcilerError::CrdMissing),
        Err(e) => return Err(e.into()),
    }
    let metrics = ReconcilerMetrics::new(registry);
    let identity = args
        .leader_election_identity
        .clone()
        .unwrap_or_else(leader::default_identity);
    let worker = Worker {
        client: client.clone(),
        settings,
        args: args.clone(),
        metrics,
        identity: identity.clone(),
        agent_env,
    };
    let (cache, cache_task) = AttachmentCache::start(&client);
    let handle_metrics = worker.metrics.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = if args.leader_election {
        let cfg = LeaseConfig {
            namespace: args
                .leader_election_namespace
                .clone()
                .unwrap_or(own_namespace),
            name: LEASE_NAME.into(),
            identity,
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        };
        tokio::spawn(elected(worker, Elector::new(client, cfg), stop_rx))
    } else {
        worker.metrics.leader.set(1);
        tokio::spawn(lead(worker, stop_rx))
    };
    Ok(ReconcilerHandle {
        stop: Some(stop_tx),
        task: Some(task),
        cache,
        metrics: handle_metrics,
        _cache_task: AbortOnDrop(cache_task),
    })
}

/// Resolves when a stop is asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One Lease request, bounded by the renew deadline; `None` on failure.
async fn attempt(elector: &mut Elector, metrics: &ReconcilerMetrics) -> Option<bool> {
    let deadline = elector.config().renew_deadline;
    match tokio::time::timeout(deadline, elector.try_acquire_or_renew()).await {
        Ok(Ok(ours)) => Some(ours),
        Ok(Err(e)) => {
            metrics.error(ErrorKind::lease);
            tracing::warn!(error = %e, "leader lease request failed");
            None
        }
        Err(_) => {
            metrics.error(ErrorKind::lease);
            tracing::warn!("leader lease request timed out");
            None
        }
    }
}

/// Standby until the Lease is ours, lead while it stays ours, release it on shutdown.
async fn elected(worker: Worker, mut elector: Elector, mut stop: watch::Receiver<bool>) {
    let cfg = elector.config().clone();
    loop {
        tracing::info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.namespace, cfg.name), "waiting for the leader lease");
        loop {
            if attempt(&mut elector, &worker.metrics).await == Some(true) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        tracing::info!(identity = %cfg.identity, "became leader; reconciling");
        worker.metrics.leader.set(1);
        let (lead_stop_tx, lead_stop_rx) = watch::channel(false);
        let mut running = AbortOnDrop(tokio::spawn(lead(worker.clone(), lead_stop_rx)));
        let mut last_renew = Instant::now();
        let shutdown = loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = stopped(&mut stop) => break true,
                _ = &mut running.0 => {
                    tracing::warn!("reconciler stopped unexpectedly; giving up the lease");
                    break false;
                }
            }
            match attempt(&mut elector, &worker.metrics).await {
                Some(true) => last_renew = Instant::now(),
                Some(false) => {
                    tracing::warn!("another replica holds the lease");
                    break false;
                }
                None if last_renew.elapsed() > cfg.renew_deadline => {
                    tracing::warn!("could not renew the lease within the renew deadline");
                    break false;
                }
                None => {}
            }
        };
        let _ = lead_stop_tx.send(true);
        drop(running);
        worker.metrics.leader.set(0);
        if shutdown {
            if let Err(e) = elector.release().await {
                worker.metrics.error(ErrorKind::lease);
                tracing::warn!(error = %e, "cannot release the leader lease");
            }
            tracing::info!("reconciler stopped; lease released");
            return;
        }
        tracing::warn!(identity = %cfg.identity, "lost leadership; stopped reconciling");
    }
}

/// Runs the caches, the controller, the backstop and the observer until `stop`.
async fn lead(worker: Worker, mut stop: watch::Receiver<bool>) {
    let args = &worker.args;
    let mut tasks = JoinSet::new();
    let (queue, requests) = futures::channel::mpsc::unbounded();
    let caches = informers::start(
        &worker.client,
        args.max_generations,
        &worker.metrics,
        queue,
        &mut tasks,
    );
    tokio::select! {
        _ = caches.ready() => {}
        _ = stopped(&mut stop) => return,
    }
    let concurrency = usize::from(args.reconcile_concurrency);
    let patcher = attach::Patcher::new(
        worker.client.clone(),
        Arc::new(ratelimit::TokenBucket::new(args.patch_qps)),
        Arc::new(Semaphore::new(concurrency)),
        worker.metrics.clone(),
    );
    let ctx = Arc::new(Ctx {
        client: worker.client.clone(),
        settings: worker.settings.clone(),
        caches: caches.clone(),
        patcher,
        metrics: worker.metrics.clone(),
        memory: memory::Memory::default(),
        reporter: Reporter {
            controller: "whisperer-injector".into(),
            instance: Some(worker.identity.clone()),
        },
        max_generations: args.max_generations,
        resync: args.resync_interval,
        concurrency,
        agent_env: worker.agent_env.clone(),
    });
    {
        let ctx = ctx.clone();
        let store = caches.attachments.clone();
        let config = kcontroller::Config::default().concurrency(args.reconcile_concurrency);
        tasks.spawn(async move {
            kcontroller::applier(
                |att, ctx| Box::pin(controller::reconcile(att, ctx)),
                controller::error_policy,
                ctx,
                store,
                requests.map(Ok::<_, Infallible>),
                config,
            )
            .for_each(|res| {
                match res {
                    Ok((obj, action)) => tracing::debug!(%obj, ?action, "reconciled"),
                    Err(kcontroller::Error::ObjectNotFound(obj)) => {
                        tracing::debug!(%obj, "reconcile request for a deleted Attachment")
                    }
                    Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                }
                std::future::ready(())
            })
            .await;
        });
    }
    tasks.spawn(backstop::run(
        ctx.clone(),
        args.backstop_interval,
        args.backstop_attach,
    ));
    tasks.spawn(observe(ctx.clone()));
    stopped(&mut stop).await;
    // Dropping the set aborts every task.
    drop(tasks);
}

/// Keeps the cache-size and phase gauges current.
async fn observe(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let c = &ctx.caches;
        let m = &ctx.metrics;
        m.watched(WatchedKind::pods, c.pods.len());
        m.watched(WatchedKind::attachments, c.attachments.len());
        m.watched(WatchedKind::replicasets, c.owners.replicasets.len());
        m.watched(WatchedKind::jobs, c.owners.jobs.len());
        m.watched(WatchedKind::namespaces, c.namespaces.len());
        let mut counts: Vec<(Phase, usize)> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for a in c.attachments.state() {
            let phase = a
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            if let Some(slot) = counts.iter_mut().find(|(p, _)| *p == phase) {
                slot.1 += 1;
            }
        }
        m.phases(&counts);
    }
}

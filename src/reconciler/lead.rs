//! What runs while this replica leads: the watch caches, the Attachment controller (a
//! kube-runtime `applier` fed by the watch triggers), the backstop and the gauges.

use std::convert::Infallible;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller as kcontroller;
use kube::runtime::events::Reporter;
use kube::Client;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::agent_env::AgentEnv;
use super::args::ReconcilerArgs;
use super::context::Context;
use super::handle::stopped;
use super::metrics::ReconcilerMetrics;
use super::pods::backoff::Backoff;
use super::pods::patcher::Patcher;
use super::pods::ratelimit::TokenBucket;
use super::{attachment, backstop, gauges, watch as watches};
use crate::engine::SharedSettings;

/// What a leader needs to run.
#[derive(Clone)]
pub(super) struct Worker {
    pub(super) client: Client,
    pub(super) settings: SharedSettings,
    pub(super) args: ReconcilerArgs,
    pub(super) metrics: ReconcilerMetrics,
    pub(super) identity: String,
    pub(super) agent_env: Option<AgentEnv>,
}

/// Runs the caches, the controller, the backstop and the gauges until `stop`.
pub(super) async fn lead(worker: Worker, mut stop: watch::Receiver<bool>) {
    let args = &worker.args;
    let mut tasks = JoinSet::new();
    let (queue, requests) = futures::channel::mpsc::unbounded();
    let caches = watches::start(
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
    let patcher = Patcher::new(
        worker.client.clone(),
        Arc::new(TokenBucket::new(args.patch_qps)),
        Arc::new(Semaphore::new(concurrency)),
        worker.metrics.clone(),
    );
    let ctx = Arc::new(Context {
        client: worker.client.clone(),
        settings: worker.settings.clone(),
        caches: caches.clone(),
        patcher,
        metrics: worker.metrics.clone(),
        backoff: Backoff::default(),
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
                |att, ctx| Box::pin(attachment::reconcile(att, ctx)),
                attachment::error_policy,
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
    tasks.spawn(gauges::observe(ctx.clone()));
    stopped(&mut stop).await;
    // Dropping the set aborts every task.
    drop(tasks);
}

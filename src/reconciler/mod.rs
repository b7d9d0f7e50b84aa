//! Runtime attachment: the `Attachment` custom resource and its ephemeral-container
//! reconciler, plus the backstop for pods the webhook missed. See docs/reconciler.md.
//!
//! [`start`] runs, while this replica leads (a `coordination.k8s.io/v1` Lease), one watch per
//! kind feeding pruned caches and a reconcile queue, a kube-runtime `applier` (the engine of
//! `Controller`) over Attachments, the backstop and the gauges.
//!
//! # Where to change what
//!
//! | Question | File |
//! |---|---|
//! | Which pods does a target (or selector) select? Why "no pods"? | `attachment/selection.rs` |
//! | When does an Attachment expire (ttl, profile `maxTtl`)? | `attachment/ttl.rs` |
//! | Why is an Attachment `Failed` (policy, invalid spec)? | `attachment/checks.rs` |
//! | Phase, `Ready` reason and message, when the next pass runs | `attachment/conclusion.rs` (pure) |
//! | The stored status: pod entries, counts, stable times | `attachment/status.rs` |
//! | Events of a pass (`Attached`, `AttachFailed`, `Expired`) | `attachment/events.rs` |
//! | What happens when an Attachment is deleted (detach) | `attachment/detach.rs` |
//! | What happens when a Whisperer ends or a pod restarts | `pods/generations.rs` |
//! | What one pass does to one pod (engine call, pod states) | `pods/plan.rs` |
//! | Dry run per pod template, then the real patches | `pods/batch.rs` |
//! | The patch itself and how refusals are read | `pods/patcher.rs` |
//! | Rate limiting of patches (`--patch-qps`, concurrency) | `pods/ratelimit.rs` |
//! | Back-off after a refused or failed patch | `pods/backoff.rs` |
//! | Which pod changes wake which Attachments | `watch/triggers.rs` |
//! | What is kept of a pod (memory with many pods) | `watch/pod_view.rs`, `watch/pod_info.rs` |
//! | Pods that missed the webhook | `backstop.rs` |
//! | Leader election | `leader.rs` |
//! | Metrics | `metrics.rs` |

mod agent_env;
mod args;
mod attachment;
mod attachment_cache;
mod backstop;
mod context;
mod crd;
mod error;
mod gauges;
mod handle;
mod lead;
mod leader;
mod metrics;
mod pods;
mod status_source;
mod watch;

pub use agent_env::{control_api_env, AgentEnv};
pub use args::ReconcilerArgs;
pub use attachment_cache::AttachmentCache;
pub use backstop::BACKSTOP_IDENTITY;
pub use crd::{
    crd, crd_yaml, Attachment, AttachmentSpec, AttachmentStatus, Phase, PodAttachment, PodState,
    TargetKind, TargetRef, FINALIZER,
};
pub use error::ReconcilerError;
pub use handle::ReconcilerHandle;
pub use leader::LEASE_NAME;
pub(crate) use leader::{default_identity, hold, Elector, LeaseConfig, LeaseHooks};
pub use status_source::ReconcilerStatus;
pub use watch::PodView;

use kube::api::ListParams;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::watch as signal;

use crate::engine::SharedSettings;
use handle::AbortOnDrop;
use lead::{lead, Worker};
use leader::elected;
use metrics::ReconcilerMetrics;

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
    let (stop_tx, stop_rx) = signal::channel(false);
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

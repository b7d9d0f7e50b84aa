//! The watch caches (pods, ReplicaSets, Jobs, namespaces, Attachments) and the triggers they
//! feed into the reconcile queue. Each kind has one watch: the reflector updates the cache
//! before the event is mapped, so a reconcile always sees the change that triggered it.
//!
//! Pods are deserialized into the pruned [`PodView`]; ReplicaSets, Jobs and namespaces are
//! watched as metadata only, so memory stays small with many pods.

use std::collections::HashSet;
use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::ReconcileRequest;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinSet;

mod interner;
mod owners;
mod pod_cache;
mod pod_info;
mod pod_view;
pub mod triggers;

pub use owners::Owners;
pub use pod_cache::PodCache;
pub use pod_info::PodInfo;
pub use pod_view::PodView;
#[cfg(test)]
pub use pod_view::{ContainerView, EnvView, EphemeralState, EphemeralStatus, Terminated};

use super::crd::Attachment;
use super::metrics::{ErrorKind, ReconcilerMetrics};
use pod_view::{controller_of, prune};

pub type Queue = UnboundedSender<ReconcileRequest<Attachment>>;

#[derive(Clone)]
pub struct Caches {
    pub pods: Arc<PodCache>,
    pub owners: Owners,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub attachments: Store<Attachment>,
}

impl Caches {
    /// Resolves once every cache holds its initial list.
    pub async fn ready(&self) {
        self.pods.wait_until_ready().await;
        let _ = self.owners.replicasets.wait_until_ready().await;
        let _ = self.owners.jobs.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.attachments.wait_until_ready().await;
    }
}

fn send(queue: &Queue, refs: impl IntoIterator<Item = ObjectRef<Attachment>>) {
    let unique: HashSet<ObjectRef<Attachment>> = refs.into_iter().collect();
    for r in unique {
        // A closed queue means the reconciler is stopping.
        let _ = queue.unbounded_send(r.into());
    }
}

fn prune_meta_only(meta: &mut kube::core::ObjectMeta, keep_labels: bool) {
    prune(meta);
    meta.annotations = None;
    if !keep_labels {
        meta.labels = None;
    }
}

/// The one Attachment watch (the leader's cache and every replica's [`AttachmentCache`]
/// both start from it), without managedFields.
///
/// [`AttachmentCache`]: crate::reconciler::AttachmentCache
pub fn attachment_watch(
    client: &Client,
) -> impl futures::Stream<Item = Result<Event<Attachment>, watcher::Error>> + Send + 'static {
    watcher(
        Api::<Attachment>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|a| a.metadata.managed_fields = None)
}

/// Starts the watches on `tasks`; the caches fill in the background. `max_generations`
/// names the containers each Attachment owns (see the triggers).
pub fn start(
    client: &Client,
    max_generations: u32,
    metrics: &ReconcilerMetrics,
    queue: Queue,
    tasks: &mut JoinSet<()>,
) -> Caches {
    let pods = Arc::new(PodCache::default());
    let (replicasets, rs_w) = reflector::store::<PartialObjectMeta<ReplicaSet>>();
    let (jobs, jobs_w) = reflector::store::<PartialObjectMeta<Job>>();
    let (namespaces, ns_w) = reflector::store::<PartialObjectMeta<Namespace>>();
    let (attachments, att_w) = reflector::store::<Attachment>();
    let caches = Caches {
        pods,
        owners: Owners { replicasets, jobs },
        namespaces,
        attachments,
    };
    let cfg = watcher::Config::default().any_semantic();

    // Attachments: every change reconciles the Attachment itself.
    {
        let stream = attachment_watch(client).reflect(att_w);
        let (queue, metrics) = (queue.clone(), metrics.clone());
        tasks.spawn(stream.for_each(move |ev| {
            match ev {
                Ok(Event::Apply(a) | Event::InitApply(a)) => {
                    send(&queue, [ObjectRef::from_obj(&a)])
                }
                Ok(_) => {}
                Err(e) => watch_error(&metrics, "attachments", &e),
            }
            std::future::ready(())
        }));
    }

    // Pods: mapped to the Attachments that select them; a relist reconciles everything.
    {
        // Paginated (no `any_semantic`): a list served from the watch cache ignores the page
        // size, and one 10,000-pod answer would be a 40 MB peak.
        let stream = watcher(
            Api::<PodView>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let (queue, metrics, c) = (queue.clone(), metrics.clone(), caches.clone());
        tasks.spawn(stream.for_each(move |ev| {
            match ev {
                Ok(ev) => {
                    let change = c.pods.apply(&ev);
                    if let Some(change) = change {
                        send(
                            &queue,
                            triggers::attachments_for_pod(
                                &c.attachments.state(),
                                &c.owners,
                                &change,
                                max_generations,
                            ),
                        );
                    } else if matches!(ev, Event::InitDone) {
                        send(
                            &queue,
                            c.attachments
                                .state()
                                .iter()
                                .map(|a| ObjectRef::from_obj(&**a)),
                        );
                    }
                }
                Err(e) => watch_error(&metrics, "pods", &e),
            }
            std::future::ready(())
        }));
    }

    // ReplicaSets and Jobs: a new one may complete the owner chain of pods seen before it.
    {
        let stream = watcher(
            Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
            cfg.clone(),
        )
        .default_backoff()
        .modify(|m: &mut PartialObjectMeta<ReplicaSet>| prune_meta_only(&mut m.metadata, false))
        .reflect(rs_w);
        let (queue, metrics, c) = (queue.clone(), metrics.clone(), caches.clone());
        tasks.spawn(stream.for_each(move |ev| {
            match ev {
                Ok(Event::Apply(rs)) => {
                    if let Some(("Deployment", owner)) = controller_of(&rs.metadata) {
                        let ns = rs.namespace().unwrap_or_default();
                        send(
                            &queue,
                            triggers::attachments_targeting(
                                &c.attachments.state(),
                                &ns,
                                "Deployment",
                                owner,
                            ),
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => watch_error(&metrics, "replicasets", &e),
            }
            std::future::ready(())
        }));
    }
    {
        let stream = watcher(
            Api::<PartialObjectMeta<Job>>::all(client.clone()),
            cfg.clone(),
        )
        .default_backoff()
        .modify(|m: &mut PartialObjectMeta<Job>| prune_meta_only(&mut m.metadata, false))
        .reflect(jobs_w);
        let (queue, metrics, c) = (queue.clone(), metrics.clone(), caches.clone());
        tasks.spawn(stream.for_each(move |ev| {
            match ev {
                Ok(Event::Apply(job)) => {
                    if let Some(("CronJob", owner)) = controller_of(&job.metadata) {
                        let ns = job.namespace().unwrap_or_default();
                        send(
                            &queue,
                            triggers::attachments_targeting(
                                &c.attachments.state(),
                                &ns,
                                "CronJob",
                                owner,
                            ),
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => watch_error(&metrics, "jobs", &e),
            }
            std::future::ready(())
        }));
    }

    // Namespaces: labels, for the backstop.
    {
        let stream = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            cfg,
        )
        .default_backoff()
        .modify(|m: &mut PartialObjectMeta<Namespace>| prune_meta_only(&mut m.metadata, true))
        .reflect(ns_w);
        let metrics = metrics.clone();
        tasks.spawn(stream.for_each(move |ev| {
            if let Err(e) = ev {
                watch_error(&metrics, "namespaces", &e);
            }
            std::future::ready(())
        }));
    }
    caches
}

fn watch_error(metrics: &ReconcilerMetrics, kind: &str, e: &watcher::Error) {
    metrics.error(ErrorKind::watch);
    tracing::warn!(kind, error = %e, "watch failed; retrying with back-off");
}

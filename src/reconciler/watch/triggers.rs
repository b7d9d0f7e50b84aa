//! Which Attachments a watch event wakes (pure: reads the caches, sends nothing). A pod
//! change wakes the Attachments of its namespace that select it, or may once its owner is
//! cached, or list it in their status (so a pod that left is dropped) — but only when the
//! change is one they can see: another Attachment's Whisperer arriving wakes nobody else.
//! A new ReplicaSet or Job wakes the Attachments targeting its Deployment or CronJob.

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use super::owners::Owners;
use super::pod_info::PodInfo;
use crate::reconciler::attachment::selection::{Matcher, Selection};
use crate::reconciler::crd::Attachment;
use crate::reconciler::pods::generations::generation_names;

/// One pod event, as the trigger mapping reads it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The cached version before the event (`None`: the pod is new to the cache).
    pub old: Option<Arc<PodInfo>>,
    /// The pod after the event (for a deletion, its last state).
    pub new: Arc<PodInfo>,
    pub deleted: bool,
}

impl Change {
    /// Whether an Attachment whose containers are `names` may see something new.
    pub fn matters_to(&self, names: &[String]) -> bool {
        let Some(old) = &self.old else {
            return true;
        };
        self.deleted
            || old.differs_beyond_ephemeral(&self.new)
            || names.iter().any(|n| old.ephemeral_differs(&self.new, n))
    }
}

/// Attachments a pod change matters to.
pub fn attachments_for_pod(
    attachments: &[Arc<Attachment>],
    owners: &Owners,
    change: &Change,
    max_generations: u32,
) -> Vec<ObjectRef<Attachment>> {
    let pod = &*change.new;
    let ns = pod.namespace();
    attachments
        .iter()
        .filter(|a| a.metadata.namespace.as_deref() == Some(ns))
        .filter(|a| {
            let name = a.metadata.name.as_deref().unwrap_or_default();
            change.matters_to(&generation_names(name, max_generations))
        })
        .filter(|a| {
            let m = Matcher::of(a);
            match m.selects(pod, owners) {
                Selection::Selected => true,
                Selection::Unknown => m.needs_owner_hop(),
                Selection::NotSelected => a
                    .status
                    .as_ref()
                    .is_some_and(|s| s.pods.iter().any(|p| p.pod == pod.name())),
            }
        })
        .map(|a| ObjectRef::from_obj(&**a))
        .collect()
}

/// Attachments that target `kind/name` (a Deployment or CronJob) in `ns`.
pub fn attachments_targeting(
    attachments: &[Arc<Attachment>],
    ns: &str,
    kind: &str,
    name: &str,
) -> Vec<ObjectRef<Attachment>> {
    attachments
        .iter()
        .filter(|a| a.metadata.namespace.as_deref() == Some(ns))
        .filter(|a| {
            a.spec
                .target
                .as_ref()
                .is_some_and(|t| t.kind.as_str() == kind && t.name == name)
        })
        .map(|a| ObjectRef::from_obj(&**a))
        .collect()
}

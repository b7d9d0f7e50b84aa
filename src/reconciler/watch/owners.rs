//! The owner objects one hop up from a pod (ReplicaSets, Jobs), kept as metadata only, so a
//! pod of a Deployment or CronJob is found without listing either.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use super::pod_view::controller_of;
use crate::reconciler::crd::TargetKind;

/// The metadata of ReplicaSets and Jobs, to walk one more owner hop.
#[derive(Clone)]
pub struct Owners {
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub jobs: Store<PartialObjectMeta<Job>>,
}

impl Owners {
    /// `Some(owner name)` when the intermediate object is known and has a controller of
    /// `kind`; `None` when it is unknown (not in the cache yet).
    pub fn grand_owner(&self, ns: &str, via: TargetKind, name: &str) -> Option<Option<String>> {
        let meta = match via {
            TargetKind::ReplicaSet => self
                .replicasets
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| o.metadata.clone()),
            TargetKind::Job => self
                .jobs
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| o.metadata.clone()),
            _ => return Some(None),
        }?;
        Some(controller_of(&meta).map(|(k, n)| format!("{k}/{n}")))
    }
}

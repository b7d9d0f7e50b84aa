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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector::store;

    use super::*;
    use crate::reconciler::crd::{AttachmentSpec, AttachmentStatus, PodAttachment, PodState};
    use crate::reconciler::crd::{TargetKind, TargetRef};
    use crate::reconciler::watch::{ContainerView, PodView};

    fn owners() -> Owners {
        Owners {
            replicasets: store::<PartialObjectMeta<ReplicaSet>>().0,
            jobs: store::<PartialObjectMeta<Job>>().0,
        }
    }

    fn selecting(name: &str, ns: &str, app: &str) -> Arc<Attachment> {
        let mut a = Attachment::new(
            name,
            AttachmentSpec {
                target: None,
                selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), app.to_string())].into()),
                    ..Default::default()
                }),
                profile: None,
                container: None,
                ttl: None,
            },
        );
        a.metadata.namespace = Some(ns.into());
        Arc::new(a)
    }

    fn pod(ns: &str, app: &str, ephemeral: &[&str]) -> Arc<PodInfo> {
        let mut v = PodView::default();
        v.metadata.name = Some("p".into());
        v.metadata.namespace = Some(ns.into());
        v.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        v.spec.ephemeral_containers = ephemeral
            .iter()
            .map(|n| ContainerView {
                name: n.to_string(),
                ..Default::default()
            })
            .collect();
        Arc::new(PodInfo::new(&v))
    }

    fn woken(atts: &[Arc<Attachment>], change: &Change) -> Vec<String> {
        let mut names: Vec<String> = attachments_for_pod(atts, &owners(), change, 3)
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pod_wakes_the_attachments_that_select_it_and_can_see_the_change() {
        let atts = [
            selecting("web-cap", "a", "web"),
            selecting("api-cap", "a", "api"),
            selecting("other-ns", "b", "web"),
        ];
        let new = Change {
            old: None,
            new: pod("a", "web", &[]),
            deleted: false,
        };
        assert_eq!(woken(&atts, &new), ["web-cap"]);
        // Only another Attachment's Whisperer arrived: nobody selecting the pod cares.
        let other = Change {
            old: Some(pod("a", "web", &[])),
            new: pod("a", "web", &["whisperer-api-cap"]),
            deleted: false,
        };
        assert!(woken(&atts, &other).is_empty());
        let ours = Change {
            old: Some(pod("a", "web", &[])),
            new: pod("a", "web", &["whisperer-web-cap-2"]),
            deleted: false,
        };
        assert_eq!(woken(&atts, &ours), ["web-cap"]);
    }

    #[test]
    fn a_pod_that_left_wakes_the_attachment_listing_it() {
        let mut listing = (*selecting("api-cap", "a", "api")).clone();
        listing.status = Some(AttachmentStatus {
            pods: vec![PodAttachment {
                pod: "p".into(),
                container: None,
                generation: None,
                state: PodState::Attached,
                reason: None,
                message: None,
                time: None,
            }],
            ..Default::default()
        });
        let relabelled = Change {
            old: Some(pod("a", "api", &[])),
            new: pod("a", "web", &[]),
            deleted: false,
        };
        assert_eq!(woken(&[Arc::new(listing)], &relabelled), ["api-cap"]);
    }

    #[test]
    fn owners_wake_the_attachments_targeting_them() {
        let mut dep = Attachment::new(
            "d",
            AttachmentSpec {
                target: Some(TargetRef {
                    kind: TargetKind::Deployment,
                    name: "web".into(),
                }),
                selector: None,
                profile: None,
                container: None,
                ttl: None,
            },
        );
        dep.metadata.namespace = Some("a".into());
        let atts = [Arc::new(dep), selecting("s", "a", "web")];
        let hit = attachments_targeting(&atts, "a", "Deployment", "web");
        assert_eq!(hit.len(), 1);
        assert!(attachments_targeting(&atts, "b", "Deployment", "web").is_empty());
        assert!(attachments_targeting(&atts, "a", "CronJob", "web").is_empty());
    }
}

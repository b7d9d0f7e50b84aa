//! Which live pods an Attachment selects, and why none when none: through controller owner references
//! (Deployment -> ReplicaSet -> Pod, CronJob -> Job -> Pod, StatefulSet / DaemonSet / Job /
//! ReplicaSet -> Pod), a pod by name, or a label selector. Only pods of the Attachment's own
//! namespace are ever considered.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{Expression, Selector};
use kube::{Api, Client, ResourceExt};

use crate::reconciler::crd::{Attachment, TargetKind};
use crate::reconciler::watch::{Owners, PodCache, PodInfo};

/// How an Attachment picks pods, prepared once per reconcile or mapping.
#[derive(Debug, Clone)]
pub enum Matcher {
    Target {
        kind: TargetKind,
        name: String,
    },
    Selector(Vec<Expression>),
    /// An invalid spec selects nothing.
    Nothing(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Selected,
    NotSelected,
    /// The pod's owner is not in the cache yet: it may be selected once it is.
    Unknown,
}

impl Matcher {
    pub fn of(att: &Attachment) -> Matcher {
        match (&att.spec.target, &att.spec.selector) {
            (Some(t), None) => Matcher::Target {
                kind: t.kind,
                name: t.name.clone(),
            },
            (None, Some(sel)) => match Selector::try_from(sel.clone()) {
                Ok(s) if s.selects_all() => Matcher::Nothing(
                    "an empty selector would select every pod of the namespace".into(),
                ),
                Ok(s) => Matcher::Selector(s.into_iter().collect()),
                Err(e) => Matcher::Nothing(format!("invalid selector: {e}")),
            },
            (Some(_), Some(_)) => Matcher::Nothing("set only one of target and selector".into()),
            (None, None) => Matcher::Nothing("set one of target or selector".into()),
        }
    }

    /// Whether `pod` (already known to be in the Attachment's namespace) is selected.
    pub fn selects(&self, pod: &PodInfo, owners: &Owners) -> Selection {
        let yes = |b: bool| {
            if b {
                Selection::Selected
            } else {
                Selection::NotSelected
            }
        };
        match self {
            Matcher::Nothing(_) => Selection::NotSelected,
            Matcher::Selector(s) => yes(pod.matches(s)),
            Matcher::Target { kind, name } => {
                let owner = pod.controller();
                match kind {
                    TargetKind::Pod => yes(pod.name() == name),
                    TargetKind::StatefulSet
                    | TargetKind::DaemonSet
                    | TargetKind::ReplicaSet
                    | TargetKind::Job => yes(owner == Some((kind.as_str(), name.as_str()))),
                    TargetKind::Deployment | TargetKind::CronJob => {
                        let via = if *kind == TargetKind::Deployment {
                            TargetKind::ReplicaSet
                        } else {
                            TargetKind::Job
                        };
                        let Some((owner_kind, owner_name)) = owner else {
                            return Selection::NotSelected;
                        };
                        if owner_kind != via.as_str() {
                            return Selection::NotSelected;
                        }
                        match owners.grand_owner(pod.namespace(), via, owner_name) {
                            None => Selection::Unknown,
                            Some(g) => {
                                yes(g.as_deref() == Some(&format!("{}/{name}", kind.as_str())))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether this matcher walks an owner hop (so an unknown owner may be one of ours).
    pub fn needs_owner_hop(&self) -> bool {
        matches!(
            self,
            Matcher::Target {
                kind: TargetKind::Deployment | TargetKind::CronJob,
                ..
            }
        )
    }
}

/// The live pods an Attachment selects, sorted by name.
pub fn resolve(
    att: &Attachment,
    matcher: &Matcher,
    pods: &PodCache,
    owners: &Owners,
) -> Vec<Arc<PodInfo>> {
    let ns = att.namespace().unwrap_or_default();
    let mut out: Vec<Arc<PodInfo>> = match matcher {
        Matcher::Nothing(_) => Vec::new(),
        Matcher::Target {
            kind: TargetKind::Pod,
            name,
        } => pods.get(&ns, name).into_iter().collect(),
        _ => {
            let mut all = pods.in_namespace(&ns);
            all.retain(|p| matcher.selects(p, owners) == Selection::Selected);
            all
        }
    };
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

/// Says whether the target exists when nothing is selected.
pub async fn explain_no_pods(att: &Attachment, ns: &str, client: &Client) -> String {
    let Some(t) = &att.spec.target else {
        return format!(
            "no pod in namespace {ns:?} matches the {}",
            att.target_description()
        );
    };
    let c = client.clone();
    let found = match t.kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::DaemonSet => Api::<DaemonSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::ReplicaSet => Api::<ReplicaSet>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::Job => Api::<Job>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::CronJob => Api::<CronJob>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
        TargetKind::Pod => Api::<Pod>::namespaced(c, ns)
            .get_metadata_opt(&t.name)
            .await
            .map(|o| o.is_some()),
    };
    match found {
        Ok(false) => format!(
            "{} {:?} not found in namespace {ns:?} (an Attachment only reaches its own namespace)",
            t.kind.as_str(),
            t.name
        ),
        Ok(true) => format!("{} {:?} has no pods yet", t.kind.as_str(), t.name),
        Err(e) => format!("no pods found for {} {:?} ({e})", t.kind.as_str(), t.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::watch::PodView;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher;

    use crate::reconciler::crd::{AttachmentSpec, TargetRef};

    fn owned(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            ..Default::default()
        }])
    }

    fn pod(ns: &str, name: &str, owner: Option<(&str, &str)>) -> PodInfo {
        PodInfo::new(&PodView {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                owner_references: owner.and_then(|(k, n)| owned(k, n)),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn meta<K: kube::Resource<DynamicType = ()>>(
        ns: &str,
        name: &str,
        owner: (&str, &str),
    ) -> PartialObjectMeta<K> {
        use kube::core::PartialObjectMetaExt;
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            owner_references: owned(owner.0, owner.1),
            ..Default::default()
        }
        .into_response_partial::<K>()
    }

    fn owners() -> Owners {
        let (rs, mut rs_w) = store::<PartialObjectMeta<ReplicaSet>>();
        rs_w.apply_watcher_event(&watcher::Event::Apply(meta(
            "a",
            "web-abc",
            ("Deployment", "web"),
        )));
        let (jobs, mut jobs_w) = store::<PartialObjectMeta<Job>>();
        jobs_w.apply_watcher_event(&watcher::Event::Apply(meta(
            "a",
            "nightly-1",
            ("CronJob", "nightly"),
        )));
        Owners {
            replicasets: rs,
            jobs,
        }
    }

    fn target(kind: TargetKind, name: &str) -> Matcher {
        let mut a = Attachment::new(
            "x",
            AttachmentSpec {
                target: Some(TargetRef {
                    kind,
                    name: name.into(),
                }),
                selector: None,
                profile: None,
                container: None,
                ttl: None,
            },
        );
        a.metadata.namespace = Some("a".into());
        Matcher::of(&a)
    }

    #[test]
    fn owner_chains() {
        let o = owners();
        let dep = target(TargetKind::Deployment, "web");
        assert_eq!(
            dep.selects(&pod("a", "p", Some(("ReplicaSet", "web-abc"))), &o),
            Selection::Selected
        );
        assert_eq!(
            dep.selects(&pod("a", "p", Some(("ReplicaSet", "web-new"))), &o),
            Selection::Unknown
        );
        assert_eq!(
            dep.selects(&pod("a", "p", Some(("StatefulSet", "web"))), &o),
            Selection::NotSelected
        );
        assert_eq!(
            target(TargetKind::Deployment, "other")
                .selects(&pod("a", "p", Some(("ReplicaSet", "web-abc"))), &o),
            Selection::NotSelected
        );
        let cj = target(TargetKind::CronJob, "nightly");
        assert_eq!(
            cj.selects(&pod("a", "p", Some(("Job", "nightly-1"))), &o),
            Selection::Selected
        );
        let sts = target(TargetKind::StatefulSet, "db");
        assert_eq!(
            sts.selects(&pod("a", "db-0", Some(("StatefulSet", "db"))), &o),
            Selection::Selected
        );
        assert_eq!(
            target(TargetKind::ReplicaSet, "web-abc")
                .selects(&pod("a", "p", Some(("ReplicaSet", "web-abc"))), &o),
            Selection::Selected
        );
        assert_eq!(
            target(TargetKind::Pod, "solo").selects(&pod("a", "solo", None), &o),
            Selection::Selected
        );
        // The ReplicaSet cache is per namespace: the same names elsewhere are unknown.
        assert_eq!(
            dep.selects(&pod("b", "p", Some(("ReplicaSet", "web-abc"))), &o),
            Selection::Unknown
        );
    }

    #[test]
    fn selectors_and_invalid_specs() {
        let o = owners();
        let spec = |sel: Option<LabelSelector>, t: Option<TargetRef>| AttachmentSpec {
            target: t,
            selector: sel,
            profile: None,
            container: None,
            ttl: None,
        };
        let web = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let m = Matcher::of(&Attachment::new("x", spec(Some(web.clone()), None)));
        assert_eq!(m.selects(&pod("a", "p", None), &o), Selection::Selected);
        let empty = Matcher::of(&Attachment::new(
            "x",
            spec(Some(LabelSelector::default()), None),
        ));
        assert!(matches!(empty, Matcher::Nothing(_)));
        let both = Matcher::of(&Attachment::new(
            "x",
            spec(
                Some(web),
                Some(TargetRef {
                    kind: TargetKind::Pod,
                    name: "p".into(),
                }),
            ),
        ));
        assert!(matches!(both, Matcher::Nothing(_)));
    }
}

//! One pod as the reconciler keeps it: the compact [`PodInfo`] of the pod cache, and the
//! facts the engine reads from it ([`PodFacts`]), so the engine reads the cache entry itself
//! and nobody rebuilds a `Pod`.
//!
//! kube's reflector keeps whole objects (a full `ObjectMeta` with its maps and a key that
//! repeats name, namespace, uid and resourceVersion), about 1.5 KB per pod even after pruning.
//! `PodInfo` keeps what the engine and the owner resolution read in boxed slices, with the
//! namespace shared, so 10,000 pods cost a few megabytes.

use std::sync::Arc;

use kube::core::Expression;

use super::interner::Interner;
use super::pod_view::{ContainerView, PodView, KEPT_ANNOTATION_PREFIX};
use crate::engine::{ContainerFacts, HostNamespaces, MemoryBounds, PodFacts, ENV_ATTACHMENT_UID};

type Pairs = Box<[(Arc<str>, Arc<str>)]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Unknown,
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    fn parse(s: Option<&str>) -> PodPhase {
        match s {
            Some("Pending") => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }

    pub fn as_str(self) -> Option<&'static str> {
        match self {
            PodPhase::Unknown => None,
            PodPhase::Pending => Some("Pending"),
            PodPhase::Running => Some("Running"),
            PodPhase::Succeeded => Some("Succeeded"),
            PodPhase::Failed => Some("Failed"),
        }
    }
}

/// A terminated ephemeral container, as its kubelet reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub name: Box<str>,
    pub exit_code: i32,
    pub reason: Option<Box<str>>,
}

/// A container as the engine checks it: name and image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctr {
    pub name: Arc<str>,
    pub image: Arc<str>,
}

/// An ephemeral container, with the attachment uid its Whisperer env names (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eph {
    pub name: Arc<str>,
    pub image: Arc<str>,
    pub attachment_uid: Option<Arc<str>>,
}

fn ctr(c: &ContainerView, strings: &mut Interner) -> Ctr {
    Ctr {
        name: strings.get(&c.name),
        image: strings.get(c.image.as_deref().unwrap_or_default()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    name: Box<str>,
    namespace: Arc<str>,
    uid: Box<str>,
    labels: Pairs,
    annotations: Pairs,
    /// [kind, name, apiVersion] of the controller owner reference.
    controller: Option<Box<[Arc<str>; 3]>>,
    terminating: bool,
    phase: PodPhase,
    containers: Box<[Ctr]>,
    init_containers: Box<[Ctr]>,
    ephemeral: Box<[Eph]>,
    volumes: Box<[Box<str>]>,
    ended: Box<[Ended]>,
    /// hostNetwork, hostPID, hostIPC.
    host: [bool; 3],
    memory: Option<MemoryBounds>,
}

fn boxed(s: &str) -> Box<str> {
    s.into()
}

fn pairs<'a>(it: impl Iterator<Item = (&'a String, &'a String)>, strings: &mut Interner) -> Pairs {
    it.map(|(k, v)| (strings.get(k), strings.get(v))).collect()
}

impl PodInfo {
    /// The cache entry for `v`; `strings` shares what the pod repeats from its siblings.
    pub fn from_view(v: &PodView, namespace: Arc<str>, strings: &mut Interner) -> PodInfo {
        let m = &v.metadata;
        PodInfo {
            name: boxed(m.name.as_deref().unwrap_or_default()),
            namespace,
            uid: boxed(m.uid.as_deref().unwrap_or_default()),
            labels: pairs(m.labels.iter().flatten(), strings),
            annotations: pairs(
                m.annotations
                    .iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with(KEPT_ANNOTATION_PREFIX)),
                strings,
            ),
            controller: m
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| {
                    Box::new([
                        strings.get(&o.kind),
                        strings.get(&o.name),
                        strings.get(&o.api_version),
                    ])
                }),
            terminating: m.deletion_timestamp.is_some(),
            phase: PodPhase::parse(v.status.phase.as_deref()),
            containers: v.spec.containers.iter().map(|c| ctr(c, strings)).collect(),
            init_containers: v
                .spec
                .init_containers
                .iter()
                .map(|c| ctr(c, strings))
                .collect(),
            ephemeral: v
                .spec
                .ephemeral_containers
                .iter()
                .map(|c| Eph {
                    name: strings.get(&c.name),
                    image: strings.get(c.image.as_deref().unwrap_or_default()),
                    attachment_uid: c.env(ENV_ATTACHMENT_UID).map(|u| strings.get(u)),
                })
                .collect(),
            host: [
                v.spec.host_network == Some(true),
                v.spec.host_pid == Some(true),
                v.spec.host_ipc == Some(true),
            ],
            volumes: v.spec.volumes.iter().map(|c| boxed(&c.name)).collect(),
            memory: MemoryBounds::sum(v.spec.containers.iter().map(|c| c.memory())),
            ended: v
                .status
                .ephemeral_container_statuses
                .iter()
                .filter_map(|s| {
                    let t = s.state.terminated.as_ref()?;
                    Some(Ended {
                        name: boxed(&s.name),
                        exit_code: t.exit_code,
                        reason: t.reason.as_deref().map(boxed),
                    })
                })
                .collect(),
        }
    }

    /// For tests and one-off conversions: the namespace is not shared.
    pub fn new(v: &PodView) -> PodInfo {
        PodInfo::from_view(
            v,
            Arc::from(v.metadata.namespace.as_deref().unwrap_or_default()),
            &mut Interner::default(),
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace string this pod shares with the other pods of its namespace.
    #[cfg(test)]
    pub fn shared_namespace(&self) -> &Arc<str> {
        &self.namespace
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    pub fn controller(&self) -> Option<(&str, &str)> {
        self.controller.as_deref().map(|[k, n, _]| (&**k, &**n))
    }

    pub fn terminating(&self) -> bool {
        self.terminating
    }

    pub fn finished(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    pub fn has_ephemeral(&self, name: &str) -> bool {
        self.ephemeral.iter().any(|c| &*c.name == name)
    }

    /// Whether the ephemeral container `name` is the Whisperer of attachment `uid` with
    /// `image`, rather than a container somebody else gave that name.
    pub fn ephemeral_is(&self, name: &str, image: &str, uid: &str) -> bool {
        self.ephemeral.iter().any(|c| {
            &*c.name == name && &*c.image == image && c.attachment_uid.as_deref() == Some(uid)
        })
    }

    pub fn ephemeral_terminated(&self, name: &str) -> Option<&Ended> {
        self.ended.iter().find(|e| &*e.name == name)
    }

    /// Whether `other` differs from this pod in anything but ephemeral containers (and their
    /// statuses): what every Attachment selecting the pod cares about.
    pub fn differs_beyond_ephemeral(&self, other: &PodInfo) -> bool {
        self.name != other.name
            || self.uid != other.uid
            || self.labels != other.labels
            || self.annotations != other.annotations
            || self.controller != other.controller
            || self.terminating != other.terminating
            || self.phase != other.phase
            || self.containers != other.containers
            || self.init_containers != other.init_containers
            || self.volumes != other.volumes
            || self.host != other.host
    }

    /// Whether the ephemeral container `name` (presence or end) differs.
    pub fn ephemeral_differs(&self, other: &PodInfo, name: &str) -> bool {
        let find = |p: &PodInfo| p.ephemeral.iter().find(|c| &*c.name == name).cloned();
        find(self) != find(other)
            || self.ephemeral_terminated(name) != other.ephemeral_terminated(name)
    }

    /// Whether every expression of a label selector holds for this pod.
    pub fn matches(&self, expressions: &[Expression]) -> bool {
        expressions.iter().all(|e| match e {
            Expression::In(k, values) => self.label(k).is_some_and(|v| values.contains(v)),
            Expression::NotIn(k, values) => self.label(k).is_none_or(|v| !values.contains(v)),
            Expression::Equal(k, value) => self.label(k) == Some(value.as_str()),
            Expression::NotEqual(k, value) => self.label(k) != Some(value.as_str()),
            Expression::Exists(k) => self.label(k).is_some(),
            Expression::DoesNotExist(k) => self.label(k).is_none(),
        })
    }
}

/// The engine reads the cache entry itself. Not kept, so not answered: host aliases and the
/// pod's security context (the backstop's Pod Security check judges the Whisperer's own
/// fields, which is all an injection adds).
impl PodFacts for PodInfo {
    fn namespace(&self) -> Option<&str> {
        Some(&self.namespace)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        PodInfo::annotation(self, key)
    }

    fn terminating(&self) -> bool {
        self.terminating
    }

    fn phase(&self) -> Option<&str> {
        self.phase.as_str()
    }

    fn has_spec(&self) -> bool {
        true
    }

    fn containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        self.containers.iter().map(Ctr::facts)
    }

    fn init_containers(&self) -> impl Iterator<Item = ContainerFacts<'_>> {
        self.init_containers.iter().map(Ctr::facts)
    }

    fn ephemeral_names(&self) -> impl Iterator<Item = &str> {
        self.ephemeral.iter().map(|c| &*c.name)
    }

    fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.volumes.iter().map(|v| &**v)
    }

    fn host_namespaces(&self) -> HostNamespaces {
        let [network, pid, ipc] = self.host;
        HostNamespaces { network, pid, ipc }
    }

    fn owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.controller
            .as_deref()
            .map(|[kind, _, api_version]| (&**api_version, &**kind))
            .into_iter()
    }

    fn host_aliases(&self) -> &[k8s_openapi::api::core::v1::HostAlias] {
        &[]
    }

    fn security_context(&self) -> Option<&k8s_openapi::api::core::v1::PodSecurityContext> {
        None
    }

    fn memory_bounds(&self) -> Option<MemoryBounds> {
        self.memory
    }
}

impl Ctr {
    fn facts(&self) -> ContainerFacts<'_> {
        ContainerFacts {
            name: &self.name,
            image: Some(&self.image),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reconciler::watch::pod_view::test_view as view;

    #[test]
    fn selector_expressions() {
        let p = PodInfo::new(&view("a", "p", &[("app", "web"), ("tier", "front")]));
        let e = |s: &str| -> Vec<Expression> {
            let sel: kube::core::Selector = s
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Expression::Equal(k.into(), v.into())
                })
                .collect();
            sel.into_iter().collect()
        };
        assert!(p.matches(&e("app=web")));
        assert!(p.matches(&e("app=web,tier=front")));
        assert!(!p.matches(&e("app=api")));
        assert!(p.matches(&[Expression::In("tier".into(), ["front".to_string()].into())]));
        assert!(p.matches(&[Expression::NotIn("app".into(), ["api".to_string()].into())]));
        assert!(p.matches(&[Expression::DoesNotExist("x".into())]));
        assert!(!p.matches(&[Expression::Exists("x".into())]));
        assert!(p.matches(&[Expression::NotEqual("app".into(), "api".into())]));
    }

    /// The engine gives the same answers from the cache entry as from the full pod.
    #[test]
    fn the_engine_reads_a_cache_entry_like_the_pod() {
        use std::sync::Arc as StdArc;

        use k8s_openapi::api::core::v1::Pod;

        use crate::config::Config;
        use crate::engine::{decide_attach, decide_sidecar, AttachSubject, Decision, Settings};

        let settings = Settings::new(StdArc::new(Config::default()), "whisperer-system");
        for fixture in [
            "review-pod-optin.json",
            "review-pod-opted-out.json",
            "review-pod-no-annotations.json",
            "review-pod-host-network.json",
            "review-job-pod.json",
            "review-pod-hostaliases-init.json",
        ] {
            let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).expect("fixture");
            let review: serde_json::Value = serde_json::from_str(&text).expect("json");
            let mut object = review["request"]["object"].clone();
            object["metadata"]["namespace"] = serde_json::json!("team-a");
            object["metadata"]["uid"] = serde_json::json!("uid-1");
            object["status"] = serde_json::json!({ "phase": "Running" });
            let pod: Pod = serde_json::from_value(object.clone()).expect("pod");
            let view: PodView = serde_json::from_value(object).expect("view");
            let info = PodInfo::new(&view);

            let subject = AttachSubject {
                attachment: "cap",
                attachment_uid: "uid-cap",
                profile: None,
                target_container: None,
                deadline: Some("2030-01-01T00:00:00Z"),
                expired: false,
                generation: 1,
                extra_env: &[],
            };
            assert_eq!(
                decide_attach(&info, &subject, &settings),
                decide_attach(&pod, &subject, &settings),
                "{fixture}: attach"
            );
            let kind = |d: &Decision| match d {
                Decision::Inject(plan) => format!("inject {}", plan.marker),
                Decision::Skip { reason, .. } => format!("skip {reason}"),
            };
            assert_eq!(
                kind(&decide_sidecar(&info, "team-a", None, &settings)),
                kind(&decide_sidecar(&pod, "team-a", None, &settings)),
                "{fixture}: sidecar"
            );
        }
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn memory_bounds_come_from_the_containers_resources() {
        let v: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"containers": [
                {"name": "a", "image": "x", "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}},
                {"name": "b", "image": "x", "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "512Mi"}}}
            ]}
        }))
        .expect("pod view");
        assert_eq!(
            PodInfo::new(&v).memory_bounds(),
            Some(MemoryBounds {
                limit: (64 << 20) + (1 << 30),
                requested: (64 << 20) + (512 << 20)
            })
        );
    }
}

//! The reconciler's pod cache: one compact [`PodInfo`] per pod, grouped by namespace.
//!
//! kube's reflector keeps whole objects (a full `ObjectMeta` with its maps and a key that
//! repeats name, namespace, uid and resourceVersion), about 1.5 KB per pod even after pruning.
//! This cache keeps what the engine and the owner resolution read in boxed slices, with the
//! namespace shared, so 10,000 pods cost a few megabytes; a namespace's pods are found
//! without scanning the others.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EphemeralContainer, Pod, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::core::Expression;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use super::podview::{controller_of, ContainerView, PodView};
use crate::engine::ENV_ATTACHMENT_UID;

/// Annotations kept: the engine reads these, nothing else.
const KEPT_ANNOTATION_PREFIX: &str = "whisperer.dev/";

type Pairs = Box<[(Box<str>, Box<str>)]>;

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

    fn as_str(self) -> Option<&'static str> {
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
    pub name: Box<str>,
    pub image: Box<str>,
}

/// An ephemeral container, with the attachment uid its Whisperer env names (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eph {
    pub name: Box<str>,
    pub image: Box<str>,
    pub attachment_uid: Option<Box<str>>,
}

fn ctr(c: &ContainerView) -> Ctr {
    Ctr {
        name: boxed(&c.name),
        image: boxed(c.image.as_deref().unwrap_or_default()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    name: Box<str>,
    namespace: Arc<str>,
    uid: Box<str>,
    labels: Pairs,
    annotations: Pairs,
    /// (kind, name) of the controller owner reference.
    controller: Option<Box<(Box<str>, Box<str>)>>,
    terminating: bool,
    phase: PodPhase,
    containers: Box<[Ctr]>,
    init_containers: Box<[Ctr]>,
    ephemeral: Box<[Eph]>,
    volumes: Box<[Box<str>]>,
    ended: Box<[Ended]>,
    /// hostNetwork, hostPID, hostIPC.
    host: [bool; 3],
}

fn boxed(s: &str) -> Box<str> {
    s.into()
}

fn pairs<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> Pairs {
    it.map(|(k, v)| (boxed(k), boxed(v))).collect()
}

impl PodInfo {
    pub fn from_view(v: &PodView, namespace: Arc<str>) -> PodInfo {
        let m = &v.metadata;
        PodInfo {
            name: boxed(m.name.as_deref().unwrap_or_default()),
            namespace,
            uid: boxed(m.uid.as_deref().unwrap_or_default()),
            labels: pairs(m.labels.iter().flatten()),
            annotations: pairs(
                m.annotations
                    .iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with(KEPT_ANNOTATION_PREFIX)),
            ),
            controller: controller_of(m).map(|(k, n)| Box::new((boxed(k), boxed(n)))),
            terminating: m.deletion_timestamp.is_some(),
            phase: PodPhase::parse(v.status.phase.as_deref()),
            containers: v.spec.containers.iter().map(ctr).collect(),
            init_containers: v.spec.init_containers.iter().map(ctr).collect(),
            ephemeral: v
                .spec
                .ephemeral_containers
                .iter()
                .map(|c| Eph {
                    name: boxed(&c.name),
                    image: boxed(c.image.as_deref().unwrap_or_default()),
                    attachment_uid: c.env(ENV_ATTACHMENT_UID).map(boxed),
                })
                .collect(),
            host: [
                v.spec.host_network == Some(true),
                v.spec.host_pid == Some(true),
                v.spec.host_ipc == Some(true),
            ],
            volumes: v.spec.volumes.iter().map(|c| boxed(&c.name)).collect(),
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
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
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
        self.controller.as_deref().map(|(k, n)| (&**k, &**n))
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

    /// The pod as the engine reads it: names of containers, ephemeral containers and
    /// volumes, labels, the whisperer annotations, the deletion mark and the phase.
    pub fn to_pod(&self) -> Pod {
        let map = |p: &Pairs| {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                uid: Some(self.uid.to_string()),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                // The engine only asks whether it is set.
                deletion_timestamp: self.terminating.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: self.containers.iter().map(Ctr::to_container).collect(),
                init_containers: (!self.init_containers.is_empty())
                    .then(|| self.init_containers.iter().map(Ctr::to_container).collect()),
                ephemeral_containers: Some(
                    self.ephemeral
                        .iter()
                        .map(|c| EphemeralContainer {
                            name: c.name.to_string(),
                            image: Some(c.image.to_string()),
                            env: c.attachment_uid.as_ref().map(|uid| {
                                vec![EnvVar {
                                    name: ENV_ATTACHMENT_UID.into(),
                                    value: Some(uid.to_string()),
                                    ..EnvVar::default()
                                }]
                            }),
                            ..EphemeralContainer::default()
                        })
                        .collect(),
                ),
                volumes: Some(
                    self.volumes
                        .iter()
                        .map(|n| Volume {
                            name: n.to_string(),
                            ..Volume::default()
                        })
                        .collect(),
                ),
                host_network: self.host[0].then_some(true),
                host_pid: self.host[1].then_some(true),
                host_ipc: self.host[2].then_some(true),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: self.phase.as_str().map(str::to_string),
                ..PodStatus::default()
            }),
        }
    }
}

impl Ctr {
    fn to_container(&self) -> Container {
        Container {
            name: self.name.to_string(),
            image: Some(self.image.to_string()),
            ..Container::default()
        }
    }
}

type ByNamespace = HashMap<Arc<str>, HashMap<Box<str>, Arc<PodInfo>>>;

#[derive(Default)]
struct Inner {
    live: ByNamespace,
    /// A (re)list in progress: replaces `live` when complete.
    relist: Option<ByNamespace>,
}

/// Inserts the pod; returns it and the version it replaced.
fn insert(map: &mut ByNamespace, v: &PodView) -> (Option<Arc<PodInfo>>, Arc<PodInfo>) {
    let ns = v.metadata.namespace.as_deref().unwrap_or_default();
    let key = match map.get_key_value(ns) {
        Some((k, _)) => k.clone(),
        None => Arc::from(ns),
    };
    let info = Arc::new(PodInfo::from_view(v, key.clone()));
    let old = map
        .entry(key)
        .or_default()
        .insert(info.name.clone(), info.clone());
    (old, info)
}

fn remove(map: &mut ByNamespace, ns: &str, name: &str) -> Option<Arc<PodInfo>> {
    let pods = map.get_mut(ns)?;
    let old = pods.remove(name);
    if pods.is_empty() {
        map.remove(ns);
    }
    old
}

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

/// Filled from a pod watch with [`PodCache::apply`].
pub struct PodCache {
    inner: RwLock<Inner>,
    ready: watch::Sender<bool>,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache {
            inner: RwLock::default(),
            ready: watch::channel(false).0,
        }
    }
}

impl PodCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one watch event; returns the change for `Apply` and `Delete`.
    pub fn apply(&self, ev: &Event<PodView>) -> Option<Change> {
        let mut inner = self.write();
        match ev {
            Event::Init => {
                inner.relist = Some(ByNamespace::new());
                None
            }
            Event::InitApply(v) => {
                if let Some(map) = inner.relist.as_mut() {
                    insert(map, v);
                }
                None
            }
            Event::InitDone => {
                if let Some(map) = inner.relist.take() {
                    inner.live = map;
                }
                drop(inner);
                self.ready.send_replace(true);
                None
            }
            Event::Apply(v) => {
                let (old, new) = insert(&mut inner.live, v);
                Some(Change {
                    old,
                    new,
                    deleted: false,
                })
            }
            Event::Delete(v) => {
                let new = Arc::new(PodInfo::new(v));
                let old = remove(&mut inner.live, new.namespace(), new.name());
                Some(Change {
                    old,
                    new,
                    deleted: true,
                })
            }
        }
    }

    /// Resolves once the first list is complete.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        self.read().live.get(namespace)?.get(name).cloned()
    }

    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<PodInfo>> {
        self.read()
            .live
            .get(namespace)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Pods of the namespaces `keep_namespace` accepts that `keep` accepts.
    pub fn filter(
        &self,
        keep_namespace: impl Fn(&str) -> bool,
        keep: impl Fn(&PodInfo) -> bool,
    ) -> Vec<Arc<PodInfo>> {
        self.read()
            .live
            .iter()
            .filter(|(ns, _)| keep_namespace(ns))
            .flat_map(|(_, pods)| pods.values())
            .filter(|p| keep(p))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().live.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ns: &str, name: &str, labels: &[(&str, &str)]) -> PodView {
        let mut v = PodView::default();
        v.metadata.name = Some(name.into());
        v.metadata.namespace = Some(ns.into());
        v.metadata.uid = Some(format!("uid-{name}"));
        v.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        v
    }

    #[test]
    fn relist_replaces_and_events_apply() {
        let c = PodCache::default();
        c.apply(&Event::Init);
        c.apply(&Event::InitApply(view("a", "p1", &[])));
        assert_eq!(c.len(), 0, "a relist shows only when done");
        c.apply(&Event::InitDone);
        assert_eq!(c.len(), 1);
        c.apply(&Event::Apply(view("a", "p2", &[])));
        c.apply(&Event::Apply(view("b", "p3", &[])));
        assert_eq!(c.in_namespace("a").len(), 2);
        let gone = c
            .apply(&Event::Delete(view("a", "p1", &[])))
            .expect("deleted pod");
        assert!(gone.deleted && gone.old.is_some());
        assert_eq!(gone.new.name(), "p1");
        assert!(c.get("a", "p1").is_none() && c.get("a", "p2").is_some());
        c.apply(&Event::Init);
        c.apply(&Event::InitApply(view("b", "p3", &[])));
        c.apply(&Event::InitDone);
        assert_eq!(c.len(), 1);
        // Namespaces are shared between a namespace's pods.
        c.apply(&Event::Apply(view("b", "p4", &[])));
        let (p3, p4) = (c.get("b", "p3").expect("p3"), c.get("b", "p4").expect("p4"));
        assert!(Arc::ptr_eq(&p3.namespace, &p4.namespace));
    }

    #[test]
    fn changes_matter_to_the_attachments_they_touch() {
        let c = PodCache::default();
        c.apply(&Event::Init);
        c.apply(&Event::InitDone);
        let mut v = view("a", "p", &[("app", "web")]);
        let first = c.apply(&Event::Apply(v.clone())).expect("change");
        assert!(first.old.is_none() && first.matters_to(&[]));
        let names = |n: &str| vec![format!("whisperer-{n}"), format!("whisperer-{n}-2")];
        // Another Attachment's Whisperer arrives: only that Attachment cares.
        v.spec
            .ephemeral_containers
            .push(crate::reconciler::podview::ContainerView {
                name: "whisperer-other".into(),
                ..Default::default()
            });
        let ch = c.apply(&Event::Apply(v.clone())).expect("change");
        assert!(ch.matters_to(&names("other")));
        assert!(!ch.matters_to(&names("cap")));
        // A phase change matters to everybody.
        v.status.phase = Some("Running".into());
        let ch = c.apply(&Event::Apply(v.clone())).expect("change");
        assert!(ch.matters_to(&names("cap")));
        let ch = c.apply(&Event::Delete(v)).expect("change");
        assert!(ch.matters_to(&names("cap")));
    }

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
}

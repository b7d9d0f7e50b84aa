//! The reconciler's pod cache: one compact `PodInfo` per pod, grouped by namespace, so a
//! namespace's pods are found without scanning the others. Filled from the pod watch; each
//! event comes back as a [`Change`] for the triggers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use tokio::sync::watch;

use super::interner::Interner;
use super::pod_info::PodInfo;
use super::pod_view::PodView;
use super::triggers::Change;

type ByNamespace = HashMap<Arc<str>, HashMap<Box<str>, Arc<PodInfo>>>;

#[derive(Default)]
struct Inner {
    live: ByNamespace,
    /// A (re)list in progress: replaces `live` when complete.
    relist: Option<ByNamespace>,
    strings: Interner,
}

/// Inserts the pod; returns it and the version it replaced.
fn insert(
    map: &mut ByNamespace,
    strings: &mut Interner,
    v: &PodView,
) -> (Option<Arc<PodInfo>>, Arc<PodInfo>) {
    let ns = v.metadata.namespace.as_deref().unwrap_or_default();
    let key = match map.get_key_value(ns) {
        Some((k, _)) => k.clone(),
        None => Arc::from(ns),
    };
    let info = Arc::new(PodInfo::from_view(v, key.clone(), strings));
    let old = map
        .entry(key)
        .or_default()
        .insert(info.name().into(), info.clone());
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
                let Inner {
                    relist, strings, ..
                } = &mut *inner;
                if let Some(map) = relist.as_mut() {
                    insert(map, strings, v);
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
                let Inner { live, strings, .. } = &mut *inner;
                let (old, new) = insert(live, strings, v);
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

    use crate::reconciler::watch::pod_view::test_view as view;

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
        assert!(Arc::ptr_eq(p3.shared_namespace(), p4.shared_namespace()));
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
            .push(crate::reconciler::watch::ContainerView {
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
}

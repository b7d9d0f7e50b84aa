//! The Pod Security `enforce` level of every namespace that sets one, kept by a metadata watch
//! so the admission path reads a map instead of calling the API per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::engine::pod_security::{Level, LABEL_ENFORCE};

/// Namespace name -> enforced level. Empty (nothing judged) until a watch fills it, e.g. when
/// the server runs without cluster credentials.
#[derive(Clone, Default)]
pub struct PodSecurityLevels {
    levels: Arc<RwLock<HashMap<String, Level>>>,
}

impl PodSecurityLevels {
    pub fn enforce(&self, namespace: &str) -> Option<Level> {
        self.levels
            .read()
            .ok()
            .and_then(|m| m.get(namespace).copied())
    }

    fn set(&self, name: String, label: Option<&String>) {
        let Ok(mut m) = self.levels.write() else {
            return;
        };
        match label {
            Some(v) => m.insert(name, Level::from_label(v)),
            None => m.remove(&name),
        };
    }

    /// Watches namespace metadata until the returned task is aborted. A relist replaces the
    /// map whole, so namespaces deleted while the watch was down disappear. `synced` runs
    /// once, when the first list is in.
    pub fn watch(&self, client: Client, synced: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
        let me = self.clone();
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
        tokio::spawn(async move {
            let mut relist: Option<HashMap<String, Level>> = None;
            let mut synced = Some(synced);
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(Event::Apply(ns)) => {
                        let name = ns.metadata.name.clone().unwrap_or_default();
                        me.set(
                            name,
                            ns.metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get(LABEL_ENFORCE)),
                        );
                    }
                    Ok(Event::Delete(ns)) => {
                        me.set(ns.metadata.name.clone().unwrap_or_default(), None);
                    }
                    Ok(Event::Init) => relist = Some(HashMap::new()),
                    Ok(Event::InitApply(ns)) => {
                        let level = ns
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(LABEL_ENFORCE));
                        if let (Some(map), Some(v)) = (relist.as_mut(), level) {
                            map.insert(
                                ns.metadata.name.clone().unwrap_or_default(),
                                Level::from_label(v),
                            );
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let (Some(map), Ok(mut live)) = (relist.take(), me.levels.write()) {
                            *live = map;
                        }
                        if let Some(f) = synced.take() {
                            f();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "namespace watch (Pod Security levels) failed; retrying");
                    }
                }
            }
        })
    }
}

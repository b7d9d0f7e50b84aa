//! The reconciler's side of the agent control API (`crate::control`) and of `GET /status`:
//! the Attachment cache they answer from (on every replica, leader or not), and the env that
//! tells an attached Whisperer where to ask and with which token.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::EnvVar;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::task::JoinHandle;

use super::crd::{Attachment, Phase};
use super::metrics::{ReconcilerMetrics, WatchedKind, WatchedLabels};
use crate::control::{
    agent_path, AttachmentLookup, AttachmentState, TokenKeys, ENV_CONTROL_TOKEN, ENV_CONTROL_URL,
};
use crate::status::{AttachmentSummary, PodSummary, StatusSource};

/// Extra env for the Whisperer of one Attachment, from its (namespace, name, uid).
pub type AgentEnv = Arc<dyn Fn(&str, &str, &str) -> Vec<EnvVar> + Send + Sync>;

/// `WHISPERER_CONTROL_URL` (`base_url` + the Attachment's agent path) and
/// `WHISPERER_CONTROL_TOKEN` (minted with `key`, which every replica shares).
pub fn control_api_env(base_url: &str, key: TokenKeys) -> AgentEnv {
    let base = base_url.trim_end_matches('/').to_string();
    Arc::new(move |namespace: &str, name: &str, uid: &str| {
        vec![
            EnvVar {
                name: ENV_CONTROL_URL.into(),
                value: Some(format!("{base}{}", agent_path(namespace, name, uid))),
                ..EnvVar::default()
            },
            EnvVar {
                name: ENV_CONTROL_TOKEN.into(),
                value: Some(key.mint(namespace, name, uid)),
                ..EnvVar::default()
            },
        ]
    })
}

/// Attachments as last seen by this replica's own watch.
#[derive(Clone)]
pub struct AttachmentCache {
    store: Store<Attachment>,
}

impl AttachmentCache {
    /// Starts the watch; the task stops when the returned handle is aborted.
    pub fn start(client: &Client) -> (AttachmentCache, JoinHandle<()>) {
        let (store, writer) = reflector::store::<Attachment>();
        let stream = watcher(
            Api::<Attachment>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(|a| a.metadata.managed_fields = None)
        .reflect(writer);
        let task = tokio::spawn(stream.for_each(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "attachment watch (control API cache) failed; retrying");
            }
            std::future::ready(())
        }));
        (AttachmentCache { store }, task)
    }
}

impl AttachmentLookup for AttachmentCache {
    fn attachment(&self, namespace: &str, name: &str) -> Option<AttachmentState> {
        let a = self.store.get(&ObjectRef::new(name).within(namespace))?;
        let status = a.status.as_ref();
        Some(AttachmentState {
            uid: a.metadata.uid.clone().unwrap_or_default(),
            phase: status
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending)
                .as_str()
                .to_string(),
            expires_at: status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0),
            deleting: a.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// The reconciler's part of `GET /status`: Attachments from the cache, cache sizes from the
/// leader's gauges (zero on a standby).
pub struct ReconcilerStatus {
    pub(crate) cache: AttachmentCache,
    pub(crate) metrics: ReconcilerMetrics,
}

impl StatusSource for ReconcilerStatus {
    fn attachments(&self) -> Vec<AttachmentSummary> {
        let mut out: Vec<AttachmentSummary> = self
            .cache
            .store
            .state()
            .iter()
            .map(|a| {
                let status = a.status.clone().unwrap_or_default();
                AttachmentSummary {
                    namespace: a.metadata.namespace.clone().unwrap_or_default(),
                    name: a.metadata.name.clone().unwrap_or_default(),
                    phase: status.phase.unwrap_or(Phase::Pending).as_str().to_string(),
                    expires_at: status.expires_at.map(|t| t.0.to_string()),
                    pods: status
                        .pods
                        .into_iter()
                        .map(|p| PodSummary {
                            pod: p.pod,
                            container: p.container.unwrap_or_default(),
                            state: format!("{:?}", p.state),
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    fn watched(&self) -> Vec<(String, usize)> {
        let gauge = |kind| {
            let n = self
                .metrics
                .watched
                .get_or_create(&WatchedLabels { kind })
                .get();
            usize::try_from(n).unwrap_or(0)
        };
        vec![
            ("Attachment".into(), self.cache.store.len()),
            ("Pod (reconciler)".into(), gauge(WatchedKind::pods)),
            ("ReplicaSet".into(), gauge(WatchedKind::replicasets)),
            ("Job".into(), gauge(WatchedKind::jobs)),
            ("Namespace".into(), gauge(WatchedKind::namespaces)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_carries_url_and_a_verifiable_token() {
        let key = TokenKeys::single(crate::control::TokenKey::from_bytes(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ));
        let env = control_api_env("https://injector.whisperer-system.svc:8443/", key.clone())(
            "team-a", "cap", "u1",
        );
        assert_eq!(env[0].name, ENV_CONTROL_URL);
        assert_eq!(
            env[0].value.as_deref(),
            Some("https://injector.whisperer-system.svc:8443/agent/v1/namespaces/team-a/attachments/cap/u1")
        );
        assert!(key.verify(
            "team-a",
            "cap",
            "u1",
            env[1].value.as_deref().unwrap_or_default()
        ));
    }
}

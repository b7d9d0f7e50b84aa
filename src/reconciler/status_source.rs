//! The reconciler's part of `GET /status`.

use super::attachment_cache::AttachmentCache;
use super::crd::Phase;
use super::metrics::{ReconcilerMetrics, WatchedKind, WatchedLabels};
use crate::status::{AttachmentSummary, PodSummary, StatusSource};

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

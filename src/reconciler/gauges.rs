//! The cache-size and phase gauges, kept current while this replica leads.

use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use super::crd::Phase;
use super::metrics::WatchedKind;
use crate::engine::stale::{freshness, Freshness};
use crate::engine::ANNOTATION_INJECTED;

/// Keeps the cache-size and phase gauges current.
pub(super) async fn observe(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let c = &ctx.caches;
        let m = &ctx.metrics;
        m.watched(WatchedKind::pods, c.pods.len());
        m.watched(WatchedKind::attachments, c.attachments.len());
        m.watched(WatchedKind::replicasets, c.owners.replicasets.len());
        m.watched(WatchedKind::jobs, c.owners.jobs.len());
        m.watched(WatchedKind::namespaces, c.namespaces.len());
        let mut counts: Vec<(Phase, usize)> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for a in c.attachments.state() {
            let phase = a
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(Phase::Pending);
            if let Some(slot) = counts.iter_mut().find(|(p, _)| *p == phase) {
                slot.1 += 1;
            }
        }
        m.phases(&counts);
        let settings = ctx.settings.load();
        let outdated = c
            .pods
            .filter(
                |_| true,
                |p| {
                    p.annotation(ANNOTATION_INJECTED).is_some()
                        && matches!(
                            freshness(p, p.namespace(), &settings),
                            Freshness::Outdated { .. }
                        )
                },
            )
            .len();
        m.outdated_agents
            .set(i64::try_from(outdated).unwrap_or(i64::MAX));
    }
}

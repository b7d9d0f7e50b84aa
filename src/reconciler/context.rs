//! What every reconcile pass and the backstop share while this replica leads: the client,
//! the settings, the caches, the patcher, the back-off memory, and Event publishing. Its own
//! file so the Attachment reconciler and the backstop both depend on it, not on each other.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use super::agent_env::AgentEnv;
use super::metrics::{ErrorKind, ReconcilerMetrics};
use super::pods::backoff::Backoff;
use super::pods::patcher::Patcher;
use super::watch::Caches;
use crate::engine::SharedSettings;

pub struct Context {
    pub client: Client,
    pub settings: SharedSettings,
    pub caches: Caches,
    pub patcher: Patcher,
    pub metrics: ReconcilerMetrics,
    pub backoff: Backoff,
    pub reporter: Reporter,
    /// `--max-generations`: how many Whisperers one identity may use per pod.
    pub max_generations: u32,
    pub resync: Duration,
    pub concurrency: usize,
    /// Extra env per Attachment (the control API's URL and token).
    pub agent_env: Option<AgentEnv>,
}

/// Normal or Warning, for [`Context::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl Context {
    /// A recorder per pass: kube's recorder folds same-reason events into a series that keeps
    /// the first note, which would misreport later passes.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// Publishes an Event; a failure is counted and logged, never fails the pass.
    pub async fn publish(
        &self,
        recorder: &Recorder,
        reference: &ObjectReference,
        severity: Severity,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: match severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, reference).await {
            self.metrics.error(ErrorKind::event);
            tracing::warn!(reason, error = %e, "cannot publish event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("abcdef".into(), 5), "ab...");
        assert_eq!(truncate("ééé".into(), 5), "é...");
        assert_eq!(truncate("abc".into(), 5), "abc");
    }
}

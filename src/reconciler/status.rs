//! Building an Attachment's status from one reconcile pass, stable across passes: times only
//! move when something changed, so an unchanged world writes nothing.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::crd::{AttachmentStatus, Phase, PodAttachment, PodState};

/// Entries kept in `status.pods`; the rest are counted in `omittedPods`.
pub const MAX_POD_ENTRIES: usize = 1000;

pub const CONDITION_READY: &str = "Ready";

/// One pod's standing, before times are filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    pub pod: String,
    pub container: Option<String>,
    pub generation: Option<u32>,
    pub state: PodState,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl PodEntry {
    pub fn new(pod: &str, state: PodState) -> PodEntry {
        PodEntry {
            pod: pod.to_string(),
            container: None,
            generation: None,
            state,
            reason: None,
            message: None,
        }
    }

    pub fn container(mut self, name: &str, generation: u32) -> PodEntry {
        self.container = Some(name.to_string());
        self.generation = Some(generation);
        self
    }

    pub fn reason(mut self, reason: &str, message: Option<String>) -> PodEntry {
        self.reason = Some(reason.to_string());
        self.message = message;
        self
    }
}

/// The Ready condition's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

pub struct Snapshot<'a> {
    pub phase: Phase,
    pub target: String,
    /// The recorded requester (annotation `whisperer.dev/requested-by`).
    pub requested_by: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub generation: Option<i64>,
    pub pods: Vec<PodEntry>,
    pub readiness: Readiness,
    pub now: Timestamp,
    pub old: Option<&'a AttachmentStatus>,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn build(s: Snapshot<'_>) -> AttachmentStatus {
    let old_pods: HashMap<&str, &PodAttachment> = s
        .old
        .map(|o| o.pods.iter().map(|p| (p.pod.as_str(), p)).collect())
        .unwrap_or_default();
    let attached = s
        .pods
        .iter()
        .filter(|p| p.state == PodState::Attached)
        .count();
    let selected = s.pods.len();
    let omitted = selected.saturating_sub(MAX_POD_ENTRIES);
    let pods = s
        .pods
        .into_iter()
        .take(MAX_POD_ENTRIES)
        .map(|e| {
            let gen = e.generation.map(|g| i32::try_from(g).unwrap_or(i32::MAX));
            let time = match old_pods.get(e.pod.as_str()) {
                Some(o)
                    if o.state == e.state && o.reason == e.reason && o.container == e.container =>
                {
                    o.time.clone()
                }
                _ => Some(Time(s.now)),
            };
            PodAttachment {
                pod: e.pod,
                container: e.container,
                generation: gen,
                state: e.state,
                reason: e.reason,
                message: e.message,
                time,
            }
        })
        .collect();
    let status = if s.readiness.ready { "True" } else { "False" };
    let old_ready = s
        .old
        .and_then(|o| o.conditions.iter().find(|c| c.type_ == CONDITION_READY));
    let last_transition = match old_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(s.now),
    };
    let ready = Condition {
        type_: CONDITION_READY.into(),
        status: status.into(),
        reason: s.readiness.reason,
        message: s.readiness.message,
        last_transition_time: last_transition,
        observed_generation: s.generation,
    };
    AttachmentStatus {
        phase: Some(s.phase),
        target: Some(s.target),
        attached_pods: count(attached),
        selected_pods: count(selected),
        expires_at: s.expires_at.map(Time),
        observed_generation: s.generation,
        requested_by: s.requested_by,
        pods,
        omitted_pods: count(omitted),
        conditions: vec![ready],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap<'a>(
        old: Option<&'a AttachmentStatus>,
        now: Timestamp,
        state: PodState,
    ) -> Snapshot<'a> {
        Snapshot {
            phase: Phase::Attached,
            target: "Deployment/web".into(),
            requested_by: None,
            expires_at: None,
            generation: Some(1),
            pods: vec![PodEntry::new("web-1", state).container("whisperer-a", 1)],
            readiness: Readiness {
                ready: true,
                reason: "AllAttached".into(),
                message: "1 of 1 pods attached".into(),
            },
            now,
            old,
        }
    }

    #[test]
    fn unchanged_pass_builds_an_equal_status() {
        let t0 = Timestamp::from_second(1_700_000_000).expect("t0");
        let t1 = Timestamp::from_second(1_700_000_100).expect("t1");
        let first = build(snap(None, t0, PodState::Attached));
        let second = build(snap(Some(&first), t1, PodState::Attached));
        assert_eq!(first, second);
        assert_eq!(first.attached_pods, 1);
        let third = build(snap(Some(&second), t1, PodState::Pending));
        assert_ne!(third, second);
        assert_eq!(third.pods[0].time, Some(Time(t1)));
        assert_eq!(third.conditions[0].last_transition_time, Time(t0));
    }

    #[test]
    fn long_lists_are_cut() {
        let now = Timestamp::from_second(1_700_000_000).expect("now");
        let mut s = snap(None, now, PodState::Attached);
        s.pods = (0..MAX_POD_ENTRIES + 5)
            .map(|i| PodEntry::new(&format!("p{i}"), PodState::Attached))
            .collect();
        let st = build(s);
        assert_eq!(st.pods.len(), MAX_POD_ENTRIES);
        assert_eq!(st.omitted_pods, 5);
        assert_eq!(st.attached_pods, count(MAX_POD_ENTRIES + 5));
    }
}

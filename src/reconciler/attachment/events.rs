//! The Events a pass publishes on its Attachment, and when: `Attached` for pods attached in
//! this pass, one `AttachFailed` for those refused or failed (naming the first), `Expired`
//! once when the ttl runs out, and a Warning with the refusal's reason when the Attachment is
//! refused (again only when the message changed). Each names the recorded requester
//! (`whisperer.dev/requested-by`) when there is one. The notes are built here, purely.

use crate::reconciler::crd::{Attachment, AttachmentStatus, Phase};

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub text: String,
}

/// ` (requested by alice)`, or nothing when no requester is recorded.
pub fn requested_by_note(att: &Attachment) -> String {
    att.requested_by()
        .map(|u| format!(" (requested by {u})"))
        .unwrap_or_default()
}

/// Names shown in an `Attached` Event; the rest are counted.
const NAMES_SHOWN: usize = 10;

/// Pods of one outcome in a pass: how many, the first names, and the first one's detail.
/// Bounded, so a pass over 10,000 pods keeps ten names, not ten thousand.
#[derive(Debug, Default)]
pub struct PodTally {
    count: usize,
    names: Vec<String>,
    first_detail: Option<String>,
}

impl PodTally {
    /// Counts `pod`; `detail` is asked for the first pod only.
    pub fn push(&mut self, pod: &str, detail: impl FnOnce() -> Option<String>) {
        if self.count == 0 {
            self.first_detail = detail();
        }
        self.count += 1;
        if self.names.len() < NAMES_SHOWN {
            self.names.push(pod.to_string());
        }
    }

    fn listed(&self) -> String {
        let mut s = self.names.join(", ");
        if self.count > self.names.len() {
            s.push_str(&format!(" and {} more", self.count - self.names.len()));
        }
        s
    }
}

/// The Events after a pass; `by` is [`requested_by_note`]. `refused` carries
/// "reason: message" as its detail.
pub fn after_pass(
    by: &str,
    newly_attached: &PodTally,
    refused: &PodTally,
    expired: bool,
    old_phase: Option<Phase>,
    deadline: Option<&str>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if newly_attached.count > 0 {
        notes.push(Note {
            warning: false,
            reason: "Attached",
            text: format!(
                "attached the Whisperer to {} pod(s){by}: {}",
                newly_attached.count,
                newly_attached.listed()
            ),
        });
    }
    if let Some(pod) = refused.names.first() {
        notes.push(Note {
            warning: true,
            reason: "AttachFailed",
            text: format!(
                "{} pod(s) not attached{by}, e.g. {pod}: {}",
                refused.count,
                refused.first_detail.as_deref().unwrap_or_default()
            ),
        });
    }
    if expired && old_phase != Some(Phase::Expired) {
        notes.push(Note {
            warning: false,
            reason: "Expired",
            text: format!(
                "the ttl ran out at {}; no further pods will be attached",
                deadline.unwrap_or_default()
            ),
        });
    }
    notes
}

/// Whether a refusal is news: the phase was not `Failed`, or the message changed.
pub fn refusal_is_news(old: Option<&AttachmentStatus>, message: &str) -> bool {
    let old_message = old
        .and_then(|s| s.conditions.first())
        .map(|c| c.message.as_str());
    old_message != Some(message) || old.and_then(|s| s.phase) != Some(Phase::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_a_pass() {
        let mut many = PodTally::default();
        for i in 0..12 {
            many.push(&format!("p{i}"), || None);
        }
        assert_eq!(
            many.listed(),
            "p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 2 more"
        );
        let (mut attached, mut refused) = (PodTally::default(), PodTally::default());
        attached.push("web-1", || None);
        refused.push("web-2", || Some("PodSecurity: violates".into()));
        refused.push("web-3", || panic!("only the first pod's detail is read"));
        let notes = after_pass(
            " (requested by alice)",
            &attached,
            &refused,
            true,
            Some(Phase::Attached),
            Some("2030-01-01T00:00:00Z"),
        );
        let reasons: Vec<&str> = notes.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["Attached", "AttachFailed", "Expired"]);
        assert_eq!(
            notes[1].text,
            "2 pod(s) not attached (requested by alice), e.g. web-2: PodSecurity: violates"
        );
        assert!(notes[0]
            .text
            .starts_with("attached the Whisperer to 1 pod(s) (requested by alice)"));
        assert!(notes[1].warning && !notes[0].warning);
        // Expired is said once.
        let none = PodTally::default();
        assert!(after_pass("", &none, &none, true, Some(Phase::Expired), None).is_empty());
    }

    #[test]
    fn a_repeated_refusal_is_not_news() {
        let mut st = AttachmentStatus {
            phase: Some(Phase::Failed),
            ..Default::default()
        };
        st.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "UnknownProfile".into(),
            message: "m".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }];
        assert!(!refusal_is_news(Some(&st), "m"));
        assert!(refusal_is_news(Some(&st), "other"));
        assert!(refusal_is_news(None, "m"));
    }
}

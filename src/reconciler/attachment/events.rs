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

/// The Events after a pass; `by` is [`requested_by_note`]. `refused` holds
/// `(pod, "reason: message")`.
pub fn after_pass(
    by: &str,
    newly_attached: &[String],
    refused: &[(String, String)],
    expired: bool,
    old_phase: Option<Phase>,
    deadline: Option<&str>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if !newly_attached.is_empty() {
        notes.push(Note {
            warning: false,
            reason: "Attached",
            text: format!(
                "attached the Whisperer to {} pod(s){by}: {}",
                newly_attached.len(),
                list_names(newly_attached, 10)
            ),
        });
    }
    if let Some((pod, why)) = refused.first() {
        notes.push(Note {
            warning: true,
            reason: "AttachFailed",
            text: format!(
                "{} pod(s) not attached{by}, e.g. {pod}: {why}",
                refused.len()
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

/// `a, b, c and 7 more`
fn list_names(names: &[String], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_of_a_pass() {
        assert_eq!(
            list_names(&["a".into(), "b".into(), "c".into()], 2),
            "a, b and 1 more"
        );
        let notes = after_pass(
            " (requested by alice)",
            &["web-1".into()],
            &[("web-2".into(), "PodSecurity: violates".into())],
            true,
            Some(Phase::Attached),
            Some("2030-01-01T00:00:00Z"),
        );
        let reasons: Vec<&str> = notes.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["Attached", "AttachFailed", "Expired"]);
        assert_eq!(
            notes[1].text,
            "1 pod(s) not attached (requested by alice), e.g. web-2: PodSecurity: violates"
        );
        assert!(notes[0]
            .text
            .starts_with("attached the Whisperer to 1 pod(s) (requested by alice)"));
        assert!(notes[1].warning && !notes[0].warning);
        // Expired is said once.
        assert!(after_pass("", &[], &[], true, Some(Phase::Expired), None).is_empty());
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

//! Run or stop: decided from the Attachment as the reconciler last saw it. Pure: `now` is
//! passed in.

use serde::Serialize;

use crate::reconciler::Phase;

/// What the control API needs to know about one Attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentState {
    pub uid: String,
    pub phase: Phase,
    pub expires_at: Option<jiff::Timestamp>,
    /// `metadata.deletionTimestamp` is set: detach is under way.
    pub deleting: bool,
}

/// Where the control API looks Attachments up (the reconciler's cache).
pub trait AttachmentLookup: Send + Sync + 'static {
    fn attachment(&self, namespace: &str, name: &str) -> Option<AttachmentState>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Verdict {
    Run {
        #[serde(skip_serializing_if = "Option::is_none")]
        deadline: Option<String>,
    },
    Stop {
        reason: &'static str,
    },
}

pub fn verdict(state: Option<&AttachmentState>, uid: &str, now: jiff::Timestamp) -> Verdict {
    let Some(s) = state else {
        return Verdict::Stop { reason: "detached" };
    };
    if s.uid != uid || s.deleting || s.phase == Phase::Detached {
        return Verdict::Stop { reason: "detached" };
    }
    if s.phase == Phase::Expired || s.expires_at.is_some_and(|t| now >= t) {
        return Verdict::Stop { reason: "expired" };
    }
    if s.phase == Phase::Failed {
        return Verdict::Stop { reason: "failed" };
    }
    Verdict::Run {
        deadline: s.expires_at.map(|t| t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(phase: Phase, expires: Option<&str>) -> AttachmentState {
        AttachmentState {
            uid: "u1".into(),
            phase,
            expires_at: expires.map(|t| t.parse().expect("ts")),
            deleting: false,
        }
    }

    #[test]
    fn verdicts() {
        let now: jiff::Timestamp = "2026-11-22T15:00:00Z".parse().expect("ts");
        let run = state(Phase::Attached, Some("2026-11-22T16:00:00Z"));
        assert_eq!(
            verdict(Some(&run), "u1", now),
            Verdict::Run {
                deadline: Some("2026-11-22T16:00:00Z".into())
            }
        );
        assert_eq!(
            verdict(None, "u1", now),
            Verdict::Stop { reason: "detached" }
        );
        assert_eq!(
            verdict(Some(&run), "other-uid", now),
            Verdict::Stop { reason: "detached" }
        );
        let gone = AttachmentState {
            deleting: true,
            ..run.clone()
        };
        assert_eq!(
            verdict(Some(&gone), "u1", now),
            Verdict::Stop { reason: "detached" }
        );
        let late = state(Phase::Attached, Some("2026-11-22T14:59:59Z"));
        assert_eq!(
            verdict(Some(&late), "u1", now),
            Verdict::Stop { reason: "expired" }
        );
        assert_eq!(
            verdict(Some(&state(Phase::Expired, None)), "u1", now),
            Verdict::Stop { reason: "expired" }
        );
        assert_eq!(
            verdict(Some(&state(Phase::Failed, None)), "u1", now),
            Verdict::Stop { reason: "failed" }
        );
        assert_eq!(
            verdict(Some(&state(Phase::Pending, None)), "u1", now),
            Verdict::Run { deadline: None }
        );
        let json = serde_json::to_string(&Verdict::Stop { reason: "expired" }).expect("json");
        assert_eq!(json, r#"{"action":"stop","reason":"expired"}"#);
    }
}

//! What one pass concludes, as a pure function of what it found: the phase, the `Ready`
//! condition (reason and the sentence a user reads) and when the next pass runs. Tested
//! here without an API server, the way kube-rs' controller-rs tests its reconcile; the
//! real-API-server tests in tests/attachments.rs cover the I/O around it.
//!
//! Phases: `Expired` once the deadline passed, else `Attached` when any pod is, else
//! `Pending`; `Failed` when the Attachment is refused outright (`checks.rs`); `Detached` is
//! written by `detach.rs`. The next pass runs at the resync, or just after the deadline, or
//! just after the first back-off ends, whichever is first.

use std::collections::BTreeMap;
use std::time::Duration;

use super::checks::Refused;
use super::status::{PodEntry, Readiness};
use crate::reconciler::crd::{Phase, PodState};

/// Reasons of the `Ready` condition a pass writes (refusals use the policy's names).
pub const REASON_EXPIRED: &str = "Expired";
pub const REASON_NO_PODS: &str = "NoPods";
pub const REASON_ALL_ATTACHED: &str = "AllAttached";
pub const REASON_PARTIALLY_ATTACHED: &str = "PartiallyAttached";

/// Past a deadline or a back-off, by this much, so the pass sees it passed.
const AFTER_DEADLINE: Duration = Duration::from_millis(500);
const AFTER_BACKOFF: Duration = Duration::from_millis(100);

/// What a pass found, with the clock already read.
#[derive(Debug, Clone)]
pub struct Pass<'a> {
    /// One entry per selected pod, sorted by pod name.
    pub entries: &'a [PodEntry],
    pub expired: bool,
    /// The deadline as handed to the agent (RFC 3339).
    pub deadline: Option<&'a str>,
    /// Said after the `Ready` message (the ttl was cut to the profile's `maxTtl`).
    pub ttl_note: Option<&'a str>,
    /// Time left until the deadline.
    pub remaining: Option<Duration>,
    /// Time left until the first back-off ends.
    pub retry_in: Option<Duration>,
    /// Why nothing is selected (does the target exist?), when nothing is.
    pub no_pods: Option<&'a str>,
    pub resync: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    pub phase: Phase,
    pub readiness: Readiness,
    pub requeue_after: Duration,
}

pub fn conclude(p: &Pass<'_>) -> Conclusion {
    let attached = p
        .entries
        .iter()
        .filter(|e| e.state == PodState::Attached)
        .count();
    let eligible = p
        .entries
        .iter()
        .filter(|e| e.state != PodState::Skipped)
        .count();
    let phase = if p.expired {
        Phase::Expired
    } else if attached > 0 {
        Phase::Attached
    } else {
        Phase::Pending
    };
    let mut readiness = if p.expired {
        not_ready(
            REASON_EXPIRED,
            format!(
                "the ttl ran out at {}: no pod is attached any more; {attached} pod(s) keep their \
                 Whisperer, which stops itself at that deadline",
                p.deadline.unwrap_or_default()
            ),
        )
    } else if p.entries.is_empty() {
        not_ready(
            REASON_NO_PODS,
            p.no_pods.unwrap_or("no pod is selected").to_string(),
        )
    } else if attached == eligible {
        Readiness {
            ready: true,
            reason: REASON_ALL_ATTACHED.into(),
            message: format!("{attached} of {eligible} pod(s) attached"),
        }
    } else {
        not_ready(
            REASON_PARTIALLY_ATTACHED,
            format!(
                "{attached} of {eligible} pod(s) attached; {}",
                summarize(p.entries)
            ),
        )
    };
    if let Some(note) = p.ttl_note {
        readiness.message.push_str(&format!(" ({note})"));
    }
    let mut next = p.resync;
    if let Some(left) = p.remaining {
        next = next.min(left + AFTER_DEADLINE);
    }
    if let Some(wait) = p.retry_in {
        next = next.min(wait + AFTER_BACKOFF);
    }
    Conclusion {
        phase,
        readiness,
        requeue_after: next,
    }
}

/// A refused Attachment: `Failed`, looked at again at the resync (the config may change).
pub fn conclude_refused(r: &Refused, resync: Duration) -> Conclusion {
    Conclusion {
        phase: Phase::Failed,
        readiness: not_ready(&r.reason, r.message.clone()),
        requeue_after: resync,
    }
}

/// Whether the pass that found "nothing selected" should say why (an API read).
pub fn needs_no_pods_reason(entries: &[PodEntry], expired: bool) -> bool {
    entries.is_empty() && !expired
}

fn not_ready(reason: &str, message: String) -> Readiness {
    Readiness {
        ready: false,
        reason: reason.into(),
        message,
    }
}

/// `2 pending (pod-not-running), 1 refused (PodSecurity)`
fn summarize(entries: &[PodEntry]) -> String {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.state != PodState::Attached && e.state != PodState::Skipped)
    {
        let state = format!("{:?}", e.state).to_lowercase();
        *counts
            .entry((state, e.reason.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((state, reason), n)| format!("{n} {state} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(300);

    fn pass(entries: &[PodEntry]) -> Pass<'_> {
        Pass {
            entries,
            expired: false,
            deadline: Some("2030-01-01T00:00:00Z"),
            ttl_note: None,
            remaining: None,
            retry_in: None,
            no_pods: None,
            resync: RESYNC,
        }
    }

    fn attached(pod: &str) -> PodEntry {
        PodEntry::new(pod, PodState::Attached).container("whisperer-cap", 1)
    }

    #[test]
    fn all_attached_is_ready_and_waits_for_the_resync() {
        let entries = [attached("a"), attached("b")];
        let c = conclude(&pass(&entries));
        assert_eq!(c.phase, Phase::Attached);
        assert!(c.readiness.ready);
        assert_eq!(c.readiness.reason, REASON_ALL_ATTACHED);
        assert_eq!(c.readiness.message, "2 of 2 pod(s) attached");
        assert_eq!(c.requeue_after, RESYNC);
    }

    #[test]
    fn skipped_pods_do_not_count_against_readiness() {
        let entries = [
            attached("a"),
            PodEntry::new("b", PodState::Skipped).reason("already-injected", None),
        ];
        let c = conclude(&pass(&entries));
        assert!(c.readiness.ready);
        assert_eq!(c.readiness.message, "1 of 1 pod(s) attached");
    }

    #[test]
    fn partial_attachment_says_what_is_missing() {
        let entries = [
            PodEntry::new("a", PodState::Pending).reason("pod-not-running", None),
            PodEntry::new("b", PodState::Pending).reason("pod-not-running", None),
            PodEntry::new("c", PodState::Refused).reason("PodSecurity", None),
            attached("d"),
        ];
        let c = conclude(&pass(&entries));
        assert_eq!(c.phase, Phase::Attached);
        assert!(!c.readiness.ready);
        assert_eq!(c.readiness.reason, REASON_PARTIALLY_ATTACHED);
        assert_eq!(
            c.readiness.message,
            "1 of 4 pod(s) attached; 2 pending (pod-not-running), 1 refused (PodSecurity)"
        );
    }

    #[test]
    fn nothing_attached_is_pending() {
        let entries = [PodEntry::new("a", PodState::Failed).reason("host-namespaces", None)];
        let c = conclude(&pass(&entries));
        assert_eq!(c.phase, Phase::Pending);
        assert_eq!(c.readiness.reason, REASON_PARTIALLY_ATTACHED);
    }

    #[test]
    fn no_pods_says_why() {
        let p = Pass {
            no_pods: Some("Deployment \"web\" not found in namespace \"a\""),
            ..pass(&[])
        };
        let c = conclude(&p);
        assert_eq!(
            (c.phase, c.readiness.reason.as_str()),
            (Phase::Pending, REASON_NO_PODS)
        );
        assert!(c.readiness.message.contains("not found"));
        assert!(needs_no_pods_reason(&[], false));
        assert!(!needs_no_pods_reason(&[], true));
        assert!(!needs_no_pods_reason(&[attached("a")], false));
    }

    #[test]
    fn expiry_wins_and_keeps_the_attached_count() {
        let entries = [
            attached("a"),
            PodEntry::new("b", PodState::Skipped).reason("expired", None),
        ];
        let p = Pass {
            expired: true,
            ..pass(&entries)
        };
        let c = conclude(&p);
        assert_eq!(c.phase, Phase::Expired);
        assert!(!c.readiness.ready);
        assert_eq!(c.readiness.reason, REASON_EXPIRED);
        assert!(c
            .readiness
            .message
            .starts_with("the ttl ran out at 2030-01-01T00:00:00Z"));
        assert!(c
            .readiness
            .message
            .contains("1 pod(s) keep their Whisperer"));
    }

    #[test]
    fn the_ttl_note_is_appended() {
        let entries = [attached("a")];
        let p = Pass {
            ttl_note: Some("ttl 2h shortened to the maxTtl 1h of profile \"default\""),
            ..pass(&entries)
        };
        assert!(conclude(&p)
            .readiness
            .message
            .ends_with("of profile \"default\")"));
    }

    #[test]
    fn the_next_pass_comes_at_the_first_of_resync_deadline_and_backoff() {
        let entries = [attached("a")];
        let deadline_first = Pass {
            remaining: Some(Duration::from_secs(10)),
            retry_in: Some(Duration::from_secs(60)),
            ..pass(&entries)
        };
        assert_eq!(
            conclude(&deadline_first).requeue_after,
            Duration::from_millis(10_500)
        );
        let backoff_first = Pass {
            remaining: Some(Duration::from_secs(600)),
            retry_in: Some(Duration::from_secs(4)),
            ..pass(&entries)
        };
        assert_eq!(
            conclude(&backoff_first).requeue_after,
            Duration::from_millis(4_100)
        );
        let far = Pass {
            remaining: Some(Duration::from_secs(3600)),
            ..pass(&entries)
        };
        assert_eq!(conclude(&far).requeue_after, RESYNC);
    }

    #[test]
    fn a_refusal_fails_and_looks_again_at_the_resync() {
        let r = Refused {
            reason: "UnknownProfile".into(),
            message: "profile \"nope\" is not configured".into(),
        };
        let c = conclude_refused(&r, RESYNC);
        assert_eq!(c.phase, Phase::Failed);
        assert!(!c.readiness.ready);
        assert_eq!(c.readiness.reason, "UnknownProfile");
        assert_eq!(c.requeue_after, RESYNC);
    }
}

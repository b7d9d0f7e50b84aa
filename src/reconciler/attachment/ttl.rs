//! How an Attachment's time to live works. The deadline is `creationTimestamp + min(ttl,
//! profile maxTtl)` (no ttl: the profile's `maxTtl`; neither: none), in whole seconds. The
//! engine reads no clock: this file turns the deadline into an RFC 3339 text for the agent
//! (`WHISPERER_DEADLINE`, so it stops itself) and an `expired` flag for the engine (no new
//! attachments). The pass after the deadline is scheduled by `conclusion.rs` (via
//! [`Deadline::remaining`]); it sets phase `Expired`. Whisperers already attached keep
//! running until their own deadline: ephemeral containers cannot be removed.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::config::Profile;
use crate::reconciler::crd::Attachment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// `None`: no TTL and no profile cap, never expires.
    pub at: Option<Timestamp>,
    /// Said in the Ready condition when the TTL was shortened to the profile's cap.
    pub note: Option<String>,
}

impl Deadline {
    pub fn expired(&self, now: Timestamp) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// Time left, if any.
    pub fn remaining(&self, now: Timestamp) -> Option<Duration> {
        let at = self.at?;
        let left = at.duration_since(now);
        (left > SignedDuration::ZERO).then(|| left.unsigned_abs())
    }

    /// RFC 3339 with second precision, as handed to the agent.
    pub fn rfc3339(&self) -> Option<String> {
        self.at.map(|t| t.to_string())
    }
}

/// `ttl` as written in the spec (`30m`, `1h30m`, `2d`).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("ttl {text:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("ttl {text:?} must be above zero"));
    }
    Ok(d)
}

/// The deadline of an Attachment created at `created`.
pub fn deadline(
    created: Timestamp,
    ttl: Option<&str>,
    max_ttl: Option<Duration>,
    profile: &str,
) -> Result<Deadline, String> {
    let asked = ttl.map(parse_ttl).transpose()?;
    let (ttl, note) = match (asked, max_ttl) {
        (Some(a), Some(m)) if a > m => (
            Some(m),
            Some(format!(
                "ttl {} shortened to the maxTtl {} of profile {profile:?}",
                humantime::format_duration(a),
                humantime::format_duration(m)
            )),
        ),
        (Some(a), _) => (Some(a), None),
        (None, m) => (m, None),
    };
    let at = match ttl {
        None => None,
        Some(d) => {
            let d = SignedDuration::try_from(d).map_err(|e| format!("ttl too long: {e}"))?;
            // Whole seconds: the status and the agent's env then agree exactly.
            let at = created
                .checked_add(d)
                .map_err(|e| format!("ttl too long: {e}"))?;
            Some(Timestamp::from_second(at.as_second()).map_err(|e| e.to_string())?)
        }
    };
    Ok(Deadline { at, note })
}

/// The deadline of `att` under `profile` (an invalid ttl is an error for the spec).
pub fn deadline_of(
    att: &Attachment,
    profile_name: &str,
    profile: &Profile,
) -> Result<Deadline, String> {
    let created = att
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    deadline(
        created,
        att.spec.ttl.as_deref(),
        profile.max_ttl,
        profile_name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("timestamp")
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn capped_by_profile() {
        let d = deadline(
            t(1000),
            Some("2h"),
            Some(Duration::from_secs(3600)),
            "default",
        )
        .expect("deadline");
        assert_eq!(d.at, Some(t(4600)));
        assert!(d.note.as_deref().is_some_and(|n| n.contains("maxTtl")));
        let d = deadline(t(1000), None, Some(Duration::from_secs(60)), "p").expect("deadline");
        assert_eq!(d.at, Some(t(1060)));
        assert!(d.note.is_none());
        let never = deadline(t(1000), None, None, "p").expect("deadline");
        assert!(!never.expired(t(i64::from(i32::MAX))));
        assert!(d.expired(t(1060)) && !d.expired(t(1059)));
        assert_eq!(d.remaining(t(1050)), Some(Duration::from_secs(10)));
        assert_eq!(d.rfc3339().as_deref(), Some("1970-01-01T00:17:40Z"));
    }
}

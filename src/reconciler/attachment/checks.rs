//! Why an Attachment cannot work at all, checked before any pod is looked at: the namespace
//! and profile policy (`engine::policy`, the same rules as the webhook), the reserved name,
//! the target/selector, and the ttl. A refusal makes the phase `Failed` with the reason and
//! sentence of the `Ready` condition (see `conclusion.rs`); the next resync looks again, as
//! the config may change.

use super::selection::Matcher;
use super::ttl::{deadline_of, Deadline};
use crate::engine::policy::resolve_profile;
use crate::engine::Settings;
use crate::reconciler::backstop::BACKSTOP_IDENTITY;
use crate::reconciler::crd::Attachment;

/// An Attachment that may run: its profile and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub profile: String,
    pub deadline: Deadline,
}

/// The `Ready` condition's reason and message for a refused Attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    pub message: String,
}

fn invalid(message: String) -> Refused {
    Refused {
        reason: "InvalidSpec".into(),
        message,
    }
}

pub fn check(att: &Attachment, ns: &str, settings: &Settings) -> Result<Accepted, Refused> {
    let (profile_name, profile) = resolve_profile(settings, ns, att.spec.profile.as_deref())
        .map_err(|r| Refused {
            reason: r.reason.condition_reason(),
            message: r.message,
        })?;
    if att.metadata.name.as_deref() == Some(BACKSTOP_IDENTITY) {
        return Err(invalid(
            "the name \"backstop\" is reserved for the backstop's Whisperers".into(),
        ));
    }
    if let Matcher::Nothing(why) = Matcher::of(att) {
        return Err(invalid(why));
    }
    let deadline = deadline_of(att, profile_name, profile).map_err(invalid)?;
    Ok(Accepted {
        profile: profile_name.to_string(),
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::reconciler::crd::{AttachmentSpec, TargetKind, TargetRef};

    fn attachment(name: &str, ttl: Option<&str>, profile: Option<&str>) -> Attachment {
        let mut a = Attachment::new(
            name,
            AttachmentSpec {
                target: Some(TargetRef {
                    kind: TargetKind::Deployment,
                    name: "web".into(),
                }),
                selector: None,
                profile: profile.map(str::to_string),
                container: None,
                ttl: ttl.map(str::to_string),
            },
        );
        a.metadata.namespace = Some("team-a".into());
        a
    }

    #[test]
    fn refusals_name_their_reason() {
        let s = Settings::new(Arc::new(Config::default()), "whisperer-system");
        let ok = check(&attachment("cap", Some("30m"), None), "team-a", &s).expect("accepted");
        assert_eq!(ok.profile, "default");
        assert!(ok.deadline.at.is_some());
        let refused = |a: &Attachment, ns: &str| check(a, ns, &s).expect_err("refused").reason;
        assert_eq!(
            refused(&attachment("backstop", None, None), "team-a"),
            "InvalidSpec"
        );
        assert_eq!(
            refused(&attachment("cap", Some("soon"), None), "team-a"),
            "InvalidSpec"
        );
        assert_eq!(
            refused(&attachment("cap", None, Some("nope")), "team-a"),
            "UnknownProfile"
        );
        assert_eq!(
            refused(&attachment("cap", None, None), "kube-system"),
            "NamespaceDenied"
        );
    }
}

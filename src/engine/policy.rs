//! Who may be captured: the one policy every front-end (webhook, Attachments, backstop) asks,
//! so a rule and its refusal text exist once.
//!
//! Two questions, asked in this order:
//! 1. [`resolve_profile`]: may this namespace get Whisperers at all, and does the requested
//!    profile exist and apply here? Needs no pod (an Attachment is refused before its pods
//!    are looked at).
//! 2. [`check_pod`]: may this particular pod be captured with that profile (host namespaces,
//!    opt-out)?
//!
//! Refusal messages never name other profiles: a made-up admission review must not learn
//! what else is configured.

use super::{PodFacts, Settings, SkipReason, ANNOTATION_INJECT};
use crate::config::{NamespaceDenial, Profile};

/// Which front-end asks. The webhook and the backstop act for pods that opted in; an
/// Attachment acts for someone else (the Attachment's creator) on pods that may not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Webhook,
    Attachment,
    Backstop,
}

/// A rule said no: the typed reason (metric label, audit annotation, status) and the text a
/// user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: SkipReason,
    pub message: String,
}

fn refusal(reason: SkipReason, message: String) -> Refusal {
    Refusal { reason, message }
}

fn namespace_text(ns: &str, why: NamespaceDenial) -> String {
    let why = match why {
        NamespaceDenial::System => "it is a system namespace",
        NamespaceDenial::InjectorOwn => "it is the injector's own namespace",
        NamespaceDenial::Denied => "it is in the deny list of the injector's namespace policy",
        NamespaceDenial::NotAllowed => {
            "it is not in the allow list of the injector's namespace policy"
        }
    };
    format!("namespace {ns:?} may not get Whisperers: {why}")
}

/// The profile to use in `namespace`: the requested one, else the configured default.
pub fn resolve_profile<'s>(
    settings: &'s Settings,
    namespace: &str,
    requested: Option<&str>,
) -> Result<(&'s str, &'s Profile), Refusal> {
    settings
        .namespaces
        .check(namespace)
        .map_err(|why| refusal(SkipReason::NamespaceDenied, namespace_text(namespace, why)))?;
    let cfg = &settings.config;
    let name = requested.unwrap_or(&cfg.default_profile);
    // The map's own key: the name outlives the pod it was requested by.
    let Some((name, profile)) = cfg.profiles.get_key_value(name) else {
        return Err(refusal(
            SkipReason::UnknownProfile,
            format!("profile {name:?} is not configured"),
        ));
    };
    if !profile.allowed_namespaces.is_empty()
        && !profile.allowed_namespaces.iter().any(|n| n == namespace)
    {
        return Err(refusal(
            SkipReason::ProfileNotAllowed,
            format!("profile {name:?} may not be used in namespace {namespace:?}"),
        ));
    }
    Ok((name.as_str(), profile))
}

/// Host namespaces the pod shares with its node, in the order the pod spec names them.
pub fn host_namespaces(pod: &impl PodFacts) -> Vec<&'static str> {
    pod.host_namespaces().names()
}

/// Whether `pod` may be captured with `profile` by `front`.
pub fn check_pod(
    pod: &impl PodFacts,
    profile_name: &str,
    profile: &Profile,
    front: Front,
) -> Result<(), Refusal> {
    let shared = host_namespaces(pod);
    // A capture agent in a host-network pod records the node's traffic, not a workload's.
    if !shared.is_empty() && !profile.allow_host_namespaces {
        return Err(refusal(
            SkipReason::HostNamespaces,
            format!(
                "the pod shares the node's {} and profile {profile_name:?} does not set \
                 allowHostNamespaces",
                shared.join(", ")
            ),
        ));
    }
    let opted_out = pod.annotation(ANNOTATION_INJECT) == Some("false");
    if front == Front::Attachment && opted_out && !profile.attach_to_opted_out {
        return Err(refusal(
            SkipReason::OptedOut,
            format!(
                "the pod is annotated {ANNOTATION_INJECT}: \"false\" and profile \
                 {profile_name:?} does not set attachToOptedOut"
            ),
        ));
    }
    Ok(())
}

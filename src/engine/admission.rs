//! The webhook's question: should this admission request's pod get the sidecar?

use k8s_openapi::api::core::v1::Pod;

use super::{
    plan, Decision, Settings, SkipReason, ANNOTATION_INJECT, ANNOTATION_INJECTED,
    ANNOTATION_PROFILE,
};

/// The parts of an `AdmissionRequest` the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSubject<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub sub_resource: Option<&'a str>,
    /// `request.namespace`: on CREATE the pod's own metadata may not carry it yet.
    pub namespace: &'a str,
    /// `None` when the object is not a pod (or absent).
    pub pod: Option<&'a Pod>,
}

fn annotation<'p>(pod: &'p Pod, key: &str) -> Option<&'p str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub fn decide_admission(subject: &AdmissionSubject<'_>, settings: &Settings) -> Decision {
    let is_pod = subject.group.is_empty()
        && subject.version == "v1"
        && subject.kind == "Pod"
        && subject.sub_resource.is_none_or(str::is_empty);
    if !is_pod {
        return Decision::skip(SkipReason::NotAPod);
    }
    if subject.operation != "CREATE" {
        return Decision::skip(SkipReason::NotCreate);
    }
    let Some(pod) = subject.pod else {
        return Decision::skip(SkipReason::NotAPod);
    };
    if let Err(why) = settings.namespaces.check(subject.namespace) {
        return Decision::problem(
            SkipReason::NamespaceDenied,
            format!("namespace {:?} is denied ({why:?})", subject.namespace),
        );
    }
    match annotation(pod, ANNOTATION_INJECT) {
        Some("true") => {}
        Some("false") => return Decision::skip(SkipReason::OptedOut),
        None if settings.inject_by_default => {}
        None => return Decision::skip(SkipReason::NotRequested),
        Some(other) => {
            return Decision::problem(
                SkipReason::NotRequested,
                format!(
                    "annotation {ANNOTATION_INJECT}={other:?} is neither \"true\" nor \"false\""
                ),
            )
        }
    }
    if annotation(pod, ANNOTATION_INJECTED).is_some() {
        return Decision::skip(SkipReason::AlreadyInjected);
    }
    let cfg = &settings.config;
    let profile_name = annotation(pod, ANNOTATION_PROFILE).unwrap_or(&cfg.default_profile);
    let Some(profile) = cfg.profiles.get(profile_name) else {
        return Decision::problem(
            SkipReason::UnknownProfile,
            format!(
                "profile {profile_name:?} is not configured; known: {:?}",
                cfg.profiles.keys().collect::<Vec<_>>()
            ),
        );
    };
    if !profile.allowed_namespaces.is_empty()
        && !profile
            .allowed_namespaces
            .iter()
            .any(|n| n == subject.namespace)
    {
        return Decision::problem(
            SkipReason::ProfileNotAllowed,
            format!(
                "profile {profile_name:?} may not be used in namespace {:?}",
                subject.namespace
            ),
        );
    }
    plan::sidecar(pod, profile_name, profile, settings.dns_server.as_deref())
}

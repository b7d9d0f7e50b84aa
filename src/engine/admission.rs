//! The webhook's question: should this admission request's pod get the sidecar?

use k8s_openapi::api::core::v1::Pod;

use super::pod_security::{self, Level};
use super::policy::{check_pod, resolve_profile, Front};
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
    /// The namespace's Pod Security `enforce` level, when known (see
    /// [`pod_security::LABEL_ENFORCE`]); `None` judges nothing.
    pub pod_security: Option<Level>,
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
    let requested = annotation(pod, ANNOTATION_PROFILE);
    let (profile_name, profile) = match resolve_profile(settings, subject.namespace, requested)
        .and_then(|(name, p)| check_pod(pod, name, p, Front::Webhook).map(|()| (name, p)))
    {
        Ok(found) => found,
        Err(r) => return Decision::problem(r.reason, r.message),
    };
    let decision = plan::sidecar(pod, profile_name, profile, settings);
    match (&decision, subject.pod_security) {
        (Decision::Inject(plan), Some(level)) => {
            let broken = pod_security::violations(
                &plan.container,
                &plan.volumes,
                pod.spec.as_ref().and_then(|s| s.security_context.as_ref()),
                level,
            );
            if broken.is_empty() {
                decision
            } else {
                Decision::problem(
                    SkipReason::PodSecurity,
                    format!(
                        "namespace {:?} enforces Pod Security level {:?}, which profile {profile_name:?} breaks: {}",
                        subject.namespace,
                        level.as_str(),
                        broken.join("; ")
                    ),
                )
            }
        }
        _ => decision,
    }
}

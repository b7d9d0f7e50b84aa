//! The webhook's question: should this admission request's pod get the sidecar?

use k8s_openapi::api::core::v1::Pod;

use super::pod_security::{self, Level};
use super::policy::{check_pod, resolve_profile, Front};
use super::trace::{Rule, Trace};
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
    decide_admission_traced(subject, settings, &mut ())
}

/// [`decide_admission`], telling `trace` each rule it checked and what it found.
pub fn decide_admission_traced(
    subject: &AdmissionSubject<'_>,
    settings: &Settings,
    trace: &mut impl Trace,
) -> Decision {
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
    let opt_in = annotation(pod, ANNOTATION_INJECT);
    let refused = match opt_in {
        Some("true") => None,
        Some("false") => Some(Decision::skip(SkipReason::OptedOut)),
        None if settings.inject_by_default => None,
        None => Some(Decision::skip(SkipReason::NotRequested)),
        Some(other) => Some(Decision::problem(
            SkipReason::NotRequested,
            format!("annotation {ANNOTATION_INJECT}={other:?} is neither \"true\" nor \"false\""),
        )),
    };
    trace.step(Rule::OptIn, refused.is_none(), || match opt_in {
        Some(v) => format!("{ANNOTATION_INJECT}={v:?}"),
        None if settings.inject_by_default => {
            format!("no {ANNOTATION_INJECT} annotation; the injector injects by default")
        }
        None => format!("no {ANNOTATION_INJECT} annotation (set it to \"true\" to opt in)"),
    });
    if let Some(d) = refused {
        return d;
    }
    let marker = annotation(pod, ANNOTATION_INJECTED);
    trace.step(Rule::Marker, marker.is_none(), || match marker {
        Some(m) => format!("already injected ({m}); a pod is never injected twice"),
        None => "not injected yet".into(),
    });
    if marker.is_some() {
        return Decision::skip(SkipReason::AlreadyInjected);
    }
    let requested = annotation(pod, ANNOTATION_PROFILE);
    let (profile_name, profile) = match resolve_profile(settings, subject.namespace, requested) {
        Ok(found) => found,
        Err(r) => {
            trace.step(Rule::Profile, false, || r.message.clone());
            return Decision::problem(r.reason, r.message);
        }
    };
    trace.step(Rule::Profile, true, || {
        format!(
            "namespace {:?} allowed; profile {profile_name:?}{}",
            subject.namespace,
            if requested.is_some() {
                ""
            } else {
                " (the default)"
            }
        )
    });
    if let Err(r) = check_pod(pod, profile_name, profile, Front::Webhook) {
        trace.step(Rule::PodPolicy, false, || r.message.clone());
        return Decision::problem(r.reason, r.message);
    }
    trace.step(Rule::PodPolicy, true, || "no host namespaces".into());
    let decision = plan::sidecar(pod, profile_name, profile, settings);
    let Decision::Inject(plan) = &decision else {
        if let Decision::Skip { reason, detail } = &decision {
            trace.step(Rule::Plan, false, || {
                detail.clone().unwrap_or_else(|| reason.to_string())
            });
        }
        return decision;
    };
    trace.step(Rule::Plan, true, || {
        format!(
            "{:?} {:?}, marker {}",
            plan.placement, plan.container.name, plan.marker
        )
    });
    let Some(level) = subject.pod_security else {
        trace.step(Rule::PodSecurity, true, || "no enforce level known".into());
        return decision;
    };
    let broken = pod_security::violations(
        &plan.container,
        &plan.volumes,
        pod.spec.as_ref().and_then(|s| s.security_context.as_ref()),
        level,
    );
    trace.step(Rule::PodSecurity, broken.is_empty(), || {
        if broken.is_empty() {
            format!("the Whisperer meets {:?}", level.as_str())
        } else {
            format!("{:?} forbids: {}", level.as_str(), broken.join("; "))
        }
    });
    if broken.is_empty() {
        return decision;
    }
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

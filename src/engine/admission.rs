//! The webhook's question: should this admission request's pod get the sidecar?

use k8s_openapi::api::core::v1::Pod;

use super::overrides;
use super::plan::{self, SidecarChoice};
use super::pod_security::{self, Level};
use super::policy::{check_pod, resolve_profile, Front};
use super::trace::{Rule, Trace};
use super::{
    Decision, PodFacts, Settings, SkipReason, ANNOTATION_INJECT, ANNOTATION_INJECTED,
    ANNOTATION_PROFILE,
};
use crate::config::Profile;

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

pub fn decide_admission(subject: &AdmissionSubject<'_>, settings: &Settings) -> Decision {
    decide_admission_traced(subject, settings, &mut ())
}

/// What [`decide_admission_planned`] answers: a [`Decision`], or an injection that needs
/// nothing but the profile's base container (no override annotation, no Pod Security level
/// to judge it against), which the caller renders from what it prepared per config load.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned<'s> {
    Decided(Decision),
    Base {
        profile_name: &'s str,
        profile: &'s Profile,
        choice: SidecarChoice,
    },
}

/// [`decide_admission`], stopping short of building the plan when the plan would be the
/// profile's base one: the same rules in the same order, so the same skips.
pub fn decide_admission_planned<'s>(
    subject: &AdmissionSubject<'_>,
    settings: &'s Settings,
) -> Planned<'s> {
    match admitted_pod(subject) {
        Ok(pod) => decide_inner(
            pod,
            subject.namespace,
            subject.pod_security,
            settings,
            &mut (),
            true,
        ),
        Err(skip) => Planned::Decided(skip),
    }
}

/// The pod of a CREATE of a v1 Pod, or the skip for anything else.
fn admitted_pod<'p>(subject: &AdmissionSubject<'p>) -> Result<&'p Pod, Decision> {
    let is_pod = subject.group.is_empty()
        && subject.version == "v1"
        && subject.kind == "Pod"
        && subject.sub_resource.is_none_or(str::is_empty);
    if !is_pod {
        return Err(Decision::skip(SkipReason::NotAPod));
    }
    if subject.operation != "CREATE" {
        return Err(Decision::skip(SkipReason::NotCreate));
    }
    subject.pod.ok_or(Decision::skip(SkipReason::NotAPod))
}

/// [`decide_admission`], telling `trace` each rule it checked and what it found.
pub fn decide_admission_traced(
    subject: &AdmissionSubject<'_>,
    settings: &Settings,
    trace: &mut impl Trace,
) -> Decision {
    let pod = match admitted_pod(subject) {
        Ok(pod) => pod,
        Err(skip) => return skip,
    };
    decide_sidecar_traced(
        pod,
        subject.namespace,
        subject.pod_security,
        settings,
        trace,
    )
}

/// The webhook's question about a pod that is a CREATE of a v1 Pod: does it get the sidecar?
/// The backstop asks the same of pods already admitted (its cache entries), to find those the
/// webhook missed.
pub fn decide_sidecar(
    pod: &impl PodFacts,
    namespace: &str,
    pod_security: Option<Level>,
    settings: &Settings,
) -> Decision {
    decide_sidecar_traced(pod, namespace, pod_security, settings, &mut ())
}

/// [`decide_sidecar`], telling `trace` each rule it checked and what it found.
pub fn decide_sidecar_traced(
    pod: &impl PodFacts,
    namespace: &str,
    pod_security: Option<Level>,
    settings: &Settings,
    trace: &mut impl Trace,
) -> Decision {
    match decide_inner(pod, namespace, pod_security, settings, trace, false) {
        Planned::Decided(d) => d,
        // Only asked for with `base`.
        Planned::Base {
            profile_name,
            profile,
            ..
        } => plan::sidecar(pod, profile_name, profile, settings),
    }
}

/// The rules, in order; with `base`, an injection without per-pod changes stops at the
/// choice of placement.
fn decide_inner<'s>(
    pod: &impl PodFacts,
    namespace: &str,
    pod_security: Option<Level>,
    settings: &'s Settings,
    trace: &mut impl Trace,
    base: bool,
) -> Planned<'s> {
    let opt_in = pod.annotation(ANNOTATION_INJECT);
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
        return Planned::Decided(d);
    }
    let marker = pod.annotation(ANNOTATION_INJECTED);
    trace.step(Rule::Marker, marker.is_none(), || match marker {
        Some(m) => format!("already injected ({m}); a pod is never injected twice"),
        None => "not injected yet".into(),
    });
    if marker.is_some() {
        return Planned::Decided(Decision::skip(SkipReason::AlreadyInjected));
    }
    let requested = pod.annotation(ANNOTATION_PROFILE);
    let (profile_name, profile) = match resolve_profile(settings, namespace, requested) {
        Ok(found) => found,
        Err(r) => {
            trace.step(Rule::Profile, false, || r.message.clone());
            return Planned::Decided(Decision::problem(r.reason, r.message));
        }
    };
    trace.step(Rule::Profile, true, || {
        format!(
            "namespace {:?} allowed; profile {profile_name:?}{}",
            namespace,
            if requested.is_some() {
                ""
            } else {
                " (the default)"
            }
        )
    });
    if let Err(r) = check_pod(pod, profile_name, profile, Front::Webhook) {
        trace.step(Rule::PodPolicy, false, || r.message.clone());
        return Planned::Decided(Decision::problem(r.reason, r.message));
    }
    trace.step(Rule::PodPolicy, true, || "no host namespaces".into());
    if base && pod_security.is_none() && !overrides::requested(|k| pod.annotation(k)) {
        return match plan::choose_sidecar(pod, profile_name, profile, settings) {
            Ok(choice) => Planned::Base {
                profile_name,
                profile,
                choice,
            },
            Err(refused) => Planned::Decided(refused),
        };
    }
    let decision = plan::sidecar(pod, profile_name, profile, settings);
    let Decision::Inject(plan) = &decision else {
        if let Decision::Skip { reason, detail } = &decision {
            trace.step(Rule::Plan, false, || {
                detail.clone().unwrap_or_else(|| reason.to_string())
            });
        }
        return Planned::Decided(decision);
    };
    trace.step(Rule::Plan, true, || {
        format!(
            "{:?} {:?}, marker {}",
            plan.placement, plan.container.name, plan.marker
        )
    });
    let Some(level) = pod_security else {
        trace.step(Rule::PodSecurity, true, || "no enforce level known".into());
        return Planned::Decided(decision);
    };
    let broken = pod_security::violations(
        &plan.container,
        &plan.volumes,
        pod.security_context(),
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
        return Planned::Decided(decision);
    }
    Planned::Decided(Decision::problem(
        SkipReason::PodSecurity,
        format!(
            "namespace {:?} enforces Pod Security level {:?}, which profile {profile_name:?} breaks: {}",
            namespace,
            level.as_str(),
            broken.join("; ")
        ),
    ))
}

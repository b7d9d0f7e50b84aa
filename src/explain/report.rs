//! PURE: the explanation of one pod from facts already read. The injection rules are the
//! engine's own ([`decide_sidecar_traced`]); this file adds what lies outside the engine
//! (the webhook registration and its namespace selector, Attachments, the backstop) and the
//! one command that fixes the first failed rule.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;

use crate::engine::pod_security::{Level, LABEL_ENFORCE};
use crate::engine::stale::{freshness, Freshness};
use crate::engine::trace::{Rule, Step};
use crate::engine::{
    decide_sidecar_traced, Decision, Settings, SkipReason, ANNOTATION_INJECT, ANNOTATION_INJECTED,
};

/// Label the shipped webhook's namespaceSelector requires.
pub const NAMESPACE_LABEL: (&str, &str) = ("injection", "enabled");

/// The webhook registration as the user's credentials could read it.
#[derive(Debug, Clone)]
pub enum Webhook {
    /// The pod webhook's namespace selector.
    Registered(Option<LabelSelector>),
    Missing,
    /// Reading it failed (often RBAC): said, and the shipped selector is assumed.
    Unreadable(String),
}

/// An Attachment in the pod's namespace and what its status says about this pod.
#[derive(Debug, Clone)]
pub struct AttachmentView {
    pub name: String,
    /// (state, reason, message) of the pod's entry, if the Attachment lists the pod.
    pub entry: Option<(String, Option<String>, Option<String>)>,
}

/// Everything explain reads about one pod.
#[derive(Debug, Clone)]
pub struct Facts {
    pub pod: Pod,
    /// How the user named it: `pod/web-0`, `deployment/web (template)`, `file.yaml: Pod x`.
    pub subject: String,
    /// A pod that exists (markers and Attachments apply), not a template or a file.
    pub live: bool,
    /// For the fix: `deployment/web` when the pod comes from a workload.
    pub workload: Option<String>,
    pub namespace: String,
    pub namespace_labels: BTreeMap<String, String>,
    pub webhook: Webhook,
    pub attachments: Vec<AttachmentView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub subject: String,
    pub namespace: String,
    pub checks: Vec<Check>,
    /// One line: injected, would be injected, or why not.
    pub verdict: String,
    /// The one command that fixes the first failed rule.
    pub fix: Option<String>,
    /// Informational lines: Attachments, the backstop's view.
    pub notes: Vec<String>,
}

/// Whether `labels` satisfy a Kubernetes label selector.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn check(rule: &str, passed: bool, detail: String) -> Check {
    Check {
        rule: rule.into(),
        passed,
        detail,
    }
}

fn marker_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_INJECTED)
        .map(String::as_str)
}

/// How to change the pod's opt-in: on its workload's template when it has one (the webhook
/// acts at pod CREATE), else on the pod's manifest.
fn annotate_command(f: &Facts, key: &str, value: &str) -> String {
    match &f.workload {
        Some(w) => format!(
            "kubectl -n {} patch {w} --type merge -p '{{\"spec\":{{\"template\":{{\"metadata\":{{\"annotations\":{{\"{key}\":\"{value}\"}}}}}}}}}}'",
            f.namespace
        ),
        None => format!(
            "add the annotation {key}: \"{value}\" to the pod's manifest and create it again"
        ),
    }
}

fn fix_for(rule: Rule, reason: Option<SkipReason>, f: &Facts) -> Option<String> {
    Some(match (rule, reason) {
        (Rule::OptIn, Some(SkipReason::OptedOut)) => annotate_command(f, ANNOTATION_INJECT, "true"),
        (Rule::OptIn, _) => annotate_command(f, ANNOTATION_INJECT, "true"),
        (Rule::Marker, _) => return None,
        (Rule::Profile, Some(SkipReason::NamespaceDenied)) => {
            "the injector never touches this namespace: move the workload, or change \
             namespaces.allow/deny in the injector's config"
                .into()
        }
        (Rule::Profile, _) => {
            "name a configured profile in whisperer.dev/profile (ask the platform team which), \
             or add the namespace to the profile's allowedNamespaces"
                .into()
        }
        (Rule::PodPolicy, _) => {
            "host-namespace pods expose the node's traffic: only a profile with \
             allowHostNamespaces: true may capture them"
                .into()
        }
        (Rule::Plan, _) => {
            "rename the pod's conflicting container or volume, or fix the whisperer.dev/* override \
             annotation named above"
                .into()
        }
        (Rule::PodSecurity, _) => format!(
            "kubectl label namespace {} {LABEL_ENFORCE}=privileged --overwrite   # only if capture outweighs the level",
            f.namespace
        ),
    })
}

fn reason_of(d: &Decision) -> Option<SkipReason> {
    match d {
        Decision::Skip { reason, .. } => Some(*reason),
        Decision::Inject(_) => None,
    }
}

pub fn explain(f: &Facts, settings: &Settings) -> Report {
    let mut checks = Vec::new();
    let mut fix = None;
    let mut notes = Vec::new();

    let (selector, webhook_ok) = match &f.webhook {
        Webhook::Registered(sel) => {
            checks.push(check(
                "webhook registered",
                true,
                "MutatingWebhookConfiguration whisperer-injector exists".into(),
            ));
            (sel.clone(), true)
        }
        Webhook::Missing => {
            checks.push(check(
                "webhook registered",
                false,
                "no MutatingWebhookConfiguration whisperer-injector: pods are never sent to the injector".into(),
            ));
            fix =
                Some("kubectl apply -k manifests   # installs the injector and its webhook".into());
            (None, false)
        }
        Webhook::Unreadable(why) => {
            checks.push(check(
                "webhook registered",
                true,
                format!(
                    "cannot read it with your credentials ({why}); assuming the shipped selector"
                ),
            ));
            (None, true)
        }
    };
    let mut labels = f.namespace_labels.clone();
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| f.namespace.clone());
    let selected = match &selector {
        Some(sel) => selector_matches(sel, &labels),
        None => labels.get(NAMESPACE_LABEL.0).map(String::as_str) == Some(NAMESPACE_LABEL.1),
    };
    checks.push(check(
        "namespace selector",
        selected,
        if selected {
            format!("namespace {:?} is labelled {}={}", f.namespace, NAMESPACE_LABEL.0, NAMESPACE_LABEL.1)
        } else {
            format!(
                "namespace {:?} is not selected by the webhook (label {}={} missing, or a system namespace)",
                f.namespace, NAMESPACE_LABEL.0, NAMESPACE_LABEL.1
            )
        },
    ));
    if !selected && fix.is_none() {
        fix = Some(format!(
            "kubectl label namespace {} {}={}",
            f.namespace, NAMESPACE_LABEL.0, NAMESPACE_LABEL.1
        ));
    }

    let level = f
        .namespace_labels
        .get(LABEL_ENFORCE)
        .map(|v| Level::from_label(v));
    let mut steps: Vec<Step> = Vec::new();
    // The webhook's question for this pod, asked directly: no admission request is made up.
    let decision = decide_sidecar_traced(&f.pod, &f.namespace, level, settings, &mut steps);
    for s in &steps {
        // For a pod that exists, carrying the marker is the good outcome, not a failure.
        let passed = s.passed || (f.live && s.rule == Rule::Marker);
        checks.push(check(s.rule.as_str(), passed, s.detail.clone()));
    }
    if let Some(failed) = steps
        .iter()
        .find(|s| !(s.passed || f.live && s.rule == Rule::Marker))
    {
        if fix.is_none() {
            fix = fix_for(failed.rule, reason_of(&decision), f);
        }
    }

    // A live pod carrying the marker: is what it runs what the profile gives today?
    let marker = marker_of(&f.pod);
    let mut stale = false;
    if f.live {
        match freshness(&f.pod, &f.namespace, settings) {
            Freshness::NotInjected => {}
            Freshness::Current => checks.push(check(
                "agent up to date",
                true,
                "matches the current profile".into(),
            )),
            Freshness::Outdated {
                old,
                new: Some(new),
            } => {
                stale = true;
                checks.push(check(
                    "agent up to date",
                    false,
                    format!("injected {old}; the profile now gives {new}"),
                ));
                fix = Some(match &f.workload {
                    Some(w) => format!("kubectl -n {} rollout restart {w}", f.namespace),
                    None => "delete and re-create the pod to get the current Whisperer".into(),
                });
            }
            Freshness::Outdated { new: None, .. } => checks.push(check(
                "agent up to date",
                false,
                "the current config would not inject it at all".into(),
            )),
        }
    }

    for a in &f.attachments {
        notes.push(match &a.entry {
            Some((state, reason, message)) => format!(
                "Attachment {}: {state}{}{}",
                a.name,
                reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            None => format!("Attachment {}: does not list this pod", a.name),
        });
    }
    let would_inject = matches!(decision, Decision::Inject(_)) && selected && webhook_ok;
    if f.live && marker.is_none() && would_inject {
        notes.push(
            "backstop: the pod opted in but carries no marker (created while the webhook was \
             down?); the backstop reports it, and attaches it with --backstop-attach"
                .into(),
        );
        if fix.is_none() {
            fix = Some(match &f.workload {
                Some(w) => format!("kubectl -n {} rollout restart {w}", f.namespace),
                None => "re-create the pod, or attach it at runtime with an Attachment".into(),
            });
        }
    }

    let verdict = match (&decision, marker) {
        (_, Some(m)) if f.live && !stale => format!("injected ({m})"),
        (_, Some(m)) if f.live => format!("injected with an outdated Whisperer ({m})"),
        (Decision::Inject(_), _) if would_inject && f.live => {
            "not injected, though it would be now".into()
        }
        (Decision::Inject(plan), _) if would_inject => {
            format!("would be injected ({})", plan.marker)
        }
        (Decision::Inject(_), _) => "not injected: the webhook is not called for it".into(),
        (Decision::Skip { reason, .. }, _) => format!("not injected ({reason})"),
    };
    Report {
        subject: f.subject.clone(),
        namespace: f.namespace.clone(),
        checks,
        verdict,
        fix,
        notes,
    }
}

/// The report as people read it.
pub fn render_text(r: &Report) -> String {
    let mut out = format!(
        "{} in namespace {}: {}\n",
        r.subject, r.namespace, r.verdict
    );
    for c in &r.checks {
        let mark = if c.passed { "ok  " } else { "FAIL" };
        out.push_str(&format!("  {mark} {}: {}\n", c.rule, c.detail));
    }
    for n in &r.notes {
        out.push_str(&format!("  note {n}\n"));
    }
    if let Some(fix) = &r.fix {
        out.push_str(&format!("  fix: {fix}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some([("injection".to_string(), "enabled".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(vec!["kube-system".into()]),
            }]),
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(
            &sel,
            &labels(&[
                ("injection", "enabled"),
                ("kubernetes.io/metadata.name", "app")
            ])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[
                ("injection", "enabled"),
                ("kubernetes.io/metadata.name", "kube-system")
            ])
        ));
        assert!(!selector_matches(&sel, &labels(&[])));
    }
}

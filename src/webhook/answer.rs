//! One admission answer from one request body: parse, decide, render. Synchronous and free
//! of I/O so it can be measured and tested on its own; the handler adds HTTP around it.

use std::cell::RefCell;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::error::ReviewError;
use super::namespaces::PodSecurityLevels;
use super::pod_shape::parse_admitted_pod;
use super::prepared::Prepared;
use super::request::parse_error;
use super::requester;
use super::review::{write_review, ReviewIn, API_VERSION};
use crate::engine::reinvocation::displaced_native_sidecar;
use crate::engine::{
    decide_admission, decide_admission_planned, AdmissionSubject, Decision, Planned, Settings,
    SkipReason,
};
use crate::metrics::{Outcome, RequestLabels};
use crate::render::json_patch;

thread_local! {
    /// The patch before it is base64-encoded into the answer: one buffer per thread, reused.
    static PATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const INJECTED: RequestLabels = RequestLabels {
    outcome: Outcome::injected,
    reason: "none",
};

/// The response body for a request body, with the metric labels it counts under. Prepares
/// the settings' fragments on every call: servers keep a [`Prepared`] and call [`answer_into`].
pub fn answer(
    bytes: &[u8],
    settings: &Settings,
    pod_security: &PodSecurityLevels,
) -> Result<(RequestLabels, Vec<u8>), ReviewError> {
    let prepared = Prepared::new(Arc::new(settings.clone()));
    let mut out = Vec::new();
    let labels = answer_into(bytes, &prepared, pod_security, &mut out)?;
    Ok((labels, out))
}

/// [`answer`], appending the response body to `out`.
pub fn answer_into(
    bytes: &[u8],
    prepared: &Prepared,
    pod_security: &PodSecurityLevels,
    out: &mut Vec<u8>,
) -> Result<RequestLabels, ReviewError> {
    let settings = prepared.settings();
    let review: ReviewIn<'_> = serde_json::from_slice(bytes).map_err(|e| parse_error(bytes, e))?;
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ReviewError::ApiVersion(other.unwrap_or("").to_string())),
    }
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => return Err(ReviewError::Kind(other.unwrap_or("").to_string())),
    }
    let mut req = review.request.ok_or(ReviewError::NoRequest)?;
    let read_pod = req.pod.take();
    let uid = match req.uid.as_deref() {
        Some(u) if !u.is_empty() => u,
        _ => return Err(ReviewError::NoUid),
    };
    // Debug level: disabled (one cached check) unless debug logging is on, so the hot path
    // pays nothing for it.
    let span = tracing::debug_span!(
        "admission",
        uid,
        namespace = %req.namespace,
        outcome = tracing::field::Empty
    );
    let _entered = span.enter();
    if requester::is_attachment(&req.kind) {
        let (labels, answer) = requester::respond(&req, uid)?;
        let body = serde_json::to_vec(&answer.into_review())
            .map_err(|e| ReviewError::Body(e.to_string()))?;
        out.extend_from_slice(&body);
        span.record("outcome", tracing::field::debug(labels.outcome));
        return Ok(labels);
    }
    // Only a pod being created can be injected: nothing else is parsed. Its object was read
    // with the review, unless it came before the kind and operation.
    let pod: Option<Box<Pod>> = match (req.is_pod_create(), read_pod, req.object) {
        (true, Some(pod), _) => Some(pod),
        (true, None, Some(raw)) => {
            let pod =
                parse_admitted_pod(raw.get()).map_err(|e| ReviewError::BadPod(e.to_string()))?;
            Some(Box::new(pod))
        }
        (true, None, None) => return Err(ReviewError::BadPod("request.object is missing".into())),
        (false, ..) => None,
    };

    let subject = AdmissionSubject {
        operation: req.operation.as_deref().unwrap_or(""),
        group: &req.kind.group,
        version: &req.kind.version,
        kind: &req.kind.kind,
        sub_resource: req.sub_resource.as_deref(),
        namespace: &req.namespace,
        pod: pod.as_deref(),
        pod_security: pod_security.enforce(&req.namespace),
    };
    let decision = match (decide_admission_planned(&subject, settings), pod.as_deref()) {
        (
            Planned::Base {
                profile_name,
                choice,
                ..
            },
            Some(pod),
        ) => match prepared.fragments(profile_name, choice.placement) {
            Some(fragments) => {
                let warnings: Vec<String> = choice
                    .warnings
                    .iter()
                    .map(|w| format!("whisperer: {w}"))
                    .collect();
                PATCH.with_borrow_mut(|patch| {
                    patch.clear();
                    fragments.write_patch(pod, patch);
                    write_review(
                        out,
                        uid,
                        Some(patch),
                        &warnings,
                        &[("injected", fragments.marker())],
                    );
                });
                tracing::debug!(uid, namespace = %req.namespace, profile = %profile_name, dry_run = req.dry_run, "injected");
                span.record("outcome", tracing::field::debug(INJECTED.outcome));
                return Ok(INJECTED);
            }
            // Not a placement the webhook prepares: the plan is built from types.
            None => decide_admission(&subject, settings),
        },
        (Planned::Base { .. }, None) => {
            return Err(ReviewError::BadPod("request.object is missing".into()))
        }
        (Planned::Decided(decision), _) => decision,
    };
    let labels = decided(
        decision,
        pod.as_deref(),
        settings,
        uid,
        &req.namespace,
        req.dry_run,
        out,
    )?;
    span.record("outcome", tracing::field::debug(labels.outcome));
    Ok(labels)
}

/// Writes the answer for a decision the engine made in full (a plan built from types, or a
/// skip).
fn decided(
    decision: Decision,
    pod: Option<&Pod>,
    settings: &Settings,
    uid: &str,
    namespace: &str,
    dry_run: bool,
    out: &mut Vec<u8>,
) -> Result<RequestLabels, ReviewError> {
    // Only a reinvoked call for a pod we injected can have a displaced Whisperer.
    let displaced = match (&decision, pod) {
        (
            Decision::Skip {
                reason: SkipReason::AlreadyInjected,
                ..
            },
            Some(p),
        ) => displaced_native_sidecar(p, settings),
        _ => None,
    };
    let labels = match &decision {
        Decision::Inject(plan) => {
            // `pod` is Some whenever the engine planned an injection.
            let ops = pod.map(|p| json_patch(p, plan)).unwrap_or_default();
            let patch = serde_json::to_vec(&ops).map_err(|e| ReviewError::Body(e.to_string()))?;
            let warnings: Vec<String> = plan
                .warnings
                .iter()
                .map(|w| format!("whisperer: {w}"))
                .collect();
            write_review(
                out,
                uid,
                Some(&patch),
                &warnings,
                &[("injected", &plan.marker)],
            );
            tracing::debug!(uid, namespace, profile = %plan.profile, dry_run, "injected");
            INJECTED
        }
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            ..
        } if displaced.is_some() => {
            let from = displaced.unwrap_or_default();
            let patch = format!(
                r#"[{{"op":"move","from":"/spec/initContainers/{from}","path":"/spec/initContainers/0"}}]"#
            );
            let moved = format!("initContainers[{from}] -> [0]");
            write_review(
                out,
                uid,
                Some(patch.as_bytes()),
                &[],
                &[("reordered", &moved)],
            );
            tracing::debug!(uid, namespace, from, "reinvoked: Whisperer put first again");
            RequestLabels {
                outcome: Outcome::injected,
                reason: "reordered",
            }
        }
        Decision::Skip { reason, detail } => {
            let warnings: Vec<String> = detail
                .iter()
                .map(|d| format!("whisperer: not injected ({reason}): {d}"))
                .collect();
            write_review(
                out,
                uid,
                None,
                &warnings,
                &[("skip-reason", reason.as_str())],
            );
            tracing::debug!(uid, namespace, %reason, "skipped");
            RequestLabels {
                outcome: Outcome::skipped,
                reason: reason.as_str(),
            }
        }
    };
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).expect("fixture")
    }

    fn respond(name: &str) -> (RequestLabels, serde_json::Value) {
        let settings = Settings::new(
            Arc::new(crate::config::Config::default()),
            "whisperer-system",
        );
        let (labels, body) =
            answer(&fixture(name), &settings, &PodSecurityLevels::default()).expect("answer");
        (labels, serde_json::from_slice(&body).expect("review json"))
    }

    fn patch(review: &serde_json::Value) -> serde_json::Value {
        use base64::Engine;
        let b64 = review["response"]["patch"].as_str().expect("a patch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        serde_json::from_slice(&raw).expect("patch json")
    }

    #[test]
    fn a_reinvoked_call_puts_the_whisperer_first_again_and_adds_nothing() {
        let (labels, review) = respond("review-pod-reinvoked.json");
        assert_eq!(
            (labels.outcome, labels.reason),
            (Outcome::injected, "reordered")
        );
        assert_eq!(
            patch(&review),
            serde_json::json!([{"op": "move", "from": "/spec/initContainers/1", "path": "/spec/initContainers/0"}])
        );
        // Applied to the pod, the Whisperer leads and nothing is doubled.
        let mut pod: serde_json::Value =
            serde_json::from_slice::<serde_json::Value>(&fixture("review-pod-reinvoked.json"))
                .expect("json")["request"]["object"]
                .clone();
        let p: json_patch::Patch = serde_json::from_value(patch(&review)).expect("patch");
        json_patch::patch(&mut pod, &p).expect("applies");
        let names: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .expect("inits")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["whisperer", "istio-proxy"]);
    }

    #[test]
    fn a_host_network_pod_is_skipped_through_the_parsed_shape() {
        let (labels, review) = respond("review-pod-host-network.json");
        assert_eq!(labels.reason, "host-namespaces");
        assert!(review["response"]["patch"].is_null());
        let warnings = review["response"]["warnings"].to_string();
        assert!(warnings.contains("hostNetwork"), "{warnings}");
    }
}

//! One admission answer from one request body: parse, decide, render. Synchronous and free
//! of I/O so it can be measured and tested on its own; the handler adds HTTP around it.

use k8s_openapi::api::core::v1::Pod;

use super::error::ReviewError;
use super::namespaces::PodSecurityLevels;
use super::pod_shape::parse_admitted_pod;
use super::requester;
use super::review::{nesting_exceeds, ResponseOut, ReviewIn, API_VERSION, MAX_NESTING};
use crate::engine::reinvocation::displaced_native_sidecar;
use crate::engine::{decide_admission, AdmissionSubject, Decision, Settings, SkipReason};
use crate::metrics::{Outcome, RequestLabels};
use crate::render::json_patch;

/// The response body for a request body, with the metric labels it counts under.
pub fn answer(
    bytes: &[u8],
    settings: &Settings,
    pod_security: &PodSecurityLevels,
) -> Result<(RequestLabels, Vec<u8>), ReviewError> {
    if nesting_exceeds(bytes, MAX_NESTING) {
        return Err(ReviewError::Json(format!(
            "nesting deeper than {MAX_NESTING} levels"
        )));
    }
    let review: ReviewIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| ReviewError::Json(e.to_string()))?;
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ReviewError::ApiVersion(other.unwrap_or("").to_string())),
    }
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => return Err(ReviewError::Kind(other.unwrap_or("").to_string())),
    }
    let req = review.request.ok_or(ReviewError::NoRequest)?;
    let uid = match req.uid.as_deref() {
        Some(u) if !u.is_empty() => u,
        _ => return Err(ReviewError::NoUid),
    };
    if requester::is_attachment(&req.kind) {
        let (labels, out) = requester::respond(&req, uid)?;
        let body =
            serde_json::to_vec(&out.into_review()).map_err(|e| ReviewError::Body(e.to_string()))?;
        return Ok((labels, body));
    }
    // Only a pod being created can be injected: nothing else is parsed.
    let is_pod_create = req.kind.group.is_empty()
        && req.kind.kind == "Pod"
        && req.operation.as_deref() == Some("CREATE");
    let pod: Option<Pod> = match (is_pod_create, req.object) {
        (true, Some(raw)) => {
            Some(parse_admitted_pod(raw.get()).map_err(|e| ReviewError::BadPod(e.to_string()))?)
        }
        (true, None) => return Err(ReviewError::BadPod("request.object is missing".into())),
        (false, _) => None,
    };

    let subject = AdmissionSubject {
        operation: req.operation.as_deref().unwrap_or(""),
        group: &req.kind.group,
        version: &req.kind.version,
        kind: &req.kind.kind,
        sub_resource: req.sub_resource.as_deref(),
        namespace: &req.namespace,
        pod: pod.as_ref(),
        pod_security: pod_security.enforce(&req.namespace),
    };
    let decision = decide_admission(&subject, settings);
    // Only a reinvoked call for a pod we injected can have a displaced Whisperer.
    let displaced = match (&decision, pod.as_ref()) {
        (
            Decision::Skip {
                reason: SkipReason::AlreadyInjected,
                ..
            },
            Some(p),
        ) => displaced_native_sidecar(p, settings),
        _ => None,
    };
    let mut out = ResponseOut::allow(uid);
    let labels = match &decision {
        Decision::Inject(plan) => {
            // `pod` is Some whenever the engine planned an injection.
            let ops = pod
                .as_ref()
                .map(|p| json_patch(p, plan))
                .unwrap_or_default();
            let patch = serde_json::to_vec(&ops).map_err(|e| ReviewError::Body(e.to_string()))?;
            out = out.with_patch(&patch);
            out.warnings
                .extend(plan.warnings.iter().map(|w| format!("whisperer: {w}")));
            out.audit_annotations
                .push(("injected", plan.marker.clone()));
            tracing::debug!(uid, namespace = %req.namespace, profile = %plan.profile, dry_run = req.dry_run, "injected");
            RequestLabels {
                outcome: Outcome::injected,
                reason: "none",
            }
        }
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            ..
        } if displaced.is_some() => {
            let from = displaced.unwrap_or_default();
            let patch = format!(
                r#"[{{"op":"move","from":"/spec/initContainers/{from}","path":"/spec/initContainers/0"}}]"#
            );
            out = out.with_patch(patch.as_bytes());
            out.audit_annotations
                .push(("reordered", format!("initContainers[{from}] -> [0]")));
            tracing::debug!(uid, namespace = %req.namespace, from, "reinvoked: Whisperer put first again");
            RequestLabels {
                outcome: Outcome::injected,
                reason: "reordered",
            }
        }
        Decision::Skip { reason, detail } => {
            if let Some(detail) = detail {
                out.warnings
                    .push(format!("whisperer: not injected ({reason}): {detail}"));
            }
            out.audit_annotations
                .push(("skip-reason", reason.as_str().to_string()));
            tracing::debug!(uid, namespace = %req.namespace, %reason, "skipped");
            RequestLabels {
                outcome: Outcome::skipped,
                reason: reason.as_str(),
            }
        }
    };
    let body =
        serde_json::to_vec(&out.into_review()).map_err(|e| ReviewError::Body(e.to_string()))?;
    Ok((labels, body))
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

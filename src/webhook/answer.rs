//! One admission answer from one request body: parse, decide, render. Synchronous and free
//! of I/O so it can be measured and tested on its own; the handler adds HTTP around it.

use k8s_openapi::api::core::v1::Pod;

use super::error::ReviewError;
use super::namespaces::PodSecurityLevels;
use super::pod_shape::parse_admitted_pod;
use super::review::{nesting_exceeds, ResponseOut, ReviewIn, API_VERSION, MAX_NESTING};
use crate::engine::{decide_admission, AdmissionSubject, Decision, Settings};
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

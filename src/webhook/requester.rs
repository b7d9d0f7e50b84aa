//! Attachments: record who asked for the capture. On CREATE, and on an UPDATE that changes
//! the spec, the answer sets annotation [`REQUESTED_BY`] to the requester's user name as the
//! API server authenticated it. Other updates (the reconciler's finalizer, labels) are left
//! alone, so the annotation names whoever last decided what is captured.
//!
//! This is only the record: the ValidatingAdmissionPolicy `whisperer-attachment-authorization`
//! (manifests/policy-attachments.yaml) refuses any value other than the requester's own name,
//! so a missing webhook can leave the record out but never let it lie. Pure: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::error::ReviewError;
use super::review::{GroupVersionKind, RequestIn, ResponseOut};
use crate::metrics::{Outcome, RequestLabels};

/// Who created the Attachment or last changed its spec (`request.userInfo.username`).
pub const REQUESTED_BY: &str = "whisperer.dev/requested-by";

/// JSON pointer of the annotation (`/` in the key escaped as `~1`).
const REQUESTED_BY_POINTER: &str = "/metadata/annotations/whisperer.dev~1requested-by";

/// Reviews this module answers: `attachments.whisperer.dev`, any version.
pub fn is_attachment(kind: &GroupVersionKind<'_>) -> bool {
    kind.group == "whisperer.dev" && kind.kind == "Attachment"
}

#[derive(Deserialize, Default)]
struct AttachmentIn<'a> {
    #[serde(default, borrow)]
    metadata: MetaIn<'a>,
    #[serde(default)]
    spec: Option<Value>,
}

#[derive(Deserialize, Default)]
struct MetaIn<'a> {
    #[serde(default, borrow)]
    annotations: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

fn parse<'a>(raw: &'a RawValue, field: &str) -> Result<AttachmentIn<'a>, ReviewError> {
    serde_json::from_str(raw.get())
        .map_err(|e| ReviewError::BadAttachment(format!("request.{field}: {e}")))
}

/// The JSON patch that records `username`, or `None` when there is nothing to record.
fn patch(req: &RequestIn<'_>) -> Result<Option<Value>, ReviewError> {
    let username = req.user_info.username.as_deref().unwrap_or("");
    let object = match req.object {
        Some(raw) => parse(raw, "object")?,
        None => {
            return Err(ReviewError::BadAttachment(
                "request.object is missing".into(),
            ))
        }
    };
    let spec_changed = match req.operation.as_deref() {
        Some("CREATE") => true,
        Some("UPDATE") => {
            let old = match req.old_object {
                Some(raw) => parse(raw, "oldObject")?,
                None => {
                    return Err(ReviewError::BadAttachment(
                        "request.oldObject is missing on UPDATE".into(),
                    ))
                }
            };
            object.spec != old.spec
        }
        _ => false,
    };
    // An empty user name cannot be recorded truthfully; the policy then requires no value.
    if !spec_changed || username.is_empty() {
        return Ok(None);
    }
    let op = match &object.metadata.annotations {
        Some(a) if a.get(REQUESTED_BY).map(|v| v.as_ref()) == Some(username) => return Ok(None),
        // `add` on an existing member replaces it.
        Some(_) => json!({ "op": "add", "path": REQUESTED_BY_POINTER, "value": username }),
        None => json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": { REQUESTED_BY: username },
        }),
    };
    Ok(Some(json!([op])))
}

/// The answer to an Attachment review: always allowed (deciding is the policy's job), with
/// the patch that records the requester when there is one.
pub fn respond<'u>(
    req: &RequestIn<'_>,
    uid: &'u str,
) -> Result<(RequestLabels, ResponseOut<'u>), ReviewError> {
    let mut out = ResponseOut::allow(uid);
    let reason = match patch(req)? {
        Some(ops) => {
            let bytes = serde_json::to_vec(&ops).map_err(|e| ReviewError::Body(e.to_string()))?;
            out = out.with_patch(&bytes);
            "requester-recorded"
        }
        None => "requester-unchanged",
    };
    tracing::debug!(uid, namespace = %req.namespace, reason, "attachment review");
    Ok((
        RequestLabels {
            outcome: Outcome::attachment,
            reason,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::review::ReviewIn;
    use base64::Engine;

    /// A review as kube-apiserver sends it for `kubectl apply` of an Attachment.
    fn review(operation: &str, user: &str, object: Value, old: Option<Value>) -> String {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": { "group": "whisperer.dev", "version": "v1alpha1", "kind": "Attachment" },
                "resource": { "group": "whisperer.dev", "version": "v1alpha1", "resource": "attachments" },
                "namespace": "shop",
                "operation": operation,
                "userInfo": { "username": user, "uid": "1", "groups": ["system:authenticated"] },
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        })
        .to_string()
    }

    fn attachment(annotations: Option<Value>, ttl: &str) -> Value {
        let mut meta = json!({ "name": "web", "namespace": "shop" });
        if let Some(a) = annotations {
            meta["annotations"] = a;
        }
        json!({
            "apiVersion": "whisperer.dev/v1alpha1", "kind": "Attachment", "metadata": meta,
            "spec": { "target": { "kind": "Deployment", "name": "web" }, "ttl": ttl },
        })
    }

    /// (reason, decoded patch) for a review body.
    fn run(body: &str) -> (&'static str, Option<Value>) {
        let r: ReviewIn<'_> = serde_json::from_str(body).expect("review parses");
        let req = r.request.expect("request");
        assert!(is_attachment(&req.kind));
        let (labels, out) = respond(&req, "uid").expect("answer");
        assert!(out.allowed, "the policy decides, never this webhook");
        let patch = out.patch.map(|p| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(p)
                .expect("base64");
            serde_json::from_slice(&bytes).expect("patch is JSON")
        });
        (labels.reason, patch)
    }

    #[test]
    fn create_without_annotations_adds_the_map() {
        let (reason, patch) = run(&review("CREATE", "alice", attachment(None, "30m"), None));
        assert_eq!(reason, "requester-recorded");
        assert_eq!(
            patch,
            Some(json!([{ "op": "add", "path": "/metadata/annotations",
                          "value": { "whisperer.dev/requested-by": "alice" } }]))
        );
    }

    #[test]
    fn create_with_a_forged_value_is_overwritten() {
        let ann = json!({ "team": "shop", "whisperer.dev/requested-by": "admin" });
        let (_, patch) = run(&review(
            "CREATE",
            "alice",
            attachment(Some(ann), "30m"),
            None,
        ));
        assert_eq!(
            patch,
            Some(
                json!([{ "op": "add", "path": "/metadata/annotations/whisperer.dev~1requested-by",
                          "value": "alice" }])
            )
        );
    }

    #[test]
    fn create_with_the_right_value_needs_no_patch() {
        let ann = json!({ "whisperer.dev/requested-by": "alice" });
        let (reason, patch) = run(&review(
            "CREATE",
            "alice",
            attachment(Some(ann), "30m"),
            None,
        ));
        assert_eq!((reason, patch), ("requester-unchanged", None));
    }

    #[test]
    fn spec_update_records_the_new_requester() {
        let ann = json!({ "whisperer.dev/requested-by": "alice" });
        let (reason, patch) = run(&review(
            "UPDATE",
            "bob",
            attachment(Some(ann.clone()), "2h"),
            Some(attachment(Some(ann), "30m")),
        ));
        assert_eq!(reason, "requester-recorded");
        assert_eq!(patch.expect("patch")[0]["value"], "bob");
    }

    #[test]
    fn metadata_only_update_is_left_alone() {
        // The reconciler adding its finalizer: same spec, so the requester stays alice.
        let ann = json!({ "whisperer.dev/requested-by": "alice" });
        let mut new = attachment(Some(ann.clone()), "30m");
        new["metadata"]["finalizers"] = json!(["whisperer.dev/detach"]);
        let (reason, patch) = run(&review(
            "UPDATE",
            "system:serviceaccount:whisperer-system:whisperer-injector",
            new,
            Some(attachment(Some(ann), "30m")),
        ));
        assert_eq!((reason, patch), ("requester-unchanged", None));
    }

    #[test]
    fn bad_objects_are_named() {
        for (body, needle) in [
            (
                review("CREATE", "alice", json!({ "metadata": "x" }), None),
                "request.object",
            ),
            (
                review("UPDATE", "alice", attachment(None, "1h"), None),
                "oldObject is missing",
            ),
            (
                review("UPDATE", "alice", attachment(None, "1h"), Some(json!([1]))),
                "request.oldObject",
            ),
        ] {
            let r: ReviewIn<'_> = serde_json::from_str(&body).expect("review parses");
            let req = r.request.expect("request");
            let err = respond(&req, "uid").expect_err("bad object");
            assert_eq!(err.kind(), "invalid-attachment");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn pods_are_not_attachments() {
        let kind = GroupVersionKind {
            group: "".into(),
            version: "v1".into(),
            kind: "Pod".into(),
        };
        assert!(!is_attachment(&kind));
    }
}

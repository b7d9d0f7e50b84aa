//! The `Attachment` custom resource (`attachments.whisperer.dev/v1alpha1`), derived from these
//! types. `manifests/crd-attachments.yaml` is generated from [`crd`]; a test fails when the
//! two drift (`WHISPERER_REGENERATE=1 cargo test --test attachments crd_manifest` rewrites it).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Finalizer that lets the reconciler record a detach before the object goes.
pub const FINALIZER: &str = "whisperer.dev/detach";

/// Attach the Whisperer capture agent, as an ephemeral container, to the running pods of a
/// workload (or of a label selector) in this namespace, and keep new and replacement pods
/// attached until the time-to-live runs out.
// The derive's repeated `printcolumn(type_ = ..)` items look like duplicates to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "whisperer.dev",
    version = "v1alpha1",
    kind = "Attachment",
    namespaced,
    status = "AttachmentStatus",
    shortname = "wat",
    category = "whisperer",
    doc = "Attaches the Whisperer capture agent to the running pods of a workload, as an ephemeral container",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.target"),
    printcolumn(
        name = "Pods attached",
        type_ = "integer",
        json_path = ".status.attachedPods"
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.target) != has(self.selector)").message("set exactly one of target or selector"))]
#[x_kube(validation = Rule::new("!has(self.selector) || (has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)").message("an empty selector would select every pod of the namespace; list at least one label"))]
#[serde(rename_all = "camelCase")]
pub struct AttachmentSpec {
    /// The workload whose pods get the Whisperer. Exactly one of `target` and `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRef>,
    /// Pods of this namespace selected by labels. Exactly one of `target` and `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Whisperer profile from the injector's configuration; the configured default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub profile: Option<String>,
    /// Container whose namespaces the Whisperer joins; the pod's first container when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
    /// Time to live from the Attachment's creation, e.g. `30m`, `2h`, `1h30m`; capped by the
    /// profile's `maxTtl`. After it no pod is attached any more and the agents stop themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub ttl: Option<String>,
}

/// A workload in the Attachment's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TargetRef {
    pub kind: TargetKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TargetKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
    Pod,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
            TargetKind::DaemonSet => "DaemonSet",
            TargetKind::ReplicaSet => "ReplicaSet",
            TargetKind::Job => "Job",
            TargetKind::CronJob => "CronJob",
            TargetKind::Pod => "Pod",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted; no pod attached yet.
    Pending,
    /// At least one pod carries the Whisperer.
    Attached,
    /// The time-to-live ran out: no pod is attached any more.
    Expired,
    /// The Attachment is being deleted: no pod is attached any more.
    Detached,
    /// Refused (namespace policy, unknown profile, invalid spec); see the Ready condition.
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Pending,
        Phase::Attached,
        Phase::Expired,
        Phase::Detached,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Attached => "Attached",
            Phase::Expired => "Expired",
            Phase::Detached => "Detached",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// What the Attachment selects, e.g. `Deployment/web` or `selector app=web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Pods that carry this Attachment's Whisperer now.
    #[serde(default)]
    pub attached_pods: i32,
    /// Pods selected (running or not, terminating ones excluded).
    #[serde(default)]
    pub selected_pods: i32,
    /// When the time-to-live runs out (RFC 3339); absent without a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Who created the Attachment or last changed its spec, from the annotation
    /// `whisperer.dev/requested-by` (set by the injector's webhook, checked by the API server's
    /// policy `whisperer-attachment-authorization`); absent when the webhook did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// One entry per selected pod, sorted by name (at most 1000; see `omittedPods`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodAttachment>,
    /// Selected pods left out of `pods` to keep the object small.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_pods: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Where one pod stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAttachment {
    pub pod: String,
    /// Name of the ephemeral container (`whisperer-<attachment>[-<generation>]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Attempt number for this pod, from 1; a Whisperer that terminated is replaced by the
    /// next generation, up to the reconciler's `--max-generations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i32>,
    pub state: PodState,
    /// Machine-readable cause: an engine skip reason (`pod-not-running`, ...), or
    /// `PodSecurity`, `AdmissionRefused`, `Invalid`, `Dropped`, `PatchFailed`,
    /// `GenerationsExhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this entry last changed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodState {
    /// The Whisperer is in the pod's ephemeral containers (and has not terminated).
    Attached,
    /// Not attached yet: the pod is not running, or a retry is due.
    Pending,
    /// The API server refused the ephemeral container (Pod Security, another admission
    /// plugin or webhook, validation); retried with back-off.
    Refused,
    /// Left alone on purpose (terminating pod, webhook sidecar already there, expired ...).
    Skipped,
    /// Cannot be attached: the Whisperer terminated and every generation is used, or the
    /// target container is missing.
    Failed,
}

/// The CustomResourceDefinition, as installed by `manifests/crd-attachments.yaml`.
pub fn crd() -> CustomResourceDefinition {
    Attachment::crd()
}

/// The CRD as YAML, exactly as committed in `manifests/crd-attachments.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated from src/reconciler/crd.rs; do not edit.\n\
         # Regenerate: WHISPERER_REGENERATE=1 cargo test --test attachments crd_manifest\n{body}"
    ))
}

impl Attachment {
    /// The recorded requester (annotation `whisperer.dev/requested-by`), if any.
    pub fn requested_by(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(crate::webhook::REQUESTED_BY)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `Deployment/web`, `Pod/db-0` or `selector app=web,tier in (a,b)`.
    pub fn target_description(&self) -> String {
        match (&self.spec.target, &self.spec.selector) {
            (Some(t), _) => format!("{}/{}", t.kind.as_str(), t.name),
            (None, Some(sel)) => match kube::core::Selector::try_from(sel.clone()) {
                Ok(s) => format!("selector {s}"),
                Err(_) => "selector (invalid)".to_string(),
            },
            (None, None) => "(none)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_with_camel_case() {
        let yaml =
            "target: {kind: Deployment, name: web}\nprofile: default\ncontainer: app\nttl: 30m\n";
        let spec: AttachmentSpec = serde_yaml::from_str(yaml).expect("parse spec");
        assert_eq!(
            spec.target,
            Some(TargetRef {
                kind: TargetKind::Deployment,
                name: "web".into()
            })
        );
        assert_eq!(spec.ttl.as_deref(), Some("30m"));
        let a = Attachment::new("a", spec);
        assert_eq!(a.target_description(), "Deployment/web");
    }

    #[test]
    fn crd_has_validation_columns_and_status() {
        let text = serde_json::to_string(&crd()).expect("serialize crd");
        assert!(text.contains("has(self.target) != has(self.selector)"));
        assert!(text.contains("\"Pods attached\""));
        assert!(text.contains("\"status\":{}"));
        assert_eq!(
            crd().metadata.name.as_deref(),
            Some("attachments.whisperer.dev")
        );
    }
}

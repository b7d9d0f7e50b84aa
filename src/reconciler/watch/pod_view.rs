//! A pod as the reconciler reads it from the API: only what the engine and the owner
//! resolution need. Pods are deserialized straight into this shape (serde skips the rest,
//! `managedFields` above all: most of a pod's metadata, and thousands of small allocations per
//! list page that fragmented the heap), then turned into the compact `PodInfo` of the pod
//! cache. [`prune`] trims the metadata of the ReplicaSets, Jobs and namespaces kept in the
//! owner caches.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};

use crate::lean_json::{lean_object_meta, KeepAnnotation};

/// Annotations kept on watched pods: the engine reads these, nothing else.
pub(super) const KEPT_ANNOTATION_PREFIX: &str = "whisperer.dev/";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodView {
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ViewSpec,
    #[serde(default)]
    pub status: ViewStatus,
}

/// The metadata `PodInfo` and the watcher read; `managedFields` and foreign annotations are
/// skipped unallocated.
fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    lean_object_meta::<Ours, D>(d)
}

/// `whisperer.dev/*`: the only annotations the engine reads.
struct Ours;

impl KeepAnnotation for Ours {
    fn keep(key: &str) -> bool {
        key.starts_with(KEPT_ANNOTATION_PREFIX)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewSpec {
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    #[serde(default)]
    pub init_containers: Vec<ContainerView>,
    #[serde(default)]
    pub ephemeral_containers: Vec<ContainerView>,
    #[serde(default)]
    pub volumes: Vec<VolumeView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "hostIPC")]
    pub host_ipc: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
/// A volume: only its name matters (a Whisperer never shares one).
pub struct VolumeView {
    pub name: String,
}

/// A container's name and image, and the env var that tells whose Whisperer it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvView>,
    /// Memory limits and requests only: the attach budget check reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourcesView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<MemoryView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<MemoryView>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemoryView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvView {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl ContainerView {
    /// `(limit, request)` memory quantities.
    pub fn memory(&self) -> (Option<&str>, Option<&str>) {
        let r = self.resources.as_ref();
        fn get(m: Option<&MemoryView>) -> Option<&str> {
            m?.memory.as_deref()
        }
        (
            get(r.and_then(|r| r.limits.as_ref())),
            get(r.and_then(|r| r.requests.as_ref())),
        )
    }

    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub ephemeral_container_statuses: Vec<EphemeralStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EphemeralStatus {
    pub name: String,
    #[serde(default)]
    pub state: EphemeralState,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EphemeralState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<Terminated>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl k8s_openapi::Resource for PodView {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for PodView {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Keeps name, namespace, uid, labels, the controller owner reference, whisperer.dev/*
/// annotations and the deletion timestamp; drops the rest (managedFields above all).
pub fn prune(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.self_link = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k.starts_with(KEPT_ANNOTATION_PREFIX));
    }
    if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.annotations = None;
    }
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|o| o.controller == Some(true));
        for o in refs.iter_mut() {
            o.block_owner_deletion = None;
        }
    }
    if meta.owner_references.as_ref().is_some_and(Vec::is_empty) {
        meta.owner_references = None;
    }
}

impl PodView {
    pub fn has_ephemeral(&self, name: &str) -> bool {
        self.spec
            .ephemeral_containers
            .iter()
            .any(|c| c.name == name)
    }
}

/// `(kind, name)` of an object's controller owner reference.
pub fn controller_of(meta: &ObjectMeta) -> Option<(&str, &str)> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// A pod view with name, namespace, uid `uid-<name>` and labels, for unit tests.
#[cfg(test)]
pub(crate) fn test_view(ns: &str, name: &str, labels: &[(&str, &str)]) -> PodView {
    let mut v = PodView::default();
    v.metadata.name = Some(name.into());
    v.metadata.namespace = Some(ns.into());
    v.metadata.uid = Some(format!("uid-{name}"));
    v.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "web-1", "namespace": "a", "uid": "u1", "resourceVersion": "7",
        "labels": {"app": "web"},
        "annotations": {"whisperer.dev/inject": "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
        "ownerReferences": [
          {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "r1", "controller": true, "blockOwnerDeletion": true},
          {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "c1"}
        ],
        "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]
      },
      "spec": {
        "containers": [{"name": "app", "image": "nginx", "env": [{"name": "A", "value": "b"}]}],
        "ephemeralContainers": [{"name": "whisperer-cap", "image": "w"}],
        "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}]
      },
      "status": {
        "phase": "Running", "podIP": "10.0.0.1",
        "ephemeralContainerStatuses": [
          {"name": "whisperer-cap", "image": "w", "imageID": "", "ready": false, "restartCount": 0,
           "state": {"terminated": {"exitCode": 2, "reason": "Error", "startedAt": null, "finishedAt": null}}}
        ]
      }
    }"#;

    #[test]
    fn deserializes_a_full_pod_into_the_lean_view() {
        let p: PodView = serde_json::from_str(POD).expect("pod view");
        assert!(p.metadata.managed_fields.is_none());
        assert_eq!(p.metadata.resource_version.as_deref(), Some("7"));
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.len(), 1);
        assert_eq!(controller_of(&p.metadata), Some(("ReplicaSet", "web-abc")));
        assert_eq!(p.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert!(p.has_ephemeral("whisperer-cap"));

        let info = crate::reconciler::watch::PodInfo::new(&p);
        assert_eq!(info.annotation("whisperer.dev/inject"), Some("true"));
        assert_eq!(info.controller(), Some(("ReplicaSet", "web-abc")));
        assert_eq!(
            info.ephemeral_terminated("whisperer-cap")
                .map(|t| t.exit_code),
            Some(2)
        );
        use crate::engine::PodFacts;
        let names: Vec<&str> = info.containers().map(|c| c.name).collect();
        assert_eq!(names, ["app"]);
        assert_eq!(
            info.volume_names().collect::<Vec<_>>(),
            ["kube-api-access-x"]
        );
        assert_eq!(info.phase(), Some("Running"));
    }
}

//! A pod as the reconciler keeps it in memory: only what the engine and the owner resolution
//! read. Pods are deserialized straight into this shape (unknown fields are skipped by serde),
//! and [`prune`] drops the metadata nobody reads, so 10,000 pods stay a few megabytes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, PodSpec, PodStatus, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Annotations kept on watched pods: the engine reads these, nothing else.
const KEPT_ANNOTATION_PREFIX: &str = "whisperer.dev/";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodView {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ViewSpec,
    #[serde(default)]
    pub status: ViewStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewSpec {
    #[serde(default)]
    pub containers: Vec<Named>,
    #[serde(default)]
    pub ephemeral_containers: Vec<Named>,
    #[serde(default)]
    pub volumes: Vec<Named>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Named {
    pub name: String,
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
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.metadata.uid.as_deref().unwrap_or_default()
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    pub fn finished(&self) -> bool {
        matches!(
            self.status.phase.as_deref(),
            Some("Succeeded") | Some("Failed")
        )
    }

    pub fn has_ephemeral(&self, name: &str) -> bool {
        self.spec
            .ephemeral_containers
            .iter()
            .any(|c| c.name == name)
    }

    /// The terminated state of an ephemeral container, as its kubelet reported it.
    pub fn ephemeral_terminated(&self, name: &str) -> Option<&Terminated> {
        self.status
            .ephemeral_container_statuses
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.state.terminated.as_ref())
    }

    /// `(kind, name)` of the controller owner reference.
    pub fn controller(&self) -> Option<(&str, &str)> {
        controller_of(&self.metadata)
    }

    /// The pod as the engine reads it: names of containers, ephemeral containers and
    /// volumes, the whisperer annotations, the deletion timestamp and the phase.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: self.metadata.namespace.clone(),
                uid: self.metadata.uid.clone(),
                labels: self.metadata.labels.clone(),
                annotations: self.metadata.annotations.clone(),
                deletion_timestamp: self.metadata.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: self
                    .spec
                    .containers
                    .iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        ..Container::default()
                    })
                    .collect(),
                ephemeral_containers: Some(
                    self.spec
                        .ephemeral_containers
                        .iter()
                        .map(|c| EphemeralContainer {
                            name: c.name.clone(),
                            ..EphemeralContainer::default()
                        })
                        .collect(),
                ),
                volumes: Some(
                    self.spec
                        .volumes
                        .iter()
                        .map(|v| Volume {
                            name: v.name.clone(),
                            ..Volume::default()
                        })
                        .collect(),
                ),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: self.status.phase.clone(),
                ..PodStatus::default()
            }),
        }
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
    fn deserializes_and_prunes_a_full_pod() {
        let mut p: PodView = serde_json::from_str(POD).expect("pod view");
        prune(&mut p.metadata);
        assert!(p.metadata.managed_fields.is_none());
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.len(), 1);
        assert_eq!(p.annotation("whisperer.dev/inject"), Some("true"));
        assert_eq!(p.controller(), Some(("ReplicaSet", "web-abc")));
        assert_eq!(p.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert!(p.has_ephemeral("whisperer-cap"));
        assert_eq!(
            p.ephemeral_terminated("whisperer-cap").map(|t| t.exit_code),
            Some(2)
        );
        let pod = p.to_pod();
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.containers[0].name, "app");
        assert_eq!(spec.volumes.expect("volumes")[0].name, "kube-api-access-x");
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}

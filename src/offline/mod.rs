//! `whisperer-injector inject`: the webhook's patch applied to manifests on disk, like
//! `istioctl kube-inject`. Pods and the pod templates of workloads are injected; every other
//! document passes through unchanged.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::engine::{decide_admission, AdmissionSubject, Decision, Settings};
use crate::render::json_patch;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{origin}: document {index}: not valid YAML: {message}")]
    Yaml {
        origin: String,
        index: usize,
        message: String,
    },
    /// `at` reads `<file>: document <n> (<Kind> <name>): field `<path>``.
    #[error("{at}: {message}")]
    Field { at: String, message: String },
}

/// What happened to one document, for the summary on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: String,
    pub name: String,
    /// `injected` or a skip reason; None for documents that hold no pod.
    pub result: Option<String>,
}

/// Where the pod template sits in each kind that has one.
fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    match (api_version, kind) {
        ("v1", "Pod") => Some(""),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template")
        }
        ("v1", "ReplicationController") => Some("/spec/template"),
        ("batch/v1", "Job") => Some("/spec/template"),
        ("batch/v1", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn template_field(pointer: &str) -> String {
    if pointer.is_empty() {
        "spec".to_string()
    } else {
        format!("{}.spec", pointer.trim_start_matches('/').replace('/', "."))
    }
}

/// The pod a controller would create from the template at `pointer`: template metadata and
/// spec, owned by a Job where a Job creates it (so the engine picks the native sidecar).
/// Errors are (field, message).
fn template_pod(
    doc: &Value,
    pointer: &str,
    kind: &str,
    name: &str,
) -> Result<Pod, (String, String)> {
    let template = doc.pointer(pointer).ok_or_else(|| {
        (
            pointer.trim_start_matches('/').to_string(),
            "missing".to_string(),
        )
    })?;
    let mut pod_json = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if matches!(kind, "Job" | "CronJob") {
        pod_json["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "", "controller": true
        }]);
    }
    serde_json::from_value(pod_json).map_err(|e| (template_field(pointer), e.to_string()))
}

/// A pod (or the pod a workload's template makes) found in a document.
#[derive(Debug, Clone)]
pub struct DocumentPod {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub pod: Pod,
}

/// The pod of `doc` (a Pod, or a workload's template), if it holds one.
pub fn document_pod(
    doc: &Value,
    origin: &str,
    index: usize,
) -> Result<Option<DocumentPod>, InjectError> {
    let text = |p: &str| {
        doc.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let Some(pointer) = template_pointer(&api_version, &kind) else {
        return Ok(None);
    };
    let pod = template_pod(doc, pointer, &kind, &name).map_err(|(field, message)| {
        InjectError::Field {
            at: format!("{origin}: document {index} ({kind} {name}): field `{field}`"),
            message,
        }
    })?;
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Some(DocumentPod {
        kind,
        name,
        namespace,
        pod,
    }))
}

/// Every pod and pod template in a multi-document YAML text.
pub fn pods_in_yaml(text: &str, origin: &str) -> Result<Vec<DocumentPod>, InjectError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| InjectError::Yaml {
            origin: origin.to_string(),
            index,
            message: e.to_string(),
        })?;
        if let Some(p) = document_pod(&value, origin, index)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Injects every pod and pod template in a multi-document YAML text.
pub fn inject_yaml(
    text: &str,
    origin: &str,
    default_namespace: &str,
    settings: &Settings,
) -> Result<(String, Vec<Outcome>), InjectError> {
    use serde::Deserialize;
    let mut out = String::new();
    let mut outcomes = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml_err = |e: &dyn std::fmt::Display| InjectError::Yaml {
            origin: origin.to_string(),
            index,
            message: e.to_string(),
        };
        let mut value = Value::deserialize(doc).map_err(|e| yaml_err(&e))?;
        if value.is_null() {
            continue;
        }
        let outcome = inject_document(&mut value, origin, index, default_namespace, settings)?;
        outcomes.push(outcome);
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&value).map_err(|e| yaml_err(&e))?);
    }
    Ok((out, outcomes))
}

fn inject_document(
    doc: &mut Value,
    origin: &str,
    index: usize,
    default_namespace: &str,
    settings: &Settings,
) -> Result<Outcome, InjectError> {
    let text = |p: &str| {
        doc.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_namespace)
        .to_string();
    let field_err = |field: &str, message: String| InjectError::Field {
        at: format!("{origin}: document {index} ({kind} {name}): field `{field}`"),
        message,
    };
    let Some(pointer) = template_pointer(&api_version, &kind) else {
        return Ok(Outcome {
            kind,
            name,
            result: None,
        });
    };
    let pod = template_pod(doc, pointer, &kind, &name).map_err(|(f, m)| field_err(&f, m))?;
    let field = template_field(pointer);
    let template = doc
        .pointer_mut(pointer)
        .ok_or_else(|| field_err(pointer.trim_start_matches('/'), "missing".into()))?;
    let subject = AdmissionSubject {
        operation: "CREATE",
        group: "",
        version: "v1",
        kind: "Pod",
        sub_resource: None,
        namespace: &namespace,
        pod: Some(&pod),
        // Offline there is no namespace to read a Pod Security level from.
        pod_security: None,
    };
    let result = match decide_admission(&subject, settings) {
        Decision::Inject(plan) => {
            let ops = serde_json::to_value(json_patch(&pod, &plan)).unwrap_or(Value::Null);
            let patch: json_patch::Patch =
                serde_json::from_value(ops).map_err(|e| field_err(&field, e.to_string()))?;
            if template.get("metadata").is_none() {
                template["metadata"] = json!({});
            }
            json_patch::patch(template, &patch).map_err(|e| field_err(&field, e.to_string()))?;
            "injected".to_string()
        }
        Decision::Skip { reason, detail } => match detail {
            Some(d) => format!("{reason}: {d}"),
            None => reason.to_string(),
        },
    };
    Ok(Outcome {
        kind,
        name,
        result: Some(result),
    })
}

#[cfg(test)]
mod tests;

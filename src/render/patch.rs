//! Plan -> RFC 6902 JSON patch. Only `add` operations: the patch never replaces an array or
//! map the pod already has, so its size grows with what is injected, not with the pod.

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{HostAliasChange, Placement, Plan, ANNOTATION_INJECTED};

/// The container `kubectl logs` and `kubectl exec` pick when none is named.
pub const ANNOTATION_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

fn add(path: impl Into<String>, value: Value) -> PatchOp {
    PatchOp {
        op: "add",
        path: path.into(),
        value,
    }
}

/// RFC 6901: `~` becomes `~0` and `/` becomes `~1` inside one reference token.
pub fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // k8s-openapi types always serialize: their maps have string keys.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `add` ops for `items` under `path`: creates the array when the pod has none, else appends.
fn extend_array(ops: &mut Vec<PatchOp>, path: &str, present: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if present {
        ops.extend(items.into_iter().map(|v| add(format!("{path}/-"), v)));
    } else {
        ops.push(add(path, Value::Array(items)));
    }
}

pub fn json_patch(pod: &Pod, plan: &Plan) -> Vec<PatchOp> {
    let spec = pod.spec.as_ref();
    let mut ops = Vec::with_capacity(6);

    let container = to_value(&plan.container);
    match plan.placement {
        Placement::NativeSidecar => {
            if spec.and_then(|s| s.init_containers.as_ref()).is_some() {
                ops.push(add("/spec/initContainers/0", container));
            } else {
                ops.push(add("/spec/initContainers", json!([container])));
            }
        }
        Placement::FirstSidecar => ops.push(add("/spec/containers/0", container)),
        // An ephemeral plan rendered as a patch (offline `inject --ephemeral`) still lands in
        // `containers`; the reconciler uses `ephemeral_container` instead.
        Placement::Sidecar | Placement::Ephemeral => {
            ops.push(add("/spec/containers/-", container));
        }
    }

    let has_aliases = spec.and_then(|s| s.host_aliases.as_ref()).is_some();
    let mut new_aliases = Vec::new();
    for change in &plan.host_aliases {
        match change {
            HostAliasChange::Add(alias) => new_aliases.push(to_value(alias)),
            HostAliasChange::Extend { index, hostnames } => {
                let entry_has_names = spec
                    .and_then(|s| s.host_aliases.as_ref())
                    .and_then(|a| a.get(*index))
                    .is_some_and(|a| a.hostnames.is_some());
                let path = format!("/spec/hostAliases/{index}/hostnames");
                let names = hostnames.iter().map(|h| json!(h)).collect();
                extend_array(&mut ops, &path, entry_has_names, names);
            }
        }
    }
    extend_array(&mut ops, "/spec/hostAliases", has_aliases, new_aliases);

    let has_volumes = spec.and_then(|s| s.volumes.as_ref()).is_some();
    extend_array(
        &mut ops,
        "/spec/volumes",
        has_volumes,
        plan.volumes.iter().map(to_value).collect(),
    );

    let mut annotations = vec![(ANNOTATION_INJECTED, plan.marker.clone())];
    // With the Whisperer first, `kubectl logs/exec` would pick it: keep the app the default.
    let existing = pod.metadata.annotations.as_ref();
    if plan.placement == Placement::FirstSidecar
        && existing.is_none_or(|a| !a.contains_key(ANNOTATION_DEFAULT_CONTAINER))
    {
        if let Some(first) = spec.and_then(|s| s.containers.first()) {
            annotations.push((ANNOTATION_DEFAULT_CONTAINER, first.name.clone()));
        }
    }
    if existing.is_some() {
        for (k, v) in annotations {
            ops.push(add(
                format!("/metadata/annotations/{}", pointer_escape(k)),
                json!(v),
            ));
        }
    } else {
        let map: serde_json::Map<String, Value> = annotations
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(add("/metadata/annotations", Value::Object(map)));
    }
    ops
}

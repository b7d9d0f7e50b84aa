//! The JSON patch of [`super::json_patch`], spliced from bytes serialized once per config load.
//!
//! Most of a patch is the same for every pod of a profile: the container (env, resources,
//! securityContext, mounts), the volumes, the hostAliases. [`Fragments`] holds their JSON for
//! one profile and placement; [`Fragments::write_patch`] only writes the pod-dependent glue
//! (which paths, which annotations) around them. The output is byte for byte what
//! `serde_json::to_vec(&json_patch(pod, &plan))` gives for the plan the engine would build
//! (tested on every fixture and on random pods).

use k8s_openapi::api::core::v1::{HostAlias, Pod};
use serde::Serialize;
use serde_json::Value;

use super::patch::ANNOTATION_DEFAULT_CONTAINER;
use crate::config::Profile;
use crate::engine::{
    base_marker, base_sidecar_container, host_alias_changes, HostAliasChange, Placement, Settings,
    ANNOTATION_INJECTED,
};

/// What one profile injects at one placement, as JSON, for pods that ask for no override.
#[derive(Debug, Clone)]
pub struct Fragments {
    placement: Placement,
    container: Vec<u8>,
    marker: String,
    volumes: Vec<Vec<u8>>,
    volumes_array: Vec<u8>,
    /// The profile's hostAliases merged into a pod that has none (the common case).
    new_aliases_array: Vec<u8>,
    host_aliases: Vec<HostAlias>,
}

/// JSON exactly as `json_patch` writes a value: through `serde_json::Value`, whose maps
/// are ordered by key.
fn value_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).unwrap_or(Value::Null);
    serde_json::to_vec(&value).unwrap_or_default()
}

fn array_bytes(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

/// A JSON string; writing a `&str` into a `Vec` cannot fail.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The glue of one `add` op, `value` already JSON.
fn op(out: &mut Vec<u8>, first: &mut bool, path: &str, value: &[u8]) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.extend_from_slice(br#"{"op":"add","path":"#);
    string(out, path);
    out.extend_from_slice(br#","value":"#);
    out.extend_from_slice(value);
    out.push(b'}');
}

/// `add` ops for `items` under `path`, as `json_patch`'s `extend_array`.
fn extend(
    out: &mut Vec<u8>,
    first: &mut bool,
    path: &str,
    item_path: &str,
    present: bool,
    items: &[Vec<u8>],
    array: &[u8],
) {
    if items.is_empty() {
        return;
    }
    if present {
        for item in items {
            op(out, first, item_path, item);
        }
    } else {
        op(out, first, path, array);
    }
}

impl Fragments {
    pub fn new(
        profile_name: &str,
        profile: &Profile,
        settings: &Settings,
        placement: Placement,
    ) -> Fragments {
        let container = base_sidecar_container(profile_name, profile, settings, placement);
        let marker = base_marker(profile_name, profile, &container, placement);
        let volumes: Vec<Vec<u8>> = profile.volumes.iter().map(value_bytes).collect();
        let new_aliases: Vec<Vec<u8>> = host_alias_changes(&[], &profile.host_aliases)
            .iter()
            .filter_map(|c| match c {
                HostAliasChange::Add(a) => Some(value_bytes(a)),
                HostAliasChange::Extend { .. } => None,
            })
            .collect();
        Fragments {
            placement,
            container: value_bytes(&container),
            marker,
            volumes_array: array_bytes(&volumes),
            volumes,
            new_aliases_array: if new_aliases.is_empty() {
                Vec::new()
            } else {
                array_bytes(&new_aliases)
            },
            host_aliases: profile.host_aliases.clone(),
        }
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Value of the `whisperer.dev/injected` marker.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Appends the patch for `pod` to `out`.
    pub fn write_patch(&self, pod: &Pod, out: &mut Vec<u8>) {
        let spec = pod.spec.as_ref();
        let first = &mut true;
        out.push(b'[');
        match self.placement {
            Placement::NativeSidecar => {
                if spec.and_then(|s| s.init_containers.as_ref()).is_some() {
                    op(out, first, "/spec/initContainers/0", &self.container);
                } else {
                    out.extend_from_slice(
                        br#"{"op":"add","path":"/spec/initContainers","value":["#,
                    );
                    out.extend_from_slice(&self.container);
                    out.extend_from_slice(b"]}");
                    *first = false;
                }
            }
            Placement::FirstSidecar => op(out, first, "/spec/containers/0", &self.container),
            Placement::Sidecar | Placement::Ephemeral => {
                op(out, first, "/spec/containers/-", &self.container)
            }
        }

        match spec.and_then(|s| s.host_aliases.as_ref()) {
            // No hostAliases: one op with the profile's list.
            None if !self.new_aliases_array.is_empty() => {
                op(out, first, "/spec/hostAliases", &self.new_aliases_array)
            }
            None => {}
            // The pod has its own: merged per entry, as the engine plans it (rare).
            Some(have) => self.write_merged_aliases(have, out, first),
        }

        let has_volumes = spec.and_then(|s| s.volumes.as_ref()).is_some();
        extend(
            out,
            first,
            "/spec/volumes",
            "/spec/volumes/-",
            has_volumes,
            &self.volumes,
            &self.volumes_array,
        );

        let existing = pod.metadata.annotations.as_ref();
        // With the Whisperer first, `kubectl logs/exec` would pick it: keep the app the default.
        let default_container = if self.placement == Placement::FirstSidecar
            && existing.is_none_or(|a| !a.contains_key(ANNOTATION_DEFAULT_CONTAINER))
        {
            spec.and_then(|s| s.containers.first())
                .map(|c| c.name.as_str())
        } else {
            None
        };
        if existing.is_some() {
            if !std::mem::take(first) {
                out.push(b',');
            }
            out.extend_from_slice(
                br#"{"op":"add","path":"/metadata/annotations/whisperer.dev~1injected","value":"#,
            );
            string(out, &self.marker);
            out.push(b'}');
            if let Some(name) = default_container {
                out.extend_from_slice(
                    br#",{"op":"add","path":"/metadata/annotations/kubectl.kubernetes.io~1default-container","value":"#,
                );
                string(out, name);
                out.push(b'}');
            }
        } else {
            if !std::mem::take(first) {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"op":"add","path":"/metadata/annotations","value":{"#);
            // Keys in the order of a serde_json map: sorted.
            if let Some(name) = default_container {
                string(out, ANNOTATION_DEFAULT_CONTAINER);
                out.push(b':');
                string(out, name);
                out.push(b',');
            }
            string(out, ANNOTATION_INJECTED);
            out.push(b':');
            string(out, &self.marker);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }

    fn write_merged_aliases(&self, have: &[HostAlias], out: &mut Vec<u8>, first: &mut bool) {
        let mut added = Vec::new();
        for change in host_alias_changes(have, &self.host_aliases) {
            match change {
                HostAliasChange::Add(alias) => added.push(value_bytes(&alias)),
                HostAliasChange::Extend { index, hostnames } => {
                    let path = format!("/spec/hostAliases/{index}/hostnames");
                    let names: Vec<Vec<u8>> = hostnames.iter().map(value_bytes).collect();
                    let present = have.get(index).is_some_and(|a| a.hostnames.is_some());
                    extend(
                        out,
                        first,
                        &path,
                        &format!("{path}/-"),
                        present,
                        &names,
                        &array_bytes(&names),
                    );
                }
            }
        }
        extend(
            out,
            first,
            "/spec/hostAliases",
            "/spec/hostAliases/-",
            true,
            &added,
            &[],
        );
    }
}

// The two annotation paths above are written as literals; this keeps them honest.
const _: () = {
    assert!(matches!(
        ANNOTATION_INJECTED.as_bytes(),
        b"whisperer.dev/injected"
    ));
    assert!(matches!(
        ANNOTATION_DEFAULT_CONTAINER.as_bytes(),
        b"kubectl.kubernetes.io/default-container"
    ));
};

#[cfg(test)]
mod tests;

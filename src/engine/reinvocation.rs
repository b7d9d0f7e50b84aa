//! A second admission call for a pod we already injected (`reinvocationPolicy: IfNeeded`):
//! a later webhook may have put its own native sidecar in front of ours (Istio's
//! `istio-proxy` does), so the Whisperer would start after it and miss its start-up traffic.
//! Nothing is added again; only the Whisperer's place is restored.

use k8s_openapi::api::core::v1::Pod;

use super::{plan, Settings, ANNOTATION_INJECTED};

/// Index in `spec.initContainers` of our native sidecar when it is no longer first; `None`
/// when there is nothing to restore (not ours, classic sidecar, already first).
pub fn displaced_native_sidecar(pod: &Pod, settings: &Settings) -> Option<usize> {
    let marker = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_INJECTED)?;
    let profile = settings
        .config
        .profiles
        .get(plan::marker_profile(marker)?)?;
    let inits = pod.spec.as_ref()?.init_containers.as_deref()?;
    let at = inits.iter().position(|c| {
        c.name == profile.container_name()
            && c.image.as_deref() == Some(profile.image.as_str())
            && c.restart_policy.as_deref() == Some("Always")
    })?;
    (at > 0).then_some(at)
}

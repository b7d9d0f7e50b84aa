//! Does a pod carry a Whisperer? Pure: decided from the pod's spec and status and the
//! configured profile images, never from the `whisperer.dev/injected` annotation (anyone who
//! may edit the pod can write that).
//!
//! A container counts while it has not terminated: a freshly added container without a status
//! yet counts (its agent may already be asking), one the kubelet reports as terminated does not
//! (a detached ephemeral Whisperer stays in the spec forever, its access must not).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Images of the pod's containers, init containers and ephemeral containers that have not
/// terminated, in spec order (duplicates kept).
pub fn live_images(pod: &Pod) -> Vec<&str> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let status = pod.status.as_ref();
    let mut images = Vec::new();
    let regular = spec
        .containers
        .iter()
        .map(|c| (&*c.name, c.image.as_deref()));
    push_live(
        &mut images,
        regular,
        statuses(status.and_then(|s| s.container_statuses.as_ref())),
    );
    let init = spec.init_containers.iter().flatten();
    push_live(
        &mut images,
        init.map(|c| (&*c.name, c.image.as_deref())),
        statuses(status.and_then(|s| s.init_container_statuses.as_ref())),
    );
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    push_live(
        &mut images,
        ephemeral.map(|c| (&*c.name, c.image.as_deref())),
        statuses(status.and_then(|s| s.ephemeral_container_statuses.as_ref())),
    );
    images
}

fn statuses(list: Option<&Vec<ContainerStatus>>) -> &[ContainerStatus] {
    list.map(Vec::as_slice).unwrap_or_default()
}

/// Push the image of every `(name, image)` whose status (looked up by name) is not terminated.
fn push_live<'a>(
    out: &mut Vec<&'a str>,
    containers: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    statuses: &[ContainerStatus],
) {
    let terminated = |name: &str| {
        statuses
            .iter()
            .any(|s| s.name == name && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
    };
    out.extend(
        containers
            .filter(|(name, _)| !terminated(name))
            .filter_map(|(_, image)| image),
    );
}

/// Whether a live container of `pod` uses one of `whisperer_images` (exact match: the
/// injector writes the profile's image string verbatim).
pub fn carries_whisperer(pod: &Pod, whisperer_images: &HashSet<String>) -> bool {
    live_images(pod)
        .into_iter()
        .any(|image| whisperer_images.contains(image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WHISPERER: &str = "ghcr.io/whisperer-dev/whisperer:v0.1.0";

    fn images() -> HashSet<String> {
        [WHISPERER.to_owned()].into()
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod fixture")
    }

    #[test]
    fn sidecar_init_and_ephemeral_whisperers_count() {
        for field in ["containers", "initContainers", "ephemeralContainers"] {
            let mut spec = json!({ "containers": [{ "name": "app", "image": "nginx" }] });
            let list = spec
                .as_object_mut()
                .expect("object")
                .entry(field)
                .or_insert_with(|| json!([]));
            list.as_array_mut()
                .expect("array")
                .push(json!({ "name": "whisperer", "image": WHISPERER }));
            let p = pod(json!({ "metadata": { "name": "p" }, "spec": spec }));
            assert!(carries_whisperer(&p, &images()), "{field}");
        }
    }

    #[test]
    fn the_injected_annotation_alone_does_not_count() {
        let p = pod(json!({
            "metadata": { "name": "p", "annotations": { "whisperer.dev/injected": "default/abc" } },
            "spec": { "containers": [{ "name": "whisperer", "image": "evil/whisperer:v0.1.0" }] }
        }));
        assert!(!carries_whisperer(&p, &images()));
    }

    #[test]
    fn a_terminated_whisperer_does_not_count_a_waiting_one_does() {
        let p = |state: serde_json::Value| {
            pod(json!({
                "metadata": { "name": "p" },
                "spec": {
                    "containers": [{ "name": "app", "image": "nginx" }],
                    "ephemeralContainers": [{ "name": "whisperer-a", "image": WHISPERER }]
                },
                "status": { "ephemeralContainerStatuses": [{
                    "name": "whisperer-a", "image": WHISPERER, "imageID": "", "ready": false,
                    "restartCount": 0, "state": state
                }]}
            }))
        };
        let terminated = p(json!({ "terminated": { "exitCode": 0 } }));
        assert!(!carries_whisperer(&terminated, &images()));
        assert_eq!(live_images(&terminated), vec!["nginx"]);
        assert!(carries_whisperer(&p(json!({ "waiting": {} })), &images()));
        assert!(carries_whisperer(&p(json!({ "running": {} })), &images()));
    }

    #[test]
    fn a_status_of_another_container_does_not_hide_the_whisperer() {
        let p = pod(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [
                { "name": "app", "image": "nginx" },
                { "name": "whisperer", "image": WHISPERER }
            ]},
            "status": { "containerStatuses": [{
                "name": "app", "image": "nginx", "imageID": "", "ready": false,
                "restartCount": 0, "state": { "terminated": { "exitCode": 1 } }
            }]}
        }));
        assert_eq!(live_images(&p), vec![WHISPERER]);
    }

    #[test]
    fn no_spec_no_images() {
        assert!(live_images(&pod(json!({ "metadata": { "name": "p" } }))).is_empty());
    }
}

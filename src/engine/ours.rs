//! Which containers of a pod are really our Whisperers (for `kubectl whisper logs`): the same
//! identification the reconciler and the attach decision use. A sidecar counts when the pod
//! carries the marker of a configured profile AND a container of that profile's name and
//! image; an ephemeral container counts when it runs a configured profile's image and carries
//! [`ENV_ATTACHMENT_UID`] (of a known Attachment, when the caller knows them). A look-alike
//! (right name, other image) is never ours.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;

use super::attach::has_sidecar;
use super::plan::marker_profile;
use super::{PodFacts, ANNOTATION_INJECTED, ENV_ATTACHMENT_UID};
use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OurContainer {
    /// Injected by the webhook (regular or native-sidecar init container).
    Sidecar { name: String, profile: String },
    /// Attached at runtime by the Attachment whose uid the container carries.
    Attached {
        name: String,
        attachment_uid: String,
    },
}

impl OurContainer {
    pub fn name(&self) -> &str {
        match self {
            OurContainer::Sidecar { name, .. } | OurContainer::Attached { name, .. } => name,
        }
    }
}

/// Our Whisperers in `pod`, sidecar first, then ephemeral ones in spec order.
/// `attachment_uids`: the uids of the Attachments of the pod's namespace, or `None` when they
/// cannot be read (then any uid counts).
pub fn whisperer_containers(
    pod: &Pod,
    config: &Config,
    attachment_uids: Option<&HashSet<String>>,
) -> Vec<OurContainer> {
    let mut out = Vec::new();
    if let Some(profile_name) = pod.annotation(ANNOTATION_INJECTED).and_then(marker_profile) {
        if let Some(profile) = config.profiles.get(profile_name) {
            if has_sidecar(pod, profile_name, profile) {
                out.push(OurContainer::Sidecar {
                    name: profile.container_name().to_string(),
                    profile: profile_name.to_string(),
                });
            }
        }
    }
    let images: HashSet<&str> = config.profiles.values().map(|p| p.image.as_str()).collect();
    let ephemeral = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten());
    for c in ephemeral {
        if !c.image.as_deref().is_some_and(|i| images.contains(i)) {
            continue;
        }
        let uid = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == ENV_ATTACHMENT_UID)
            .and_then(|e| e.value.as_deref());
        let Some(uid) = uid else { continue };
        if attachment_uids.is_some_and(|known| !known.contains(uid)) {
            continue;
        }
        out.push(OurContainer::Attached {
            name: c.name.clone(),
            attachment_uid: uid.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMAGE: &str = "ghcr.io/whisperer-dev/whisperer:v0.1.0";

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn sidecar_needs_marker_name_and_image() {
        let config = Config::default();
        let marked = json!({"whisperer.dev/injected": "profile=default,hash=0123456789abcdef"});
        let p = pod(json!({
            "metadata": {"name": "a", "annotations": marked},
            "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "whisperer", "image": IMAGE}]}
        }));
        assert_eq!(
            whisperer_containers(&p, &config, None),
            vec![OurContainer::Sidecar {
                name: "whisperer".into(),
                profile: "default".into()
            }]
        );
        // Same name, other image: a look-alike.
        let fake = pod(json!({
            "metadata": {"name": "a", "annotations": marked},
            "spec": {"containers": [{"name": "whisperer", "image": "evil:1"}]}
        }));
        assert!(whisperer_containers(&fake, &config, None).is_empty());
        // Container without the marker: not injected by us.
        let unmarked = pod(json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "whisperer", "image": IMAGE}]}
        }));
        assert!(whisperer_containers(&unmarked, &config, None).is_empty());
    }

    #[test]
    fn ephemeral_needs_image_and_a_known_attachment_uid() {
        let config = Config::default();
        let p = pod(json!({
            "metadata": {"name": "a"},
            "spec": {
                "containers": [{"name": "app", "image": "x"}],
                "ephemeralContainers": [
                    {"name": "whisperer-cap", "image": IMAGE, "env": [{"name": "WHISPERER_ATTACHMENT_UID", "value": "u1"}]},
                    {"name": "whisperer-other", "image": IMAGE, "env": [{"name": "WHISPERER_ATTACHMENT_UID", "value": "u2"}]},
                    {"name": "whisperer-nouid", "image": IMAGE},
                    {"name": "debugger", "image": "busybox", "env": [{"name": "WHISPERER_ATTACHMENT_UID", "value": "u1"}]}
                ]
            }
        }));
        let names = |uids: Option<&HashSet<String>>| -> Vec<String> {
            whisperer_containers(&p, &config, uids)
                .iter()
                .map(|c| c.name().to_string())
                .collect()
        };
        assert_eq!(names(None), ["whisperer-cap", "whisperer-other"]);
        let known: HashSet<String> = ["u1".to_string()].into();
        assert_eq!(names(Some(&known)), ["whisperer-cap"]);
    }
}

//! The part of an admitted pod the engine reads, parsed straight from the request.
//!
//! A full `k8s_openapi` Pod parse allocates every string of every field (env, probes,
//! affinity ...) and was half of the admission CPU time. The engine and the patch renderer
//! read only names, annotations, owner references and hostAliases, so serde skips the rest.
//! kube-apiserver validated the object before calling us; what is parsed here is still
//! type-checked, so a malformed pod (e.g. `containers` not a list) is still a 4xx.

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, HostAlias, Pod, PodSecurityContext, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::Deserializer;
use serde::Deserialize;

use crate::lean_json::{KeepAnnotation, KeptAnnotations};
use crate::render::ANNOTATION_DEFAULT_CONTAINER;

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// Containers: the name, and what tells our own sidecar apart (image, restart policy).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerShape {
    name: String,
    image: Option<String>,
    restart_policy: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaShape {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    annotations: Option<KeptAnnotations<EngineReads>>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecShape {
    containers: Vec<ContainerShape>,
    init_containers: Option<Vec<ContainerShape>>,
    ephemeral_containers: Option<Vec<Named>>,
    volumes: Option<Vec<Named>>,
    host_aliases: Option<Vec<HostAlias>>,
    // Policy (host namespaces) and Pod Security (pod-level context) read these.
    host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    host_ipc: Option<bool>,
    security_context: Option<PodSecurityContext>,
}

/// Annotations the engine and renderer read: ours, and the default container the patch may
/// set. The others are type-checked (every value a string) but not kept, so a pod's many
/// annotations cost no allocation.
struct EngineReads;

impl KeepAnnotation for EngineReads {
    fn keep(key: &str) -> bool {
        key.starts_with("whisperer.dev/") || key == ANNOTATION_DEFAULT_CONTAINER
    }
}

/// `spec` is required: the API server always sends it for a pod (its containers are), and
/// an object without one is not a pod.
#[derive(Deserialize)]
struct PodShape {
    #[serde(default)]
    metadata: MetaShape,
    spec: SpecShape,
}

/// Parses the fields the engine uses into a `Pod`; every other field is left empty.
pub fn parse_admitted_pod(json: &str) -> Result<Pod, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let pod = admitted_pod(&mut de)?;
    de.end()?;
    Ok(pod)
}

/// [`parse_admitted_pod`] from any deserializer: the review reads its pod `object` with it.
pub(super) fn admitted_pod<'de, D: Deserializer<'de>>(d: D) -> Result<Pod, D::Error> {
    let shape = PodShape::deserialize(d)?;
    let container = |c: ContainerShape| Container {
        name: c.name,
        image: c.image,
        restart_policy: c.restart_policy,
        ..Default::default()
    };
    let s = shape.spec;
    let spec = Some(PodSpec {
        containers: s.containers.into_iter().map(container).collect(),
        init_containers: s
            .init_containers
            .map(|v| v.into_iter().map(container).collect()),
        ephemeral_containers: s.ephemeral_containers.map(|v| {
            v.into_iter()
                .map(|n| EphemeralContainer {
                    name: n.name,
                    ..Default::default()
                })
                .collect()
        }),
        volumes: s.volumes.map(|v| {
            v.into_iter()
                .map(|n| Volume {
                    name: n.name,
                    ..Default::default()
                })
                .collect()
        }),
        host_aliases: s.host_aliases,
        host_network: s.host_network,
        host_pid: s.host_pid,
        host_ipc: s.host_ipc,
        security_context: s.security_context,
        ..Default::default()
    });
    let m = shape.metadata;
    Ok(Pod {
        metadata: ObjectMeta {
            name: m.name,
            generate_name: m.generate_name,
            namespace: m.namespace,
            annotations: m.annotations.map(|a| a.0),
            owner_references: m.owner_references,
            ..Default::default()
        },
        spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::{decide_admission, AdmissionSubject, Settings};
    use crate::render::json_patch;

    fn fixture_pod_json(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        v["request"]["object"].to_string()
    }

    /// The engine and renderer give the same answer from the shape as from a full parse.
    #[test]
    fn same_patch_as_a_full_parse() {
        let settings = Settings::new(
            std::sync::Arc::new(crate::config::Config::default()),
            "whisperer-system",
        );
        for f in [
            "review-pod-optin.json",
            "review-pod-hostaliases-init.json",
            "review-job-pod.json",
            "review-pod-no-annotations.json",
            "review-pod-opted-out.json",
            "review-pod-host-network.json",
            "review-pod-reinvoked.json",
        ] {
            let text = fixture_pod_json(f);
            let full: Pod = serde_json::from_str(&text).expect("full");
            let shape = parse_admitted_pod(&text).expect("shape");
            let answer = |pod: &Pod, pod_security| {
                let subject = AdmissionSubject {
                    operation: "CREATE",
                    group: "",
                    version: "v1",
                    kind: "Pod",
                    sub_resource: None,
                    namespace: "team-a",
                    pod: Some(pod),
                    pod_security,
                };
                let displaced =
                    crate::engine::reinvocation::displaced_native_sidecar(pod, &settings);
                match decide_admission(&subject, &settings) {
                    crate::engine::Decision::Inject(plan) => {
                        serde_json::to_string(&json_patch(pod, &plan)).expect("json")
                    }
                    skip => format!("{skip:?} {displaced:?}"),
                }
            };
            use crate::engine::pod_security::Level;
            for level in [None, Some(Level::Baseline), Some(Level::Restricted)] {
                assert_eq!(answer(&shape, level), answer(&full, level), "{f} {level:?}");
            }
        }
    }

    #[test]
    fn only_the_annotations_read_are_kept_and_all_are_checked() {
        let pod = parse_admitted_pod(
            r#"{"metadata":{"annotations":{"prometheus.io/scrape":"true","whisperer.dev/inject":"true","kubectl.kubernetes.io/default-container":"app"}},"spec":{"containers":[]}}"#,
        )
        .expect("pod");
        let kept: Vec<&str> = pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "kubectl.kubernetes.io/default-container",
                "whisperer.dev/inject"
            ]
        );
        // Other annotations only: the map is there (the patch adds to it), empty.
        let other = parse_admitted_pod(
            r#"{"metadata":{"annotations":{"a":"b"}},"spec":{"containers":[]}}"#,
        )
        .expect("pod");
        assert_eq!(other.metadata.annotations, Some(BTreeMap::new()));
        let none =
            parse_admitted_pod(r#"{"metadata":{"annotations":null},"spec":{"containers":[]}}"#)
                .expect("pod");
        assert_eq!(none.metadata.annotations, None);
        assert!(parse_admitted_pod(
            r#"{"metadata":{"annotations":{"a":1}},"spec":{"containers":[]}}"#
        )
        .is_err());
    }

    #[test]
    fn malformed_fields_are_still_errors() {
        for bad in [
            r#"{"spec":{"containers":"not-a-list"}}"#,
            r#"{"metadata":{"annotations":["x"]},"spec":{"containers":[]}}"#,
            r#"{"spec":{"containers":[{"image":"no-name"}]}}"#,
            r#"{"spec":{"containers":[],"hostAliases":[{"ip":7}]}}"#,
            r#"[]"#,
        ] {
            assert!(parse_admitted_pod(bad).is_err(), "{bad}");
        }
    }
}

//! The spliced patch against the patch built from types: same bytes, for every fixture and
//! for random pods, under every placement a profile can ask for.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, HostAlias, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use proptest::prelude::*;

use super::Fragments;
use crate::config::{Config, SidecarMode};
use crate::engine::{
    decide_admission, decide_admission_planned, AdmissionSubject, Decision, Planned, Settings,
};
use crate::render::json_patch;

/// The shipped profile (container, env, resources, mounts, volumes, hostAliases) under each
/// sidecar mode and readiness hold, with and without a DNS server and native sidecars.
fn settings_variants() -> &'static [Settings] {
    static VARIANTS: std::sync::OnceLock<Vec<Settings>> = std::sync::OnceLock::new();
    VARIANTS.get_or_init(build_variants)
}

fn build_variants() -> Vec<Settings> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/configmap.yaml"
    ))
    .expect("configmap");
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let shipped = Config::parse(
        cm["data"]["config.yaml"].as_str().expect("config.yaml"),
        "configmap",
    )
    .expect("shipped config");
    let mut out = Vec::new();
    for mode in [SidecarMode::Auto, SidecarMode::Classic, SidecarMode::Native] {
        for hold in [None, Some(true), Some(false)] {
            for (dns, version) in [(None, None), (Some("10.0.0.10:53"), Some((1, 28)))] {
                let mut cfg = shipped.clone();
                for p in cfg.profiles.values_mut() {
                    p.sidecar_mode = mode;
                    p.hold_application_until_ready = hold;
                }
                let mut s = Settings::new(Arc::new(cfg), "whisperer-system");
                s.dns_server = dns.map(String::from);
                s.server_version = version;
                out.push(s);
            }
        }
    }
    out
}

fn subject(pod: &Pod) -> AdmissionSubject<'_> {
    AdmissionSubject {
        operation: "CREATE",
        group: "",
        version: "v1",
        kind: "Pod",
        sub_resource: None,
        namespace: "team-a",
        pod: Some(pod),
        pod_security: None,
    }
}

/// Asserts the fast decision agrees with the full one and, when it injects, that the spliced
/// patch is the typed patch byte for byte. Returns whether it injected.
fn same_answer(pod: &Pod, settings: &Settings) -> Result<bool, TestCaseError> {
    let full = decide_admission(&subject(pod), settings);
    match decide_admission_planned(&subject(pod), settings) {
        Planned::Decided(d) => {
            prop_assert_eq!(d, full);
            Ok(false)
        }
        Planned::Base {
            profile_name,
            profile,
            choice,
        } => {
            let Decision::Inject(plan) = full else {
                return Err(TestCaseError::fail(format!("full decision: {full:?}")));
            };
            prop_assert_eq!(choice.placement, plan.placement);
            prop_assert_eq!(&choice.warnings, &plan.warnings);
            let f = Fragments::new(profile_name, profile, settings, choice.placement);
            prop_assert_eq!(f.marker(), plan.marker.as_str());
            let mut spliced = Vec::new();
            f.write_patch(pod, &mut spliced);
            let typed = serde_json::to_vec(&json_patch(pod, &plan)).expect("typed patch");
            prop_assert_eq!(
                String::from_utf8_lossy(&spliced),
                String::from_utf8_lossy(&typed)
            );
            Ok(true)
        }
    }
}

#[test]
fn spliced_patch_equals_the_typed_one_for_every_fixture() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut injected = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let review: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let object = &review["request"]["object"];
        // Both readers of the webhook: the full type and the shape it really parses.
        let Ok(full) = serde_json::from_value::<Pod>(object.clone()) else {
            continue;
        };
        let shape = crate::webhook::parse_admitted_pod(&object.to_string()).expect("shape");
        files += 1;
        for s in settings_variants() {
            for pod in [&full, &shape] {
                if same_answer(pod, s).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
                    injected += 1;
                }
            }
        }
    }
    assert!(files >= 10, "read {files} fixtures");
    assert!(injected >= 100, "only {injected} injections compared");
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("whisperer".to_string()),
        Just("whisperer-captures".to_string()),
        Just("app".to_string()),
        "[a-z]{1,6}",
        // Characters the JSON writer must escape.
        "[a-z\"\\\\/~é\u{1}]{1,6}",
    ]
}

fn alias() -> impl Strategy<Value = HostAlias> {
    (
        prop_oneof![Just("10.96.0.50".to_string()), Just("10.0.0.1".to_string())],
        proptest::option::of(proptest::collection::vec(
            prop_oneof![
                Just("whisperer-collector.whisperer-system".to_string()),
                "[a-z.]{1,8}"
            ],
            0..3,
        )),
    )
        .prop_map(|(ip, hostnames)| HostAlias { ip, hostnames })
}

fn annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    proptest::option::of(proptest::collection::btree_map(
        prop_oneof![
            Just("whisperer.dev/inject".to_string()),
            Just("whisperer.dev/profile".to_string()),
            Just("whisperer.dev/injected".to_string()),
            Just("whisperer.dev/memory".to_string()),
            Just("kubectl.kubernetes.io/default-container".to_string()),
            "[a-z./]{1,10}",
        ],
        prop_oneof![
            4 => Just("true".to_string()).boxed(),
            1 => Just("default".to_string()).boxed(),
            1 => Just("64Mi".to_string()).boxed(),
            1 => name().boxed(),
        ],
        0..4,
    ))
    // Mostly opted in, so most cases reach the renderer.
    .prop_map(|mut a| {
        if let Some(m) = a.as_mut() {
            m.entry("whisperer.dev/inject".into())
                .or_insert("true".into());
        }
        a
    })
}

fn pod() -> impl Strategy<Value = Pod> {
    let containers = proptest::collection::vec(name(), 0..3);
    let inits = proptest::option::of(proptest::collection::vec(name(), 0..2));
    let volumes = proptest::option::of(proptest::collection::vec(name(), 0..3));
    let aliases = proptest::option::of(proptest::collection::vec(alias(), 0..3));
    let owner = prop_oneof![
        Just(None),
        Just(Some(("apps/v1", "ReplicaSet"))),
        Just(Some(("batch/v1", "Job"))),
    ];
    (
        annotations(),
        containers,
        inits,
        volumes,
        aliases,
        owner,
        any::<bool>(),
    )
        .prop_map(
            |(annotations, containers, inits, volumes, host_aliases, owner, spec)| {
                let c = |name: String| Container {
                    name,
                    ..Default::default()
                };
                Pod {
                    metadata: ObjectMeta {
                        generate_name: Some("app-".into()),
                        annotations,
                        owner_references: owner.map(|(api_version, kind)| {
                            vec![OwnerReference {
                                api_version: api_version.into(),
                                kind: kind.into(),
                                name: "owner".into(),
                                uid: "u".into(),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: spec.then(|| PodSpec {
                        containers: containers.into_iter().map(c).collect(),
                        init_containers: inits.map(|v| v.into_iter().map(c).collect()),
                        volumes: volumes.map(|v| {
                            v.into_iter()
                                .map(|name| Volume {
                                    name,
                                    ..Default::default()
                                })
                                .collect()
                        }),
                        host_aliases,
                        ..Default::default()
                    }),
                    status: None,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn spliced_patch_equals_the_typed_one_for_random_pods(pod in pod(), variant in 0usize..18) {
        same_answer(&pod, &settings_variants()[variant])?;
    }
}

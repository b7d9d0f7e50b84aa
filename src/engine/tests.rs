//! Table-driven tests of the engine and, through it, the JSON patch renderer: every plan is
//! applied to its pod with the `json-patch` crate and the result must be a valid Pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{HostAlias, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use super::*;
use crate::config::{Config, SidecarMode};
use crate::render::json_patch;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn fixture_pod(name: &str) -> Pod {
    serde_json::from_value(fixture(name)["request"]["object"].clone()).expect("fixture pod")
}

fn config() -> Config {
    Config::parse(
        r#"
defaultProfile: default
namespaces: {deny: [legacy]}
profiles:
  default:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    env: [{name: WHISPERER_LOG, value: info}]
    volumeMounts: [{name: whisperer-captures, mountPath: /captures}]
    volumes: [{name: whisperer-captures, emptyDir: {}}]
    hostAliases:
      - {ip: 10.96.0.50, hostnames: [whisperer-collector.whisperer-system, collector]}
      - {ip: 10.96.0.51, hostnames: [whisperer-dns]}
  classic:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    sidecarMode: classic
  native:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    sidecarMode: native
  team-b-only:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    allowedNamespaces: [team-b]
"#,
        "test",
    )
    .expect("test config")
}

fn settings() -> Settings {
    Settings::new(Arc::new(config()), "whisperer-system")
}

fn admit(pod: &Pod, ns: &str, op: &str, s: &Settings) -> Decision {
    decide_admission(
        &AdmissionSubject {
            operation: op,
            group: "",
            version: "v1",
            kind: "Pod",
            sub_resource: None,
            namespace: ns,
            pod: Some(pod),
            pod_security: None,
        },
        s,
    )
}

fn with_annotation(mut pod: Pod, k: &str, v: &str) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(k.into(), v.into());
    pod
}

fn reason(d: &Decision) -> Option<SkipReason> {
    match d {
        Decision::Skip { reason, .. } => Some(*reason),
        Decision::Inject(_) => None,
    }
}

/// Applies the rendered patch and returns the patched pod, re-parsed as a typed Pod.
fn apply(pod: &Pod, plan: &Plan) -> Pod {
    let ops = json_patch(pod, plan);
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&ops).expect("ops to json")).expect("RFC 6902");
    let mut doc = serde_json::to_value(pod).expect("pod to json");
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    serde_json::from_value(doc).expect("patched pod parses as a Pod")
}

fn whisperers(pod: &Pod) -> usize {
    let spec = pod.spec.as_ref().expect("spec");
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == "whisperer")
        .count()
}

#[test]
fn skip_reasons() {
    let s = settings();
    let optin = fixture_pod("review-pod-optin.json");
    let cases: Vec<(&str, Decision, SkipReason)> = vec![
        (
            "update",
            admit(&optin, "team-a", "UPDATE", &s),
            SkipReason::NotCreate,
        ),
        (
            "kube-system",
            admit(&optin, "kube-system", "CREATE", &s),
            SkipReason::NamespaceDenied,
        ),
        (
            "own namespace",
            admit(&optin, "whisperer-system", "CREATE", &s),
            SkipReason::NamespaceDenied,
        ),
        (
            "deny list",
            admit(&optin, "legacy", "CREATE", &s),
            SkipReason::NamespaceDenied,
        ),
        (
            "no annotation",
            admit(
                &fixture_pod("review-pod-not-requested.json"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::NotRequested,
        ),
        (
            "no annotations map",
            admit(
                &fixture_pod("review-pod-no-annotations.json"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::NotRequested,
        ),
        (
            "opt out",
            admit(
                &fixture_pod("review-pod-opted-out.json"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::OptedOut,
        ),
        (
            "unknown profile",
            admit(
                &fixture_pod("review-pod-unknown-profile.json"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::UnknownProfile,
        ),
        (
            "profile not allowed here",
            admit(
                &with_annotation(optin.clone(), ANNOTATION_PROFILE, "team-b-only"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::ProfileNotAllowed,
        ),
        (
            "marker present",
            admit(
                &with_annotation(
                    optin.clone(),
                    ANNOTATION_INJECTED,
                    "profile=default,hash=00",
                ),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::AlreadyInjected,
        ),
        (
            "garbage opt-in value",
            admit(
                &with_annotation(optin.clone(), ANNOTATION_INJECT, "yes please"),
                "team-a",
                "CREATE",
                &s,
            ),
            SkipReason::NotRequested,
        ),
    ];
    for (name, decision, want) in cases {
        assert_eq!(reason(&decision), Some(want), "{name}: {decision:?}");
    }
    let not_pod = decide_admission(
        &AdmissionSubject {
            operation: "CREATE",
            group: "",
            version: "v1",
            kind: "ConfigMap",
            sub_resource: None,
            namespace: "team-a",
            pod: None,
            pod_security: None,
        },
        &s,
    );
    assert_eq!(reason(&not_pod), Some(SkipReason::NotAPod));
    let sub = decide_admission(
        &AdmissionSubject {
            operation: "CREATE",
            group: "",
            version: "v1",
            kind: "Pod",
            sub_resource: Some("binding"),
            namespace: "team-a",
            pod: Some(&optin),
            pod_security: None,
        },
        &s,
    );
    assert_eq!(reason(&sub), Some(SkipReason::NotAPod));
}

#[test]
fn problems_carry_a_message() {
    let s = settings();
    let d = admit(
        &fixture_pod("review-pod-unknown-profile.json"),
        "team-a",
        "CREATE",
        &s,
    );
    let Decision::Skip {
        detail: Some(detail),
        ..
    } = d
    else {
        panic!("unknown profile must explain itself: {d:?}")
    };
    assert!(detail.contains("does-not-exist"), "{detail}");
    // A made-up review must not learn which other profiles exist.
    for other in ["classic", "native", "team-b-only"] {
        assert!(!detail.contains(other), "{detail} lists {other}");
    }
}

#[test]
fn default_on_injects_unannotated_but_honours_opt_out() {
    let mut s = settings();
    s.inject_by_default = true;
    let bare = fixture_pod("review-pod-no-annotations.json");
    let Decision::Inject(plan) = admit(&bare, "team-a", "CREATE", &s) else {
        panic!("default-on must inject")
    };
    let out = apply(&bare, &plan);
    assert_eq!(whisperers(&out), 1);
    let ann = out.metadata.annotations.expect("annotations created");
    assert_eq!(ann.get(ANNOTATION_INJECTED), Some(&plan.marker));
    let opted_out = fixture_pod("review-pod-opted-out.json");
    assert_eq!(
        reason(&admit(&opted_out, "team-a", "CREATE", &s)),
        Some(SkipReason::OptedOut)
    );
}

#[test]
fn injects_sidecar_with_everything_the_profile_asks_for() {
    let s = settings();
    let pod = fixture_pod("review-pod-optin.json");
    let Decision::Inject(plan) = admit(&pod, "team-a", "CREATE", &s) else {
        panic!("opt-in pod must be injected")
    };
    assert_eq!(plan.placement, Placement::Sidecar);
    let out = apply(&pod, &plan);
    assert_eq!(whisperers(&out), 1);
    let spec = out.spec.as_ref().expect("spec");
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(
        spec.containers[0].name, "checkout",
        "app container stays first"
    );
    let w = &spec.containers[1];
    let env: Vec<&str> = w.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for want in [
        ENV_POD_NAME,
        ENV_POD_NAMESPACE,
        ENV_PROFILE,
        "WHISPERER_LOG",
    ] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
    let pod_name_env = w
        .env
        .iter()
        .flatten()
        .find(|e| e.name == ENV_POD_NAME)
        .expect("env");
    assert_eq!(
        pod_name_env
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        ["config", "kube-api-access-x7k2p", "whisperer-captures"]
    );
    let aliases = spec.host_aliases.as_ref().expect("hostAliases created");
    assert_eq!(aliases.len(), 2);
    let ann = out.metadata.annotations.as_ref().expect("annotations");
    assert!(ann[ANNOTATION_INJECTED].starts_with("profile=default,hash="));
    assert_eq!(
        ann["prometheus.io/scrape"], "true",
        "other annotations untouched"
    );
    // Everything the pod had is still there, byte for byte.
    let before =
        serde_json::to_value(pod.spec.as_ref().expect("spec").containers[0].clone()).expect("json");
    let after = serde_json::to_value(spec.containers[0].clone()).expect("json");
    assert_eq!(before, after);
}

#[test]
fn merges_host_aliases_and_keeps_init_containers() {
    let s = settings();
    let pod = fixture_pod("review-pod-hostaliases-init.json");
    let Decision::Inject(plan) = admit(&pod, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    let out = apply(&pod, &plan);
    let spec = out.spec.as_ref().expect("spec");
    let aliases: Vec<(String, Vec<String>)> = spec
        .host_aliases
        .iter()
        .flatten()
        .map(|a: &HostAlias| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        aliases,
        vec![
            (
                "10.96.0.50".to_string(),
                vec![
                    "whisperer-collector.whisperer-system".to_string(),
                    "collector".to_string()
                ]
            ),
            ("192.168.7.7".to_string(), vec!["legacy-db".to_string()]),
            ("10.96.0.51".to_string(), vec!["whisperer-dns".to_string()]),
        ],
        "existing entry extended, no ip+hostname twice"
    );
    let inits: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(inits, ["migrate"]);
    assert_eq!(whisperers(&out), 1);
}

#[test]
fn job_pods_get_a_native_sidecar() {
    let s = settings();
    let pod = fixture_pod("review-job-pod.json");
    let Decision::Inject(plan) = admit(&pod, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    assert_eq!(plan.placement, Placement::NativeSidecar);
    let out = apply(&pod, &plan);
    let spec = out.spec.as_ref().expect("spec");
    let init = spec
        .init_containers
        .as_ref()
        .expect("init containers created");
    assert_eq!(init[0].name, "whisperer");
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers.len(), 1);
}

#[test]
fn sidecar_mode_forces_either_form() {
    let s = settings();
    let job = with_annotation(
        fixture_pod("review-job-pod.json"),
        ANNOTATION_PROFILE,
        "classic",
    );
    let Decision::Inject(plan) = admit(&job, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    assert_eq!(plan.placement, Placement::Sidecar);
    let with_init = with_annotation(
        fixture_pod("review-pod-hostaliases-init.json"),
        ANNOTATION_PROFILE,
        "native",
    );
    let Decision::Inject(plan) = admit(&with_init, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    assert_eq!(plan.placement, Placement::NativeSidecar);
    let out = apply(&with_init, &plan);
    let inits: Vec<&str> = out
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        inits,
        ["whisperer", "migrate"],
        "native sidecar first, existing init kept"
    );
    assert_eq!(
        config().profiles["native"].sidecar_mode,
        SidecarMode::Native
    );
}

#[test]
fn name_conflicts_are_reported_not_doubled() {
    let s = settings();
    let mut pod = fixture_pod("review-pod-optin.json");
    let mut extra = pod.spec.as_ref().expect("spec").containers[0].clone();
    extra.name = "whisperer".into();
    pod.spec.as_mut().expect("spec").containers.push(extra);
    assert_eq!(
        reason(&admit(&pod, "team-a", "CREATE", &s)),
        Some(SkipReason::NameConflict)
    );
}

#[test]
fn patch_is_small_and_only_adds() {
    let s = settings();
    let small = fixture_pod("review-pod-optin.json");
    let big = fixture_pod("review-pod-1500-env.json");
    let size = |p: &Pod| {
        let Decision::Inject(plan) = admit(p, "team-a", "CREATE", &s) else {
            panic!("inject")
        };
        let ops = json_patch(p, &plan);
        assert!(ops.iter().all(|o| o.op == "add"));
        assert!(
            !ops.iter().any(|o| o.path == "/spec/containers"),
            "never replace containers"
        );
        serde_json::to_vec(&ops).expect("json").len()
    };
    assert_eq!(
        size(&small),
        size(&big),
        "patch size does not grow with the pod"
    );
}

#[test]
fn annotation_key_is_escaped_in_pointer() {
    let s = settings();
    let pod = fixture_pod("review-pod-optin.json");
    let Decision::Inject(plan) = admit(&pod, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    let ops = json_patch(&pod, &plan);
    assert!(ops
        .iter()
        .any(|o| o.path == "/metadata/annotations/whisperer.dev~1injected"));
}

#[test]
fn marker_hash_is_stable_and_tracks_the_plan() {
    let s = settings();
    let pod = fixture_pod("review-pod-optin.json");
    let marker = |p: &Pod, s: &Settings| match admit(p, "team-a", "CREATE", s) {
        Decision::Inject(plan) => plan.marker,
        other => panic!("{other:?}"),
    };
    assert_eq!(marker(&pod, &s), marker(&pod, &s));
    let mut changed = config();
    changed.profiles.get_mut("default").expect("default").image = "other:1".into();
    let s2 = Settings::new(Arc::new(changed), "whisperer-system");
    assert_ne!(marker(&pod, &s), marker(&pod, &s2));
}

fn running(mut pod: Pod, ns: &str) -> Pod {
    pod.metadata.namespace = Some(ns.into());
    pod.metadata.name = Some("checkout-7d9f8b6c5d-abcde".into());
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    pod
}

fn attach_subject<'a>(name: &'a str) -> AttachSubject<'a> {
    AttachSubject {
        attachment: name,
        attachment_uid: "uid-1",
        profile: None,
        target_container: None,
        deadline: Some("2026-11-22T15:00:00Z"),
        expired: false,
        generation: 1,
        extra_env: &[],
    }
}

#[test]
fn attach_plans_an_ephemeral_container() {
    let s = settings();
    let pod = running(fixture_pod("review-pod-not-requested.json"), "team-a");
    let Decision::Inject(plan) = decide_attach(&pod, &attach_subject("debug-checkout"), &s) else {
        panic!("attach")
    };
    assert_eq!(plan.placement, Placement::Ephemeral);
    assert_eq!(plan.target_container.as_deref(), Some("checkout"));
    let ec = crate::render::ephemeral_container(&plan);
    assert_eq!(ec.name, "whisperer-debug-checkout");
    assert!(ec.resources.is_none() && ec.ports.is_none() && ec.liveness_probe.is_none());
    assert!(
        ec.volume_mounts.iter().flatten().next().is_none(),
        "pod lacks the capture volume"
    );
    let env: BTreeMap<String, Option<String>> = ec
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(env[ENV_ATTACHMENT].as_deref(), Some("debug-checkout"));
    assert_eq!(env[ENV_DEADLINE].as_deref(), Some("2026-11-22T15:00:00Z"));
    assert!(
        !plan.warnings.is_empty(),
        "dropped mount and hostAliases are reported"
    );
}

#[test]
fn attach_skips() {
    let s = settings();
    let base = running(fixture_pod("review-pod-not-requested.json"), "team-a");
    let mut terminating = base.clone();
    terminating.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-22T15:00:00Z".parse().expect("time"),
        ));
    let mut pending = base.clone();
    pending.status = None;
    // What the webhook really leaves: marker AND sidecar.
    let injected = {
        let optin = with_annotation(base.clone(), ANNOTATION_INJECT, "true");
        let Decision::Inject(plan) = admit(&optin, "team-a", "CREATE", &s) else {
            panic!("optin pod is injected")
        };
        let mut p = apply(&optin, &plan);
        p.status = base.status.clone();
        p
    };
    let fake_marker = with_annotation(base.clone(), ANNOTATION_INJECTED, "profile=default,hash=ab");
    assert!(
        matches!(
            decide_attach(&fake_marker, &attach_subject("a"), &s),
            Decision::Inject(_)
        ),
        "a marker without the sidecar proves nothing"
    );
    let mut attached = base.clone();
    attached.spec.as_mut().expect("spec").ephemeral_containers =
        Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
            name: "whisperer-a".into(),
            ..Default::default()
        }]);
    let denied = running(fixture_pod("review-pod-not-requested.json"), "kube-system");
    let subj = attach_subject("a");
    let expired = AttachSubject {
        expired: true,
        ..subj
    };
    let missing = AttachSubject {
        target_container: Some("nope"),
        ..subj
    };
    let cases = [
        (
            "terminating",
            decide_attach(&terminating, &subj, &s),
            SkipReason::PodTerminating,
        ),
        (
            "pending",
            decide_attach(&pending, &subj, &s),
            SkipReason::PodNotRunning,
        ),
        (
            "webhook sidecar present",
            decide_attach(&injected, &subj, &s),
            SkipReason::AlreadyInjected,
        ),
        (
            "already attached",
            decide_attach(&attached, &subj, &s),
            SkipReason::AlreadyAttached,
        ),
        (
            "denied namespace",
            decide_attach(&denied, &subj, &s),
            SkipReason::NamespaceDenied,
        ),
        (
            "expired",
            decide_attach(&base, &expired, &s),
            SkipReason::Expired,
        ),
        (
            "target missing",
            decide_attach(&base, &missing, &s),
            SkipReason::TargetContainerMissing,
        ),
    ];
    for (name, d, want) in cases {
        assert_eq!(reason(&d), Some(want), "{name}: {d:?}");
    }
    let next_gen = AttachSubject {
        generation: 2,
        ..subj
    };
    assert!(matches!(
        decide_attach(&attached, &next_gen, &s),
        Decision::Inject(_)
    ));
}

fn host_network(mut pod: Pod) -> Pod {
    pod.spec.as_mut().expect("spec").host_network = Some(true);
    pod
}

fn with_profile_flags(s: &Settings, host: bool, opted_out: bool) -> Settings {
    let mut cfg = (*s.config).clone();
    for p in cfg.profiles.values_mut() {
        p.allow_host_namespaces = host;
        p.attach_to_opted_out = opted_out;
    }
    Settings::new(Arc::new(cfg), "whisperer-system")
}

#[test]
fn host_namespace_pods_are_never_captured_unless_the_profile_allows() {
    let s = settings();
    let optin = fixture_pod("review-pod-optin.json");
    let d = admit(&host_network(optin.clone()), "team-a", "CREATE", &s);
    assert_eq!(reason(&d), Some(SkipReason::HostNamespaces), "{d:?}");
    let mut pid = optin.clone();
    pid.spec.as_mut().expect("spec").host_pid = Some(true);
    let Decision::Skip {
        detail: Some(why), ..
    } = admit(&pid, "team-a", "CREATE", &s)
    else {
        panic!("hostPID pod skipped with a message")
    };
    assert!(
        why.contains("hostPID") && why.contains("allowHostNamespaces"),
        "{why}"
    );
    let running_host = running(
        host_network(fixture_pod("review-pod-not-requested.json")),
        "team-a",
    );
    let d = decide_attach(&running_host, &attach_subject("a"), &s);
    assert_eq!(reason(&d), Some(SkipReason::HostNamespaces), "{d:?}");

    let allowed = with_profile_flags(&s, true, false);
    assert!(matches!(
        admit(&host_network(optin), "team-a", "CREATE", &allowed),
        Decision::Inject(_)
    ));
    assert!(matches!(
        decide_attach(&running_host, &attach_subject("a"), &allowed),
        Decision::Inject(_)
    ));
}

#[test]
fn attachments_honour_opt_out_unless_the_profile_overrides() {
    let s = settings();
    let out = running(fixture_pod("review-pod-opted-out.json"), "team-a");
    let d = decide_attach(&out, &attach_subject("a"), &s);
    assert_eq!(reason(&d), Some(SkipReason::OptedOut), "{d:?}");
    let overriding = with_profile_flags(&s, false, true);
    assert!(matches!(
        decide_attach(&out, &attach_subject("a"), &overriding),
        Decision::Inject(_)
    ));
    // The webhook never injects an opted-out pod, whatever the profile says.
    let d = admit(
        &fixture_pod("review-pod-opted-out.json"),
        "team-a",
        "CREATE",
        &overriding,
    );
    assert_eq!(reason(&d), Some(SkipReason::OptedOut));
}

#[test]
fn attached_whisperers_mount_nothing_and_carry_the_attachment_uid() {
    let s = settings();
    let pod = running(fixture_pod("review-pod-not-requested.json"), "team-a");
    let Decision::Inject(plan) = decide_attach(&pod, &attach_subject("a"), &s) else {
        panic!("attach")
    };
    assert_eq!(plan.container.volume_mounts, None);
    let env = plan.container.env.as_deref().unwrap_or_default();
    assert!(env
        .iter()
        .any(|e| e.name == ENV_ATTACHMENT_UID && e.value.as_deref() == Some("uid-1")));
    // The shipped default profile's memory limit reaches the agent as env.
    let shipped = Settings::new(Arc::new(Config::default()), "whisperer-system");
    let mut cfg = (*shipped.config).clone();
    cfg.profiles.get_mut("default").expect("default").resources =
        serde_json::from_value(serde_json::json!({"limits": {"memory": "128Mi"}})).ok();
    let s = Settings::new(Arc::new(cfg), "whisperer-system");
    let Decision::Inject(plan) = decide_attach(&pod, &attach_subject("a"), &s) else {
        panic!("attach")
    };
    assert!(plan
        .container
        .env
        .iter()
        .flatten()
        .any(|e| e.name == ENV_MEMORY_LIMIT && e.value.as_deref() == Some("128Mi")));
}

fn admit_at(pod: &Pod, level: pod_security::Level, s: &Settings) -> Decision {
    decide_admission(
        &AdmissionSubject {
            operation: "CREATE",
            group: "",
            version: "v1",
            kind: "Pod",
            sub_resource: None,
            namespace: "team-a",
            pod: Some(pod),
            pod_security: Some(level),
        },
        s,
    )
}

#[test]
fn pod_security_levels_the_profile_breaks_are_skipped_with_a_warning() {
    use pod_security::Level;
    let mut cfg = Config::default();
    cfg.profiles.get_mut("default").expect("default").resources = None;
    let s = Settings::new(Arc::new(cfg), "whisperer-system");
    let optin = fixture_pod("review-pod-optin.json");
    assert!(matches!(
        admit_at(&optin, Level::Privileged, &s),
        Decision::Inject(_)
    ));
    for level in [Level::Baseline, Level::Restricted] {
        let d = admit_at(&optin, level, &s);
        let Decision::Skip {
            reason: SkipReason::PodSecurity,
            detail: Some(why),
        } = &d
        else {
            panic!("{level:?}: {d:?}")
        };
        assert!(
            why.contains("NET_RAW") && why.contains(level.as_str()),
            "{why}"
        );
    }
    // A profile without extra capabilities passes baseline.
    let mut tame = Config::default();
    if let Some(sc) = tame
        .profiles
        .get_mut("default")
        .and_then(|p| p.security_context.as_mut())
    {
        sc.capabilities = None;
    }
    let tame = Settings::new(Arc::new(tame), "whisperer-system");
    assert!(matches!(
        admit_at(&optin, Level::Baseline, &tame),
        Decision::Inject(_)
    ));
}

#[test]
fn dotted_attachment_names_give_valid_distinct_container_names() {
    let dotted = ephemeral_container_name("release.v2", 1);
    let dashed = ephemeral_container_name("release-v2", 1);
    assert!(crate::config::is_dns_label(&dotted), "{dotted}");
    assert!(dotted.starts_with("whisperer-release-v2-"), "{dotted}");
    assert_eq!(dashed, "whisperer-release-v2");
    assert_ne!(dotted, dashed);
    assert_eq!(
        dotted,
        ephemeral_container_name("release.v2", 1),
        "deterministic"
    );
    let long = format!("{}.v2", "a".repeat(70));
    for g in [1, 7] {
        let n = ephemeral_container_name(&long, g);
        assert!(n.len() <= 63 && crate::config::is_dns_label(&n), "{n}");
    }
}

#[test]
fn ephemeral_names_are_unique_and_bounded() {
    assert_eq!(ephemeral_container_name("a", 1), "whisperer-a");
    assert_eq!(ephemeral_container_name("a", 3), "whisperer-a-3");
    let long_a = "x".repeat(60) + "-a";
    let long_b = "x".repeat(60) + "-b";
    for g in [1, 2, 99] {
        let a = ephemeral_container_name(&long_a, g);
        let b = ephemeral_container_name(&long_b, g);
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(crate::config::is_dns_label(&a), "{a}");
    }
}

#[test]
fn skip_reason_names_are_unique() {
    let names: std::collections::HashSet<&str> =
        SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), SkipReason::ALL.len());
}

fn placement_of(d: &Decision) -> Option<Placement> {
    match d {
        Decision::Inject(p) => Some(p.placement),
        Decision::Skip { .. } => None,
    }
}

#[test]
fn native_sidecars_follow_the_api_server_version() {
    let job = fixture_pod("review-job-pod.json");
    let mut old = settings();
    old.server_version = Some((1, 28));
    let mut current = settings();
    current.server_version = Some((1, 29));
    assert_eq!(
        placement_of(&admit(&job, "team-a", "CREATE", &current)),
        Some(Placement::NativeSidecar)
    );
    // auto falls back to a classic sidecar, and says what that costs.
    let Decision::Inject(plan) = admit(&job, "team-a", "CREATE", &old) else {
        panic!("auto still injects on 1.28")
    };
    assert_eq!(plan.placement, Placement::Sidecar);
    assert!(
        plan.warnings.iter().any(|w| w.contains("1.29")),
        "{:?}",
        plan.warnings
    );
    // native cannot be honoured: a skip with its reason, never a pod stuck in Init.
    let native = with_annotation(job.clone(), ANNOTATION_PROFILE, "native");
    let d = admit(&native, "team-a", "CREATE", &old);
    assert_eq!(
        reason(&d),
        Some(SkipReason::NativeSidecarUnsupported),
        "{d:?}"
    );
    assert_eq!(
        placement_of(&admit(&native, "team-a", "CREATE", &current)),
        Some(Placement::NativeSidecar)
    );
}

#[test]
fn batch_owner_kinds_get_the_native_sidecar() {
    let s = settings();
    let mut workflow = fixture_pod("review-pod-optin.json");
    workflow.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "argoproj.io/v1alpha1".into(),
            kind: "Workflow".into(),
            name: "wf".into(),
            uid: "u".into(),
            ..Default::default()
        },
    ]);
    assert_eq!(
        placement_of(&admit(&workflow, "team-a", "CREATE", &s)),
        Some(Placement::NativeSidecar)
    );
    // A same-named kind of another group is not the batch one.
    if let Some(o) = workflow.metadata.owner_references.as_mut() {
        o[0].api_version = "example.com/v1".into();
    }
    assert_eq!(
        placement_of(&admit(&workflow, "team-a", "CREATE", &s)),
        Some(Placement::Sidecar)
    );
}

#[test]
fn per_pod_overrides_are_bounded_by_the_profile_and_change_the_marker() {
    let mut cfg = config();
    cfg.profiles.get_mut("default").expect("default").overrides = crate::config::Overrides {
        cpu: Some(crate::config::QuantityRange {
            min: Some("10m".into()),
            max: Some("500m".into()),
        }),
        memory: None,
        filter: true,
    };
    let s = Settings::new(Arc::new(cfg), "whisperer-system");
    let optin = fixture_pod("review-pod-optin.json");
    let tuned = with_annotation(optin.clone(), overrides::ANNOTATION_CPU, "250m");
    let tuned = with_annotation(tuned, overrides::ANNOTATION_FILTER, "tcp port 8080");
    let (Decision::Inject(base), Decision::Inject(plan)) = (
        admit(&optin, "team-a", "CREATE", &s),
        admit(&tuned, "team-a", "CREATE", &s),
    ) else {
        panic!("both injected")
    };
    let requests = plan
        .container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["cpu"].0, "250m");
    assert!(plan
        .container
        .args
        .iter()
        .flatten()
        .any(|a| a == "tcp port 8080"));
    assert_ne!(base.marker, plan.marker, "the marker hash covers overrides");
    let patched = apply(&tuned, &plan);
    assert_eq!(whisperers(&patched), 1);

    for (k, v) in [
        (overrides::ANNOTATION_CPU, "4"),
        (overrides::ANNOTATION_MEMORY, "1Gi"),
    ] {
        let d = admit(
            &with_annotation(optin.clone(), k, v),
            "team-a",
            "CREATE",
            &s,
        );
        let Decision::Skip {
            reason: SkipReason::OverrideRefused,
            detail: Some(why),
        } = &d
        else {
            panic!("{k}={v}: {d:?}")
        };
        assert!(why.contains(k), "{why}");
    }
}

#[test]
fn hold_application_until_ready() {
    // Native (Job pod): a startupProbe running the agent's ready check.
    let s = settings();
    let job = fixture_pod("review-job-pod.json");
    let Decision::Inject(plan) = admit(&job, "team-a", "CREATE", &s) else {
        panic!("job pod injected")
    };
    let probe = plan.container.startup_probe.as_ref().expect("startupProbe");
    let cmd = probe
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .expect("exec");
    assert_eq!(cmd, crate::config::DEFAULT_READY_COMMAND.map(String::from));
    // Classic with hold on: first container, postStart waits, the app stays kubectl's default.
    let mut cfg = config();
    cfg.profiles
        .get_mut("default")
        .expect("default")
        .hold_application_until_ready = Some(true);
    let held = Settings::new(Arc::new(cfg), "whisperer-system");
    let pod = fixture_pod("review-pod-optin.json");
    let Decision::Inject(plan) = admit(&pod, "team-a", "CREATE", &held) else {
        panic!("injected")
    };
    assert_eq!(plan.placement, Placement::FirstSidecar);
    assert!(plan
        .container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .is_some());
    let patched = apply(&pod, &plan);
    let spec = patched.spec.as_ref().expect("spec");
    assert_eq!(spec.containers[0].name, "whisperer");
    assert_eq!(
        patched.metadata.annotations.as_ref().expect("annotations")
            [crate::render::ANNOTATION_DEFAULT_CONTAINER],
        "checkout"
    );
    // Classic without hold (the default) appends, as before.
    let Decision::Inject(plain) = admit(&pod, "team-a", "CREATE", &s) else {
        panic!("injected")
    };
    assert_eq!(plain.placement, Placement::Sidecar);
    assert!(plain.container.lifecycle.is_none());
}

#[test]
fn outdated_agents_are_told_apart_from_current_ones() {
    use stale::{freshness, Freshness};
    let s = settings();
    let optin = fixture_pod("review-pod-optin.json");
    assert_eq!(freshness(&optin, "team-a", &s), Freshness::NotInjected);
    let Decision::Inject(plan) = admit(&optin, "team-a", "CREATE", &s) else {
        panic!("injected")
    };
    let injected = apply(&optin, &plan);
    assert_eq!(freshness(&injected, "team-a", &s), Freshness::Current);
    // The profile changed: the same pod is now outdated, old -> new.
    let mut cfg = config();
    cfg.profiles.get_mut("default").expect("default").env[0].value = Some("debug".into());
    let changed = Settings::new(Arc::new(cfg), "whisperer-system");
    let Freshness::Outdated {
        old,
        new: Some(new),
    } = freshness(&injected, "team-a", &changed)
    else {
        panic!("outdated after a profile change")
    };
    assert_eq!(old, plan.marker);
    assert_ne!(new, old);
    // The profile is gone: outdated with nothing to roll to.
    let mut gone = config();
    gone.profiles.remove("classic");
    let renamed = gone.profiles.remove("default").expect("default");
    gone.profiles.insert("renamed".into(), renamed);
    gone.default_profile = "renamed".into();
    let gone = Settings::new(Arc::new(gone), "whisperer-system");
    assert_eq!(
        freshness(&injected, "team-a", &gone),
        Freshness::Outdated {
            old: plan.marker.clone(),
            new: None
        }
    );
}

/// The test config with the default profile's Whisperer limited to `memory` and keeping at
/// most `captures` bytes.
fn settings_with_budget(memory: &str, captures: Option<&str>) -> Settings {
    let mut cfg = config();
    let p = cfg.profiles.get_mut("default").expect("default");
    p.resources = serde_json::from_value(serde_json::json!({"limits": {"memory": memory}})).ok();
    p.max_capture_bytes = captures.map(|c| Quantity(c.into()));
    Settings::new(Arc::new(cfg), "whisperer-system")
}

fn with_memory(mut pod: Pod, per_container: &[(Option<&str>, Option<&str>)]) -> Pod {
    let spec = pod.spec.as_mut().expect("spec");
    let first = spec.containers[0].clone();
    spec.containers = per_container
        .iter()
        .enumerate()
        .map(|(i, (limit, request))| {
            let mut c = first.clone();
            c.name = if i == 0 {
                first.name.clone()
            } else {
                format!("c{i}")
            };
            let q = |v: &Option<&str>| {
                v.map(|v| BTreeMap::from([("memory".to_string(), Quantity(v.into()))]))
            };
            c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: q(limit),
                requests: q(request),
                ..Default::default()
            });
            c
        })
        .collect();
    pod
}

#[test]
fn attach_is_refused_when_bounded_containers_leave_no_room_for_the_agent() {
    let s = settings_with_budget("64Mi", None);
    let base = running(fixture_pod("review-pod-not-requested.json"), "team-a");
    // 2 × 256Mi limits, 2 × 200Mi requests: 112Mi free, the agent needs 64Mi.
    let roomy = with_memory(
        base.clone(),
        &[
            (Some("256Mi"), Some("200Mi")),
            (Some("256Mi"), Some("200Mi")),
        ],
    );
    assert!(matches!(
        decide_attach(&roomy, &attach_subject("a"), &s),
        Decision::Inject(_)
    ));
    // Requests default to limits: no room at all.
    let full = with_memory(base.clone(), &[(Some("256Mi"), None)]);
    let d = decide_attach(&full, &attach_subject("a"), &s);
    assert_eq!(reason(&d), Some(SkipReason::NoHeadroom));
    let Decision::Skip {
        detail: Some(message),
        ..
    } = &d
    else {
        panic!("a refusal with a message")
    };
    assert!(
        message.contains("256Mi") && message.contains("64Mi"),
        "{message}"
    );
    let tight = with_memory(base.clone(), &[(Some("256Mi"), Some("200Mi"))]);
    assert_eq!(
        reason(&decide_attach(&tight, &attach_subject("a"), &s)),
        Some(SkipReason::NoHeadroom)
    );
    // One container without a limit: the pod is not bounded, nothing to protect.
    let unbounded = with_memory(base.clone(), &[(Some("256Mi"), None), (None, None)]);
    assert!(matches!(
        decide_attach(&unbounded, &attach_subject("a"), &s),
        Decision::Inject(_)
    ));
    // A profile without a memory figure is not judged.
    assert!(matches!(
        decide_attach(&full, &attach_subject("a"), &settings()),
        Decision::Inject(_)
    ));
    assert_eq!(SkipReason::NoHeadroom.condition_reason(), "NoHeadroom");
}

#[test]
fn max_capture_bytes_reaches_sidecar_and_attached_agents() {
    let s = settings_with_budget("64Mi", Some("200Mi"));
    let has = |env: &[k8s_openapi::api::core::v1::EnvVar]| {
        env.iter()
            .any(|e| e.name == ENV_MAX_CAPTURE_BYTES && e.value.as_deref() == Some("200Mi"))
    };
    let pod = running(fixture_pod("review-pod-not-requested.json"), "team-a");
    let Decision::Inject(plan) = decide_attach(&pod, &attach_subject("a"), &s) else {
        panic!("attach")
    };
    assert!(has(plan.container.env.as_deref().unwrap_or_default()));
    let opted = with_annotation(
        fixture_pod("review-pod-not-requested.json"),
        "whisperer.dev/inject",
        "true",
    );
    let Decision::Inject(plan) = admit(&opted, "team-a", "CREATE", &s) else {
        panic!("inject")
    };
    assert!(has(plan.container.env.as_deref().unwrap_or_default()));
    let e = Config::parse(
        "{defaultProfile: default, profiles: {default: {image: x, maxCaptureBytes: lots}}}",
        "cfg.yaml",
    )
    .expect_err("a bad quantity is refused");
    assert!(
        e.to_string().contains("profiles.default.maxCaptureBytes"),
        "{e}"
    );
}

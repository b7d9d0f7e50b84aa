//! Times the pure parts of one admission answer (parse, decide, render) with the shipped
//! profile (manifests/configmap.yaml) on a pod review that gets the full injection, to see
//! where the webhook's per-request time goes. No sockets.
//!
//! `cargo run --release --example hot_path [tests/fixtures/review-pod-3k7.json]`
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use whisperer_injector::config::Config;
use whisperer_injector::engine::{
    decide_admission, decide_admission_planned, AdmissionSubject, Decision, Planned, Settings,
};
use whisperer_injector::render::{json_patch, Fragments};
use whisperer_injector::webhook::{answer_into, parse_admitted_pod, PodSecurityLevels, Prepared};

fn shipped_config() -> Config {
    let text = std::fs::read_to_string("manifests/configmap.yaml").expect("configmap");
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    Config::parse(
        cm["data"]["config.yaml"]
            .as_str()
            .expect("data.config.yaml"),
        "manifests/configmap.yaml",
    )
    .expect("config")
}

fn main() {
    let fixture = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/review-pod-3k7.json".into());
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let body = serde_json::to_vec(&v).expect("compact");
    let pod_text = serde_json::to_string(&v["request"]["object"]).expect("pod");
    let settings = Arc::new(Settings::new(
        Arc::new(shipped_config()),
        "whisperer-system",
    ));
    let prepared = Prepared::new(settings.clone());
    let levels = PodSecurityLevels::default();
    println!(
        "{fixture}: body {} bytes, pod {} bytes",
        body.len(),
        pod_text.len()
    );
    let n = std::env::var("N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000u32);
    let time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{name:<40} {:>8.2} µs",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    };
    let mut out = Vec::with_capacity(16 * 1024);
    time("whole answer (webhook::answer_into)", &mut || {
        out.clear();
        std::hint::black_box(answer_into(&body, &prepared, &levels, &mut out).expect("answer"));
    });
    time("scan body (IgnoredAny)", &mut || {
        std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).expect("v"));
    });
    time("parse Pod (typed, all fields)", &mut || {
        std::hint::black_box(serde_json::from_str::<Pod>(&pod_text).expect("pod"));
    });
    time("parse Pod (the shape the engine reads)", &mut || {
        std::hint::black_box(parse_admitted_pod(&pod_text).expect("pod"));
    });
    let pod = parse_admitted_pod(&pod_text).expect("pod");
    let subject = AdmissionSubject {
        operation: "CREATE",
        group: "",
        version: "v1",
        kind: "Pod",
        sub_resource: None,
        namespace: "team-a",
        pod: Some(&pod),
        pod_security: None,
    };
    time("decide + build the plan (typed)", &mut || {
        std::hint::black_box(decide_admission(&subject, &settings));
    });
    time("decide up to the placement", &mut || {
        std::hint::black_box(decide_admission_planned(&subject, &settings));
    });
    let Decision::Inject(plan) = decide_admission(&subject, &settings) else {
        panic!("{fixture} is not injected")
    };
    time("render + serialize patch (typed)", &mut || {
        std::hint::black_box(serde_json::to_vec(&json_patch(&pod, &plan)).expect("patch"));
    });
    let Planned::Base {
        profile_name,
        profile,
        choice,
    } = decide_admission_planned(&subject, &settings)
    else {
        panic!("{fixture} needs a per-pod plan")
    };
    let fragments = Fragments::new(profile_name, profile, &settings, choice.placement);
    let mut patch = Vec::with_capacity(8 * 1024);
    time("splice patch (prepared fragments)", &mut || {
        patch.clear();
        fragments.write_patch(&pod, &mut patch);
        std::hint::black_box(&patch);
    });
}

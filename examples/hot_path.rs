//! Times the pure parts of one admission answer (parse, decide, render) on the 4 KB fixture,
//! to see where the webhook's per-request time goes. `cargo run --release --example hot_path`.
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use whisperer_injector::config::Config;
use whisperer_injector::engine::{decide_admission, AdmissionSubject, Decision, Settings};
use whisperer_injector::render::json_patch;

fn main() {
    let text = std::fs::read_to_string("tests/fixtures/review-pod-optin.json").expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let body = serde_json::to_vec(&v).expect("compact");
    let pod_text = serde_json::to_string(&v["request"]["object"]).expect("pod");
    let settings = Settings::new(Arc::new(Config::default()), "whisperer-system");
    let n = 100_000;
    let time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!(
            "{name:<28} {:>8.2} µs",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    };
    time("whole answer (webhook::answer)", &mut || {
        std::hint::black_box(
            whisperer_injector::webhook::answer(&body, &settings, &Default::default())
                .expect("answer"),
        );
    });
    time("scan body (IgnoredAny)", &mut || {
        std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).expect("v"));
    });
    time("nesting scan", &mut || {
        std::hint::black_box(whisperer_injector::webhook::nesting_exceeds(&body, 100));
    });
    time("parse Pod (typed)", &mut || {
        std::hint::black_box(serde_json::from_str::<Pod>(&pod_text).expect("pod"));
    });
    let pod: Pod = serde_json::from_str(&pod_text).expect("pod");
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
    time("decide", &mut || {
        std::hint::black_box(decide_admission(&subject, &settings));
    });
    let Decision::Inject(plan) = decide_admission(&subject, &settings) else {
        panic!("inject")
    };
    time("render + serialize patch", &mut || {
        std::hint::black_box(serde_json::to_vec(&json_patch(&pod, &plan)).expect("patch"));
    });
}

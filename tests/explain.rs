//! `explain` against a real API server and a registered webhook: one golden file per verdict.
//! Regenerate with `WHISPERER_REGENERATE=1 cargo test --test explain` and review the diff.

mod injector;
mod support;

use injector::{pod, start_and_register};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::ControlPlane;
use whisperer_injector::explain::{self, ExplainArgs};

/// Runs explain as a user would and replaces the generated namespace names.
async fn explain(flags: &[&str], names: &[(&str, &str)]) -> String {
    let args = ExplainArgs::from_flags(flags).expect("flags");
    let mut out = explain::run(&args).await.expect("explain");
    for (real, alias) in names {
        out = out.replace(real, alias);
    }
    out
}

fn golden(name: &str, got: &str) {
    let path = format!(
        "{}/tests/golden/explain/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("WHISPERER_REGENERATE").is_some() {
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (WHISPERER_REGENERATE=1 writes it)"));
    assert_eq!(
        got, want,
        "explain output for {name} changed (golden file {path})"
    );
}

#[tokio::test]
async fn explain_names_the_rule_and_the_fix_for_each_verdict() {
    let cp = ControlPlane::start().await;
    let on = cp.namespace(&[("injection", "enabled")]).await;
    let off = cp.namespace(&[]).await;
    let strict = cp
        .namespace(&[
            ("injection", "enabled"),
            ("pod-security.kubernetes.io/enforce", "baseline"),
        ])
        .await;
    let mut injector = start_and_register(&cp, &on, &[]).await;
    let config = injector
        .dir
        .path()
        .join("config.yaml")
        .display()
        .to_string();
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let names = [
        (on.as_str(), "NS-ON"),
        (off.as_str(), "NS-OFF"),
        (strict.as_str(), "NS-STRICT"),
    ];
    let pp = PostParams::default();
    let create = |ns: &str, p: Pod| {
        let api = Api::<Pod>::namespaced(cp.client(), ns);
        async move {
            api.create(&PostParams::default(), &p)
                .await
                .expect("create pod")
        }
    };
    create(&on, pod("injected", true)).await;
    create(&on, pod("plain", false)).await;
    create(&off, pod("elsewhere", true)).await;
    let mut unknown = pod("unknown", true);
    unknown
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("whisperer.dev/profile".into(), "nope".into());
    create(&on, unknown).await;
    let mut host = pod("hostnet", true);
    host.spec.as_mut().expect("spec").host_network = Some(true);
    create(&on, host).await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}}}
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(cp.client(), &on)
        .create(&pp, &deployment)
        .await
        .expect("create deployment");

    let base = |ns: &str, target: &str| -> Vec<String> {
        [
            target,
            "-n",
            ns,
            "--config",
            &config,
            "--kubeconfig",
            &kubeconfig,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for (case, ns, target) in [
        ("injected", &on, "pod/injected"),
        ("not-requested", &on, "pod/plain"),
        ("namespace-not-selected", &off, "pod/elsewhere"),
        ("unknown-profile", &on, "pod/unknown"),
        ("host-namespaces", &on, "pod/hostnet"),
        ("deployment-template", &on, "deployment/web"),
    ] {
        let flags = base(ns, target);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        golden(case, &explain(&flags, &names).await);
    }

    // Pod Security: a file explained against the baseline namespace (the pod is never
    // created: PSA judges the pod itself, the injector only what it adds).
    let manifest = injector.dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        serde_yaml::to_string(&pod("strict-app", true)).expect("yaml"),
    )
    .expect("write");
    let manifest_s = manifest.display().to_string();
    let out = explain(
        &[
            "-f",
            &manifest_s,
            "-n",
            &strict,
            "--config",
            &config,
            "--kubeconfig",
            &kubeconfig,
        ],
        &names,
    )
    .await
    .replace(&manifest_s, "pod.yaml");
    golden("pod-security", &out);

    // The profile changed since injection: the agent is outdated, and explain says how to roll.
    let changed = injector.dir.path().join("changed.yaml");
    std::fs::write(
        &changed,
        injector::PROFILES.replace("value: info", "value: debug"),
    )
    .expect("write");
    let changed_s = changed.display().to_string();
    let out = explain(
        &[
            "pod/injected",
            "-n",
            &on,
            "--config",
            &changed_s,
            "--kubeconfig",
            &kubeconfig,
        ],
        &names,
    )
    .await;
    golden("stale-agent", &out);

    // -o json carries the same checks, for scripts.
    let json_out = explain(
        &[
            "pod/plain",
            "-n",
            &on,
            "--config",
            &config,
            "--kubeconfig",
            &kubeconfig,
            "-o",
            "json",
        ],
        &names,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(v[0]["subject"], "pod/plain");
    assert!(v[0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["passed"] == false && c["rule"] == "opt-in annotation"));
    injector.stop().await;
}

//! The Helm chart `charts/whisperer-injector`: `helm lint --strict`, `helm template` with the
//! defaults and with every option on (tests/chart/every-option.yaml, in each TLS mode) applied
//! to a real kube-apiserver (server-side, dry run; the CRD for real first), the defaults
//! rendering the same objects as `kustomize build manifests` (the drift test), and clear
//! errors for bad values. helm and kustomize come from tests/helm/build.sh.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value as Json;
use support::helm::{
    deployment_args, find, helm, kustomize_build, object_key, parsed_serve_args, run, template,
    template_error, CHART,
};
use support::manifests::{accept_all, repo};
use support::ControlPlane;
use whisperer_injector::config::Config;

fn every_option() -> PathBuf {
    repo("tests/chart/every-option.yaml")
}

/// The config file the chart's ConfigMap carries parses as the server parses it.
fn rendered_config(docs: &[serde_yaml::Value], what: &str) -> Config {
    let cm = find(docs, "ConfigMap", "whisperer-injector-config");
    let text = cm["data"]["config.yaml"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no data.config.yaml"));
    Config::parse(text, what)
        .unwrap_or_else(|e| panic!("{what}: the injector refuses the chart's config: {e}\n{text}"))
}

fn guard_param(docs: &[serde_yaml::Value], key: &str) -> Vec<String> {
    find(docs, "ConfigMap", "whisperer-injector-guard")["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("guard params: no {key}"))
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn chart_passes_helm_lint_strict() {
    for values in [None, Some(every_option())] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(repo(CHART));
        if let Some(v) = &values {
            cmd.arg("--values").arg(v);
        }
        let out = run(&mut cmd);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
    }
}

/// One source of truth for the CRD: the chart's copy is the generated manifest, byte for
/// byte (`WHISPERER_REGENERATE=1 cargo test --test attachments crd_manifest` writes both).
/// A copy rather than a symlink: `helm package` and checkouts without symlinks keep it.
#[test]
fn chart_crd_is_the_generated_manifest() {
    let manifest = std::fs::read(repo("manifests/crd-attachments.yaml")).expect("manifest CRD");
    let chart = std::fs::read(repo("charts/whisperer-injector/crds/crd-attachments.yaml"))
        .expect("chart CRD");
    assert!(
        manifest == chart,
        "charts/whisperer-injector/crds/crd-attachments.yaml differs from \
         manifests/crd-attachments.yaml; regenerate both with\n\
         \n    WHISPERER_REGENERATE=1 cargo test --test attachments crd_manifest\n"
    );
}

// ---------------------------------------------------------------------------------------
// Drift: the chart's defaults and `kubectl apply -k manifests` install the same objects.
// ---------------------------------------------------------------------------------------

/// Labels Helm adds for its own bookkeeping (never in a selector or a pod template).
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
];

/// Cluster-scoped kinds kustomize (v5.8) does not know as such: it writes the
/// kustomization's namespace into their metadata, which the API server ignores and kubectl
/// drops before sending.
const KUSTOMIZE_NAMESPACED_BY_MISTAKE: &[&str] = &[
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Brings one object to the form both renderers are compared in. The allowed differences,
/// and only these:
/// 1. Helm's own labels are removed from `metadata.labels`.
/// 2. The ConfigMap's `config.yaml` is compared parsed: the chart writes it from values
///    (sorted keys, no comments), the manifest by hand.
/// 3. `metadata.namespace` of the kinds in [`KUSTOMIZE_NAMESPACED_BY_MISTAKE`] is removed.
/// 4. Strings in a ValidatingAdmissionPolicy's spec (CEL) are compared with every run of
///    whitespace as one space: kustomize's YAML library reads a folded (`>-`) scalar's
///    more-indented lines with an extra line break, which CEL ignores.
/// 5. (in [`compare`]) the Namespace object: `helm install --create-namespace` makes it, so
///    the chart renders it only with `createNamespace: true`.
fn normalise(doc: &serde_yaml::Value) -> Json {
    let mut v: Json = serde_json::to_value(doc).expect("YAML as JSON");
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let meta = v["metadata"].as_object_mut().expect("metadata");
    if let Some(labels) = meta.get_mut("labels").and_then(Json::as_object_mut) {
        for l in HELM_LABELS {
            labels.remove(*l);
        }
    }
    if KUSTOMIZE_NAMESPACED_BY_MISTAKE.contains(&kind.as_str()) {
        meta.remove("namespace");
    }
    if kind == "ValidatingAdmissionPolicy" {
        collapse_whitespace(&mut v["spec"]);
    }
    if kind == "ConfigMap" && v["metadata"]["name"] == "whisperer-injector-config" {
        let text = v["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml")
            .to_string();
        let parsed: serde_yaml::Value = serde_yaml::from_str(&text).expect("config.yaml is YAML");
        v["data"]["config.yaml"] = serde_json::to_value(parsed).expect("config as JSON");
    }
    v
}

fn collapse_whitespace(v: &mut Json) {
    match v {
        Json::String(s) => *s = s.split_whitespace().collect::<Vec<_>>().join(" "),
        Json::Array(a) => a.iter_mut().for_each(collapse_whitespace),
        Json::Object(o) => o.values_mut().for_each(collapse_whitespace),
        _ => {}
    }
}

/// Every path where `a` and `b` differ, with both values.
fn differences(path: &str, a: &Json, b: &Json, out: &mut Vec<String>) {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => differences(&p, l, r, out),
                    (Some(l), None) => out.push(format!("{p}: only in kustomize: {l}")),
                    (None, Some(r)) => out.push(format!("{p}: only in the chart: {r}")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), l, r, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!(
            "{path}:\n      kustomize: {a}\n      chart:     {b}"
        )),
    }
}

/// Object-by-object comparison; every difference in one message.
fn compare(kustomized: &[serde_yaml::Value], chart: &[serde_yaml::Value]) -> Vec<String> {
    let index = |docs: &[serde_yaml::Value]| -> BTreeMap<String, Json> {
        let mut m = BTreeMap::new();
        for d in docs {
            let n = normalise(d);
            let key = object_key(&serde_yaml::to_value(&n).expect("back to YAML"));
            assert!(m.insert(key.clone(), n).is_none(), "{key} rendered twice");
        }
        m
    };
    let k = index(kustomized);
    let c = index(chart);
    let mut problems = Vec::new();
    for (key, kv) in &k {
        match c.get(key) {
            None if key.starts_with("Namespace/") => {}
            None => problems.push(format!("{key}: only in kustomize build manifests")),
            Some(cv) => {
                let mut diffs = Vec::new();
                differences("", kv, cv, &mut diffs);
                if !diffs.is_empty() {
                    problems.push(format!("{key}:\n    {}", diffs.join("\n    ")));
                }
            }
        }
    }
    for key in c.keys() {
        if !k.contains_key(key) {
            problems.push(format!("{key}: only in the chart"));
        }
    }
    problems
}

#[test]
fn default_chart_renders_the_kustomize_manifests() {
    let kustomized = kustomize_build(&repo("manifests"));
    let chart = template(&[], &[]);
    assert!(
        chart.len() >= 20,
        "{:?}",
        chart.iter().map(object_key).collect::<Vec<_>>()
    );
    let problems = compare(&kustomized, &chart);
    assert!(
        problems.is_empty(),
        "the chart's defaults (helm template) and kustomize build manifests differ; change both \
         (charts/whisperer-injector and manifests/) or, for a deliberate difference, document \
         it in normalise() (tests/chart.rs):\n\n{}",
        problems.join("\n\n")
    );
}

/// The drift test can fail: one changed default shows up as a difference at its path.
#[test]
fn drift_test_names_a_changed_value() {
    let kustomized = kustomize_build(&repo("manifests"));
    let chart = template(&[], &["webhook.timeoutSeconds=7", "replicas=4"]);
    let problems = compare(&kustomized, &chart).join("\n");
    assert!(
        problems.contains("MutatingWebhookConfiguration//whisperer-injector"),
        "{problems}"
    );
    assert!(
        problems.contains(".webhooks[0].timeoutSeconds"),
        "{problems}"
    );
    assert!(
        problems.contains("Deployment/whisperer-system/whisperer-injector"),
        "{problems}"
    );
    assert!(problems.contains(".spec.replicas"), "{problems}");
}

// ---------------------------------------------------------------------------------------
// The API server accepts what the chart renders.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn default_chart_is_accepted_by_the_api_server() {
    let cp = ControlPlane::start().await;
    let docs = template(&[], &[]);
    rendered_config(&docs, "helm template (defaults)");
    let (_, serve) = parsed_serve_args(&docs, "helm template (defaults)");
    assert_eq!(
        serve.managed_tls.tls_secret.as_deref(),
        Some("whisperer-injector-tls")
    );
    let accepted = accept_all(&cp.client(), "helm template (defaults)", &docs).await;
    assert_eq!(
        accepted,
        docs.len(),
        "{:?}",
        docs.iter().map(object_key).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn chart_with_every_option_is_accepted_by_the_api_server() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let values = every_option();
    let variants: [(&str, &[&str]); 5] = [
        ("certManager with its own CA", &[]),
        (
            "certManager with an issuer of yours",
            &[
                "tls.certManager.issuerRef.kind=ClusterIssuer",
                "tls.certManager.issuerRef.name=corp-ca",
            ],
        ),
        ("selfManaged", &["tls.mode=selfManaged"]),
        ("provided", &["tls.mode=provided"]),
        (
            "everything off",
            &[
                "reconciler.enabled=false",
                "dns.enabled=false",
                "networkPolicy.enabled=false",
                "podDisruptionBudget.enabled=false",
                "serviceMonitor.enabled=false",
                "createNamespace=false",
            ],
        ),
    ];
    for (name, set) in variants {
        let what = format!("helm template -f every-option.yaml ({name})");
        let docs = template(&[values.as_path()], set);
        let cfg = rendered_config(&docs, &what);
        assert_eq!(cfg.default_profile, "quiet", "{what}");
        accept_all(&client, &what, &docs).await;

        let (cli, serve) = parsed_serve_args(&docs, &what);
        assert!(serve.inject_by_default, "{what}");
        assert_eq!(cli.log, "debug,kube=info", "{what}");
        assert!(cli.log_json, "{what}");
        let args = deployment_args(&docs);
        let has = |a: &str| args.iter().any(|x| x == a);
        for a in [
            "--inject-by-default",
            "--backstop-attach",
            "--log=debug,kube=info",
            "--log-json",
            "--max-connections=5000",
            "--reload-interval=10s",
        ] {
            assert!(has(a), "{what}: {a} missing from {args:?}");
        }
        let deploy = find(&docs, "Deployment", "whisperer-injector");
        let pod = &deploy["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["image"],
            "registry.example.com/mirror/whisperer-injector:v0.1.0-rc.1",
            "{what}"
        );
        assert_eq!(
            pod["priorityClassName"], "system-cluster-critical",
            "{what}"
        );
        assert_eq!(
            deploy["spec"]["template"]["metadata"]["annotations"]["example.com/team"],
            "payments"
        );

        let webhook = find(&docs, "MutatingWebhookConfiguration", "whisperer-injector");
        let inject = &webhook["webhooks"][0];
        assert_eq!(inject["timeoutSeconds"], 3, "{what}");
        assert_eq!(
            inject["namespaceSelector"]["matchLabels"]["team"], "payments",
            "{what}"
        );
        let exprs = inject["namespaceSelector"]["matchExpressions"]
            .as_sequence()
            .expect("expressions");
        assert_eq!(
            exprs.len(),
            2,
            "{what}: the user's expression and the system-namespace exclusion"
        );
        assert_eq!(exprs[1]["values"][3], "whisperer-system", "{what}");

        let images = guard_param(&docs, "allowedImages");
        assert_eq!(
            images,
            [
                "registry.example.com/mirror/whisperer:v0.1.0",
                "registry.example.com/mirror/whisperer:v0.2.0"
            ],
            "{what}: the guard admits every profile's image and the extra ones"
        );
        assert_eq!(
            guard_param(&docs, "allowedCapabilities"),
            ["NET_BIND_SERVICE", "NET_RAW"],
            "{what}"
        );

        let present = |kind: &str, name: &str| {
            docs.iter()
                .any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        };
        let mode = set
            .iter()
            .find_map(|s| s.strip_prefix("tls.mode="))
            .unwrap_or("certManager");
        let ca_bundles: Vec<bool> = webhook["webhooks"]
            .as_sequence()
            .expect("webhooks")
            .iter()
            .map(|w| w["clientConfig"].get("caBundle").is_some())
            .collect();
        match mode {
            "selfManaged" => {
                assert_eq!(
                    serve.managed_tls.tls_cert_lifetime,
                    std::time::Duration::from_secs(30 * 86400),
                    "{what}"
                );
                assert!(
                    has("--tls-secret=whisperer-injector-tls")
                        && has("--tls-cert-lifetime=30d")
                        && has("--tls-ca-lifetime=2y"),
                    "{what}: {args:?}"
                );
                assert!(
                    present("Role", "whisperer-injector-tls")
                        && present("ClusterRole", "whisperer-injector-webhook-ca"),
                    "{what}"
                );
                assert_eq!(
                    ca_bundles,
                    [false, false],
                    "{what}: the injector writes the caBundle"
                );
                assert!(!present("Certificate", "whisperer-injector-tls"), "{what}");
            }
            other => {
                assert!(
                    has("--tls-cert=/etc/whisperer/tls/tls.crt")
                        && !args.iter().any(|a| a.starts_with("--tls-secret")),
                    "{what}: {args:?}"
                );
                assert!(
                    !present("Role", "whisperer-injector-tls")
                        && !present("ClusterRole", "whisperer-injector-webhook-ca"),
                    "{what}"
                );
                let secret = pod["volumes"]
                    .as_sequence()
                    .expect("volumes")
                    .iter()
                    .find(|v| v["name"] == "tls")
                    .map(|v| v["secret"]["secretName"].clone());
                if other == "provided" {
                    assert_eq!(secret, Some("my-injector-tls".into()), "{what}");
                    assert_eq!(ca_bundles, [true, true], "{what}");
                    assert!(!present("Certificate", "whisperer-injector-tls"), "{what}");
                } else {
                    assert_eq!(secret, Some("whisperer-injector-tls".into()), "{what}");
                    assert_eq!(
                        ca_bundles,
                        [false, false],
                        "{what}: cainjector writes the caBundle"
                    );
                    assert_eq!(
                        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                        "whisperer-system/whisperer-injector-tls",
                        "{what}"
                    );
                    let cert = find(&docs, "Certificate", "whisperer-injector-tls");
                    assert_eq!(cert["spec"]["duration"], "720h", "{what}");
                    let own_ca = !set
                        .iter()
                        .any(|s| s.starts_with("tls.certManager.issuerRef"));
                    assert_eq!(present("Issuer", "whisperer-injector-ca"), own_ca, "{what}");
                    assert_eq!(
                        cert["spec"]["issuerRef"]["name"],
                        if own_ca {
                            "whisperer-injector-ca"
                        } else {
                            "corp-ca"
                        },
                        "{what}"
                    );
                }
            }
        }

        let off = name == "everything off";
        assert_eq!(
            has("--reconciler") && args.contains(&"off".to_string()),
            off,
            "{what}: {args:?}"
        );
        assert_eq!(
            present("PodDisruptionBudget", "whisperer-injector"),
            !off,
            "{what}"
        );
        assert_eq!(
            present("NetworkPolicy", "whisperer-default-deny"),
            !off,
            "{what}"
        );
        assert_eq!(
            present("ServiceMonitor", "whisperer-injector"),
            !off,
            "{what}"
        );
        assert_eq!(present("Namespace", "whisperer-system"), !off, "{what}");
        let service_ports = find(&docs, "Service", "whisperer-injector")["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .len();
        assert_eq!(
            service_ports,
            if off { 1 } else { 3 },
            "{what}: DNS ports only with the DNS proxy"
        );
        if !off {
            let policy = find(&docs, "NetworkPolicy", "whisperer-injector");
            let egress = policy["spec"]["egress"].as_sequence().expect("egress");
            assert_eq!(
                egress.len(),
                3,
                "{what}: API server, DNS upstream, the extra rule"
            );
            assert_eq!(
                egress[1]["to"][0]["ipBlock"]["cidr"], "169.254.20.10/32",
                "{what}"
            );
            let monitor = find(&docs, "ServiceMonitor", "whisperer-injector");
            assert_eq!(
                monitor["metadata"]["labels"]["release"], "prometheus",
                "{what}"
            );
            let metrics = find(&docs, "Service", "whisperer-injector-metrics");
            assert_eq!(metrics["spec"]["clusterIP"], "None", "{what}");
        }
    }
}

#[test]
fn bad_values_fail_with_a_message_naming_the_value() {
    let err = template_error(&["tls.mode=vault"]);
    assert!(
        err.contains("tls.mode must be selfManaged, certManager or provided"),
        "{err}"
    );
    let err = template_error(&["tls.mode=provided"]);
    assert!(err.contains("tls.provided.caBundle"), "{err}");
    let err = template_error(&["defaultProfile=loud"]);
    assert!(
        err.contains("defaultProfile \"loud\" is not one of profiles (default)"),
        "{err}"
    );
}

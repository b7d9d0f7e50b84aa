use std::sync::Arc;

use super::*;
use crate::config::Config;

fn settings() -> Settings {
    Settings::new(Arc::new(Config::default()), "whisperer-system")
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {whisperer.dev/inject: "true"}
    spec:
      containers: [{name: web, image: example.com/web:1}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {whisperer.dev/inject: "true"}}
        spec:
          restartPolicy: Never
          containers: [{name: report, image: example.com/report:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: app, image: example.com/app:1}]
"#;

#[test]
fn injects_templates_and_passes_the_rest_through() {
    let (out, outcomes) = inject_yaml(MANIFESTS, "m.yaml", "default", &settings()).expect("inject");
    let results: Vec<Option<&str>> = outcomes.iter().map(|o| o.result.as_deref()).collect();
    assert_eq!(
        results,
        [
            None,
            Some("injected"),
            Some("injected"),
            Some("not-requested")
        ]
    );
    let docs: Vec<Value> = out
        .split("---\n")
        .map(|d| serde_yaml::from_str(d).expect("yaml"))
        .collect();
    assert_eq!(docs[0]["data"]["a"], "b");
    let web = &docs[1]["spec"]["template"];
    assert_eq!(web["spec"]["containers"][1]["name"], "whisperer");
    assert!(web["metadata"]["annotations"]["whisperer.dev/injected"].is_string());
    let job = &docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(job["initContainers"][0]["name"], "whisperer");
    assert_eq!(job["initContainers"][0]["restartPolicy"], "Always");
    assert!(
        docs[2]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
            .get("ownerReferences")
            .is_none()
    );
    assert_eq!(
        docs[3]["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
    // Running it again changes nothing: the marker is there.
    let (again, outcomes) = inject_yaml(&out, "m.yaml", "default", &settings()).expect("inject");
    assert_eq!(again, out);
    assert_eq!(outcomes[1].result.as_deref(), Some("already-injected"));
}

#[test]
fn errors_name_file_document_and_field() {
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: 7\n";
    let e = inject_yaml(bad, "bad.yaml", "default", &settings()).expect_err("invalid");
    let msg = e.to_string();
    assert!(
        msg.contains("bad.yaml")
            && msg.contains("document 0")
            && msg.contains("spec.template.spec"),
        "{msg}"
    );
    let e = inject_yaml("a: [unclosed", "x.yaml", "default", &settings()).expect_err("yaml");
    assert!(
        e.to_string().contains("x.yaml: document 0: not valid YAML"),
        "{e}"
    );
    let e = inject_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n",
        "y.yaml",
        "default",
        &settings(),
    )
    .expect_err("no template");
    assert!(
        e.to_string().contains("spec/template") || e.to_string().contains("spec.template"),
        "{e}"
    );
}

#[test]
fn denied_namespace_is_left_alone() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: kube-system, annotations: {whisperer.dev/inject: \"true\"}}\nspec: {containers: [{name: a, image: b}]}\n";
    let (out, outcomes) = inject_yaml(pod, "p.yaml", "default", &settings()).expect("inject");
    assert!(outcomes[0]
        .result
        .as_deref()
        .expect("pod")
        .starts_with("namespace-denied"));
    assert!(!out.contains("whisperer.dev/injected"));
}

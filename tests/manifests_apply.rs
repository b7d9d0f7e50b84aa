//! Every manifest a user installs is accepted by a real kube-apiserver (server-side apply,
//! dry run), and so is the webhook configuration certs-gen renders for the cluster.

mod support;

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde::Deserialize;
use support::ControlPlane;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The kustomization's resources, in order, as YAML documents with the file they came from.
fn kustomized_documents() -> Vec<(String, serde_yaml::Value)> {
    #[derive(Deserialize)]
    struct Kustomization {
        namespace: Option<String>,
        resources: Vec<String>,
    }
    let k: Kustomization = serde_yaml::from_str(
        &std::fs::read_to_string(repo("manifests/kustomization.yaml")).expect("kustomization.yaml"),
    )
    .expect("kustomization parses");
    let mut docs = Vec::new();
    for file in &k.resources {
        let text = std::fs::read_to_string(repo("manifests").join(file))
            .unwrap_or_else(|e| panic!("manifests/{file}: {e}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("manifests/{file}: {e}"));
            if v.is_null() {
                continue;
            }
            // What kustomize's `namespace:` does for namespaced objects without one.
            if let (Some(ns), Some(meta)) = (&k.namespace, v.get_mut("metadata")) {
                if meta.get("namespace").is_none() {
                    meta["namespace"] = serde_yaml::Value::String(ns.clone());
                }
            }
            docs.push((file.clone(), v));
        }
    }
    docs
}

async fn dry_run_apply(
    discovery: &Discovery,
    client: &kube::Client,
    file: &str,
    doc: serde_yaml::Value,
) {
    let obj: DynamicObject = serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
    let tm = obj
        .types
        .clone()
        .unwrap_or_else(|| panic!("{file}: no apiVersion/kind"));
    let gvk = GroupVersionKind::try_from(&tm).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (ar, caps): (ApiResource, ApiCapabilities) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("{file}: the API server does not serve {gvk:?}"));
    let name = obj
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| panic!("{file}: no name"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| panic!("{file}: {name} has no namespace"));
            Api::namespaced_with(client.clone(), &ns, &ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let params = PatchParams::apply("manifests-test").dry_run();
    api.patch(&name, &params, &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("{file}: {} {name} refused by the API server: {e}", tm.kind));
}

#[tokio::test]
async fn manifests_are_accepted_by_the_api_server() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let docs = kustomized_documents();
    assert!(
        docs.len() >= 8,
        "expected the full install, got {} objects",
        docs.len()
    );

    // Namespaced objects need their namespace to exist: create it for real first, and the
    // CRD too (a dry-run CRD does not make its kind servable).
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind == "Namespace" || kind == "CustomResourceDefinition" {
            let obj: DynamicObject = serde_yaml::from_value(doc.clone()).expect("object");
            let discovery = Discovery::new(client.clone())
                .run()
                .await
                .expect("discovery");
            let gvk = GroupVersionKind::try_from(obj.types.as_ref().expect("types")).expect("gvk");
            let (ar, _) = discovery.resolve_gvk(&gvk).expect("served");
            Api::<DynamicObject>::all_with(client.clone(), &ar)
                .patch(
                    obj.metadata.name.as_deref().expect("name"),
                    &PatchParams::apply("manifests-test"),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let discovery = support::poll_until(
        std::time::Duration::from_secs(30),
        "discovery of every kind",
        || {
            let client = client.clone();
            let docs = docs.clone();
            async move {
                let d = Discovery::new(client).run().await.ok()?;
                docs.iter()
                    .all(|(_, doc)| {
                        let obj: DynamicObject =
                            serde_yaml::from_value(doc.clone()).expect("object");
                        let gvk = GroupVersionKind::try_from(obj.types.as_ref().expect("types"))
                            .expect("gvk");
                        d.resolve_gvk(&gvk).is_some()
                    })
                    .then_some(d)
            }
        },
    )
    .await;
    for (file, doc) in docs {
        dry_run_apply(&discovery, &client, &file, doc).await;
    }
}

#[tokio::test]
async fn rendered_webhook_configuration_is_accepted_in_both_forms() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let certs = certs_gen::generate(&certs_gen::CertRequest::new(
        "whisperer-injector",
        "whisperer-system",
    ))
    .expect("certs");
    let template = std::fs::read_to_string(repo("webhook.yaml.tmpl")).expect("template");
    let service = certs_gen::TemplateValues {
        name: "whisperer-injector".into(),
        path: "/mutate".into(),
        port: 443,
        ..certs_gen::TemplateValues::for_service(&certs, "whisperer-injector", "whisperer-system")
    };
    let url = certs_gen::TemplateValues {
        name: "whisperer-injector-local".into(),
        ..certs_gen::TemplateValues::for_url(
            &certs,
            "https://127.0.0.1:8443/mutate",
            "whisperer-system",
        )
    };
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for values in [service, url] {
        let yaml = certs_gen::render_webhook(&template, &values).expect("renders");
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("YAML");
        dry_run_apply(&discovery, &client, "webhook.yaml.tmpl", doc).await;
    }
}

//! Every manifest a user installs is accepted by a real kube-apiserver (server-side apply,
//! dry run), and so is the webhook configuration certs-gen renders for the cluster.

mod support;

use kube::discovery::Discovery;
use support::manifests::{apply_document, discovery_for, kustomized_documents, repo};
use support::ControlPlane;

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
            let d = discovery_for(&client, std::slice::from_ref(doc)).await;
            apply_document(&d, &client, file, doc, false).await;
        }
    }
    let all: Vec<serde_yaml::Value> = docs.iter().map(|(_, d)| d.clone()).collect();
    let discovery = discovery_for(&client, &all).await;
    for (file, doc) in &docs {
        apply_document(&discovery, &client, file, doc, true).await;
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
        apply_document(&discovery, &client, "webhook.yaml.tmpl", &doc, true).await;
    }
}

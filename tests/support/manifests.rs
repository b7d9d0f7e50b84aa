//! The files in `manifests/`, read as the kustomization lists them and applied to a test
//! control plane the way `kubectl apply --server-side` would: tests use the shipped objects
//! themselves (RBAC, admission policies, params), never copies of them.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;

use super::{poll_until, WAIT};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The profiles and namespace lists of `manifests/configmap.yaml` (`data.config.yaml`).
pub fn shipped_config() -> whisperer_injector::config::Config {
    let path = repo("manifests/configmap.yaml");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("configmap.yaml"))
            .expect("ConfigMap");
    let text = &cm.data.as_ref().expect("data")["config.yaml"];
    whisperer_injector::config::Config::parse(text, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Deserialize)]
struct Kustomization {
    namespace: Option<String>,
    resources: Vec<String>,
}

fn kustomization() -> Kustomization {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo("manifests/kustomization.yaml")).expect("kustomization.yaml"),
    )
    .expect("kustomization parses")
}

/// The kustomization's resource files, in order.
pub fn kustomized_files() -> Vec<String> {
    kustomization().resources
}

/// The documents of `manifests/<file>`, with the kustomization's namespace set on those
/// that name none (what kustomize's `namespace:` does; cluster-scoped kinds ignore it when
/// applied).
pub fn documents(file: &str) -> Vec<serde_yaml::Value> {
    let ns = kustomization().namespace;
    let text = std::fs::read_to_string(repo("manifests").join(file))
        .unwrap_or_else(|e| panic!("manifests/{file}: {e}"));
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v =
            serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("manifests/{file}: {e}"));
        if v.is_null() {
            continue;
        }
        if let (Some(ns), Some(meta)) = (&ns, v.get_mut("metadata")) {
            if meta.get("namespace").is_none() {
                meta["namespace"] = serde_yaml::Value::String(ns.clone());
            }
        }
        docs.push(v);
    }
    docs
}

/// Every document of the kustomization, with the file it came from.
pub fn kustomized_documents() -> Vec<(String, serde_yaml::Value)> {
    kustomized_files()
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

/// Server-side applies (or, with `dry_run`, only asks the API server to accept) one document.
pub async fn apply_document(
    discovery: &Discovery,
    client: &kube::Client,
    file: &str,
    doc: &serde_yaml::Value,
    dry_run: bool,
) -> DynamicObject {
    let mut obj: DynamicObject =
        serde_yaml::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let tm = obj
        .types
        .clone()
        .unwrap_or_else(|| panic!("{file}: no apiVersion/kind"));
    let gvk = GroupVersionKind::try_from(&tm).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (ar, caps) = discovery
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
        Scope::Cluster => {
            obj.metadata.namespace = None;
            Api::all_with(client.clone(), &ar)
        }
    };
    let mut params = PatchParams::apply("manifests-test").force();
    params.dry_run = dry_run;
    api.patch(&name, &params, &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("{file}: {} {name} refused by the API server: {e}", tm.kind))
}

/// Discovery that serves every kind of `docs` (waits for CRDs to become servable).
pub async fn discovery_for(client: &kube::Client, docs: &[serde_yaml::Value]) -> Discovery {
    poll_until(WAIT, "discovery of every kind", || {
        let client = client.clone();
        async move {
            let d = Discovery::new(client).run().await.ok()?;
            docs.iter()
                .all(|doc| {
                    let obj: DynamicObject = serde_yaml::from_value(doc.clone()).expect("object");
                    let gvk = GroupVersionKind::try_from(obj.types.as_ref().expect("types"))
                        .expect("gvk");
                    d.resolve_gvk(&gvk).is_some()
                })
                .then_some(d)
        }
    })
    .await
}

/// Applies `manifests/<file>` for real (each document, in order). Namespaced objects need
/// their namespace: create it first (`manifests/namespace.yaml`).
pub async fn apply(client: &kube::Client, file: &str) {
    let docs = documents(file);
    let discovery = discovery_for(client, &docs).await;
    for doc in &docs {
        apply_document(&discovery, client, file, doc, false).await;
    }
}

/// API groups of other projects' operators that the chart and the kustomize components may
/// render (cert-manager's Issuer/Certificate, prometheus-operator's ServiceMonitor). The test
/// API server has no CRDs for them, so [`accept_all`] cannot ask it about them; tests check
/// those objects' fields themselves.
pub const FOREIGN_GROUPS: &[&str] = &["cert-manager.io/", "monitoring.coreos.com/"];

pub fn is_foreign(doc: &serde_yaml::Value) -> bool {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    FOREIGN_GROUPS.iter().any(|g| api_version.starts_with(g))
}

/// What `kubectl apply --server-side` of a whole install would meet: the namespaces the
/// documents live in and the CRDs are created for real first (a dry-run CRD does not make its
/// kind servable, and a dry run into a missing namespace fails), then every other document is
/// applied with `dryRun=All`, each refusal a panic naming `what` and the object. Documents of
/// [`FOREIGN_GROUPS`] are left out; returns how many documents the API server accepted.
pub async fn accept_all(client: &kube::Client, what: &str, docs: &[serde_yaml::Value]) -> usize {
    let mut namespaces: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] != "Namespace")
        .filter_map(|d| d["metadata"]["namespace"].as_str().map(String::from))
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut first: Vec<serde_yaml::Value> = namespaces
        .iter()
        .map(|ns| {
            serde_yaml::from_str(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}"
            ))
            .expect("namespace")
        })
        .collect();
    first.extend(
        docs.iter()
            .filter(|d| d["kind"] == "Namespace" || d["kind"] == "CustomResourceDefinition")
            .cloned(),
    );
    for doc in &first {
        let d = discovery_for(client, std::slice::from_ref(doc)).await;
        apply_document(&d, client, what, doc, false).await;
    }
    let ours: Vec<serde_yaml::Value> = docs.iter().filter(|d| !is_foreign(d)).cloned().collect();
    let discovery = discovery_for(client, &ours).await;
    for doc in &ours {
        apply_document(&discovery, client, what, doc, true).await;
    }
    ours.len()
}

//! Objects the tests create: settings, pod templates, Deployments, pods and Attachments, and
//! a typed create that names what failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use whisperer_injector::config::Config;
use whisperer_injector::engine::{Settings, SharedSettings};
use whisperer_injector::reconciler::{Attachment, AttachmentSpec, TargetKind, TargetRef};

/// Settings as `serve` builds them from `config`, shared the way every component holds them.
pub fn shared_settings(config: Config, own_ns: &str) -> SharedSettings {
    Arc::new(ArcSwap::from_pointee(Settings::new(
        Arc::new(config),
        own_ns,
    )))
}

/// Labels `app: <app>`, containers `app` and `side`.
pub fn pod_template(app: &str) -> serde_json::Value {
    json!({
        "metadata": { "labels": { "app": app } },
        "spec": { "containers": [
            { "name": "app", "image": "registry.invalid/app:1" },
            { "name": "side", "image": "registry.invalid/side:1" }
        ] }
    })
}

/// A Deployment `name` selecting `app: <name>`, with [`pod_template`].
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    deployment_with(name, replicas, pod_template(name))
}

/// A Deployment `name` selecting `app: <name>` with its own pod template (which must carry
/// that label).
pub fn deployment_with(name: &str, replicas: i32, template: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } }, "template": template }
    }))
    .expect("deployment json")
}

/// A bare pod of [`pod_template`] with `annotations`.
pub fn plain_pod(name: &str, app: &str, annotations: &[(&str, &str)]) -> Pod {
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let mut t = pod_template(app);
    t["metadata"]["name"] = json!(name);
    t["metadata"]["annotations"] = json!(ann);
    t["apiVersion"] = json!("v1");
    t["kind"] = json!("Pod");
    serde_json::from_value(t).expect("pod json")
}

/// An Attachment for a target `(kind, name)` or the selector `app: <selector_app>`.
pub fn attachment(
    name: &str,
    target: Option<(TargetKind, &str)>,
    selector_app: Option<&str>,
    ttl: Option<&str>,
) -> Attachment {
    Attachment::new(
        name,
        AttachmentSpec {
            target: target.map(|(kind, n)| TargetRef {
                kind,
                name: n.into(),
            }),
            selector: selector_app.map(|app| LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            profile: None,
            container: None,
            ttl: ttl.map(str::to_string),
        },
    )
}

/// Names of the pod's ephemeral containers.
pub fn ephemeral_names(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .map(|v| v.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// Creates `obj` in `ns`, panicking with its kind and name.
pub async fn create<K>(client: &Client, ns: &str, obj: &K) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await
        .unwrap_or_else(|e| panic!("create {} {}: {e}", K::kind(&()), obj.name_any()))
}

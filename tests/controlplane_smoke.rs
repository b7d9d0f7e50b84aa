//! Proves the local control plane harness (tests/support) against the real
//! upstream binaries: pods, the status subresource, workload controllers, and
//! that dropping the plane leaves no process behind.

mod support;

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{poll_until, ControlPlane, KUBERNETES_VERSION, WAIT};

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
    }))
    .expect("pod json")
}

#[test]
fn version_constant_matches_go_mod() {
    let go_mod = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/go.mod");
    let text = std::fs::read_to_string(&go_mod).expect("read tests/controlplane/go.mod");
    let pinned = text
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| l.strip_prefix("k8s.io/kubernetes "))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .expect("go.mod requires k8s.io/kubernetes");
    assert_eq!(
        pinned, KUBERNETES_VERSION,
        "support::KUBERNETES_VERSION must follow tests/controlplane/go.mod"
    );
}

#[tokio::test]
async fn pods_stay_pending_until_the_test_writes_status_like_a_kubelet() {
    let cp = ControlPlane::start().await;
    assert!(cp.server_url().starts_with("https://127.0.0.1:"));
    assert!(cp.kubeconfig_path().is_file());

    let ns = cp
        .namespace(&[("injection", "enabled"), ("team", "smoke")])
        .await;
    let client = cp.client();
    let labels = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("get namespace")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(labels.get("injection").map(String::as_str), Some("enabled"));
    assert_eq!(labels.get("team").map(String::as_str), Some("smoke"));

    let pods = Api::<Pod>::namespaced(client, &ns);
    let created = pods
        .create(&PostParams::default(), &pod("web"))
        .await
        .expect("create pod");
    let spec = created.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name, None, "no scheduler runs");
    // The ServiceAccount admission plugin is on, as in a real cluster.
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "projected service-account token volume is injected"
    );

    let pending = pods.get("web").await.expect("get pod");
    let status = pending.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.pod_ip, None);

    let running = cp
        .mark_pod_running(&ns, "web", "node-a", "10.244.0.7")
        .await;
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-a")
    );

    let read = pods.get("web").await.expect("get pod again");
    let status = read.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.7"));
    assert_eq!(
        status.host_ip.as_deref(),
        Some(support::controlplane::HOST_IP)
    );
    let node = Api::<Node>::all(cp.client())
        .get("node-a")
        .await
        .expect("the node the pod is bound to is registered");
    assert!(node.status.and_then(|s| s.conditions).is_some());
    let ready = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .all(|c| c.ready);
    assert!(ready);
}

#[tokio::test]
async fn controllers_run_deployments_and_drop_leaves_no_process() {
    let cp = ControlPlane::start_with_controllers().await;
    let ns = cp.namespace(&[]).await;
    let deployments = Api::<Deployment>::namespaced(cp.client(), &ns);
    let deployment = support::builders::deployment_with(
        "web",
        2,
        json!({
            "metadata": { "labels": { "app": "web" } },
            "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
        }),
    );
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");

    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    let names = poll_until(WAIT, "2 pods of deployment web", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (list.items.len() == 2).then(|| {
                list.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect::<Vec<_>>()
            })
        }
    })
    .await;
    assert!(names.iter().all(|n| n.starts_with("web-")), "{names:?}");
    let running = cp
        .mark_pod_running(&ns, &names[0], "node-b", "10.244.1.2")
        .await;
    assert_eq!(
        running.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.244.1.2")
    );

    let pids = cp.pids();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    for pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(cp);
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived ControlPlane::drop"
        );
    }
}

#[test]
fn a_panicking_test_still_stops_its_plane() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cp = ControlPlane::start().await;
            tx.send(cp.pids()).expect("send pids");
            panic!("deliberate test failure");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let pids = rx.recv().expect("pids were sent before the panic");
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived a panic"
        );
    }
}

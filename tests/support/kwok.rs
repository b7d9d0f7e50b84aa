//! A simulated cluster for scale tests and benchmarks: the control plane with its controllers,
//! plus the upstream kube-scheduler (same `k8s.io/kubernetes` build as the plane) and kwok
//! (`sigs.k8s.io/kwok`, built by `tests/kwok/build.sh`), which plays the kubelet of N fake
//! nodes. Pods of real Deployments are then created by kube-controller-manager, bound by the
//! scheduler, and given an IP and a `Running` status by kwok's default pod Stages; the
//! ephemeral containers the reconciler adds are reported running by our own Stage
//! (`tests/kwok/stages/`). Nothing here writes a pod status: compare `super::kubelet`, the
//! hand-written stand-in the small tests use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use super::controlplane::{get_ok, http_get_contains};
use super::{free_port, poll_until, ControlPlane};

/// Must equal the `sigs.k8s.io/kwok` version in `tests/kwok/go.mod` (checked by a unit test
/// in `tests/scale_kwok.rs`).
pub const KWOK_VERSION: &str = "v0.8.0";
/// The annotation kwok is told to manage nodes by (`--manage-nodes-with-annotation-selector`).
pub const NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// Pod IPs kwok hands out (`--cidr`): room for far more pods than any bench makes.
pub const POD_CIDR: &str = "10.64.0.1/10";
/// Host IP of every fake node (`--node-ip`).
pub const NODE_IP: &str = "10.255.0.1";

/// Where kwok and its default Stages are: `$WHISPERER_KWOK_BIN` if set, else
/// `${WHISPERER_KWOK_CACHE:-<repo>/target/kwok}/<version>/` (what `tests/kwok/build.sh`
/// writes).
pub fn kwok_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WHISPERER_KWOK_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("WHISPERER_KWOK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kwok"));
    cache.join(KWOK_VERSION)
}

/// Our own kwok Stages (`tests/kwok/stages/*.yaml`), in name order.
pub fn own_stages() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kwok/stages");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn required(path: PathBuf) -> PathBuf {
    if !path.is_file() {
        panic!(
            "{} is missing: run tests/kwok/build.sh (kwok {KWOK_VERSION}) and \
             tests/controlplane/build.sh (kube-scheduler), or set WHISPERER_KWOK_BIN",
            path.display()
        );
    }
    path
}

/// Name of fake node `i`.
pub fn node_name(i: usize) -> String {
    format!("kwok-node-{i}")
}

/// A fake node as kwok's documentation creates them: annotated for kwok, no status (kwok's
/// `node-initialize` Stage writes conditions, addresses, capacity and allocatable: 1k CPU,
/// 1 Ti memory, 1M pods, so scheduling never runs out of room).
fn fake_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                NODE_ANNOTATION.0: NODE_ANNOTATION.1,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }))
    .expect("node json")
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl ControlPlane {
    /// etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, with `nodes`
    /// fake nodes Ready. kube-controller-manager and kube-scheduler get client limits of
    /// 1000 requests/s (their defaults, 20 and 50, would make a 10,000-pod Deployment take
    /// minutes to create; kwokctl lifts them too); the API server keeps its defaults,
    /// priority and fairness (APF) included.
    pub async fn start_with_kwok(nodes: usize) -> ControlPlane {
        let kwok = required(kwok_dir().join("kwok"));
        let default_stages = required(kwok_dir().join("default-stages.yaml"));
        let scheduler = required(super::binary_dir().join("kube-scheduler"));
        let mut cp = ControlPlane::start_with_controller_flags(&[
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
        ])
        .await;
        let kubeconfig = cp.kubeconfig_path().display().to_string();

        let port = free_port();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", cp.path("serving.crt").display()),
            format!(
                "--tls-private-key-file={}",
                cp.path("serving.key").display()
            ),
            "--leader-elect=false".to_string(),
            "--kube-api-qps=1000".to_string(),
            "--kube-api-burst=2000".to_string(),
        ];
        let health = cp.client_for_port(port);
        cp.add_process("kube-scheduler", &scheduler, &args, || {
            let health = health.clone();
            async move { get_ok(&health, "/healthz").await }
        })
        .await;

        let port = free_port();
        let mut args = vec![
            format!("--kubeconfig={kubeconfig}"),
            "--manage-all-nodes=false".to_string(),
            format!(
                "--manage-nodes-with-annotation-selector={}={}",
                NODE_ANNOTATION.0, NODE_ANNOTATION.1
            ),
            format!("--cidr={POD_CIDR}"),
            format!("--node-ip={NODE_IP}"),
            "--node-lease-duration-seconds=40".to_string(),
            format!("--server-address=127.0.0.1:{port}"),
            format!("--config={}", default_stages.display()),
        ];
        args.extend(
            own_stages()
                .iter()
                .map(|p| format!("--config={}", p.display())),
        );
        cp.add_process("kwok", &kwok, &args, || {
            http_get_contains(port, "/healthz", "ok")
        })
        .await;

        cp.add_kwok_nodes(0..nodes).await;
        cp
    }

    /// Creates fake nodes `range` (names from [`node_name`]) and waits until kwok reports
    /// each Ready.
    pub async fn add_kwok_nodes(&self, range: std::ops::Range<usize>) {
        let api = Api::<Node>::all(self.client());
        for i in range.clone() {
            match api
                .create(&PostParams::default(), &fake_node(&node_name(i)))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("create node {}: {e}", node_name(i)),
            }
        }
        let want: Vec<String> = range.map(node_name).collect();
        poll_until(
            Duration::from_secs(60),
            "kwok to report the fake nodes Ready",
            || {
                let api = api.clone();
                let want = want.clone();
                async move {
                    let nodes = api.list(&ListParams::default()).await.ok()?;
                    let ready = nodes
                        .items
                        .iter()
                        .filter(|n| is_ready(n))
                        .filter(|n| n.metadata.name.as_ref().is_some_and(|x| want.contains(x)))
                        .count();
                    (ready == want.len()).then_some(())
                }
            },
        )
        .await;
    }
}

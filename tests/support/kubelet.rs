//! The one stand-in for the scheduler and a kubelet (no kubelet runs in the test control
//! plane): register a Node, bind pods to it, write their `Running` status with a pod IP, and
//! write a terminated ephemeral container status the way a kubelet reports a Whisperer that
//! exited. Every test, bench and example uses these; see tests/README.md.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::poll_until;

/// Host IP of every registered node.
pub const HOST_IP: &str = "10.255.0.1";
/// The node [`Kubelet`] and [`run_all`] bind pods to.
pub const NODE: &str = "node-a";

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .expect("round timestamp")
        .to_string()
}

/// A pod IP no other pod of this process got (10.100.0.2, 10.100.0.3 ... room for millions).
pub fn next_pod_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    format!(
        "10.{}.{}.{}",
        100 + n / 62_500,
        (n / 250) % 250,
        n % 250 + 2
    )
}

/// Registers a `Ready` Node named `node` (host IP [`HOST_IP`]) unless it exists, as a kubelet
/// would. Nothing heartbeats it: with kube-controller-manager running, the node lifecycle
/// controller marks it `Unknown` after its grace period (about 50 s), which is longer than a
/// test. Without the Node object, the pod GC controller would delete pods bound to it after
/// 40 s.
pub async fn register_node(client: &Client, node: &str) {
    let nodes = Api::<Node>::all(client.clone());
    let object = Node {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            labels: Some([("kubernetes.io/hostname".to_string(), node.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return,
        Err(e) => panic!("create node {node}: {e}"),
    }
    let now = now_rfc3339();
    let status = json!({
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status (written by the test harness)",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [
                { "type": "InternalIP", "address": HOST_IP },
                { "type": "Hostname", "address": node },
            ],
        }
    });
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("write status of node {node}: {e}"));
}

/// Does what the scheduler and a kubelet would for `pod` (node already registered): binds it
/// to `node` unless bound, and writes a `Running` status with `pod_ip`, host IP [`HOST_IP`],
/// `Ready` conditions and a running status per container.
pub async fn run_pod(
    pods: &Api<Pod>,
    pod: &Pod,
    node: &str,
    pod_ip: &str,
) -> Result<Pod, kube::Error> {
    let name = pod.name_any();
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some();
    if !bound {
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": name },
            "target": { "apiVersion": "v1", "kind": "Node", "name": node },
        });
        pods.create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await?;
    }
    let now = now_rfc3339();
    let statuses: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let conditions: Vec<_> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|t| json!({ "type": t, "status": "True", "lastTransitionTime": now }))
        .collect();
    let status = json!({
        "status": {
            "phase": "Running",
            "hostIP": HOST_IP,
            "hostIPs": [{ "ip": HOST_IP }],
            "podIP": pod_ip,
            "podIPs": [{ "ip": pod_ip }],
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": statuses,
        }
    });
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
}

fn waiting_to_run(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none()
        && phase != Some("Running")
        && phase != Some("Succeeded")
}

/// Runs every pod of a namespace that is not running yet, as they appear (each bound to
/// [`NODE`], with a fresh pod IP). Stops when dropped.
pub struct Kubelet(tokio::task::JoinHandle<()>);

impl Kubelet {
    pub async fn start(client: &Client, ns: &str) -> Kubelet {
        register_node(client, NODE).await;
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        Kubelet(tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items.iter().filter(|p| waiting_to_run(p)) {
                        let _ = run_pod(&pods, p, NODE, &next_pod_ip()).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the pods of `ns` (32 at a time) until `want` of them run; for many pods at once.
pub async fn run_all(client: &Client, ns: &str, want: usize, timeout: Duration) {
    register_node(client, NODE).await;
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    poll_until(timeout, "pods running", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let (todo, running): (Vec<&Pod>, Vec<&Pod>) =
            list.items.iter().partition(|p| waiting_to_run(p));
        stream::iter(todo)
            .for_each_concurrent(32, |p| {
                let pods = pods.clone();
                async move {
                    let _ = run_pod(&pods, p, NODE, &next_pod_ip()).await;
                }
            })
            .await;
        (running.len() >= want).then_some(())
    })
    .await;
}

/// What a kubelet writes when an ephemeral container exits (exit code 1, `Error`).
pub async fn terminate_ephemeral(client: &Client, ns: &str, pod: &str, container: &str) {
    let now = now_rfc3339();
    let status = json!({ "status": { "ephemeralContainerStatuses": [{
        "name": container, "image": "ghcr.io/whisperer-dev/whisperer:v0.1.0", "imageID": "",
        "ready": false, "restartCount": 0,
        "state": { "terminated": { "exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now } },
    }]}});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(pod, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write ephemeral container status");
}

/// What the API server meets when a node's kubelet is down: `node` (registered if missing)
/// points its kubelet endpoint at a loopback port nothing listens on, so `pods/log` and other
/// kubelet-proxied requests for its pods fail at once (connection refused) instead of waiting
/// on an address that does not exist.
pub async fn kubelet_unreachable(client: &Client, node: &str) {
    register_node(client, node).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let status = json!({ "status": {
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": port } },
    }});
    Api::<Node>::all(client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("point node {node} at a dead kubelet: {e}"));
}

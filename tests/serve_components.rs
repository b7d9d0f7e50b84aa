//! `serve` as a user runs it against a cluster: webhook, DNS proxy and reconciler in one
//! process, finding the cluster through KUBECONFIG. One test per binary because the
//! environment variable is process-wide.

mod https;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{poll_until, ControlPlane};
use whisperer_injector::cli::ServeArgs;

async fn ask(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket
        .send_to(&msg.to_vec().expect("encode"), addr)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("DNS answer in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decode")
}

fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::PTR(p) => p.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn config(alias_ip: &str) -> String {
    format!(
        "defaultProfile: default\nprofiles:\n  default:\n    image: example.com/whisperer:1\n    hostAliases: [{{ip: {alias_ip}, hostnames: [collector.whisperer.test]}}]\n"
    )
}

#[tokio::test]
async fn serve_runs_webhook_dns_and_reconciler_against_a_cluster() {
    let cp = ControlPlane::start().await;
    std::env::set_var("KUBECONFIG", cp.kubeconfig_path());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config("10.96.0.50")).expect("write");
    let cfg_s = cfg.display().to_string();
    let args = ServeArgs::from_flags([
        "--listen",
        "127.0.0.1:0",
        "--dns",
        "on",
        "--dns-listen",
        "127.0.0.1:0",
        "--reconciler",
        "off",
        "--config",
        &cfg_s,
        "--reload-interval",
        "100ms",
    ])
    .expect("flags");
    let running = whisperer_injector::app::start(&args)
        .await
        .expect("serve starts");
    let dns = running.dns_addr.expect("DNS proxy runs");
    let ca = running.generated_ca.clone().expect("ca");

    // hostAliases of the profiles, and a config reload replaces them.
    let a = ask(dns, "collector.whisperer.test.", RecordType::A).await;
    assert_eq!(answers(&a), ["10.96.0.50"]);
    std::fs::write(&cfg, config("10.96.0.99")).expect("write");
    poll_until(Duration::from_secs(10), "the reloaded alias", || async {
        let a = ask(dns, "collector.whisperer.test.", RecordType::A).await;
        (answers(&a) == ["10.96.0.99"]).then_some(())
    })
    .await;

    // A pod the test makes Running (as a kubelet) resolves by PTR.
    let ns = cp.namespace(&[]).await;
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0"},
        "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    pods.patch_status(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.1.7.9", "podIPs": [{"ip": "10.1.7.9"}]}})),
    )
    .await
    .expect("status");
    let expected = format!("web-0.{ns}.pod.cluster.local.");
    poll_until(Duration::from_secs(10), "the pod's PTR record", || {
        let expected = expected.clone();
        async move {
            let m = ask(dns, "9.7.1.10.in-addr.arpa.", RecordType::PTR).await;
            (m.metadata.response_code == ResponseCode::NoError && answers(&m) == [expected])
                .then_some(())
        }
    })
    .await;

    // /status names the components and what the watches hold.
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let report = conn.get("/status").await.json();
    let components: Vec<&str> = report["components"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(components, ["webhook", "dns"]);
    assert!(
        report["watched"]["Pod"].as_u64().expect("pods watched") >= 1,
        "{report}"
    );
    let _ = IpAddr::from([0, 0, 0, 0]);
    running.shutdown().await;
}

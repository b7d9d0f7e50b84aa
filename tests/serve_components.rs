//! `serve` as a user runs it against a cluster: webhook, DNS proxy and reconciler in one
//! process, finding the cluster through KUBECONFIG. One test per binary because the
//! environment variable is process-wide.

use support::https;
mod support;

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::dns::{answers, ask};
use support::{poll_until, ControlPlane, WAIT};
use whisperer_injector::cli::ServeArgs;
use whisperer_injector::control::TokenKey;
use whisperer_injector::metrics::{ReloadKind, ReloadLabels, ReloadResult};
use whisperer_injector::reconciler::Attachment;

fn config(alias_ip: &str) -> String {
    format!(
        "defaultProfile: default\nprofiles:\n  default:\n    image: example.com/whisperer:1\n    hostAliases: [{{ip: {alias_ip}, hostnames: [collector.whisperer.test]}}]\n"
    )
}

/// The control API as an attached Whisperer calls it: the URL and token from its env.
/// Polls the control API until the agent behind `token` is told to stop for `reason`.
async fn told_to_stop(ca: &str, url: &str, token: &str, reason: &str) {
    poll_until(
        WAIT,
        &format!("the agent to be told to stop ({reason})"),
        || async move {
            let (_, v) = agent_asks(ca, url, token).await;
            (v["action"] == "stop" && v["reason"] == reason).then_some(())
        },
    )
    .await;
}

async fn agent_asks(ca: &str, url: &str, token: &str) -> (u16, serde_json::Value) {
    let rest = url.strip_prefix("https://").expect("https url");
    let (authority, path) = rest.split_at(rest.find('/').expect("path"));
    let port: u16 = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut conn = https::connect(SocketAddr::from(([127, 0, 0, 1], port)), ca, false)
        .await
        .expect("handshake");
    let req = hyper::Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let ans = conn.send(req).await;
    (ans.status, ans.json())
}

fn env_of(pod: &Pod, container: &str, var: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .ephemeral_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == var)?
        .value
        .clone()
}

#[tokio::test]
async fn serve_runs_webhook_dns_and_reconciler_against_a_cluster() {
    let cp = ControlPlane::start().await;
    std::env::set_var("KUBECONFIG", cp.kubeconfig_path());
    support::install_attachment_crd(&cp.client()).await;
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let control_url = format!("https://localhost:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config("10.96.0.50")).expect("write");
    let cfg_s = cfg.display().to_string();
    let keys = dir.path().join("agent-keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let key_a = "a".repeat(32) + "-first-key";
    let key_b = "b".repeat(32) + "-second-key";
    std::fs::write(keys.join("current"), &key_a).expect("write");
    let keys_s = keys.display().to_string();
    let args = ServeArgs::from_flags([
        "--agent-token-keys",
        &keys_s,
        "--listen",
        &listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--dns",
        "on",
        "--dns-listen",
        "127.0.0.1:0",
        // The test asks from 127.0.0.1, which is no Whisperer's pod.
        "--dns-trusted-cidr",
        "127.0.0.1/32",
        "--reconciler",
        "on",
        "--leader-election=false",
        "--control-url",
        &control_url,
        "--resync-interval",
        "1s",
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
    poll_until(WAIT, "the reloaded alias", || async {
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
    poll_until(WAIT, "the pod's PTR record", || {
        let expected = expected.clone();
        async move {
            let m = ask(dns, "9.7.1.10.in-addr.arpa.", RecordType::PTR).await;
            (m.metadata.response_code == ResponseCode::NoError && answers(&m) == [expected])
                .then_some(())
        }
    })
    .await;

    // /status (admin listener) names the components and what the watches hold.
    let report = https::admin_get(running.admin_addr, "/status").await.json();
    let components: Vec<&str> = report["components"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(components, ["webhook", "dns", "reconciler", "pod-security"]);
    assert!(
        report["watched"]["Pod"].as_u64().expect("pods watched") >= 1,
        "{report}"
    );

    // Runtime attachment through the Attachment resource, and the agent control API.
    cp.mark_pod_running(&ns, "web-0", "node-a", "10.1.7.9")
        .await;
    let attachments = Api::<Attachment>::namespaced(cp.client(), &ns);
    let make = |name: &str, ttl: &str| -> Attachment {
        serde_json::from_value(json!({
            "apiVersion": "whisperer.dev/v1alpha1", "kind": "Attachment",
            "metadata": {"name": name},
            "spec": {"target": {"kind": "Pod", "name": "web-0"}, "ttl": ttl}
        }))
        .expect("attachment")
    };
    attachments
        .create(&PostParams::default(), &make("debug", "1h"))
        .await
        .expect("create");
    let attached = poll_until(WAIT, "the Whisperer to be attached", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web-0").await.ok()?;
            env_of(&p, "whisperer-debug", "WHISPERER_CONTROL_TOKEN").map(|_| p)
        }
    })
    .await;
    let url = env_of(&attached, "whisperer-debug", "WHISPERER_CONTROL_URL").expect("control url");
    let token = env_of(&attached, "whisperer-debug", "WHISPERER_CONTROL_TOKEN").expect("token");
    assert_eq!(
        env_of(&attached, "whisperer-debug", "WHISPERER_CONTROL_CA").as_deref(),
        Some(ca.as_str()),
        "the agent gets the CA that verifies the control API"
    );
    // The control API answers from the reconciler's cache, which learns the deadline from the
    // status the reconciler writes after patching the pod.
    poll_until(WAIT, "the control API to hand out the deadline", || {
        let (ca, url, token) = (ca.clone(), url.clone(), token.clone());
        async move {
            let (status, verdict) = agent_asks(&ca, &url, &token).await;
            (status == 200
                && verdict["action"] == "run"
                && verdict["deadline"]
                    .as_str()
                    .is_some_and(|d| d.ends_with('Z')))
            .then_some(())
        }
    })
    .await;

    // A wrong token learns nothing: the same 401 as for an attachment that does not exist.
    let (bad, bad_body) = agent_asks(&ca, &url, &"0".repeat(64)).await;
    let ghost_url = url.replace("/attachments/debug/", "/attachments/ghost/");
    let (ghost, ghost_body) = agent_asks(&ca, &ghost_url, &token).await;
    assert_eq!((bad, ghost), (401, 401));
    assert_eq!(bad_body, ghost_body);

    // Key rotation: the old current key moves to previous, a new one becomes current. The
    // token minted before keeps working; new attachments get tokens of the new key.
    let uid = env_of(&attached, "whisperer-debug", "WHISPERER_ATTACHMENT_UID")
        .expect("attachment uid in the env");
    let minted_with =
        |key: &str| TokenKey::from_bytes(key.as_bytes().to_vec()).mint(&ns, "debug", &uid);
    assert_eq!(token, minted_with(&key_a), "minted with the current key");
    let key_reloads = || {
        running
            .state
            .metrics
            .reloads
            .get_or_create(&ReloadLabels {
                kind: ReloadKind::agent_token_keys,
                result: ReloadResult::success,
            })
            .get()
    };
    // One file at a time, each change seen by one reload (a Secret volume swaps both at once).
    std::fs::write(keys.join("previous"), &key_a).expect("write");
    poll_until(WAIT, "previous to load", || async {
        (key_reloads() >= 1).then_some(())
    })
    .await;
    std::fs::write(keys.join("current"), &key_b).expect("write");
    poll_until(WAIT, "the new current key to load", || async {
        (key_reloads() >= 2).then_some(())
    })
    .await;
    attachments
        .create(&PostParams::default(), &make("after-rotation", "1h"))
        .await
        .expect("create");
    let rotated = poll_until(WAIT, "a token of the new key", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web-0").await.ok()?;
            env_of(&p, "whisperer-after-rotation", "WHISPERER_CONTROL_TOKEN").zip(env_of(
                &p,
                "whisperer-after-rotation",
                "WHISPERER_ATTACHMENT_UID",
            ))
        }
    })
    .await;
    let new_uid = rotated.1.clone();
    assert_eq!(
        rotated.0,
        TokenKey::from_bytes(key_b.as_bytes().to_vec()).mint(&ns, "after-rotation", &new_uid),
        "attachments made after the reload get tokens of the new current key"
    );
    let (status, verdict) = agent_asks(&ca, &url, &token).await;
    assert_eq!(
        (status, &verdict["action"]),
        (200, &json!("run")),
        "{verdict}"
    );
    // Dropping previous ends the old tokens.
    std::fs::remove_file(keys.join("previous")).expect("rm");
    poll_until(WAIT, "the old token to be refused", || {
        let (ca, url, token) = (ca.clone(), url.clone(), token.clone());
        async move { (agent_asks(&ca, &url, &token).await.0 == 401).then_some(()) }
    })
    .await;
    let rotated_url = url.replace("/attachments/debug/", "/attachments/after-rotation/");
    let rotated_url = rotated_url.replace(&format!("/{uid}"), &format!("/{new_uid}"));
    assert_eq!(agent_asks(&ca, &rotated_url, &rotated.0).await.0, 200);
    // The rest speaks for the attachment made after the rotation.
    let (url, token) = (rotated_url, rotated.0);

    // /status lists the attachment and its pod (from the status the reconciler wrote, once its
    // cache has it).
    poll_until(WAIT, "/status to list debug and its pod", || async {
        let report = https::admin_get(running.admin_addr, "/status").await.json();
        let listed = report["attachments"].as_array()?;
        listed
            .iter()
            .any(|a| a["name"] == "debug" && a["pods"].as_array().is_some_and(|p| !p.is_empty()))
            .then_some(())
    })
    .await;

    // Detach: deleting the Attachment turns the answer into stop.
    attachments
        .delete("after-rotation", &Default::default())
        .await
        .expect("delete");
    told_to_stop(&ca, &url, &token, "detached").await;

    // TTL expiry: the answer turns into stop/expired. Created with a long TTL, shortened once
    // attached: a TTL of seconds from the start could run out before a loaded machine attaches.
    attachments
        .create(&PostParams::default(), &make("short", "1h"))
        .await
        .expect("create");
    let attached = poll_until(WAIT, "the short-lived Whisperer", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web-0").await.ok()?;
            env_of(&p, "whisperer-short", "WHISPERER_CONTROL_TOKEN").map(|_| p)
        }
    })
    .await;
    let url = env_of(&attached, "whisperer-short", "WHISPERER_CONTROL_URL").expect("url");
    let token = env_of(&attached, "whisperer-short", "WHISPERER_CONTROL_TOKEN").expect("token");
    attachments
        .patch(
            "short",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttl": "1s"}})),
        )
        .await
        .expect("shorten the TTL");
    told_to_stop(&ca, &url, &token, "expired").await;
    running.shutdown().await;
}

//! The reconciler on a simulated cluster (tests/support/kwok.rs): a 200-replica Deployment
//! rolled out by kube-controller-manager, scheduled by kube-scheduler onto kwok's fake nodes,
//! made Running (pod IP, container statuses) by kwok; an Attachment attaches every replica,
//! kwok reports each Whisperer running; then a rollout replaces every pod and each new one is
//! attached too. No hand-written kubelet or scheduler is involved. And the same under API
//! Priority and Fairness squeezing the reconciler's user to a few seats: every 429 is waited
//! out (Retry-After), never hot-looped, and every replica still ends up attached.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::json;
use support::builders::{attachment, deployment_with, ephemeral_names, shared_settings};
use support::kwok::KWOK_VERSION;
use support::{impersonate, install_attachment_crd, metrics, poll_until, ControlPlane};
use whisperer_injector::config::Config;
use whisperer_injector::reconciler::{self, Attachment, ReconcilerArgs, TargetKind};

const REPLICAS: usize = 200;
const NODES: usize = 4;
const WAIT: Duration = Duration::from_secs(90);

#[test]
fn kwok_version_matches_its_go_mod() {
    let go_mod = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kwok/go.mod"),
    )
    .expect("tests/kwok/go.mod");
    let pinned = go_mod
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| match (words.next(), words.next()) {
            (Some("sigs.k8s.io/kwok"), Some(v)) => Some(v.to_string()),
            (Some("require"), Some("sigs.k8s.io/kwok")) => words.next().map(str::to_string),
            _ => None,
        })
        .expect("a sigs.k8s.io/kwok requirement in tests/kwok/go.mod");
    assert_eq!(pinned, KWOK_VERSION);
}

fn template(revision: &str) -> serde_json::Value {
    json!({
        "metadata": { "labels": { "app": "web" }, "annotations": { "revision": revision } },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
    })
}

fn object<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("object json")
}

async fn scrape(client: &Client) -> String {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    client.request_text(req).await.expect("scrape /metrics")
}

/// Live (not terminating) pods of the Deployment.
async fn live_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// What kwok did to a pod: bound to a fake node (by the scheduler), Running with an IP.
fn running_on_kwok(p: &Pod) -> bool {
    let bound = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| n.starts_with("kwok-node-"));
    let status = p.status.as_ref();
    bound
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty())
}

/// `container` is in the pod's spec and kwok reports it running.
fn attached_and_running(p: &Pod, container: &str) -> bool {
    let in_spec = ephemeral_names(p).iter().any(|c| c == container);
    let running = p
        .status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .is_some_and(|v| {
            v.iter().any(|s| {
                s.name == container && s.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        });
    in_spec && running
}

/// Waits until the Deployment has rolled out `revision` to `n` Running pods (cheap status
/// polls first, then one list that must agree).
async fn wait_rolled_out(deployments: &Api<Deployment>, pods: &Api<Pod>, revision: &str, n: usize) {
    let what = format!("{n} replicas of revision {revision} Running on kwok nodes");
    poll_until(WAIT, &what, || async {
        let d = deployments.get("web").await.ok()?;
        let st = d.status.as_ref()?;
        let want = i32::try_from(n).ok()?;
        let done = st.observed_generation >= d.metadata.generation
            && st.updated_replicas == Some(want)
            && st.ready_replicas == Some(want)
            && st.replicas == Some(want);
        if !done {
            return None;
        }
        let live = live_pods(pods).await;
        (live.len() == n
            && live.iter().all(running_on_kwok)
            && live
                .iter()
                .all(|p| p.annotations().get("revision").map(String::as_str) == Some(revision)))
        .then_some(())
    })
    .await;
}

/// Waits until Attachment `att` reports `n` pods attached and every live pod carries its
/// Whisperer, reported running by kwok's Stage.
async fn wait_all_attached(atts: &Api<Attachment>, pods: &Api<Pod>, att: &str, n: usize) {
    let container = format!("whisperer-{att}");
    let what = format!("{n} replicas attached ({container}) and reported running");
    poll_until(WAIT, &what, || async {
        let st = atts.get(att).await.ok()?.status?;
        if usize::try_from(st.attached_pods).ok()? != n {
            return None;
        }
        let live = live_pods(pods).await;
        (live.len() == n && live.iter().all(|p| attached_and_running(p, &container))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_of_a_rolled_out_deployment_is_attached() {
    let cp = ControlPlane::start_with_kwok(NODES).await;
    let client: Client = cp.client();
    install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let atts = Api::<Attachment>::namespaced(client.clone(), &ns);

    let t = Instant::now();
    let replicas = i32::try_from(REPLICAS).expect("replicas");
    deployments
        .create(
            &PostParams::default(),
            &deployment_with("web", replicas, template("1")),
        )
        .await
        .expect("create deployment");
    wait_rolled_out(&deployments, &pods, "1", REPLICAS).await;
    eprintln!("{REPLICAS} replicas Running after {:.1?}", t.elapsed());
    let nodes: std::collections::BTreeSet<String> = live_pods(&pods)
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert!(
        nodes.len() > 1,
        "the scheduler spreads replicas over the fake nodes: {nodes:?}"
    );

    let mut registry = Registry::default();
    let args = ReconcilerArgs {
        leader_election: false,
        ..ReconcilerArgs::default()
    };
    let handle = reconciler::start(
        client.clone(),
        shared_settings(Config::default(), &own),
        own.clone(),
        &args,
        &mut registry,
    )
    .await
    .expect("start reconciler");

    let t = Instant::now();
    atts.create(
        &PostParams::default(),
        &attachment("fleet", Some((TargetKind::Deployment, "web")), None, None),
    )
    .await
    .expect("create attachment");
    wait_all_attached(&atts, &pods, "fleet", REPLICAS).await;
    eprintln!("{REPLICAS} replicas attached after {:.1?}", t.elapsed());

    // A rollout: every pod is replaced; each new one must be attached too.
    let t = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "template": template("2") } })),
        )
        .await
        .expect("change the pod template");
    wait_rolled_out(&deployments, &pods, "2", REPLICAS).await;
    wait_all_attached(&atts, &pods, "fleet", REPLICAS).await;
    eprintln!(
        "rollout: {REPLICAS} new replicas Running and attached after {:.1?}",
        t.elapsed()
    );
    handle.shutdown().await;
}

/// The reconciler's user gets a priority level of its own with one nominal share, nothing
/// to borrow and `Reject` beyond it (about 3 seats on this API server), while the reconciler
/// keeps 32 patches in flight: the API server answers 429 with Retry-After. Every replica must
/// still be attached, and the rejections must stay within what waiting Retry-After (at least
/// 1 s) per request slot allows, which a retry loop without back-off would exceed by far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_squeezed_by_priority_and_fairness_wait_and_still_attach_everything() {
    const USER: &str = "whisperer-throttled";
    const SLOTS: u16 = 32;
    const PODS: usize = 120;
    let cp = ControlPlane::start_with_kwok(2).await;
    let admin = cp.client();
    install_attachment_crd(&admin).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;

    // Not system:masters: APF exempts that group.
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": USER },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
                "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER }],
            })),
        )
        .await
        .expect("bind cluster-admin");
    Api::<PriorityLevelConfiguration>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": USER },
                "spec": { "type": "Limited", "limited": {
                    "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
                    "limitResponse": { "type": "Reject" } } },
            })),
        )
        .await
        .expect("create priority level");
    Api::<FlowSchema>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": USER },
                "spec": {
                    "priorityLevelConfiguration": { "name": USER },
                    "matchingPrecedence": 100,
                    "distinguisherMethod": { "type": "ByUser" },
                    "rules": [{
                        "subjects": [{ "kind": "User", "user": { "name": USER } }],
                        "resourceRules": [{ "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                            "namespaces": ["*"], "clusterScope": true }],
                        "nonResourceRules": [{ "verbs": ["*"], "nonResourceURLs": ["*"] }],
                    }],
                },
            })),
        )
        .await
        .expect("create flow schema");
    let throttled = impersonate::user(&cp, USER, &[]);
    let dispatched = |text: &str| {
        metrics::sum(
            text,
            "apiserver_flowcontrol_dispatched_requests_total",
            &format!("flow_schema=\"{USER}\""),
        )
    };
    // The API server applies new flow schemas asynchronously.
    poll_until(
        WAIT,
        "requests of the user classified by its flow schema",
        || async {
            let _ = Api::<Pod>::namespaced(throttled.clone(), &ns)
                .list(&ListParams::default().limit(1))
                .await;
            (dispatched(&scrape(&admin).await) > 0.0).then_some(())
        },
    )
    .await;

    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let atts = Api::<Attachment>::namespaced(admin.clone(), &ns);
    let replicas = i32::try_from(PODS).expect("replicas");
    deployments
        .create(
            &PostParams::default(),
            &deployment_with("web", replicas, template("1")),
        )
        .await
        .expect("create deployment");
    wait_rolled_out(&deployments, &pods, "1", PODS).await;

    let rejected = |text: &str| {
        metrics::sum(
            text,
            "apiserver_flowcontrol_rejected_requests_total",
            &format!("priority_level=\"{USER}\""),
        )
    };
    let before = rejected(&scrape(&admin).await);
    let t = Instant::now();
    let mut registry = Registry::default();
    let args = ReconcilerArgs {
        leader_election: false,
        reconcile_concurrency: SLOTS,
        patch_qps: 1000.0,
        ..ReconcilerArgs::default()
    };
    let handle = reconciler::start(
        throttled.clone(),
        shared_settings(Config::default(), &own),
        own.clone(),
        &args,
        &mut registry,
    )
    .await
    .expect("start reconciler as the throttled user");
    atts.create(
        &PostParams::default(),
        &attachment(
            "squeezed",
            Some((TargetKind::Deployment, "web")),
            None,
            None,
        ),
    )
    .await
    .expect("create attachment");
    wait_all_attached(&atts, &pods, "squeezed", PODS).await;
    let took = t.elapsed().as_secs_f64();
    let rejections = rejected(&scrape(&admin).await) - before;
    eprintln!("{PODS} attached in {took:.1}s with {rejections} requests rejected by APF");
    assert!(
        rejections > 0.0,
        "the priority level never rejected anything: the test did not squeeze the reconciler"
    );
    let bound = f64::from(SLOTS) * (took + 2.0);
    assert!(
        rejections <= bound,
        "{rejections} rejections in {took:.1}s: more than {SLOTS} request slots waiting >= 1 s each allow ({bound:.0})"
    );
    handle.shutdown().await;
}

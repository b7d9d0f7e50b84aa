//! The Attachment reconciler against a real control plane (etcd + kube-apiserver +
//! kube-controller-manager, see tests/README.md). No kubelet runs: `support::Kubelet` binds
//! pods to a Node object and writes their status as a kubelet would (phase Running, pod IP,
//! container statuses), and `support::terminate_ephemeral` writes a terminated
//! `ephemeralContainerStatuses` entry when a test wants a Whisperer to die.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::json;
use support::builders::{
    attachment, create, deployment, ephemeral_names, plain_pod, pod_template,
    shared_settings as shared,
};
use support::{metrics, poll_until, terminate_ephemeral, ControlPlane, Kubelet, WAIT};
use whisperer_injector::config::Config;
use whisperer_injector::control::{TokenKey, TokenKeys};
use whisperer_injector::engine::SharedSettings;
use whisperer_injector::reconciler::{
    self, crd_yaml, Attachment, Phase, PodState, ReconcilerArgs, ReconcilerHandle, TargetKind,
};

// ---------------------------------------------------------------------------------------
// Harness: the reconciler in this process (CRD, settings, kubelet and objects: tests/support).
// ---------------------------------------------------------------------------------------

fn fast_args() -> ReconcilerArgs {
    ReconcilerArgs {
        leader_election: false,
        resync_interval: Duration::from_secs(10),
        backstop_interval: Duration::from_millis(500),
        ..ReconcilerArgs::default()
    }
}

struct Reconciler {
    handle: Option<ReconcilerHandle>,
    registry: Registry,
}

impl Reconciler {
    async fn start(
        client: &Client,
        settings: SharedSettings,
        own_ns: &str,
        args: &ReconcilerArgs,
    ) -> Reconciler {
        Self::start_with(client, settings, own_ns, args, None).await
    }

    async fn start_with(
        client: &Client,
        settings: SharedSettings,
        own_ns: &str,
        args: &ReconcilerArgs,
        agent_env: Option<reconciler::AgentEnv>,
    ) -> Reconciler {
        let mut registry = Registry::default();
        let handle = reconciler::start_with_agent_env(
            client.clone(),
            settings,
            own_ns.to_string(),
            args,
            &mut registry,
            agent_env,
        )
        .await
        .expect("start reconciler");
        Reconciler {
            handle: Some(handle),
            registry,
        }
    }

    fn metrics(&self) -> String {
        metrics::encode(&self.registry)
    }

    /// Sum of every sample of `name` whose line contains `filter`.
    fn sample(&self, name: &str, filter: &str) -> f64 {
        metrics::sum(&self.metrics(), name, filter)
    }

    fn lookup(&self) -> std::sync::Arc<dyn whisperer_injector::control::AttachmentLookup> {
        self.handle.as_ref().expect("running").attachment_lookup()
    }

    fn status(&self) -> std::sync::Arc<dyn whisperer_injector::status::StatusSource> {
        self.handle.as_ref().expect("running").status_source()
    }

    fn real_patches(&self) -> f64 {
        self.sample("whisperer_ephemeral_patches_total", "mode=\"real\"")
    }

    async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Objects.
// ---------------------------------------------------------------------------------------

async fn live_pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn get_attachment(client: &Client, ns: &str, name: &str) -> Option<Attachment> {
    Api::<Attachment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// Waits until exactly `n` live pods of `app` carry `container` and the Attachment's status
/// lists each of them as attached; returns the pods.
async fn wait_attached(
    client: &Client,
    ns: &str,
    att: &str,
    app: &str,
    container: &str,
    n: usize,
) -> Vec<Pod> {
    let what = format!("{n} pods of {app} attached by {att} ({container})");
    poll_until(WAIT, &what, || async {
        let pods = live_pods(client, ns, app).await;
        if pods.len() != n
            || !pods
                .iter()
                .all(|p| ephemeral_names(p).iter().any(|c| c == container))
        {
            return None;
        }
        let status = get_attachment(client, ns, att).await?.status?;
        let all_listed = pods.iter().all(|p| {
            status
                .pods
                .iter()
                .any(|e| e.pod == p.name_any() && e.state == PodState::Attached)
        });
        (all_listed
            && status.attached_pods == i32::try_from(n).ok()?
            && status.phase == Some(Phase::Attached))
        .then_some(pods)
    })
    .await
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn crd_manifest_matches_the_rust_types() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crd-attachments.yaml");
    let generated = crd_yaml().expect("render CRD");
    if std::env::var_os("WHISPERER_REGENERATE").is_some() {
        std::fs::write(&path, &generated).expect("write manifests/crd-attachments.yaml");
        // The Helm chart's copy (tests/chart.rs checks they are identical).
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("charts/whisperer-injector/crds/crd-attachments.yaml");
        std::fs::write(&chart, &generated).expect("write the chart's CRD");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "manifests/crd-attachments.yaml is out of date with src/reconciler/crd.rs; regenerate it with\n\
         \n    WHISPERER_REGENERATE=1 cargo test --test attachments crd_manifest\n"
    );
}

/// Deployment of 3 -> 3 attached; scale to 5; a deleted pod's replacement; a terminated
/// Whisperer gets generation 2; deleting the Attachment records Detached and drops the
/// finalizer.
#[tokio::test]
async fn deployment_replicas_replacements_generations_and_detach() {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let _kubelet = Kubelet::start(&client, &ns).await;
    let key = TokenKeys::single(TokenKey::from_bytes(
        b"0123456789abcdef0123456789abcdef".to_vec(),
    ));
    let agent_env = reconciler::control_api_env(
        "https://whisperer-injector.whisperer-system.svc:8443",
        key.clone(),
    );
    let r = Reconciler::start_with(
        &client,
        shared(Config::default(), &own),
        &own,
        &fast_args(),
        Some(agent_env),
    )
    .await;

    create(&client, &ns, &deployment("web", 3)).await;
    create(
        &client,
        &ns,
        &attachment("cap", Some((TargetKind::Deployment, "web")), None, None),
    )
    .await;
    let pods = wait_attached(&client, &ns, "cap", "web", "whisperer-cap", 3).await;

    // The container is the engine's: target container, identity env, no forbidden fields.
    let ec = pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .and_then(|v| v.iter().find(|c| c.name == "whisperer-cap"))
        .cloned()
        .expect("ephemeral container");
    assert_eq!(ec.target_container_name.as_deref(), Some("app"));
    let env: BTreeMap<String, String> = ec
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    assert_eq!(
        env.get("WHISPERER_ATTACHMENT").map(String::as_str),
        Some("cap")
    );
    // The default profile caps the TTL at 24h: the deadline is handed to the agent.
    let att = get_attachment(&client, &ns, "cap")
        .await
        .expect("attachment");
    let status = att.status.clone().expect("status");
    let expires = status
        .expires_at
        .clone()
        .expect("expiresAt from the profile's maxTtl");
    assert_eq!(env.get("WHISPERER_DEADLINE"), Some(&expires.0.to_string()));
    assert_eq!(status.target.as_deref(), Some("Deployment/web"));
    // The agent control API: where to ask, with a token for this Attachment only.
    let uid = att.uid().expect("uid");
    let url = env.get("WHISPERER_CONTROL_URL").expect("control url");
    assert!(
        url.ends_with(&format!("/agent/v1/namespaces/{ns}/attachments/cap/{uid}")),
        "{url}"
    );
    assert!(key.verify(
        &ns,
        "cap",
        &uid,
        env.get("WHISPERER_CONTROL_TOKEN").expect("token")
    ));
    // The control API's cache and GET /status follow the status through the reconciler's
    // watch, which may not have delivered the write seen above yet.
    let seen = poll_until(
        WAIT,
        "the control API cache to see cap Attached",
        || async {
            let seen = r.lookup().attachment(&ns, "cap")?;
            (seen.phase.as_str() == "Attached").then_some(seen)
        },
    )
    .await;
    assert_eq!((seen.uid.as_str(), seen.deleting), (uid.as_str(), false));
    poll_until(
        WAIT,
        "cap Attached with 3 pods in the status report",
        || async {
            let report = r.status().attachments();
            let cap = report.iter().find(|a| a.name == "cap")?;
            (cap.phase == "Attached" && cap.pods.len() == 3).then_some(())
        },
    )
    .await;
    assert!(att.finalizers().iter().any(|f| f == "whisperer.dev/detach"));
    // The API server defaults `resources: {}`; nothing is requested or limited.
    assert!(ec.ports.is_none());
    assert!(ec
        .resources
        .as_ref()
        .is_none_or(|r| r.limits.is_none() && r.requests.is_none()));

    // Scale to 5: the two new pods get it.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 5 } })),
        )
        .await
        .expect("scale");
    let pods = wait_attached(&client, &ns, "cap", "web", "whisperer-cap", 5).await;

    // Delete a pod: it stays Terminating (no kubelet confirms) and is left alone; its
    // replacement is attached.
    let victim = pods[0].name_any();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let pods = wait_attached(&client, &ns, "cap", "web", "whisperer-cap", 5).await;
    assert!(pods.iter().all(|p| p.name_any() != victim));
    let status = get_attachment(&client, &ns, "cap")
        .await
        .and_then(|a| a.status)
        .expect("status");
    assert!(
        status.pods.iter().all(|e| e.pod != victim),
        "terminating pod is not listed"
    );

    // A Whisperer that terminated without a detach is replaced by generation 2.
    let patient = pods[1].name_any();
    terminate_ephemeral(&client, &ns, &patient, "whisperer-cap").await;
    poll_until(WAIT, "generation 2 attached", || async {
        let p = Api::<Pod>::namespaced(client.clone(), &ns)
            .get(&patient)
            .await
            .ok()?;
        let names = ephemeral_names(&p);
        let st = get_attachment(&client, &ns, "cap").await?.status?;
        let e = st.pods.iter().find(|e| e.pod == patient)?;
        (names.contains(&"whisperer-cap-2".to_string())
            && e.generation == Some(2)
            && e.container.as_deref() == Some("whisperer-cap-2")
            && e.state == PodState::Attached)
            .then_some(())
    })
    .await;
    assert!(r.real_patches() >= 6.0, "{}", r.metrics());

    // Delete the Attachment: Detached is recorded (Event), the finalizer goes, the
    // Whisperers stay (ephemeral containers cannot be removed).
    Api::<Attachment>::namespaced(client.clone(), &ns)
        .delete("cap", &DeleteParams::default())
        .await
        .expect("delete attachment");
    poll_until(
        WAIT,
        "Attachment gone, Attached and Detached recorded",
        || async {
            let gone = get_attachment(&client, &ns, "cap").await.is_none();
            let events = events_for(&client, &ns, "cap").await;
            let detached = events.iter().any(|e| {
                e.reason.as_deref() == Some("Detached")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("cannot be removed"))
            });
            let attached = events
                .iter()
                .any(|e| e.reason.as_deref() == Some("Attached"));
            (gone && detached && attached).then_some(())
        },
    )
    .await;
    poll_until(WAIT, "control API cache forgets the Attachment", || async {
        r.lookup().attachment(&ns, "cap").is_none().then_some(())
    })
    .await;
    assert!(live_pods(&client, &ns, "web")
        .await
        .iter()
        .all(|p| ephemeral_names(p).contains(&"whisperer-cap".to_string())));
    r.shutdown().await;
}

/// A single Pod, a StatefulSet, a DaemonSet and a Job made from a CronJob's jobTemplate.
#[tokio::test]
async fn pod_statefulset_daemonset_and_cronjob_targets() {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    let _kubelet = Kubelet::start(&client, &ns).await;
    let r = Reconciler::start(&client, shared(Config::default(), &own), &own, &fast_args()).await;

    // Pod by name; its twin with the same labels is not touched.
    create(&client, &ns, &plain_pod("solo", "solo", &[])).await;
    create(&client, &ns, &plain_pod("twin", "solo-twin", &[])).await;
    create(
        &client,
        &ns,
        &attachment("one", Some((TargetKind::Pod, "solo")), None, None),
    )
    .await;
    wait_attached(&client, &ns, "one", "solo", "whisperer-one", 1).await;

    // StatefulSet.
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": "db" },
        "spec": { "replicas": 2, "serviceName": "db", "selector": { "matchLabels": { "app": "db" } },
                  "template": pod_template("db") }
    }))
    .expect("statefulset json");
    create(&client, &ns, &sts).await;
    create(
        &client,
        &ns,
        &attachment("dbcap", Some((TargetKind::StatefulSet, "db")), None, None),
    )
    .await;
    // StatefulSet pods come one by one, each after the previous is Running and Ready.
    wait_attached(&client, &ns, "dbcap", "db", "whisperer-dbcap", 2).await;

    // DaemonSet: one pod for the one node.
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": { "name": "agent" },
        "spec": { "selector": { "matchLabels": { "app": "agent" } }, "template": pod_template("agent") }
    }))
    .expect("daemonset json");
    create(&client, &ns, &ds).await;
    create(
        &client,
        &ns,
        &attachment("dscap", Some((TargetKind::DaemonSet, "agent")), None, None),
    )
    .await;
    wait_attached(&client, &ns, "dscap", "agent", "whisperer-dscap", 1).await;

    // CronJob: suspended so its schedule never fires during the test; the Job is created from
    // its jobTemplate with a controller reference to it, as the CronJob controller (and
    // `kubectl create job --from=cronjob/...`) would. The Job controller makes the pod.
    let cj: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": "nightly" },
        "spec": { "schedule": "0 3 * * *", "suspend": true, "jobTemplate": { "spec": {
            "template": { "metadata": { "labels": { "app": "nightly" } }, "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "app", "image": "registry.invalid/batch:1" }] } } } } }
    }))
    .expect("cronjob json");
    let cj = create(&client, &ns, &cj).await;
    let mut job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "nightly-manual-1", "annotations": { "cronjob.kubernetes.io/instantiate": "manual" } },
    }))
    .expect("job json");
    job.spec = cj.spec.as_ref().and_then(|s| s.job_template.spec.clone());
    job.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: "nightly".into(),
            uid: cj.uid().expect("cronjob uid"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    ]);
    create(
        &client,
        &ns,
        &attachment("cjcap", Some((TargetKind::CronJob, "nightly")), None, None),
    )
    .await;
    create(&client, &ns, &job).await;
    wait_attached(&client, &ns, "cjcap", "nightly", "whisperer-cjcap", 1).await;

    let twin = live_pods(&client, &ns, "solo-twin").await;
    assert!(
        twin.iter().all(|p| ephemeral_names(p).is_empty()),
        "only the named pod is attached"
    );
    r.shutdown().await;
}

/// TTL -> Expired and later pods are left alone; an Attachment cannot reach another
/// namespace; a denied namespace is refused with a clear status; Pod Security refusals are
/// typed.
#[tokio::test]
async fn ttl_namespaces_and_pod_security() {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    let other = cp.namespace(&[]).await;
    let denied = cp.namespace(&[]).await;
    let strict = cp
        .namespace(&[("pod-security.kubernetes.io/enforce", "baseline")])
        .await;
    let kubelets = [
        Kubelet::start(&client, &ns).await,
        Kubelet::start(&client, &other).await,
        Kubelet::start(&client, &strict).await,
    ];
    let mut config = Config::default();
    config.namespaces.deny.push(denied.clone());
    let r = Reconciler::start(&client, shared(config, &own), &own, &fast_args()).await;

    // A TTL that ends a few seconds after the attach: Expired at the pass scheduled for the
    // deadline; pods created later are not attached. It is shortened once attached, because a
    // TTL of seconds from the start could run out before a loaded machine attaches.
    create(&client, &ns, &deployment("web", 1)).await;
    poll_until(WAIT, "web running", || async {
        let pods = live_pods(&client, &ns, "web").await;
        (pods.len() == 1 && pods[0].status.as_ref()?.phase.as_deref() == Some("Running"))
            .then_some(())
    })
    .await;
    create(
        &client,
        &ns,
        &attachment(
            "short",
            Some((TargetKind::Deployment, "web")),
            None,
            Some("1h"),
        ),
    )
    .await;
    wait_attached(&client, &ns, "short", "web", "whisperer-short", 1).await;
    let created = get_attachment(&client, &ns, "short")
        .await
        .and_then(|a| a.metadata.creation_timestamp)
        .expect("creationTimestamp")
        .0;
    let ttl = k8s_openapi::jiff::Timestamp::now().as_second() - created.as_second() + 3;
    Api::<Attachment>::namespaced(client.clone(), &ns)
        .patch(
            "short",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ttl": format!("{ttl}s") } })),
        )
        .await
        .expect("shorten the TTL");
    let expired = poll_until(WAIT, "phase Expired", || async {
        let a = get_attachment(&client, &ns, "short").await?;
        (a.status.as_ref()?.phase == Some(Phase::Expired)).then_some(a)
    })
    .await;
    let st = expired.status.expect("status");
    let cond = &st.conditions[0];
    assert_eq!(
        (cond.reason.as_str(), cond.status.as_str()),
        ("Expired", "False")
    );
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .expect("scale");
    let late = poll_until(WAIT, "late pod listed as skipped (expired)", || async {
        let st = get_attachment(&client, &ns, "short").await?.status?;
        st.pods
            .iter()
            .find(|e| e.state == PodState::Skipped && e.reason.as_deref() == Some("expired"))
            .map(|e| e.pod.clone())
    })
    .await;
    let late_pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&late)
        .await
        .expect("late pod");
    assert!(
        ephemeral_names(&late_pod).is_empty(),
        "no Whisperer after the TTL"
    );
    // Published after the status write that said Expired.
    poll_until(WAIT, "the Expired event", || async {
        events_for(&client, &ns, "short")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Expired"))
            .then_some(())
    })
    .await;

    // Another namespace's Deployment (and pods with matching labels) are out of reach: the
    // status below is written by a pass that ran while that pod was running.
    create(&client, &other, &deployment("api", 1)).await;
    poll_until(WAIT, "api pod running", || async {
        let pods = live_pods(&client, &other, "api").await;
        (pods.len() == 1 && pods[0].status.as_ref()?.phase.as_deref() == Some("Running"))
            .then_some(())
    })
    .await;
    create(
        &client,
        &ns,
        &attachment("reach", Some((TargetKind::Deployment, "api")), None, None),
    )
    .await;
    create(
        &client,
        &ns,
        &attachment("reach-sel", None, Some("api"), None),
    )
    .await;
    for name in ["reach", "reach-sel"] {
        let a = poll_until(WAIT, "cross-namespace attachment settles", || async {
            let a = get_attachment(&client, &ns, name).await?;
            (a.status.as_ref()?.conditions.first()?.reason == "NoPods").then_some(a)
        })
        .await;
        let st = a.status.expect("status");
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!((st.attached_pods, st.selected_pods), (0, 0));
        if name == "reach" {
            assert!(
                st.conditions[0].message.contains("not found in namespace"),
                "{}",
                st.conditions[0].message
            );
        }
    }
    assert!(live_pods(&client, &other, "api")
        .await
        .iter()
        .all(|p| ephemeral_names(p).is_empty()));

    // A denied namespace: Failed with a clear condition, and a Warning event.
    create(&client, &denied, &plain_pod("victim", "victim", &[])).await;
    create(
        &client,
        &denied,
        &attachment("nope", Some((TargetKind::Pod, "victim")), None, None),
    )
    .await;
    let a = poll_until(WAIT, "denied namespace refused", || async {
        let a = get_attachment(&client, &denied, "nope").await?;
        (a.status.as_ref()?.phase == Some(Phase::Failed)).then_some(a)
    })
    .await;
    let cond = &a.status.expect("status").conditions[0];
    assert_eq!(cond.reason, "NamespaceDenied");
    assert!(cond.message.contains("deny list"), "{}", cond.message);
    // The injector's own namespace is always refused.
    create(&client, &own, &attachment("self", None, Some("x"), None)).await;
    poll_until(WAIT, "own namespace refused", || async {
        let a = get_attachment(&client, &own, "self").await?;
        let c = a.status?.conditions.first()?.clone();
        (c.reason == "NamespaceDenied" && c.message.contains("own namespace")).then_some(())
    })
    .await;

    // Pod Security "baseline" forbids adding NET_RAW: a typed refusal per pod, after a dry run.
    create(&client, &strict, &plain_pod("guarded", "guarded", &[])).await;
    create(
        &client,
        &strict,
        &attachment("psa", Some((TargetKind::Pod, "guarded")), None, None),
    )
    .await;
    let entry = poll_until(WAIT, "PodSecurity refusal recorded", || async {
        let st = get_attachment(&client, &strict, "psa").await?.status?;
        st.pods.into_iter().find(|e| e.state == PodState::Refused)
    })
    .await;
    assert_eq!(entry.reason.as_deref(), Some("PodSecurity"));
    let msg = entry.message.unwrap_or_default();
    assert!(msg.contains("baseline") && msg.contains("NET_RAW"), "{msg}");
    assert!(
        r.sample(
            "whisperer_ephemeral_patches_total",
            "result=\"pod_security\",mode=\"dry_run\""
        ) >= 1.0
    );
    assert_eq!(
        r.sample(
            "whisperer_ephemeral_patches_total",
            "result=\"pod_security\",mode=\"real\""
        ),
        0.0
    );
    drop(kubelets);
    r.shutdown().await;
}

/// Opted-in pods created while no webhook was registered are reported (gauge + Event) and,
/// with --backstop-attach, attached at runtime.
#[tokio::test]
async fn backstop_reports_and_attaches_uninjected_pods() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let off = cp.namespace(&[]).await;
    let _k1 = Kubelet::start(&client, &ns).await;
    let _k2 = Kubelet::start(&client, &off).await;
    create(
        &client,
        &ns,
        &plain_pod("missed", "missed", &[("whisperer.dev/inject", "true")]),
    )
    .await;
    create(&client, &ns, &plain_pod("plain", "plain", &[])).await;
    create(
        &client,
        &ns,
        &plain_pod(
            "done",
            "done",
            &[
                ("whisperer.dev/inject", "true"),
                (
                    "whisperer.dev/injected",
                    "profile=default,hash=0011223344556677",
                ),
            ],
        ),
    )
    .await;
    create(
        &client,
        &off,
        &plain_pod(
            "elsewhere",
            "elsewhere",
            &[("whisperer.dev/inject", "true")],
        ),
    )
    .await;

    let args = ReconcilerArgs {
        backstop_attach: true,
        ..fast_args()
    };
    let r = Reconciler::start(&client, shared(Config::default(), &own), &own, &args).await;
    poll_until(WAIT, "backstop attached the missed pod", || async {
        let p = Api::<Pod>::namespaced(client.clone(), &ns)
            .get("missed")
            .await
            .ok()?;
        let ec = p
            .spec?
            .ephemeral_containers?
            .into_iter()
            .find(|c| c.name == "whisperer-backstop")?;
        let identity = ec
            .env?
            .into_iter()
            .find(|e| e.name == "WHISPERER_ATTACHMENT")?
            .value?;
        (identity == "backstop").then_some(())
    })
    .await;
    poll_until(WAIT, "gauge and event", || async {
        let gauge = r.sample("whisperer_backstop_uninjected_pods", "");
        let reported = events_for(&client, &ns, "missed").await.iter().any(|e| {
            e.reason.as_deref() == Some("NotInjected") && e.type_.as_deref() == Some("Warning")
        });
        (gauge == 1.0 && reported).then_some(())
    })
    .await;
    for (n, p) in [(&ns, "plain"), (&ns, "done"), (&off, "elsewhere")] {
        let pod = Api::<Pod>::namespaced(client.clone(), n)
            .get(p)
            .await
            .expect("pod");
        assert!(ephemeral_names(&pod).is_empty(), "{p} must not be attached");
        assert!(
            events_for(&client, n, p).await.is_empty(),
            "{p} must not be reported"
        );
    }
    r.shutdown().await;
}

/// Two instances: only the Lease holder patches; when it dies without releasing, the standby
/// takes over once the Lease expires; a clean shutdown releases the Lease.
#[tokio::test]
async fn leader_election_only_the_holder_patches() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    let _kubelet = Kubelet::start(&client, &ns).await;
    // Short enough for a quick takeover, long enough that a loaded API server answering a
    // renewal late does not hand the Lease to the standby while the test asserts who patches.
    let elected = |id: &str| ReconcilerArgs {
        leader_election: true,
        leader_election_identity: Some(id.to_string()),
        leader_election_lease_duration: Duration::from_secs(8),
        leader_election_renew_deadline: Duration::from_secs(5),
        leader_election_retry_period: Duration::from_millis(500),
        ..fast_args()
    };
    let settings = shared(Config::default(), &own);
    let a = Reconciler::start(&client, settings.clone(), &own, &elected("replica-a")).await;
    let leases = Api::<Lease>::namespaced(client.clone(), &own);
    let holder = || async {
        leases
            .get_opt(reconciler::LEASE_NAME)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    poll_until(WAIT, "replica-a holds the lease", || async {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Reconciler::start(&client, settings.clone(), &own, &elected("replica-b")).await;

    create(&client, &ns, &plain_pod("web-1", "web", &[])).await;
    create(&client, &ns, &attachment("cap", None, Some("web"), None)).await;
    wait_attached(&client, &ns, "cap", "web", "whisperer-cap", 1).await;
    assert!(a.real_patches() >= 1.0);
    assert_eq!(b.real_patches(), 0.0, "the standby never patches");
    assert_eq!(a.sample("whisperer_reconciler_leader", ""), 1.0);
    assert_eq!(b.sample("whisperer_reconciler_leader", ""), 0.0);

    // replica-a dies without releasing the Lease: replica-b takes over after it expires.
    drop(a);
    poll_until(WAIT, "replica-b takes the lease", || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    create(&client, &ns, &plain_pod("web-2", "web", &[])).await;
    wait_attached(&client, &ns, "cap", "web", "whisperer-cap", 2).await;
    assert!(b.real_patches() >= 1.0);

    // A clean shutdown releases the Lease.
    b.shutdown().await;
    assert_eq!(holder().await, None, "released on shutdown");
    let ns_obj = Api::<Namespace>::all(client.clone())
        .get(&own)
        .await
        .expect("own namespace");
    assert!(ns_obj.metadata.name.is_some());
}

/// Who may be captured: a hostNetwork DaemonSet's pod, an opted-out pod and a pod whose memory
/// limit leaves no room get no Whisperer (the status says why), a dotted Attachment name still
/// attaches.
#[tokio::test]
async fn host_network_and_opted_out_pods_are_refused_dotted_names_attach() {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    let _kubelet = Kubelet::start(&client, &ns).await;
    // The Whisperer gets a 32Mi budget: a pod whose containers request all of their 64Mi
    // limits leaves it no room.
    let mut cfg = Config::default();
    cfg.profiles.get_mut("default").expect("default").resources =
        serde_json::from_value(json!({"limits": {"memory": "32Mi"}})).ok();
    let r = Reconciler::start(&client, shared(cfg, &own), &own, &fast_args()).await;
    let mut tight = plain_pod("tight", "tight", &[]);
    for c in tight.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        c.resources = serde_json::from_value(json!({"limits": {"memory": "64Mi"}})).ok();
    }
    create(&client, &ns, &tight).await;
    create(
        &client,
        &ns,
        &attachment("squeeze", Some((TargetKind::Pod, "tight")), None, None),
    )
    .await;

    let mut template = pod_template("nodecap");
    template["spec"]["hostNetwork"] = json!(true);
    let ds: DaemonSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": { "name": "nodecap" },
        "spec": { "selector": { "matchLabels": { "app": "nodecap" } }, "template": template }
    }))
    .expect("daemonset json");
    create(&client, &ns, &ds).await;
    create(
        &client,
        &ns,
        &plain_pod("private", "private", &[("whisperer.dev/inject", "false")]),
    )
    .await;
    create(&client, &ns, &plain_pod("web", "web", &[])).await;
    create(
        &client,
        &ns,
        &attachment("node", Some((TargetKind::DaemonSet, "nodecap")), None, None),
    )
    .await;
    create(
        &client,
        &ns,
        &attachment("peek", Some((TargetKind::Pod, "private")), None, None),
    )
    .await;
    create(
        &client,
        &ns,
        &attachment("release.v2", Some((TargetKind::Pod, "web")), None, None),
    )
    .await;

    let dotted = whisperer_injector::engine::ephemeral_container_name("release.v2", 1);
    wait_attached(&client, &ns, "release.v2", "web", &dotted, 1).await;
    for (att, app, reason, words) in [
        ("node", "nodecap", "host-namespaces", "hostNetwork"),
        ("peek", "private", "opted-out", "whisperer.dev/inject"),
        ("squeeze", "tight", "no-headroom", "leaving 0Mi"),
    ] {
        let entry = poll_until(WAIT, &format!("{att} refused with {reason}"), || async {
            let st = get_attachment(&client, &ns, att).await?.status?;
            st.pods
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        })
        .await;
        let msg = entry.message.unwrap_or_default();
        assert!(msg.contains(words), "{att}: {msg}");
        let pods = live_pods(&client, &ns, app).await;
        assert_eq!(pods.len(), 1, "{app}");
        assert!(
            ephemeral_names(&pods[0]).is_empty(),
            "{app} must get no ephemeral container"
        );
    }
    r.shutdown().await;
}

/// After a profile changes, pods injected with the old one are counted as outdated (the
/// reconciler judges them from its pod cache with the engine's current plan).
#[tokio::test]
async fn outdated_agents_gauge_counts_pods_injected_with_an_older_profile() {
    use whisperer_injector::engine::{decide_sidecar, Decision, Settings};
    let cp = ControlPlane::start().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[]).await;
    // The pod as the webhook stored it with the built-in profile.
    let pod = plain_pod("web", "web", &[("whisperer.dev/inject", "true")]);
    let then = Settings::new(std::sync::Arc::new(Config::default()), &own);
    let Decision::Inject(plan) = decide_sidecar(&pod, &ns, None, &then) else {
        panic!("the built-in profile injects an opted-in pod")
    };
    let ops =
        serde_json::to_value(whisperer_injector::render::json_patch(&pod, &plan)).expect("ops");
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("patch");
    let mut doc = serde_json::to_value(&pod).expect("pod json");
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    let injected: Pod = serde_json::from_value(doc).expect("injected pod");
    create(&client, &ns, &injected).await;
    create(&client, &ns, &plain_pod("plain", "plain", &[])).await;

    // Today's profile passes one more flag: the pod's Whisperer is outdated.
    let mut now = Config::default();
    now.profiles
        .get_mut("default")
        .expect("default")
        .args
        .push("--snaplen=512".into());
    let r = Reconciler::start(&client, shared(now, &own), &own, &fast_args()).await;
    poll_until(WAIT, "one outdated agent counted", || async {
        (r.sample("whisperer_outdated_agents", "") == 1.0).then_some(())
    })
    .await;
    r.shutdown().await;

    // With the profile it was injected with, nothing is outdated.
    let r = Reconciler::start(&client, shared(Config::default(), &own), &own, &fast_args()).await;
    poll_until(WAIT, "the pod counted as current", || async {
        let m = r.metrics();
        (m.contains("whisperer_outdated_agents 0")
            && r.sample("whisperer_watched_objects", "pods") >= 2.0)
            .then_some(())
    })
    .await;
    r.shutdown().await;
}

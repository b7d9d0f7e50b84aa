//! End-to-end: the real kube-apiserver calls the webhook over HTTPS through a
//! MutatingWebhookConfiguration rendered from webhook.yaml.tmpl, and what it stores is
//! checked.

use support::injector;
mod support;

use std::time::{Duration, Instant};

use injector::{has_whisperer, marker, pod, start_and_register, whisperer_count};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{poll_until, ControlPlane, WAIT};

fn aliases(pod: &Pod) -> Vec<(String, Vec<String>)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.ip, a.hostnames.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn injects_through_the_api_server() {
    let cp = ControlPlane::start().await;
    let on = cp.namespace(&[("injection", "enabled")]).await;
    let off = cp.namespace(&[]).await;
    let mut injector = start_and_register(&cp, &on, &[]).await;
    let pods_on = Api::<Pod>::namespaced(cp.client(), &on);
    let pods_off = Api::<Pod>::namespaced(cp.client(), &off);
    let pp = PostParams::default();

    // Opted in, enabled namespace: sidecar, hostAliases, marker.
    let stored = pods_on
        .create(&pp, &pod("opted-in", true))
        .await
        .expect("create");
    assert!(has_whisperer(&stored));
    let spec = stored.spec.as_ref().expect("spec");
    assert_eq!(spec.containers[0].name, "app");
    assert_eq!(
        spec.containers[1].image.as_deref(),
        Some("ghcr.io/whisperer-dev/whisperer:v0.1.0")
    );
    assert_eq!(
        aliases(&stored),
        vec![(
            "10.96.0.50".into(),
            vec![
                "whisperer-collector.whisperer-system".into(),
                "collector".into()
            ]
        )]
    );
    assert!(spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == "whisperer-captures"));
    assert!(marker(&stored)
        .expect("marker")
        .starts_with("profile=default,hash="));
    let fetched = pods_on.get("opted-in").await.expect("get");
    assert_eq!(
        fetched.spec, stored.spec,
        "what create returned is what is stored"
    );

    // Not opted in; opted in but in an unlabelled namespace: stored unchanged.
    let plain = pods_on
        .create(&pp, &pod("plain", false))
        .await
        .expect("create");
    assert_eq!(whisperer_count(&plain), 0);
    assert!(marker(&plain).is_none());
    let elsewhere = pods_off
        .create(&pp, &pod("elsewhere", true))
        .await
        .expect("create");
    assert_eq!(whisperer_count(&elsewhere), 0);
    assert!(marker(&elsewhere).is_none());

    // Existing hostAliases (one overlapping), init containers: nothing duplicated.
    let mut busy = pod("busy", true);
    let spec = busy.spec.as_mut().expect("spec");
    spec.host_aliases = Some(
        serde_json::from_value(json!([
            {"ip": "10.96.0.50", "hostnames": ["collector"]},
            {"ip": "192.168.7.7", "hostnames": ["legacy-db"]}
        ]))
        .expect("aliases"),
    );
    spec.init_containers = Some(
        serde_json::from_value(json!([
            {"name": "migrate", "image": "registry.example.com/migrate:1"}
        ]))
        .expect("init"),
    );
    let busy = pods_on.create(&pp, &busy).await.expect("create");
    assert_eq!(whisperer_count(&busy), 1);
    assert_eq!(
        aliases(&busy),
        vec![
            (
                "10.96.0.50".into(),
                vec![
                    "collector".into(),
                    "whisperer-collector.whisperer-system".into()
                ]
            ),
            ("192.168.7.7".into(), vec!["legacy-db".into()]),
        ]
    );
    let inits: Vec<String> = busy
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(inits, ["migrate"]);

    // Server-side dry run: the answer is injected, nothing is stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answer = pods_on
        .create(&dry, &pod("dry", true))
        .await
        .expect("dry-run create");
    assert!(has_whisperer(&answer));
    assert!(
        pods_on.get_opt("dry").await.expect("get").is_none(),
        "dry run stored nothing"
    );

    // kube-system is never injected, even when labelled.
    let nss = Api::<Namespace>::all(cp.client());
    nss.patch(
        "kube-system",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"injection": "enabled"}}})),
    )
    .await
    .expect("label kube-system");
    // kube-controller-manager would create this ServiceAccount; it is not running here.
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
    let _ =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(cp.client(), "kube-system")
            .create(&pp, &sa)
            .await;
    let sys = Api::<Pod>::namespaced(cp.client(), "kube-system")
        .create(&pp, &pod("sys", true))
        .await
        .expect("create");
    assert_eq!(whisperer_count(&sys), 0);
    assert!(marker(&sys).is_none());

    // Webhook down: failurePolicy Ignore lets pods through, promptly.
    injector.stop().await;
    let started = Instant::now();
    let after = pods_on
        .create(&pp, &pod("while-down", true))
        .await
        .expect("create succeeds with the webhook down");
    assert_eq!(whisperer_count(&after), 0);
    assert!(marker(&after).is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn default_on_injects_pods_without_any_annotations() {
    let cp = ControlPlane::start().await;
    let on = cp.namespace(&[("injection", "enabled")]).await;
    let _injector = start_and_register(&cp, &on, &["--inject-by-default"]).await;
    let pods = Api::<Pod>::namespaced(cp.client(), &on);
    let bare = pod("bare", false);
    assert!(bare.metadata.annotations.is_none());
    let stored = pods
        .create(&PostParams::default(), &bare)
        .await
        .expect("create");
    assert_eq!(whisperer_count(&stored), 1);
    assert!(
        marker(&stored).is_some(),
        "annotations map created with the marker"
    );
    let mut out = pod("opted-out", false);
    out.metadata.annotations =
        Some([("whisperer.dev/inject".to_string(), "false".to_string())].into());
    let stored = pods
        .create(&PostParams::default(), &out)
        .await
        .expect("create");
    assert_eq!(whisperer_count(&stored), 0);
}

#[tokio::test]
async fn workload_controllers_get_injected_pods() {
    let cp = ControlPlane::start_with_controllers().await;
    let on = cp.namespace(&[("injection", "enabled")]).await;
    let _injector = start_and_register(&cp, &on, &[]).await;
    let template = json!({
        "metadata": {"labels": {"app": "web"}, "annotations": {"whisperer.dev/inject": "true"}},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}
    });
    let deploy = support::builders::deployment_with("web", 3, template);
    Api::<Deployment>::namespaced(cp.client(), &on)
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");
    let pods = Api::<Pod>::namespaced(cp.client(), &on);
    let web = poll_until(WAIT, "3 ReplicaSet pods", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (l.items.len() == 3).then_some(l.items)
        }
    })
    .await;
    for p in &web {
        assert_eq!(whisperer_count(p), 1, "{:?}", p.metadata.name);
        assert!(marker(p).is_some());
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.containers.last().map(|c| c.name.as_str()),
            Some("whisperer"),
            "classic sidecar"
        );
    }

    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "report"},
        "spec": {"template": {
            "metadata": {"annotations": {"whisperer.dev/inject": "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "report", "image": "registry.example.com/report:1"}]}
        }}
    }))
    .expect("job");
    Api::<Job>::namespaced(cp.client(), &on)
        .create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let job_pod = poll_until(WAIT, "the Job's pod", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("job-name=report"))
                .await
                .ok()?;
            l.items.into_iter().next()
        }
    })
    .await;
    let spec = job_pod.spec.as_ref().expect("spec");
    let init = spec
        .init_containers
        .as_ref()
        .expect("native sidecar is an init container");
    assert_eq!(init[0].name, "whisperer");
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers.len(), 1, "the Job's own container only");
}

/// Creates a pod with a raw request, so the API server's `Warning` headers can be read.
async fn create_with_warnings(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    dry_run: bool,
) -> (u16, Vec<String>, serde_json::Value) {
    let query = if dry_run { "?dryRun=All" } else { "" };
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods{query}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(pod).expect("pod json"))
        .expect("request");
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        warnings,
        serde_json::from_slice(&body).unwrap_or_default(),
    )
}

/// In a namespace enforcing Pod Security `restricted`, an opted-in pod is created without the
/// Whisperer (whose NET_RAW the level forbids) and the creator is told why, instead of the
/// API server refusing the pod after our patch.
#[tokio::test]
async fn pod_security_level_skips_injection_and_never_fails_creation() {
    let cp = ControlPlane::start().await;
    let probe = cp.namespace(&[("injection", "enabled")]).await;
    let strict = cp
        .namespace(&[
            ("injection", "enabled"),
            ("pod-security.kubernetes.io/enforce", "restricted"),
        ])
        .await;
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let mut injector = start_and_register(
        &cp,
        &probe,
        &["--pod-security-check", "on", "--kubeconfig", &kubeconfig],
    )
    .await;
    // With credentials the injector reads the API server's real version (the native-sidecar
    // guard uses it).
    let version = injector
        .running
        .as_ref()
        .expect("running")
        .state
        .settings
        .load()
        .server_version;
    let want: Vec<u32> = support::KUBERNETES_VERSION
        .trim_start_matches('v')
        .split('.')
        .take(2)
        .map(|n| n.parse().expect("number"))
        .collect();
    assert_eq!(version, Some((want[0], want[1])));
    // A pod the restricted level admits on its own.
    let mut app = pod("restricted-app", true);
    let spec = app.spec.as_mut().expect("spec");
    spec.security_context = Some(
        serde_json::from_value(json!({
            "runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}
        }))
        .expect("pod security context"),
    );
    spec.containers[0].security_context = Some(
        serde_json::from_value(json!({
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
        }))
        .expect("container security context"),
    );

    let client = cp.client();
    // The injector learns the namespace's level from its watch: wait with side-effect-free
    // dry runs until it answers with the pod-security skip.
    poll_until(
        WAIT,
        "the injector to know the namespace's Pod Security level",
        || {
            let (client, strict, app) = (client.clone(), strict.clone(), app.clone());
            async move {
                let (status, warnings, _) =
                    create_with_warnings(&client, &strict, &app, true).await;
                (status == 201 && warnings.iter().any(|w| w.contains("pod-security"))).then_some(())
            }
        },
    )
    .await;
    let (status, warnings, stored) = create_with_warnings(&client, &strict, &app, false).await;
    assert_eq!(status, 201, "created: {stored}");
    let stored: Pod = serde_json::from_value(stored).expect("stored pod");
    assert_eq!(whisperer_count(&stored), 0, "not injected");
    assert!(marker(&stored).is_none());
    let warning = warnings
        .iter()
        .find(|w| w.contains("pod-security"))
        .unwrap_or_else(|| panic!("a pod-security warning in {warnings:?}"));
    assert!(
        warning.contains("restricted") && warning.contains("NET_RAW"),
        "{warning}"
    );

    // The same pod in a namespace without a level is injected.
    let (status, _, stored) = create_with_warnings(&client, &probe, &app, false).await;
    assert_eq!(status, 201);
    let stored: Pod = serde_json::from_value(stored).expect("stored pod");
    assert!(has_whisperer(&stored));
    injector.stop().await;
}

//! `kubectl whisper` against a real API server: the built binary run as a subprocess through a
//! `kubectl-whisper` symlink (argv[0] dispatch) and through the real `kubectl` (plugin found
//! on PATH), with the injector (webhook + reconciler) running in this process and the kubelet
//! stand-in of tests/support running the pods.
//!
//! No kubelet serves logs here: `logs` is tested for which containers it streams (webhook
//! sidecars, attached ephemeral Whisperers, never a look-alike) and for the error it prints
//! when the node's kubelet cannot be reached; real log lines need a real kubelet.

mod support;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::builders::{create, deployment, ephemeral_names, plain_pod};
use support::impersonate::{self, Subject};
use support::injector::{self, start_and_register};
use support::plugin::PluginDir;
use support::{poll_until, ControlPlane, Kubelet, WAIT};
use whisperer_injector::explain::{self, ExplainArgs};
use whisperer_injector::reconciler::Attachment;

async fn running_pods(client: &Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    poll_until(WAIT, &format!("{n} pods of {app} running"), || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == n).then_some(running)
    })
    .await
}

async fn attachment_names(client: &Client, ns: &str) -> Vec<String> {
    Api::<Attachment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list attachments")
        .items
        .into_iter()
        .filter(|a| a.metadata.deletion_timestamp.is_none())
        .map(|a| a.name_any())
        .collect()
}

/// The `attached N/M` progress counts, in the order printed.
fn progress_counts(stdout: &str) -> Vec<(u32, u32)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("attached "))
        .filter_map(|rest| {
            let (a, m) = rest.split_once('/')?;
            Some((a.parse().ok()?, m.split(':').next()?.trim().parse().ok()?))
        })
        .collect()
}

/// attach waits for every replica (through real `kubectl whisper`), a refused pod is printed
/// with its reason and fails the command, ls / ls -A / -o json, the context's namespace,
/// logs picks the attached Whisperers, detach NAME and --all.
#[tokio::test]
async fn attach_waits_for_every_replica_then_ls_logs_and_detach() {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let strict = cp
        .namespace(&[("pod-security.kubernetes.io/enforce", "baseline")])
        .await;
    let _kubelet = Kubelet::start(&client, &ns).await;
    let _kubelet_strict = Kubelet::start(&client, &strict).await;
    let kc = cp.kubeconfig_path().display().to_string();
    let mut injector = start_and_register(
        &cp,
        &ns,
        &[
            "--reconciler",
            "on",
            "--leader-election=false",
            "--kubeconfig",
            &kc,
            "--namespace",
            &own,
            "--resync-interval",
            "1s",
        ],
    )
    .await;
    let plugin = PluginDir::new(cp.kubeconfig_path());

    create(&client, &ns, &deployment("web", 3)).await;
    running_pods(&client, &ns, "web", 3).await;
    let out = plugin
        .kubectl_whisper(&[
            "attach",
            "deployment/web",
            "-n",
            &ns,
            "--name",
            "cap",
            "--ttl",
            "30m",
            "--timeout",
            "60s",
        ])
        .await;
    out.expect_code(0);
    assert!(
        out.stdout.starts_with(&format!(
            "attachment.whisperer.dev/cap created for deployment/web in namespace {ns}\n"
        )),
        "{}",
        out.stdout
    );
    // Not a terminal: plain lines, no bar redrawn with \r; counts only grow, up to 3/3.
    assert!(!out.stdout.contains('\r'), "{:?}", out.stdout);
    let counts = progress_counts(&out.stdout);
    assert_eq!(counts.last(), Some(&(3, 3)), "{}", out.stdout);
    assert!(counts.windows(2).all(|w| w[0].0 <= w[1].0), "{counts:?}");
    assert!(
        out.stdout.contains("3 pods of deployment/web attached"),
        "{}",
        out.stdout
    );
    // What it reported is true in the cluster.
    for p in running_pods(&client, &ns, "web", 3).await {
        assert!(
            ephemeral_names(&p).contains(&"whisperer-cap".to_string()),
            "{}",
            p.name_any()
        );
    }

    // Pod Security baseline forbids NET_RAW: the refusal is printed and the exit code says so.
    create(&client, &strict, &plain_pod("guarded", "guarded", &[])).await;
    running_pods(&client, &strict, "guarded", 1).await;
    let out = plugin
        .whisper(&["attach", "pod/guarded", "-n", &strict, "--timeout", "60s"])
        .await;
    out.expect_code(3);
    let refusal = out
        .stdout
        .lines()
        .find(|l| l.starts_with("refused pod/guarded: PodSecurity"))
        .unwrap_or_else(|| panic!("no refusal line in\n{}", out.stdout));
    assert!(refusal.contains("baseline"), "{refusal}");
    assert!(out.stdout.contains("attached 0/1"), "{}", out.stdout);
    // ... and as JSON, for scripts.
    let out = plugin
        .whisper(&[
            "attach",
            "po/guarded",
            "-n",
            &strict,
            "--name",
            "again",
            "-o",
            "json",
        ])
        .await;
    out.expect_code(3);
    let v = out.json();
    assert_eq!(v["name"], "again");
    assert_eq!(v["result"], "refused");
    assert_eq!(v["selectedPods"], 1);
    assert_eq!(v["pods"][0]["pod"], "guarded");
    assert_eq!(v["pods"][0]["state"], "Refused");
    assert_eq!(v["pods"][0]["reason"], "PodSecurity");

    // ls: one namespace, every namespace, JSON.
    let cap = Api::<Attachment>::namespaced(client.clone(), &ns)
        .get("cap")
        .await
        .expect("cap");
    let created = cap.metadata.creation_timestamp.clone().expect("created").0;
    let expires = cap
        .status
        .as_ref()
        .and_then(|s| s.expires_at.clone())
        .expect("expiresAt")
        .0;
    assert_eq!(expires.as_second() - created.as_second(), 1800, "--ttl 30m");
    let listing = k8s_openapi::jiff::Timestamp::now();
    let out = plugin.whisper(&["ls", "-n", &ns]).await;
    let listed = k8s_openapi::jiff::Timestamp::now();
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TARGET", "PHASE", "PODS", "EXPIRES", "PROFILE"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["cap", "Deployment/web", "Attached", "3/3", "in"],
        "{}",
        out.stdout
    );
    // The time left when ls ran, from the deadline in the status (however long the steps above
    // took on a loaded machine).
    let left = |now| {
        whisperer_injector::plugin::output::relative(expires, now)
            .trim_start_matches("in ")
            .to_string()
    };
    assert!(
        [left(listing), left(listed)].contains(&row[5].to_string()),
        "{}",
        out.stdout
    );
    assert_eq!(row[6..], ["(default)"]);
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    let out = plugin.whisper(&["ls", "-A"]).await;
    out.expect_code(0);
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(header[..3], ["NAME", "NAMESPACE", "TARGET"]);
    for (name, in_ns, pods) in [("cap", &ns, "3/3"), ("again", &strict, "0/1")] {
        assert!(
            out.stdout.lines().any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.first() == Some(&name) && c.get(1) == Some(&in_ns.as_str()) && c.contains(&pods)
            }),
            "{name} in {in_ns}:\n{}",
            out.stdout
        );
    }
    let out = plugin.whisper(&["ls", "-A", "-o", "json"]).await;
    out.expect_code(0);
    let v = out.json();
    let items = v["items"].as_array().expect("items");
    let cap = items
        .iter()
        .find(|i| i["name"] == "cap")
        .expect("cap listed");
    assert_eq!(cap["namespace"], ns.as_str());
    assert_eq!(cap["target"], "Deployment/web");
    assert_eq!(cap["phase"], "Attached");
    assert_eq!(
        (cap["attachedPods"].as_i64(), cap["selectedPods"].as_i64()),
        (Some(3), Some(3))
    );
    assert!(
        cap["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{cap}"
    );
    assert!(cap["profile"].is_null());
    assert_eq!(
        items
            .iter()
            .filter(|i| i["namespace"] == strict.as_str())
            .count(),
        2
    );

    // Without -n the namespace is the kubeconfig context's, as for kubectl.
    let scoped = std::fs::read_to_string(cp.kubeconfig_path())
        .expect("kubeconfig")
        .replace("namespace: default", &format!("namespace: {ns}"));
    let scoped_path = plugin.path().join("scoped-kubeconfig");
    std::fs::write(&scoped_path, scoped).expect("write");
    let scoped_s = scoped_path.display().to_string();
    let out = plugin.whisper(&["ls", "--kubeconfig", &scoped_s]).await;
    out.expect_code(0);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("cap ")),
        "{}",
        out.stdout
    );

    // logs: every attached Whisperer of the Deployment's pods, and a clear error per stream when
    // the kubelet cannot be reached (none runs here).
    support::kubelet_unreachable(&client, support::kubelet::NODE).await;
    let out = plugin.whisper(&["logs", "deployment/web", "-n", &ns]).await;
    out.expect_code(3);
    let streamed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("streaming [web-") && l.ends_with("/whisperer-cap] (attached)"))
        .collect();
    assert_eq!(streamed.len(), 3, "{}", out.stderr);
    let unavailable = out
        .stderr
        .lines()
        .filter(|l| {
            l.contains("/whisperer-cap] logs unavailable: ") && l.contains("connection refused")
        })
        .count();
    assert_eq!(unavailable, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("3 of 3 log streams could not be read"),
        "{}",
        out.stderr
    );
    // The API server's message once per stream, not the client library's log lines.
    assert!(!out.stderr.contains("ERROR"), "{}", out.stderr);

    // On a terminal the progress is one bar redrawn in place.
    create(&client, &ns, &deployment("api", 2)).await;
    running_pods(&client, &ns, "api", 2).await;
    let out = plugin
        .whisper_on_tty(&[
            "attach",
            "deploy/api",
            "-n",
            &ns,
            "--name",
            "tty",
            "--timeout",
            "60s",
        ])
        .await;
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("\r\x1b[2K[##############################] attached 2/2"),
        "{:?}",
        out.stdout
    );
    assert!(!out.stdout.contains("\nattached "), "{:?}", out.stdout);

    // detach NAME, then --all (no confirmation, like kubectl delete --all).
    let out = plugin.whisper(&["detach", "cap", "-n", &ns]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "attachment.whisperer.dev \"cap\" deleted\n");
    poll_until(WAIT, "cap gone (finalizer released)", || async {
        Api::<Attachment>::namespaced(client.clone(), &ns)
            .get_opt("cap")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let mut before = attachment_names(&client, &strict).await;
    before.sort();
    assert_eq!(before.len(), 2);
    let out = plugin
        .kubectl_whisper(&["detach", "--all", "-n", &strict])
        .await;
    out.expect_code(0);
    let want: String = before
        .iter()
        .map(|n| format!("attachment.whisperer.dev \"{n}\" deleted\n"))
        .collect();
    assert_eq!(out.stdout, want);
    poll_until(
        WAIT,
        "every Attachment of the strict namespace gone",
        || async {
            let left = Api::<Attachment>::namespaced(client.clone(), &strict)
                .list(&ListParams::default())
                .await
                .ok()?;
            left.items.is_empty().then_some(())
        },
    )
    .await;
    let out = plugin.whisper(&["ls", "-n", &strict]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("No Attachments found"),
        "{}",
        out.stderr
    );
    injector.stop().await;
}

/// A Deployment → ReplicaSet → Pod chain written by hand (no controllers run in this test):
/// the pod is created through the API server, so the webhook injects it.
async fn injected_workload_pod(client: &Client, ns: &str) -> Pod {
    let d = create(client, ns, &deployment("web", 1)).await;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-6d5f8", "labels": {"app": "web"}, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
            "uid": d.uid().expect("uid"), "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": support::builders::pod_template("web")}
    }))
    .expect("rs");
    let rs = create(client, ns, &rs).await;
    let mut pod = injector::pod("web-6d5f8-x2x9q", true);
    pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-6d5f8",
        "uid": rs.uid().expect("uid"), "controller": true}))
    .expect("owner")]);
    let pod = create(client, ns, &pod).await;
    assert!(injector::has_whisperer(&pod), "the webhook injects the pod");
    pod
}

async fn set_config(client: &Client, ns: &str, text: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": explain::CONFIG_MAP},
        "data": {"config.yaml": text}
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            explain::CONFIG_MAP,
            &PatchParams::apply("plugin-test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("apply the injector's config map");
}

/// check-inject is explain's report (compared with explain run in this process, not with a
/// copy of its text); outdated after the injector's config changes; logs picks the webhook
/// sidecar; a user without rights gets the API server's Forbidden, clearly.
#[tokio::test]
async fn check_inject_outdated_logs_and_rbac() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    support::install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let on = cp.namespace(&[("injection", "enabled")]).await;
    let mut injector = start_and_register(&cp, &on, &[]).await;
    // The injector's config map, where explain and outdated read the profiles.
    set_config(&client, &own, injector::PROFILES).await;
    let pod = injected_workload_pod(&client, &on).await;
    let pod_name = pod.name_any();
    create(&client, &on, &injector::pod("plain", false)).await;
    let plugin = PluginDir::new(cp.kubeconfig_path());
    let kc = cp.kubeconfig_path().display().to_string();

    // check-inject == explain, for a live injected pod, a skipped pod, a workload and a file.
    let manifest = plugin.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        serde_yaml::to_string(&injector::pod("from-file", true)).expect("yaml"),
    )
    .expect("write");
    let manifest_s = manifest.display().to_string();
    let target_pod = format!("pod/{pod_name}");
    for (target, verdict) in [
        (vec![target_pod.as_str()], "injected (profile=default,hash="),
        (vec!["pod/plain"], "not injected (not-requested)"),
        (vec!["deploy/web"], "not injected (not-requested)"),
        (
            vec!["-f", manifest_s.as_str()],
            "would be injected (profile=default,hash=",
        ),
    ] {
        let mut flags = target.clone();
        flags.extend(["-n", &on, "--injector-namespace", &own]);
        let out = plugin
            .kubectl_whisper(&[&["check-inject"], flags.as_slice()].concat())
            .await;
        out.expect_code(0);
        let mut explain_flags = flags.clone();
        explain_flags.extend(["--kubeconfig", &kc]);
        let want = explain::run(&ExplainArgs::from_flags(&explain_flags).expect("flags"))
            .await
            .expect("explain");
        assert_eq!(
            out.stdout, want,
            "check-inject {target:?} differs from explain"
        );
        assert!(
            out.stdout
                .lines()
                .next()
                .is_some_and(|l| l.contains(verdict)),
            "{target:?}: want {verdict:?} in\n{}",
            out.stdout
        );
    }
    let out = plugin
        .whisper(&[
            "check-inject",
            "pod/plain",
            "-n",
            &on,
            "--injector-namespace",
            &own,
            "-o",
            "json",
        ])
        .await;
    out.expect_code(0);
    assert_eq!(out.json()[0]["subject"], "pod/plain");

    // outdated: nothing while the profile is unchanged ...
    let outdated = [
        "outdated",
        "-n",
        on.as_str(),
        "--injector-namespace",
        own.as_str(),
    ];
    let out = plugin.whisper(&outdated).await;
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "No outdated Whisperers (1 injected pod checked).\n"
    );
    // ... then the injector's config changes: the pod's Whisperer is outdated, its workload is
    // found through the ReplicaSet, and the footer rolls the Deployment.
    set_config(
        &client,
        &own,
        &injector::PROFILES.replace("value: info", "value: debug"),
    )
    .await;
    let out = plugin.whisper(&outdated).await;
    out.expect_code(0);
    let old = injector::marker(&pod).expect("marker");
    let old_hash = old.split("hash=").nth(1).expect("hash");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAMESPACE", "WORKLOAD", "POD", "OLD→NEW"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], [on.as_str(), "deployment/web", pod_name.as_str()]);
    let (was, now) = row[3].split_once('→').expect("old→new");
    assert_eq!(was, old_hash);
    assert!(now.len() == 16 && now != was, "{}", row[3]);
    assert!(
        out.stdout.contains(&format!(
            "\n  kubectl rollout restart deployment/web -n {on}\n"
        )),
        "{}",
        out.stdout
    );
    // -A -o json: the same row, the full markers, the command.
    let out = plugin
        .whisper(&["outdated", "-A", "--injector-namespace", &own, "-o", "json"])
        .await;
    out.expect_code(0);
    let v = out.json();
    let item = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["pod"] == pod_name.as_str())
        .expect("the pod listed")
        .clone();
    assert_eq!(item["namespace"], on.as_str());
    assert_eq!(item["workload"], "deployment/web");
    assert_eq!(item["old"], old.as_str());
    assert_eq!(item["new"], format!("profile=default,hash={now}"));
    assert!(v["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .any(|c| c.as_str()
            == Some(format!("kubectl rollout restart deployment/web -n {on}").as_str())));

    // logs: the webhook's sidecar is ours; an unscheduled pod has no log yet (the stream just
    // ends); a pod without a Whisperer is an error that says how to attach one.
    let out = plugin
        .whisper(&[
            "logs",
            "deploy/web",
            "-n",
            &on,
            "--injector-namespace",
            &own,
        ])
        .await;
    out.expect_code(0);
    assert_eq!(
        out.stderr,
        format!("streaming [{pod_name}/whisperer] (sidecar)\n")
    );
    assert_eq!(out.stdout, "");
    let out = plugin
        .whisper(&["logs", "pod/plain", "-n", &on, "--injector-namespace", &own])
        .await;
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("error: no Whisperer in the 1 pod of pod/plain")
            && out.stderr.contains("kubectl whisper attach pod/plain"),
        "{}",
        out.stderr
    );
    // A look-alike (our container name, another image, a forged marker) is not ours.
    let mut fake = plain_pod("fake", "fake", &[("whisperer.dev/injected", &old)]);
    fake.spec.as_mut().expect("spec").containers[1].name = "whisperer".into();
    create(&client, &own, &fake).await;
    let out = plugin
        .whisper(&["logs", "pod/fake", "-n", &own, "--injector-namespace", &own])
        .await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("no Whisperer in the 1 pod"),
        "{}",
        out.stderr
    );
    // Scheduled on a node whose kubelet is down: the stream's error is printed, exit code 2.
    support::kubelet_unreachable(&client, "dead-node").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &on);
    support::kubelet::run_pod(&pods, &pod, "dead-node", &support::kubelet::next_pod_ip())
        .await
        .expect("bind the pod");
    let out = plugin
        .whisper(&[
            "logs",
            &target_pod,
            "-n",
            &on,
            "--injector-namespace",
            &own,
            "-f",
        ])
        .await;
    out.expect_code(3);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("[{pod_name}/whisperer] logs unavailable: ")))
        .unwrap_or_else(|| panic!("no error line in\n{}", out.stderr));
    assert!(line.contains("connection refused"), "{line}");

    // RBAC: alice may read Attachments and Deployments here but not create Attachments. The
    // API server's own Forbidden is printed, with what was being done.
    impersonate::grant(
        &client,
        &on,
        "alice-view",
        &Subject::user("alice"),
        vec![
            impersonate::rule(
                &["whisperer.dev"],
                &["attachments"],
                &["get", "list", "watch"],
            ),
            impersonate::rule(&["apps"], &["deployments"], &["get"]),
        ],
    )
    .await;
    // The grant reaches the API server's authorizer through its informers: until then the
    // Deployment lookup below would be the refusal, not the Attachment's create.
    let as_alice = impersonate::user(&cp, "alice", &[]);
    poll_until(WAIT, "alice's grant in force", || async {
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(as_alice.clone(), &on)
            .get("web")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let out = plugin
        .whisper(&["attach", "deployment/web", "-n", &on, "--as", "alice"])
        .await;
    out.expect_code(1);
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot create an Attachment for deployment/web in namespace {on}: \
             attachments.whisperer.dev is forbidden: User \"alice\" cannot create resource \
             \"attachments\" in API group \"whisperer.dev\" in the namespace \"{on}\" \
             (Forbidden, HTTP 403)\n"
        )
    );
    assert_eq!(out.stdout, "");
    assert!(attachment_names(&client, &on).await.is_empty());
    // What alice may do works under the same flags.
    let out = plugin.whisper(&["ls", "-n", &on, "--as", "alice"]).await;
    out.expect_code(0);
    // ... and where she has nothing, the Forbidden names the namespace.
    let out = plugin.whisper(&["ls", "-n", &own, "--as", "alice"]).await;
    out.expect_code(1);
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot list Attachments in namespace {own}: "
        )) && out
            .stderr
            .contains("is forbidden: User \"alice\" cannot list resource \"attachments\"")
            && out.stderr.contains("(Forbidden, HTTP 403)"),
        "{}",
        out.stderr
    );
    injector.stop().await;
}

/// Bad input gets a clear message naming the argument, not a panic.
#[tokio::test]
async fn bad_targets_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No cluster is contacted before the target is understood... except for the client: a
    // kubeconfig that parses is needed, so use a syntactically valid one pointing nowhere.
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n\
         current-context: c\n",
    )
    .expect("write");
    let plugin = PluginDir::new(&kc);
    let out = plugin.whisper(&["attach", "service/web"]).await;
    out.expect_code(1);
    assert!(
        out.stderr
            .starts_with("error: \"service/web\" is not KIND/NAME"),
        "{}",
        out.stderr
    );
    // The same commands under the binary's own name.
    let own = tokio::process::Command::new(env!("CARGO_BIN_EXE_whisperer-injector"))
        .args(["whisper", "attach", "service/web"])
        .env("KUBECONFIG", &kc)
        .output()
        .await
        .expect("run whisperer-injector whisper");
    assert_eq!(own.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&own.stderr).starts_with("error: \"service/web\" is not KIND/NAME")
    );
    let out = plugin.whisper(&["detach"]).await;
    out.expect_code(1);
    assert!(out.stderr.contains("or give --all"), "{}", out.stderr);
    // clap's usage errors keep their own exit code, 2.
    let out = plugin.whisper(&["detach", "x", "--all"]).await;
    out.expect_code(2);
    let out = plugin.whisper(&["ls", "--context", "nope"]).await;
    out.expect_code(1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
}

/// The krew manifest installs this binary as `kubectl-whisper` on the four platforms.
#[test]
fn krew_manifest_covers_every_platform() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/krew/whisper.yaml"
    ))
    .expect("docs/krew/whisper.yaml");
    let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    assert_eq!(
        v["apiVersion"].as_str(),
        Some("krew.googlecontainertools.github.com/v1alpha2")
    );
    assert_eq!(v["kind"].as_str(), Some("Plugin"));
    // kubectl runs `kubectl-<metadata.name>` for `kubectl whisper`.
    assert_eq!(v["metadata"]["name"].as_str(), Some("whisper"));
    let mut seen = Vec::new();
    for p in v["spec"]["platforms"].as_sequence().expect("platforms") {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().expect("os"),
            labels["arch"].as_str().expect("arch"),
        );
        assert_eq!(p["bin"].as_str(), Some("kubectl-whisper"), "{os}/{arch}");
        assert!(
            p["files"]
                .as_sequence()
                .expect("files")
                .iter()
                .any(|f| f["from"].as_str() == Some("kubectl-whisper")),
            "{os}/{arch}"
        );
        let uri = p["uri"].as_str().expect("uri");
        assert!(
            uri.ends_with(&format!("kubectl-whisper_{os}_{arch}.tar.gz")),
            "{uri}"
        );
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{os}/{arch}");
        seen.push(format!("{os}/{arch}"));
    }
    seen.sort();
    assert_eq!(
        seen,
        ["darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"]
    );
}

//! The trust boundary, enforced by a real kube-apiserver: who may attach a Whisperer
//! (manifests/policy-attachments.yaml), what the injector's own ServiceAccount may add to
//! pods (manifests/policy-injector-guard.yaml), and that the trimmed RBAC
//! (manifests/rbac.yaml) still lets the reconciler do its work. Every policy, binding, params
//! object and role is applied from manifests/; requests are made by impersonated users and by
//! the impersonated ServiceAccount (tests/support/impersonate.rs).

use support::injector;
mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use support::builders::{self, ephemeral_names};
use support::impersonate::{self, bind, grant, named_rule, rule, Subject};
use support::{install_attachment_crd, manifests, poll_until, ControlPlane, WAIT};
use whisperer_injector::config::Config;
use whisperer_injector::reconciler::{self, Attachment, PodState, ReconcilerArgs, TargetKind};

const INJECTOR_NS: &str = "whisperer-system";
const INJECTOR_SA: &str = "whisperer-injector";
/// The image allowed by the shipped guard params (manifests/policy-injector-guard.yaml).
const IMAGE: &str = "ghcr.io/whisperer-dev/whisperer:v0.1.0";
const EXEC_MESSAGE: &str = "attaching a Whisperer is equivalent to exec";
const GUARD_MESSAGE: &str = "the injector's ServiceAccount may";

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

/// Installs what `kubectl apply -k manifests` would for the trust boundary (namespace,
/// ServiceAccount, CRD, RBAC, roles, policies and params) and waits until the API server
/// enforces both policies.
async fn install(cp: &ControlPlane) {
    let admin = cp.client();
    manifests::apply(&admin, "namespace.yaml").await;
    install_attachment_crd(&admin).await;
    for file in [
        "serviceaccount.yaml",
        "rbac.yaml",
        "clusterroles.yaml",
        "policy-attachments.yaml",
        "policy-injector-guard.yaml",
    ] {
        manifests::apply(&admin, file).await;
    }

    // The admission plugin picks policies, bindings and params up asynchronously.
    let ns = cp.namespace(&[]).await;
    let probe = Subject::user("policy-probe");
    grant(
        &admin,
        &ns,
        "probe",
        &probe,
        vec![rule(&["whisperer.dev"], &["attachments"], &["create"])],
    )
    .await;
    let api = Api::<Attachment>::namespaced(impersonate::client_as(cp, &probe, &[]), &ns);
    enforced("the attachment policy", EXEC_MESSAGE, || {
        let api = api.clone();
        async move { api.create(&dry_run(), &attachment("probe", None)).await }
    })
    .await;
    let pod = create_pod(&admin, &ns, "probe").await;
    let sa = injector_client(cp);
    enforced("the injector guard", "allowedImages", || {
        let (sa, ns, pod) = (sa.clone(), ns.clone(), pod.clone());
        async move {
            let probe = json!({ "name": "probe", "image": "busybox" });
            add_ephemeral(&sa, &ns, &pod, probe, true).await
        }
    })
    .await;
}

/// Polls the dry-run request `f` until the API server refuses it with `needle`: a new
/// policy, binding or params object takes a moment to reach the admission plugin.
async fn enforced<T, F, Fut>(what: &str, needle: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    poll_until(WAIT, &format!("{what} enforced"), || {
        let answer = f();
        async move {
            match answer.await {
                Err(kube::Error::Api(e)) if e.message.contains(needle) => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

fn injector_client(cp: &ControlPlane) -> Client {
    impersonate::service_account(cp, INJECTOR_NS, INJECTOR_SA)
}

/// The API server's refusal of `result`, or a panic naming what was admitted.
fn refusal<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected a refusal from the API server, got {other:?}"),
    }
}

/// Polls `f` until the API server refuses it with a message containing `needle` (an RBAC
/// change or a new policy takes a moment to reach the API server's caches; other refusals
/// are retried). Panics if `f` is ever admitted: nothing here may get through.
async fn refused_eventually<T, F, Fut>(what: &str, needle: &str, mut f: F) -> kube::core::Status
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => panic!("{what}: admitted, expected a refusal containing {needle:?}: {v:?}"),
            Err(kube::Error::Api(e)) if e.message.contains(needle) => return *e,
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no refusal containing {needle:?} within {WAIT:?}; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `f` until the API server admits it (RBAC grants reach the authorizer's cache
/// asynchronously); the last refusal is in the panic message.
async fn admitted_eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still refused after {WAIT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`refused_eventually`] for creating `obj` through `api`.
async fn create_refused(
    what: &str,
    needle: &str,
    api: &Api<Attachment>,
    params: PostParams,
    obj: Attachment,
) -> kube::core::Status {
    refused_eventually(what, needle, || {
        let (api, params, obj) = (api.clone(), params.clone(), obj.clone());
        async move { api.create(&params, &obj).await }
    })
    .await
}

/// [`admitted_eventually`] for creating `obj` through `api`.
async fn create_admitted(
    what: &str,
    api: &Api<Attachment>,
    params: PostParams,
    obj: Attachment,
) -> Attachment {
    admitted_eventually(what, || {
        let (api, params, obj) = (api.clone(), params.clone(), obj.clone());
        async move { api.create(&params, &obj).await }
    })
    .await
}

/// The Attachment these tests ask for: pod `web`, 30 minutes, `profile` if given.
fn attachment(name: &str, profile: Option<&str>) -> Attachment {
    let mut a = builders::attachment(name, Some((TargetKind::Pod, "web")), None, Some("30m"));
    a.spec.profile = profile.map(str::to_string);
    a
}

fn with_requested_by(mut a: Attachment, user: &str) -> Attachment {
    a.metadata.annotations = Some(
        [(
            whisperer_injector::webhook::REQUESTED_BY.to_string(),
            user.to_string(),
        )]
        .into(),
    );
    a
}

/// The rights `kubectl debug` needs, which the attachment policy asks for.
fn debug_rule() -> k8s_openapi::api::rbac::v1::PolicyRule {
    rule(&[""], &["pods/ephemeralcontainers"], &["patch"])
}

fn attachments_rule() -> k8s_openapi::api::rbac::v1::PolicyRule {
    rule(
        &["whisperer.dev"],
        &["attachments"],
        &["create", "get", "patch", "update"],
    )
}

async fn create_pod(admin: &Client, ns: &str, name: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] },
    }))
    .expect("pod json");
    Api::<Pod>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
    name.to_string()
}

/// What the reconciler sends (src/reconciler/attach.rs): a strategic merge patch of
/// pods/ephemeralcontainers adding `container`.
async fn add_ephemeral(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Value,
    dry_run: bool,
) -> Result<Pod, kube::Error> {
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_subresource(
            "ephemeralcontainers",
            pod,
            &params,
            &Patch::Strategic(json!({ "spec": { "ephemeralContainers": [container] } })),
        )
        .await
}

/// A Whisperer as the shipped guard allows it: the allowed image, NET_RAW only, no mounts.
fn whisperer(name: &str) -> Value {
    json!({
        "name": name,
        "image": IMAGE,
        "targetContainerName": "app",
        "env": [{ "name": "WHISPERER_POD_NAME", "value": "web" }],
        "securityContext": {
            "capabilities": { "add": ["NET_RAW"], "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    })
}

// ---------------------------------------------------------------------------------------
// Who may attach.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn attaching_needs_the_right_to_patch_ephemeral_containers() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let ns = cp.namespace(&[]).await;
    let alice = Subject::user("alice");
    grant(
        &admin,
        &ns,
        "alice-attachments",
        &alice,
        vec![attachments_rule()],
    )
    .await;
    let api = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &alice, &[]), &ns);

    let err = create_refused(
        "create with only create attachments",
        EXEC_MESSAGE,
        &api,
        PostParams::default(),
        attachment("web", None),
    )
    .await;
    assert_eq!(err.code, 403, "{err:?}");
    assert_eq!(
        err.message,
        format!(
            "attachments.whisperer.dev \"web\" is forbidden: ValidatingAdmissionPolicy \
             'whisperer-attachment-authorization' with binding \
             'whisperer-attachment-authorization' denied request: attaching a Whisperer is \
             equivalent to exec: alice may not patch pods/ephemeralcontainers in namespace {ns}, \
             which an Attachment needs (see the whisperer-attacher ClusterRole)"
        )
    );

    grant(&admin, &ns, "alice-debug", &alice, vec![debug_rule()]).await;
    let created = create_admitted(
        "create with patch pods/ephemeralcontainers",
        &api,
        PostParams::default(),
        attachment("web", None),
    )
    .await;
    assert_eq!(created.name_any(), "web");

    // The right is checked in the Attachment's own namespace, not anywhere.
    let other = cp.namespace(&[]).await;
    grant(
        &admin,
        &other,
        "alice-attachments",
        &alice,
        vec![attachments_rule()],
    )
    .await;
    let elsewhere = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &alice, &[]), &other);
    create_refused(
        "create where alice cannot debug",
        EXEC_MESSAGE,
        &elsewhere,
        PostParams::default(),
        attachment("web", None),
    )
    .await;
}

#[tokio::test]
async fn a_named_profile_needs_use_on_it() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let ns = cp.namespace(&[]).await;
    let alice = Subject::user("alice");
    grant(
        &admin,
        &ns,
        "alice-attach",
        &alice,
        vec![attachments_rule(), debug_rule()],
    )
    .await;
    let api = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &alice, &[]), &ns);

    // No profile named: the configured default, open to whoever may attach.
    create_admitted(
        "create without a profile",
        &api,
        dry_run(),
        attachment("plain", None),
    )
    .await;

    let err = create_refused(
        "restricted profile without use",
        "may not use",
        &api,
        PostParams::default(),
        attachment("deep", Some("restricted")),
    )
    .await;
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains(&format!(
            "alice may not use the Whisperer profile restricted in namespace {ns}: it needs the \
             verb use on profiles.whisperer.dev named restricted"
        )),
        "{}",
        err.message
    );

    // `use` on another profile does not open this one.
    grant(
        &admin,
        &ns,
        "alice-other-profile",
        &alice,
        vec![named_rule(
            &["whisperer.dev"],
            &["profiles"],
            &["other"],
            &["use"],
        )],
    )
    .await;
    create_admitted(
        "use of profile other",
        &api,
        dry_run(),
        attachment("o", Some("other")),
    )
    .await;
    refusal(
        api.create(
            &PostParams::default(),
            &attachment("deep", Some("restricted")),
        )
        .await,
    );

    grant(
        &admin,
        &ns,
        "alice-restricted",
        &alice,
        vec![named_rule(
            &["whisperer.dev"],
            &["profiles"],
            &["restricted"],
            &["use"],
        )],
    )
    .await;
    let created = create_admitted(
        "restricted profile with use",
        &api,
        PostParams::default(),
        attachment("deep", Some("restricted")),
    )
    .await;
    assert_eq!(created.spec.profile.as_deref(), Some("restricted"));

    // whisperer-attacher (manifests/clusterroles.yaml) carries `use` on profile "default".
    let bob = Subject::user("bob");
    grant(&admin, &ns, "bob-debug", &bob, vec![debug_rule()]).await;
    let bobs = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &bob, &[]), &ns);
    create_refused(
        "bob without whisperer-attacher",
        "forbidden",
        &bobs,
        dry_run(),
        attachment("b", Some("default")),
    )
    .await;
    bind(
        &admin,
        &ns,
        "bob-attacher",
        &bob,
        "ClusterRole",
        "whisperer-attacher",
    )
    .await;
    create_admitted(
        "bob with whisperer-attacher names profile default",
        &bobs,
        PostParams::default(),
        attachment("b", Some("default")),
    )
    .await;
    let err = refusal(
        bobs.create(
            &PostParams::default(),
            &attachment("b2", Some("restricted")),
        )
        .await,
    );
    assert!(
        err.message
            .contains("may not use the Whisperer profile restricted"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_requester_annotation_cannot_be_forged() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let ns = cp.namespace(&[]).await;
    for user in ["alice", "bob"] {
        grant(
            &admin,
            &ns,
            &format!("{user}-attach"),
            &Subject::user(user),
            vec![attachments_rule(), debug_rule()],
        )
        .await;
    }
    let alice = Api::<Attachment>::namespaced(impersonate::user(&cp, "alice", &[]), &ns);
    let bob = Api::<Attachment>::namespaced(impersonate::user(&cp, "bob", &[]), &ns);

    // No webhook runs here: what the client sends is what the policy sees.
    let err = create_refused(
        "a forged requester",
        "must name the requester",
        &alice,
        PostParams::default(),
        with_requested_by(attachment("web", None), "admin"),
    )
    .await;
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains(
            "annotation whisperer.dev/requested-by must name the requester (alice), not admin"
        ),
        "{}",
        err.message
    );
    create_admitted(
        "alice naming herself",
        &alice,
        PostParams::default(),
        with_requested_by(attachment("web", None), "alice"),
    )
    .await;

    // Without a spec change the record stays, whoever writes. (bob's grant was made after
    // alice's, which her create proved in force: RBAC may refuse him at first.)
    let relabel = json!({ "metadata": { "annotations": { "whisperer.dev/requested-by": "bob" } } });
    for (who, api) in [("alice", &alice), ("bob", &bob)] {
        refused_eventually(
            &format!("{who} relabels"),
            "can only change together with the spec",
            || {
                let (api, relabel) = (api.clone(), relabel.clone());
                async move {
                    api.patch("web", &PatchParams::default(), &Patch::Merge(&relabel))
                        .await
                }
            },
        )
        .await;
    }
    let drop = json!({ "metadata": { "annotations": { "whisperer.dev/requested-by": null } } });
    refusal(
        alice
            .patch("web", &PatchParams::default(), &Patch::Merge(&drop))
            .await,
    );
    // Other metadata may change.
    alice
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "shop" } } })),
        )
        .await
        .expect("a label change is not a spec change");

    // A spec change by bob must name bob, and is checked like a create.
    let spec_by_bob_as_alice = json!({ "spec": { "ttl": "2h" } });
    let err = refusal(
        bob.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&spec_by_bob_as_alice),
        )
        .await,
    );
    assert!(err.message.contains("(bob), not alice"), "{err:?}");
    let spec_by_bob = json!({
        "metadata": { "annotations": { "whisperer.dev/requested-by": "bob" } },
        "spec": { "ttl": "2h" },
    });
    let changed = bob
        .patch("web", &PatchParams::default(), &Patch::Merge(&spec_by_bob))
        .await
        .expect("bob changes the spec and names himself");
    assert_eq!(changed.requested_by(), Some("bob"));
}

// ---------------------------------------------------------------------------------------
// What the injector's own account may do.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_injector_account_can_only_add_its_own_whisperer() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let sa = injector_client(&cp);
    let ns = cp.namespace(&[]).await;
    let pod = create_pod(&admin, &ns, "web").await;
    let token_volume = Api::<Pod>::namespaced(admin.clone(), &ns)
        .get(&pod)
        .await
        .expect("pod")
        .spec
        .and_then(|s| s.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .find(|n| n.starts_with("kube-api-access-"))
        .expect("the ServiceAccount admission plugin added the token volume");

    let mut privileged = whisperer("w-privileged");
    privileged["securityContext"]["privileged"] = json!(true);
    let mut escalating = whisperer("w-escalating");
    escalating["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    let mut foreign = whisperer("w-foreign");
    foreign["image"] = json!("docker.io/library/busybox:1.36");
    let mut admin_cap = whisperer("w-netadmin");
    admin_cap["securityContext"]["capabilities"]["add"] = json!(["NET_RAW", "NET_ADMIN"]);
    let mut token = whisperer("w-token");
    token["volumeMounts"] = json!([{
        "name": token_volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": true,
    }]);
    let mut unconfined = whisperer("w-unconfined");
    unconfined["securityContext"]["seccompProfile"] = json!({ "type": "Unconfined" });

    for (container, needle) in [
        (privileged, "may not add a privileged ephemeral container"),
        (escalating, "may not add a privileged ephemeral container"),
        (unconfined, "may not add a privileged ephemeral container"),
        (foreign, "w-foreign (docker.io/library/busybox:1.36)"),
        (admin_cap, "refused: w-netadmin (NET_ADMIN)"),
        (token, "mounts a volume of the pod: w-token"),
    ] {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        let err = refusal(add_ephemeral(&sa, &ns, &pod, container, false).await);
        assert_eq!(err.code, 403, "{name}: {err:?}");
        assert!(
            err.message.contains(GUARD_MESSAGE) && err.message.contains(needle),
            "{name}: {}",
            err.message
        );
    }

    // The admin is not bound by the guard: it only concerns the injector's account.
    let mut debug = whisperer("debugger");
    debug["image"] = json!("docker.io/library/busybox:1.36");
    add_ephemeral(&admin, &ns, &pod, debug, false)
        .await
        .expect("the admin may still debug");

    // Already-present containers do not count against a later addition.
    let out = add_ephemeral(&sa, &ns, &pod, whisperer("whisperer-web"), false)
        .await
        .expect("the injector may add the profile's Whisperer");
    let mut names = ephemeral_names(&out);
    names.sort();
    assert_eq!(names, ["debugger", "whisperer-web"]);

    // Nothing else on pods: RBAC refuses, and the guard would too.
    let err = refusal(
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .patch(
                &pod,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
            )
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
    let err = refusal(
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .delete(&pod, &Default::default())
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
    // Nor widen its own guard.
    let err = refusal(
        Api::<ConfigMap>::namespaced(sa.clone(), INJECTOR_NS)
            .patch(
                "whisperer-injector-guard",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "data": { "allowedImages": "docker.io/library/busybox:1.36" } }),
                ),
            )
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
}

#[tokio::test]
async fn the_injector_account_cannot_attach_in_system_namespaces() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let sa = injector_client(&cp);
    for ns in ["kube-system", INJECTOR_NS] {
        // Without kube-controller-manager nobody creates the namespace's default account.
        let account: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": "default" } })).expect("sa");
        match Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &account)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("default ServiceAccount in {ns}: {e}"),
        }
        let mut pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "sys" },
            "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] },
        }))
        .expect("pod");
        if ns == INJECTOR_NS {
            // whisperer-system enforces the restricted Pod Security Standard.
            pod.spec = serde_json::from_value(json!({
                "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                "containers": [{
                    "name": "app", "image": "registry.invalid/app:1",
                    "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
                }],
            }))
            .expect("spec");
        }
        Api::<Pod>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod in {ns}: {e}"));
        // Nothing Pod Security could object to, so that only the guard speaks.
        let mut quiet = whisperer("whisperer-sys");
        quiet["securityContext"] = json!({
            "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] },
        });
        let err = refusal(add_ephemeral(&sa, ns, "sys", quiet, false).await);
        assert_eq!(err.code, 403, "{ns}: {err:?}");
        assert!(
            err.message.contains(&format!(
                "may not add ephemeral containers in namespace {ns} (a system namespace or the \
                 injector's own)"
            )),
            "{ns}: {}",
            err.message
        );
    }
}

// ---------------------------------------------------------------------------------------
// The real reconciler, as the injector's account, with the requester recorded by the real
// webhook.
// ---------------------------------------------------------------------------------------

/// The shipped configuration (manifests/configmap.yaml) plus a profile `wide` that adds
/// NET_ADMIN, which the shipped guard params do not allow.
fn shipped_config_with_a_wide_profile() -> Config {
    let configmap = manifests::documents("configmap.yaml")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "whisperer-injector-config")
        .expect("manifests/configmap.yaml holds the injector's config");
    let text = configmap["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml");
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(text).expect("config YAML");
    let mut wide = cfg["profiles"]["default"].clone();
    wide["securityContext"]["capabilities"]["add"] =
        serde_yaml::from_str("[NET_RAW, NET_ADMIN]").expect("list");
    cfg["profiles"]["wide"] = wide;
    let text = serde_yaml::to_string(&cfg).expect("config YAML");
    Config::parse(&text, "manifests/configmap.yaml + profile wide").expect("config parses")
}

#[tokio::test]
async fn the_reconciler_attaches_as_the_injector_account_and_shows_the_requester() {
    let cp = ControlPlane::start().await;
    install(&cp).await;
    let admin = cp.client();
    let probe_ns = cp.namespace(&[("injection", "enabled")]).await;
    let mut hook = injector::start_and_register(&cp, &probe_ns, &[]).await;

    let ns = cp.namespace(&[]).await;
    create_pod(&admin, &ns, "web").await;
    cp.mark_pod_running(&ns, "web", "node-a", "10.244.0.7")
        .await;
    let alice = Subject::user("alice");
    grant(
        &admin,
        &ns,
        "alice-attach",
        &alice,
        vec![
            attachments_rule(),
            debug_rule(),
            named_rule(&["whisperer.dev"], &["profiles"], &["wide"], &["use"]),
        ],
    )
    .await;
    let attachments = Api::<Attachment>::namespaced(impersonate::user(&cp, "alice", &[]), &ns);

    // The webhook records alice, whatever she claims (its answer replaces the value).
    let created = create_admitted(
        "alice attaches",
        &attachments,
        PostParams::default(),
        with_requested_by(attachment("web", None), "admin"),
    )
    .await;
    assert_eq!(created.requested_by(), Some("alice"));

    // The reconciler with the injector's own account, bound by manifests/rbac.yaml only,
    // leader election included (the Lease Role is limited to its one name), and the shipped
    // default profile: it must pass the shipped guard.
    let config = shipped_config_with_a_wide_profile();
    let settings = builders::shared_settings(config, INJECTOR_NS);
    let args = ReconcilerArgs {
        resync_interval: Duration::from_secs(10),
        backstop_interval: Duration::from_millis(500),
        ..ReconcilerArgs::default()
    };
    let mut registry = Registry::default();
    let handle = reconciler::start(
        injector_client(&cp),
        settings,
        INJECTOR_NS.to_string(),
        &args,
        &mut registry,
    )
    .await
    .expect("reconciler starts with the injector's RBAC");

    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    poll_until(
        WAIT,
        "the Whisperer attached by the injector's account",
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get("web").await.ok()?;
                ephemeral_names(&p)
                    .contains(&"whisperer-web".to_string())
                    .then_some(())
            }
        },
    )
    .await;
    let admin_attachments = Api::<Attachment>::namespaced(admin.clone(), &ns);
    let status = poll_until(WAIT, "status with the requester", || {
        let api = admin_attachments.clone();
        async move {
            let a = api.get("web").await.ok()?;
            let s = a.status?;
            (s.attached_pods == 1).then_some(s)
        }
    })
    .await;
    assert_eq!(status.requested_by.as_deref(), Some("alice"));
    let events = Api::<Event>::namespaced(admin.clone(), &ns);
    let note = poll_until(WAIT, "Attached event naming the requester", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("Attached"))
                .find_map(|e| e.note)
        }
    })
    .await;
    assert!(
        note.contains("attached the Whisperer to 1 pod(s) (requested by alice): web"),
        "{note}"
    );
    // The finalizer and status writes of the injector's account got through the policy and
    // left the record alone.
    let now = admin_attachments.get("web").await.expect("attachment");
    assert!(now.finalizers().iter().any(|f| f == "whisperer.dev/detach"));
    assert_eq!(now.requested_by(), Some("alice"));

    // A profile the guard's params do not cover is refused by the API server, and the
    // reconciler says so.
    attachments
        .create(&PostParams::default(), &attachment("wide", Some("wide")))
        .await
        .expect("alice may use profile wide");
    let entry = poll_until(WAIT, "wide refused by the guard", || {
        let api = admin_attachments.clone();
        async move {
            let s = api.get("wide").await.ok()?.status?;
            s.pods.into_iter().find(|p| p.state == PodState::Refused)
        }
    })
    .await;
    let message = entry.message.unwrap_or_default();
    assert!(
        message.contains("allowedCapabilities") && message.contains("NET_ADMIN"),
        "{message}"
    );
    let p = pods.get("web").await.expect("pod");
    assert!(!ephemeral_names(&p)
        .iter()
        .any(|n| n.starts_with("whisperer-wide")));

    handle.shutdown().await;
    hook.stop().await;
}

// ---------------------------------------------------------------------------------------
// The shipped objects as the control plane's controllers see them.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn policies_type_check_cleanly_and_roles_aggregate() {
    let cp = ControlPlane::start_with_controllers().await;
    install(&cp).await;
    let admin = cp.client();

    // The API server's type checker (run by kube-controller-manager) checks validations and
    // message expressions against the schemas of the kinds a policy names: a misspelt field
    // or a type mismatch shows up in status.typeChecking.
    let vaps = Api::<ValidatingAdmissionPolicy>::all(admin.clone());
    let mut warnings = Vec::new();
    for name in [
        "whisperer-attachment-authorization",
        "whisperer-injector-guard",
    ] {
        let checking = poll_until(WAIT, "type checking of the policy", || {
            let vaps = vaps.clone();
            async move {
                let p = vaps.get(name).await.ok()?;
                let s = p.status?;
                (s.observed_generation == p.metadata.generation).then_some(())?;
                s.type_checking
            }
        })
        .await;
        warnings.extend(
            checking
                .expression_warnings
                .unwrap_or_default()
                .into_iter()
                .map(|w| format!("{name} {}: {}", w.field_ref, w.warning)),
        );
    }
    assert!(
        warnings.is_empty(),
        "type-check warnings:\n{}",
        warnings.join("\n")
    );

    // The clusterrole-aggregation controller folds our roles into the built-in ones.
    let roles = Api::<ClusterRole>::all(admin.clone());
    let grants = |role: ClusterRole, resource: &str, verb: &str| {
        role.rules.unwrap_or_default().iter().any(|r| {
            r.api_groups
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|g| g == "whisperer.dev")
                && r.resources
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (role, verb, expected) in [
        ("edit", "create", true),
        ("admin", "create", true),
        ("view", "list", true),
        ("view", "create", false),
    ] {
        poll_until(WAIT, "aggregated rules", || {
            let roles = roles.clone();
            async move {
                let r = roles.get(role).await.ok()?;
                (grants(r, "attachments", verb) == expected).then_some(())
            }
        })
        .await;
    }

    // Upstream `edit` carries pods/exec but not pods/ephemeralcontainers: an editor gets the
    // Attachment rights by aggregation and is still refused by the policy until someone
    // grants the exec-equivalent right; then profile default works by name.
    let ns = cp.namespace(&[]).await;
    let (carol, dave) = (Subject::user("carol"), Subject::user("dave"));
    bind(&admin, &ns, "carol-edit", &carol, "ClusterRole", "edit").await;
    bind(&admin, &ns, "dave-view", &dave, "ClusterRole", "view").await;
    let as_carol = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &carol, &[]), &ns);
    create_refused(
        "an editor without pods/ephemeralcontainers",
        EXEC_MESSAGE,
        &as_carol,
        PostParams::default(),
        attachment("web", Some("default")),
    )
    .await;
    grant(&admin, &ns, "carol-debug", &carol, vec![debug_rule()]).await;
    create_admitted(
        "an editor who may debug attaches with profile default",
        &as_carol,
        PostParams::default(),
        attachment("web", Some("default")),
    )
    .await;
    let as_dave = Api::<Attachment>::namespaced(impersonate::client_as(&cp, &dave, &[]), &ns);
    admitted_eventually("a viewer lists Attachments", || {
        let api = as_dave.clone();
        async move { api.list(&ListParams::default()).await }
    })
    .await;
    let err = refusal(
        as_dave
            .create(&PostParams::default(), &attachment("mine", None))
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
}

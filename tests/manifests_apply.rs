//! Every manifest a user installs is accepted by a real kube-apiserver (server-side apply,
//! dry run): `kubectl apply -k manifests` (built by the real kustomize, see
//! tests/helm/build.sh), the cert-manager and bring-your-own-PKI components, and the webhook
//! configuration certs-gen renders for the cluster. Re-applying the webhook configuration
//! keeps the caBundle the injector wrote.

mod support;

use kube::api::{Api, Patch, PatchParams};
use kube::discovery::Discovery;
use support::helm::{
    deployment_args, find, kustomize_build, kustomize_with_component, object_key, parsed_serve_args,
};
use support::impersonate::{self, Subject};
use support::manifests::{accept_all, apply_document, discovery_for, kustomized_documents, repo};
use support::{poll_until, ControlPlane};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;

fn kinds(docs: &[serde_yaml::Value]) -> Vec<String> {
    docs.iter().map(object_key).collect()
}

#[tokio::test]
async fn manifests_are_accepted_by_the_api_server() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let docs = kustomize_build(&repo("manifests"));
    // The whole install: nothing is left for certs-gen or a second command.
    for (kind, name) in [
        ("Namespace", "whisperer-system"),
        ("CustomResourceDefinition", "attachments.whisperer.dev"),
        ("Deployment", "whisperer-injector"),
        ("Service", "whisperer-injector"),
        ("MutatingWebhookConfiguration", "whisperer-injector"),
        ("Role", "whisperer-injector-tls"),
        ("ClusterRole", "whisperer-injector-webhook-ca"),
        ("ConfigMap", "whisperer-injector-config"),
    ] {
        find(&docs, kind, name);
    }
    let accepted = accept_all(&client, "kustomize build manifests", &docs).await;
    assert_eq!(
        accepted,
        docs.len(),
        "manifests/ renders only objects of our own API groups: {:?}",
        kinds(&docs)
    );

    // Self-managed TLS: no certificate to mount, no caBundle to overwrite.
    let (_, serve) = parsed_serve_args(&docs, "kustomize build manifests");
    assert_eq!(
        serve.managed_tls.tls_secret.as_deref(),
        Some("whisperer-injector-tls")
    );
    assert_eq!(serve.managed_tls.webhook_config, "whisperer-injector");
    let args = deployment_args(&docs);
    assert!(
        args.contains(&"--tls-secret=whisperer-injector-tls".to_string()),
        "{args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--tls-cert") || a.starts_with("--tls-key")),
        "{args:?}"
    );
    let webhook = find(&docs, "MutatingWebhookConfiguration", "whisperer-injector");
    for w in webhook["webhooks"].as_sequence().expect("webhooks") {
        assert!(
            w["clientConfig"].get("caBundle").is_none(),
            "{}: the shipped webhook must not name caBundle (a re-apply would wipe the injector's)",
            w["name"].as_str().unwrap_or_default()
        );
        assert_eq!(
            w["clientConfig"]["service"]["namespace"],
            "whisperer-system"
        );
    }

    // The emulation other tests apply manifests/ with (support::manifests) lists the same
    // objects as the real kustomize.
    let mut emulated: Vec<String> = kustomized_documents()
        .iter()
        .map(|(_, d)| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let mut real: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    emulated.sort();
    real.sort();
    assert_eq!(emulated, real);
}

/// The rights of self-managed TLS, exactly: RBAC cannot scope `create` by name, everything
/// else is on the one Secret (and a read of the agent token keys) and the one webhook
/// configuration.
#[test]
fn self_managed_tls_rights_are_scoped_to_its_own_objects() {
    let docs = kustomize_build(&repo("manifests"));
    let role = find(&docs, "Role", "whisperer-injector-tls");
    assert_eq!(role["metadata"]["namespace"], "whisperer-system");
    let rules = role["rules"].as_sequence().expect("rules");
    let verbs = |r: &serde_yaml::Value| -> Vec<String> {
        r["verbs"]
            .as_sequence()
            .expect("verbs")
            .iter()
            .map(|v| v.as_str().expect("verb").to_string())
            .collect()
    };
    assert_eq!(rules.len(), 4, "{rules:?}");
    for r in rules {
        if r["resources"] == serde_yaml::Value::from(vec!["leases"]) {
            // The keeper's Lease; its create is the leader-election Role's.
            assert_eq!(
                r["resourceNames"],
                serde_yaml::Value::from(vec!["whisperer-injector-tls"])
            );
            assert_eq!(verbs(r), ["get", "update"]);
            continue;
        }
        assert_eq!(r["resources"], serde_yaml::Value::from(vec!["secrets"]));
        if r["resourceNames"] == serde_yaml::Value::from(vec!["whisperer-agent-token-keys"]) {
            // Read to see whether the keeper must create the agent token keys; never written.
            assert_eq!(verbs(r), ["get"]);
        } else if r.get("resourceNames").is_some() {
            assert_eq!(
                r["resourceNames"],
                serde_yaml::Value::from(vec!["whisperer-injector-tls"])
            );
            assert_eq!(verbs(r), ["get", "list", "watch", "update"]);
        } else {
            assert_eq!(verbs(r), ["create"], "only create may be unscoped");
        }
    }
    let cr = find(&docs, "ClusterRole", "whisperer-injector-webhook-ca");
    let rules = cr["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["resources"],
        serde_yaml::Value::from(vec!["mutatingwebhookconfigurations"])
    );
    assert_eq!(
        rules[0]["resourceNames"],
        serde_yaml::Value::from(vec!["whisperer-injector"])
    );
    assert_eq!(verbs(&rules[0]), ["get", "patch"]);
    for (kind, name) in [
        ("RoleBinding", "whisperer-injector-tls"),
        ("ClusterRoleBinding", "whisperer-injector-webhook-ca"),
    ] {
        let b = find(&docs, kind, name);
        assert_eq!(b["subjects"][0]["name"], "whisperer-injector");
        assert_eq!(b["subjects"][0]["namespace"], "whisperer-system");
    }
}

/// `kubectl apply -k` again (server-side, the kubectl field manager) after the injector wrote
/// the caBundles (its own field manager): the caBundles stay, because the shipped file never
/// names the field.
#[tokio::test]
async fn reapplying_the_webhook_configuration_keeps_the_injected_ca_bundle() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let docs = kustomize_build(&repo("manifests"));
    let webhook = find(&docs, "MutatingWebhookConfiguration", "whisperer-injector").clone();
    let discovery = discovery_for(&client, std::slice::from_ref(&webhook)).await;
    apply_document(&discovery, &client, "webhook.yaml", &webhook, false).await;

    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let ca = certs_gen::generate(&certs_gen::CertRequest::new(
        "whisperer-injector",
        "whisperer-system",
    ))
    .expect("certs");
    let bundle = certs_gen::ca_bundle_b64(&ca.ca_cert_pem);
    let patch = serde_json::json!([
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": bundle},
    ]);
    // What the keeper sends (publish, src/tls/managed.rs): a JSON patch, by index.
    api.patch(
        "whisperer-injector",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).expect("JSON patch")),
    )
    .await
    .expect("the injector's caBundle patch");

    apply_document(&discovery, &client, "webhook.yaml", &webhook, false).await;
    let after = api.get("whisperer-injector").await.expect("get");
    for w in &after.webhooks.unwrap_or_default() {
        assert_eq!(
            w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
            Some(ca.ca_cert_pem.as_bytes().to_vec()),
            "{}: the re-apply removed or changed the caBundle",
            w.name
        );
    }
}

#[tokio::test]
async fn rendered_webhook_configuration_is_accepted_in_both_forms() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let certs = certs_gen::generate(&certs_gen::CertRequest::new(
        "whisperer-injector",
        "whisperer-system",
    ))
    .expect("certs");
    let template = std::fs::read_to_string(repo("webhook.yaml.tmpl")).expect("template");
    let service = certs_gen::TemplateValues {
        name: "whisperer-injector".into(),
        path: "/mutate".into(),
        port: 443,
        ..certs_gen::TemplateValues::for_service(&certs, "whisperer-injector", "whisperer-system")
    };
    let url = certs_gen::TemplateValues {
        name: "whisperer-injector-local".into(),
        ..certs_gen::TemplateValues::for_url(
            &certs,
            "https://127.0.0.1:8443/mutate",
            "whisperer-system",
        )
    };
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for values in [service, url] {
        let yaml = certs_gen::render_webhook(&template, &values).expect("renders");
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("YAML");
        apply_document(&discovery, &client, "webhook.yaml.tmpl", &doc, true).await;
    }
}

/// `manifests/cert-manager` and `manifests/provided-tls` on top of the base: the Deployment
/// serves the mounted Secret instead of managing one, the rights of self-managed TLS are
/// gone, and the rest is accepted by the API server.
#[tokio::test]
async fn tls_components_are_accepted_by_the_api_server() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    for component in ["cert-manager", "provided-tls"] {
        let docs = kustomize_with_component(component);
        let what = format!("manifests + manifests/{component}");
        let (_, serve) = parsed_serve_args(&docs, &what);
        assert!(
            serve.managed_tls.tls_secret.is_none() && serve.tls_cert.is_some(),
            "{what}"
        );
        let args = deployment_args(&docs);
        assert!(
            args.contains(&"--tls-cert=/etc/whisperer/tls/tls.crt".to_string()),
            "{what}: {args:?}"
        );
        assert!(
            args.contains(&"--tls-key=/etc/whisperer/tls/tls.key".to_string()),
            "{what}: {args:?}"
        );
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--tls-secret") || a.starts_with("--webhook-config")),
            "{what}: {args:?}"
        );
        let pod = &find(&docs, "Deployment", "whisperer-injector")["spec"]["template"]["spec"];
        let tls_volume = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "tls")
            .unwrap_or_else(|| panic!("{what}: no tls volume"));
        assert_eq!(
            tls_volume["secret"]["secretName"], "whisperer-injector-tls",
            "{what}"
        );
        assert!(
            pod["containers"][0]["volumeMounts"]
                .as_sequence()
                .expect("mounts")
                .iter()
                .any(|m| m["name"] == "tls" && m["mountPath"] == "/etc/whisperer/tls"),
            "{what}: tls not mounted"
        );
        for (kind, name) in [
            ("Role", "whisperer-injector-tls"),
            ("RoleBinding", "whisperer-injector-tls"),
            ("ClusterRole", "whisperer-injector-webhook-ca"),
            ("ClusterRoleBinding", "whisperer-injector-webhook-ca"),
        ] {
            assert!(
                !docs
                    .iter()
                    .any(|d| d["kind"] == kind && d["metadata"]["name"] == name),
                "{what}: {kind} {name} is for self-managed TLS only"
            );
        }
        let accepted = accept_all(&client, &what, &docs).await;
        assert!(accepted >= 15, "{what}: {:?}", kinds(&docs));

        let webhooks: Vec<_> = docs
            .iter()
            .filter(|d| d["kind"] == "MutatingWebhookConfiguration")
            .collect();
        match component {
            "cert-manager" => {
                // cainjector reads ca.crt of the Secret of the Certificate the annotation names,
                // the Secret the Deployment mounts.
                assert_eq!(webhooks.len(), 1);
                let from = webhooks[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                    .as_str()
                    .expect("cert-manager.io/inject-ca-from");
                let (ns, name) = from.split_once('/').expect("namespace/name");
                let cert = find(&docs, "Certificate", name);
                assert_eq!(cert["metadata"]["namespace"], ns);
                assert_eq!(cert["spec"]["secretName"], "whisperer-injector-tls");
                assert!(cert["spec"]["dnsNames"]
                    .as_sequence()
                    .expect("dnsNames")
                    .contains(&"whisperer-injector.whisperer-system.svc".into()));
                let issuer = find(&docs, "Issuer", cert["spec"]["issuerRef"]["name"].as_str().expect("issuer"));
                let ca = find(&docs, "Certificate", "whisperer-injector-ca");
                assert_eq!(issuer["spec"]["ca"]["secretName"], ca["spec"]["secretName"]);
                assert_eq!(ca["spec"]["isCA"], true);
            }
            _ => assert!(
                webhooks.is_empty(),
                "{what}: certs/webhook.yaml (with its caBundle) is the only source of the webhook configuration"
            ),
        }
    }
}

/// The shipped RBAC is all self-managed TLS needs: `serve --tls-secret` as the injector's
/// ServiceAccount, bound by manifests/ only (leader election on the keeper's own Lease
/// included), creates the Secret and writes the caBundle of the shipped webhook
/// configuration into both webhooks.
#[tokio::test]
async fn shipped_rbac_lets_the_injector_keep_its_tls() {
    let cp = ControlPlane::start().await;
    let client = cp.client();
    let docs = kustomize_build(&repo("manifests"));
    let real: Vec<serde_yaml::Value> = docs
        .iter()
        .filter(|d| {
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "MutatingWebhookConfiguration",
            ]
            .iter()
            .any(|k| d["kind"] == *k)
        })
        .cloned()
        .collect();
    let discovery = discovery_for(&client, &real).await;
    for d in &real {
        apply_document(&discovery, &client, "kustomize build manifests", d, false).await;
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let account = Subject::service_account("whisperer-system", "whisperer-injector");
    let kubeconfig = impersonate::kubeconfig_as(&cp, &account, dir.path());
    let kubeconfig = kubeconfig.display().to_string();
    let running = whisperer_injector::app::start(&support::https::serve_args(&[
        "--tls-secret",
        "whisperer-injector-tls",
        "--webhook-config",
        "whisperer-injector",
        "--agent-token-keys-secret",
        "whisperer-agent-token-keys",
        "--namespace",
        "whisperer-system",
        "--kubeconfig",
        &kubeconfig,
    ]))
    .await
    .expect("serve --tls-secret starts as the injector's ServiceAccount");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "whisperer-system");
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let ca = poll_until(
        support::WAIT,
        "the Secret and both caBundles written by the injector's own account",
        || {
            let (secrets, hooks) = (secrets.clone(), hooks.clone());
            async move {
                let s = secrets.get_opt("whisperer-injector-tls").await.ok()??;
                let ca = s.data?.get("ca.crt")?.0.clone();
                let mwc = hooks.get("whisperer-injector").await.ok()?;
                mwc.webhooks?
                    .iter()
                    .all(|w| w.client_config.ca_bundle.as_ref().map(|b| &b.0) == Some(&ca))
                    .then_some(ca)
            }
        },
    )
    .await;
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));
    // The agent token keys the Deployment mounts: created once, a 64-hex-digit key.
    let keys = poll_until(
        support::WAIT,
        "the agent token keys created by the injector's own account",
        || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt("whisperer-agent-token-keys").await.ok()??;
                s.data?.get("current").map(|k| k.0.clone())
            }
        },
    )
    .await;
    assert!(
        keys.len() == 64 && keys.iter().all(u8::is_ascii_hexdigit),
        "{:?}",
        String::from_utf8_lossy(&keys)
    );
    running.shutdown().await;
}

//! webhook.yaml.tmpl renders into a valid MutatingWebhookConfiguration; the Secret parses.

mod common;

use base64::Engine as _;
use certs_gen::{
    generate, render_webhook, secret_manifest, CertRequest, RenderError, TemplateValues,
};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::Secret;

/// Parses `yaml` as `T` and checks that nothing was dropped: a misspelled or unknown field
/// would vanish in the round trip.
fn parse_strict<T>(yaml: &str) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let parsed: T = serde_yaml::from_str(yaml).expect("parse as Kubernetes type");
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).expect("parse as YAML");
    let again = serde_yaml::to_value(&parsed).expect("serialize");
    assert_eq!(raw, again, "fields lost in round trip:\n{yaml}");
    parsed
}

fn check_common(hook: &MutatingWebhook, ca_pem: &str, namespace: &str) {
    assert_eq!(hook.name, "inject.whisperer.dev");
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.timeout_seconds, Some(5));
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"));
    let ca = hook.client_config.ca_bundle.as_ref().expect("caBundle");
    assert_eq!(ca.0, ca_pem.as_bytes(), "caBundle is the CA PEM");

    let rules = hook.rules.as_ref().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned()][..])
    );
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].api_versions.as_deref(),
        Some(&["v1".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    assert_eq!(rules[0].scope.as_deref(), Some("Namespaced"));

    let sel = hook.namespace_selector.as_ref().expect("namespaceSelector");
    let labels = sel.match_labels.as_ref().expect("matchLabels");
    assert_eq!(labels.get("injection").map(String::as_str), Some("enabled"));
    let exprs = sel.match_expressions.as_ref().expect("matchExpressions");
    assert_eq!(exprs.len(), 1);
    assert_eq!(exprs[0].key, "kubernetes.io/metadata.name");
    assert_eq!(exprs[0].operator, "NotIn");
    assert_eq!(
        exprs[0].values.as_deref().expect("values"),
        ["kube-system", "kube-public", "kube-node-lease", namespace]
    );
}

/// The second entry: Attachments get their requester recorded, through the same endpoint.
fn check_requester(hook: &MutatingWebhook, inject: &MutatingWebhook) {
    assert_eq!(hook.name, "requester.whisperer.dev");
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.timeout_seconds, Some(5));
    assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(
        hook.client_config, inject.client_config,
        "same endpoint as inject.whisperer.dev"
    );
    let rules = hook.rules.as_ref().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..])
    );
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["whisperer.dev".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["attachments".to_owned()][..])
    );
    // Not attachments/status: the reconciler's status writes are left alone.
    assert!(hook.namespace_selector.is_none());
}

#[test]
fn service_form() {
    let certs = generate(&CertRequest::default()).expect("generate");
    let values = TemplateValues::for_service(&certs, "whisperer-injector", "whisperer-system");
    let yaml = render_webhook(&common::template(), &values).expect("render");
    assert!(!yaml.contains("${"), "{yaml}");
    assert!(!yaml.contains("#@"), "{yaml}");
    let cfg: MutatingWebhookConfiguration = parse_strict(&yaml);
    assert_eq!(cfg.metadata.name.as_deref(), Some("whisperer-injector"));
    let hooks = cfg.webhooks.expect("webhooks");
    assert_eq!(hooks.len(), 2);
    check_common(&hooks[0], &certs.ca_cert_pem, "whisperer-system");
    check_requester(&hooks[1], &hooks[0]);
    let cc = &hooks[0].client_config;
    assert_eq!(cc.url, None);
    let svc = cc.service.as_ref().expect("service");
    assert_eq!(svc.name, "whisperer-injector");
    assert_eq!(svc.namespace, "whisperer-system");
    assert_eq!(svc.path.as_deref(), Some("/mutate"));
    assert_eq!(svc.port, Some(443));
}

#[test]
fn service_form_custom_values() {
    let certs = generate(&CertRequest::new("hook", "ops")).expect("generate");
    let values = TemplateValues {
        name: "my-hook".into(),
        path: "/inject".into(),
        port: 9443,
        ..TemplateValues::for_service(&certs, "hook", "ops")
    };
    let yaml = render_webhook(&common::template(), &values).expect("render");
    let cfg: MutatingWebhookConfiguration = parse_strict(&yaml);
    assert_eq!(cfg.metadata.name.as_deref(), Some("my-hook"));
    let hooks = cfg.webhooks.expect("webhooks");
    let hook = &hooks[0];
    check_common(hook, &certs.ca_cert_pem, "ops");
    check_requester(&hooks[1], hook);
    let svc = hook.client_config.service.as_ref().expect("service");
    assert_eq!((svc.name.as_str(), svc.namespace.as_str()), ("hook", "ops"));
    assert_eq!(svc.path.as_deref(), Some("/inject"));
    assert_eq!(svc.port, Some(9443));
}

#[test]
fn url_form() {
    let certs = generate(&CertRequest::default()).expect("generate");
    let values =
        TemplateValues::for_url(&certs, "https://127.0.0.1:8443/mutate", "whisperer-system");
    let yaml = render_webhook(&common::template(), &values).expect("render");
    let cfg: MutatingWebhookConfiguration = parse_strict(&yaml);
    let hooks = cfg.webhooks.expect("webhooks");
    let hook = &hooks[0];
    check_common(hook, &certs.ca_cert_pem, "whisperer-system");
    check_requester(&hooks[1], hook);
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some("https://127.0.0.1:8443/mutate")
    );
    assert!(hook.client_config.service.is_none());
}

#[test]
fn unknown_placeholder_is_named() {
    let tmpl = format!(
        "{}\n    objectSelector: ${{OBJECT_SELECTOR}}\n",
        common::template()
    );
    let certs = generate(&CertRequest::default()).expect("generate");
    let values = TemplateValues::for_service(&certs, "whisperer-injector", "whisperer-system");
    let err = render_webhook(&tmpl, &values).expect_err("unknown placeholder");
    match &err {
        RenderError::UnknownPlaceholders { placeholders } => {
            assert_eq!(placeholders.len(), 1);
            assert_eq!(placeholders[0].name, "OBJECT_SELECTOR");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("${OBJECT_SELECTOR}"), "{err}");
}

#[test]
fn missing_values_are_named() {
    // No CA bundle.
    let values = TemplateValues::default();
    let err = render_webhook(&common::template(), &values).expect_err("missing caBundle");
    assert!(
        matches!(&err, RenderError::MissingValues { placeholders }
            if placeholders.iter().map(|p| p.name.as_str()).collect::<Vec<_>>() == ["CA_BUNDLE"]),
        "{err:?}"
    );
    assert!(err.to_string().contains("${CA_BUNDLE}"), "{err}");

    // WEBHOOK_URL used outside the url section, url form not chosen.
    let tmpl = "a: ${CA_BUNDLE}\nb: ${WEBHOOK_URL}\nc: ${SERVICE_NAME}\n";
    let values = TemplateValues {
        ca_bundle_b64: "Q0E=".into(),
        service: String::new(),
        ..TemplateValues::default()
    };
    let err = render_webhook(tmpl, &values).expect_err("missing url");
    let msg = err.to_string();
    assert!(msg.contains("${WEBHOOK_URL} (line 2)"), "{msg}");
    assert!(msg.contains("${SERVICE_NAME} (line 3)"), "{msg}");
}

#[test]
fn secret_manifest_parses() {
    let certs = generate(&CertRequest::default()).expect("generate");
    let yaml = secret_manifest("whisperer-injector-tls", "whisperer-system", &certs);
    let secret: Secret = parse_strict(&yaml);
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("whisperer-injector-tls")
    );
    assert_eq!(
        secret.metadata.namespace.as_deref(),
        Some("whisperer-system")
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("data");
    let get = |k: &str| String::from_utf8(data.get(k).expect(k).0.clone()).expect("utf8");
    assert_eq!(get("tls.crt"), certs.cert_pem);
    assert_eq!(get("tls.key"), certs.key_pem);
    assert_eq!(get("ca.crt"), certs.ca_cert_pem);
    assert!(
        !data.contains_key("ca.key"),
        "the CA key stays out of the cluster"
    );
    assert_eq!(
        certs_gen::ca_bundle_b64(&certs.ca_cert_pem),
        base64::engine::general_purpose::STANDARD.encode(&certs.ca_cert_pem)
    );
}

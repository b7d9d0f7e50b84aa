//! Starts the webhook in-process with a certs-gen certificate and registers it with a real
//! kube-apiserver through a MutatingWebhookConfiguration rendered from webhook.yaml.tmpl.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use whisperer_injector::app::Running;

use super::{poll_until, ControlPlane, WAIT};

pub const PROFILES: &str = r#"
defaultProfile: default
profiles:
  default:
    image: ghcr.io/whisperer-dev/whisperer:v0.1.0
    args: ["--interface", "any"]
    env: [{name: WHISPERER_LOG, value: info}]
    securityContext: {capabilities: {add: [NET_RAW], drop: [ALL]}}
    volumeMounts: [{name: whisperer-captures, mountPath: /captures}]
    volumes: [{name: whisperer-captures, emptyDir: {sizeLimit: 256Mi}}]
    hostAliases:
      - {ip: 10.96.0.50, hostnames: [whisperer-collector.whisperer-system, collector]}
"#;

pub struct Injector {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl Injector {
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Starts `serve` on a free loopback port and registers it; returns once the API server
/// calls it (a dry-run probe pod comes back injected).
pub async fn start_and_register(cp: &ControlPlane, probe_ns: &str, extra: &[&str]) -> Injector {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = certs_gen::CertRequest::new("whisperer-injector", "whisperer-system");
    req.extra_ips = vec!["127.0.0.1".parse().expect("ip")];
    let certs = certs_gen::generate(&req).expect("certs-gen");
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(p("tls.crt"), &certs.cert_pem).expect("write");
    std::fs::write(p("tls.key"), &certs.key_pem).expect("write");
    std::fs::write(p("config.yaml"), PROFILES).expect("write");
    let (cert, key, config) = (p("tls.crt"), p("tls.key"), p("config.yaml"));
    let mut argv = vec!["--tls-cert", &cert, "--tls-key", &key, "--config", &config];
    argv.extend_from_slice(extra);
    let args = super::https::serve_args(&argv);
    let running = whisperer_injector::app::start(&args)
        .await
        .expect("webhook starts");
    let url = format!("https://127.0.0.1:{}/mutate", running.addr.port());
    register(cp, &url, Some(&certs)).await;
    wait_until_called(cp, probe_ns).await;
    Injector {
        running: Some(running),
        dir,
        url,
    }
}

/// Registers `url` through a MutatingWebhookConfiguration named `whisperer-injector`
/// rendered from webhook.yaml.tmpl; `certs: None` leaves the caBundle out (self-managed TLS
/// fills it).
pub async fn register(cp: &ControlPlane, url: &str, certs: Option<&certs_gen::GeneratedCerts>) {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/webhook.yaml.tmpl"))
            .expect("webhook.yaml.tmpl");
    let strip = certs.is_none();
    let placeholder;
    let certs = match certs {
        Some(c) => c,
        None => {
            placeholder = certs_gen::generate(&certs_gen::CertRequest::new(
                "whisperer-injector",
                "whisperer-system",
            ))
            .expect("certs-gen");
            &placeholder
        }
    };
    let values = certs_gen::TemplateValues {
        name: "whisperer-injector".into(),
        ..certs_gen::TemplateValues::for_url(certs, url.to_string(), "whisperer-system")
    };
    let yaml = certs_gen::render_webhook(&template, &values).expect("template renders");
    let mut config: MutatingWebhookConfiguration =
        serde_yaml::from_str(&yaml).expect("rendered YAML is a MutatingWebhookConfiguration");
    if strip {
        for w in config.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = None;
        }
    }
    let api = Api::<MutatingWebhookConfiguration>::all(cp.client());
    match api.create(&PostParams::default(), &config).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("register webhook: {e}"),
    }
}

/// Returns once the API server calls the webhook (a dry-run probe pod comes back injected);
/// it picks new webhook configurations and caBundles up asynchronously.
pub async fn wait_until_called(cp: &ControlPlane, probe_ns: &str) {
    let pods = Api::<Pod>::namespaced(cp.client(), probe_ns);
    poll_until(WAIT, "the API server to call the webhook", || {
        let pods = pods.clone();
        async move {
            let out = pods.create(&dry_run(), &pod("probe", true)).await.ok()?;
            has_whisperer(&out).then_some(())
        }
    })
    .await;
}

pub fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

/// A small pod; `opt_in` adds `whisperer.dev/inject: "true"`.
pub fn pod(name: &str, opt_in: bool) -> Pod {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}
    });
    if opt_in {
        v["metadata"]["annotations"] = json!({"whisperer.dev/inject": "true"});
    }
    serde_json::from_value(v).expect("pod")
}

pub fn whisperer_count(pod: &Pod) -> usize {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == "whisperer")
        .count()
}

pub fn has_whisperer(pod: &Pod) -> bool {
    whisperer_count(pod) == 1
}

pub fn marker(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get("whisperer.dev/injected")
        .cloned()
}

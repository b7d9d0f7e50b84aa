//! `whisperer-injector check`: is the webhook reachable from the API server, really? Sends a
//! server-side dry-run pod create (nothing is stored) into a namespace labelled for injection,
//! with the user's credentials, and tells whether the API server called the webhook and how
//! long that took; checks the registration's caBundle against the certificate served, and the
//! Service's ready endpoints. Private clusters (GKE firewalls 8443 from the control plane) and
//! NetworkPolicies show up here as "not called, took the whole timeout".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use serde_json::json;

use crate::explain::report::NAMESPACE_LABEL;
use crate::explain::WEBHOOK_NAME;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Client(#[from] crate::kubeclient::ClientError),
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("no namespace is labelled {}={}: label one (kubectl label namespace NS {}={}) or pass -n", NAMESPACE_LABEL.0, NAMESPACE_LABEL.1, NAMESPACE_LABEL.0, NAMESPACE_LABEL.1)]
    NoNamespace,
    #[error("cannot render the report: {0}")]
    Render(String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// A namespace labelled injection=enabled to send the dry-run pod to; default: the first.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Where the injector runs (its Service and TLS Secret).
    #[arg(long, default_value = "whisperer-system")]
    pub injector_namespace: String,
    /// Kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output: text or json.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn finding(check: &str, ok: bool, detail: String) -> Finding {
    Finding {
        check: check.into(),
        ok,
        detail,
    }
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> CheckError {
    move |source| CheckError::Kube { what, source }
}

fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect()
}

fn roots(ca_bundle: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_bundle) {
        let _ = roots.add(c);
    }
    roots
}

/// Whether `chain` (served or stored) verifies for `name` under the caBundle, as the API
/// server would check it.
fn verifies(ca_bundle: &[u8], chain: &[CertificateDer<'static>], name: &str) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca_bundle)),
        provider,
    )
    .build()
    .map_err(|e| format!("caBundle holds no usable CA: {e}"))?;
    let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
    let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, rest, &server, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The certificate chain an https URL serves (no verification: it is compared afterwards).
async fn served_chain(url: &str) -> Result<(String, Vec<CertificateDer<'static>>), String> {
    let rest = url.strip_prefix("https://").ok_or("not an https URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCert(provider)))
        .with_no_client_auth();
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| format!("connecting to {addr} timed out"))?
    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    Ok((host, chain))
}

async fn check_certificate(client: &Client, hook: &MutatingWebhook, injector_ns: &str) -> Finding {
    let ca = hook
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
        .unwrap_or_default();
    if ca.is_empty() {
        return finding(
            "caBundle",
            false,
            "the registration has an empty caBundle".into(),
        );
    }
    if let Some(url) = &hook.client_config.url {
        return match served_chain(url).await {
            Ok((host, chain)) => match verifies(&ca, &chain, &host) {
                Ok(()) => finding(
                    "caBundle",
                    true,
                    format!("the certificate {url} serves verifies under the caBundle"),
                ),
                Err(e) => finding(
                    "caBundle",
                    false,
                    format!("the certificate {url} serves does not verify under the caBundle: {e}"),
                ),
            },
            Err(e) => finding("caBundle", false, e),
        };
    }
    let Some(svc) = &hook.client_config.service else {
        return finding(
            "caBundle",
            false,
            "the registration names neither a URL nor a Service".into(),
        );
    };
    let name = format!("{}.{}.svc", svc.name, svc.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), injector_ns);
    match secrets.get_opt("whisperer-injector-tls").await {
        Ok(Some(s)) => {
            let crt = s.data.as_ref().and_then(|d| d.get("tls.crt")).map(|b| b.0.clone()).unwrap_or_default();
            match verifies(&ca, &pem_certs(&crt), &name) {
                Ok(()) => finding("caBundle", true, format!("the serving certificate (Secret whisperer-injector-tls) verifies for {name} under the caBundle")),
                Err(e) => finding("caBundle", false, format!("the serving certificate does not verify for {name} under the caBundle: {e}")),
            }
        }
        Ok(None) => finding("caBundle", false, "no Secret whisperer-injector-tls: the injector cannot serve".into()),
        Err(e) => finding("caBundle", true, format!("cannot read Secret whisperer-injector-tls with your credentials ({e}); not compared")),
    }
}

async fn check_endpoints(client: &Client, hook: &MutatingWebhook) -> Option<Finding> {
    let svc = hook.client_config.service.as_ref()?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &svc.namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", svc.name));
    Some(match slices.list(&lp).await {
        Ok(list) => {
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            finding(
                "service endpoints",
                ready > 0,
                format!(
                    "Service {}/{} has {ready} ready endpoint(s)",
                    svc.namespace, svc.name
                ),
            )
        }
        Err(e) => finding(
            "service endpoints",
            false,
            format!("cannot list endpoints: {e}"),
        ),
    })
}

/// Runs every check and renders the findings.
pub async fn run(args: &CheckArgs) -> Result<(bool, String), CheckError> {
    let client = crate::kubeclient::client(args.kubeconfig.as_deref()).await?;
    let mut out = Vec::new();
    let registration = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_NAME)
        .await
        .map_err(kube_err(format!(
            "cannot read MutatingWebhookConfiguration {WEBHOOK_NAME}"
        )))?;
    let hook = registration.as_ref().and_then(|r| {
        r.webhooks.iter().flatten().find(|w| {
            w.rules
                .iter()
                .flatten()
                .any(|r| r.resources.iter().flatten().any(|x| x == "pods"))
        })
    });
    match hook {
        Some(h) => {
            let target = match (&h.client_config.url, &h.client_config.service) {
                (Some(url), _) => url.clone(),
                (None, Some(s)) => format!("service {}/{}:{}{}", s.namespace, s.name, s.port.unwrap_or(443), s.path.as_deref().unwrap_or("")),
                _ => "nothing".into(),
            };
            out.push(finding("registration", true, format!("{WEBHOOK_NAME} calls {target} (failurePolicy {}, timeout {}s)", h.failure_policy.as_deref().unwrap_or("Fail"), h.timeout_seconds.unwrap_or(10))));
            out.push(check_certificate(&client, h, &args.injector_namespace).await);
            if let Some(f) = check_endpoints(&client, h).await {
                out.push(f);
            }
        }
        None => out.push(finding("registration", false, format!("no MutatingWebhookConfiguration {WEBHOOK_NAME} with a pod rule: kubectl apply -k manifests"))),
    }

    let ns = match &args.namespace {
        Some(ns) => ns.clone(),
        None => Api::<Namespace>::all(client.clone())
            .list(
                &ListParams::default()
                    .labels(&format!("{}={}", NAMESPACE_LABEL.0, NAMESPACE_LABEL.1)),
            )
            .await
            .map_err(kube_err("cannot list namespaces".into()))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .find(|n| {
                !crate::config::ALWAYS_DENIED.contains(&n.as_str()) && n != &args.injector_namespace
            })
            .ok_or(CheckError::NoNamespace)?,
    };
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "whisperer-check-", "annotations": {"whisperer.dev/inject": "true"}},
        "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .map_err(|e| CheckError::Render(e.to_string()))?;
    let started = Instant::now();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&dry, &probe)
        .await;
    let took = started.elapsed();
    let timeout =
        Duration::from_secs(hook.and_then(|h| h.timeout_seconds).unwrap_or(10).max(1) as u64);
    out.push(match created {
        Ok(p) => {
            let injected = p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::engine::ANNOTATION_INJECTED));
            let detail = if injected {
                format!("a dry-run pod in {ns} came back injected in {} ms", took.as_millis())
            } else if took + Duration::from_millis(500) >= timeout {
                format!("a dry-run pod in {ns} came back NOT injected after {} ms, about the webhook's timeout: the API server cannot reach the injector (firewall between the control plane and port 8443, e.g. GKE private clusters; a NetworkPolicy; no ready endpoints)", took.as_millis())
            } else {
                format!("a dry-run pod in {ns} came back NOT injected in {} ms: the call failed fast (TLS: compare the caBundle; or the injector skipped it: whisperer-injector explain -f)", took.as_millis())
            };
            finding("webhook called", injected, detail)
        }
        Err(e) => finding("webhook called", false, format!("the dry-run pod in {ns} was refused: {e}")),
    });
    let ok = out.iter().all(|f| f.ok);
    let text = if args.output == "json" {
        serde_json::to_string_pretty(&out).map_err(|e| CheckError::Render(e.to_string()))?
    } else {
        out.iter()
            .map(|f| {
                format!(
                    "{} {}: {}\n",
                    if f.ok { "ok  " } else { "FAIL" },
                    f.check,
                    f.detail
                )
            })
            .collect()
    };
    Ok((ok, text))
}

//! Reinvocation through the real API server: a second mutating webhook (started here, the
//! way Istio's injector behaves) prepends its own native sidecar after ours ran; the API
//! server calls ours again (`reinvocationPolicy: IfNeeded`) and the Whisperer ends up first.

use support::injector;
mod support;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use injector::start_and_register;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use support::ControlPlane;

/// The other webhook's answer: prepend `istio-proxy` unless the pod has it.
fn prepend(review: &Value) -> Value {
    let req = &review["request"];
    let inits = req["object"]["spec"]["initContainers"].as_array();
    let has = inits.is_some_and(|v| v.iter().any(|c| c["name"] == "istio-proxy"));
    let proxy = json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "restartPolicy": "Always"});
    let ops = match (has, inits) {
        (true, _) => json!([]),
        (false, Some(_)) => {
            json!([{"op": "add", "path": "/spec/initContainers/0", "value": proxy}])
        }
        (false, None) => json!([{"op": "add", "path": "/spec/initContainers", "value": [proxy]}]),
    };
    let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": req["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}
    })
}

/// Serves `prepend` over TLS on loopback until the returned task is aborted.
async fn start_other_webhook() -> (String, String, tokio::task::JoinHandle<()>) {
    let mut req = certs_gen::CertRequest::new("prepender", "test");
    req.extra_ips = vec!["127.0.0.1".parse().expect("ip")];
    let certs = certs_gen::generate(&req).expect("certs");
    let chain = rustls_pemfile::certs(&mut certs.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = rustls_pemfile::private_key(&mut certs.key_pem.as_bytes())
        .expect("key")
        .expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}/prepend",
        listener.local_addr().expect("addr").port()
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|r: hyper::Request<hyper::body::Incoming>| async move {
                    let body = r.into_body().collect().await?.to_bytes();
                    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let answer = prepend(&review).to_string();
                    Ok::<_, hyper::Error>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(answer)))
                            .unwrap_or_default(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (url, certs.ca_cert_pem, task)
}

#[tokio::test]
async fn a_prepended_native_sidecar_does_not_push_the_whisperer_back() {
    let cp = ControlPlane::start().await;
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let mut ours = start_and_register(&cp, &ns, &[]).await;
    let (url, ca, other) = start_other_webhook().await;
    // Named after ours, so the API server calls it second; it never asks to be reinvoked.
    let registration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-prepender"},
        "webhooks": [{
            "name": "prepend.example.com", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca)},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"injection": "enabled"}},
            "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "Never"
        }]
    }))
    .expect("registration");
    Api::<MutatingWebhookConfiguration>::all(cp.client())
        .create(&PostParams::default(), &registration)
        .await
        .expect("register the other webhook");

    // A Job's pod gets the native sidecar (sidecarMode auto).
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    let mut job_pod = injector::pod("batch", true);
    job_pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "name": "nightly", "uid": "8d0c1f3e-1111-4a2b-9c3d-000000000001", "controller": true
    })).expect("owner")]);
    let names = |p: &Pod| -> Vec<String> {
        p.spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .map(|v| v.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    };
    // The other webhook's registration is picked up asynchronously: dry runs until it acts.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    support::poll_until(support::WAIT, "both webhooks to be called", || {
        let (pods, job_pod, dry) = (pods.clone(), job_pod.clone(), dry.clone());
        async move {
            let p = pods.create(&dry, &job_pod).await.ok()?;
            names(&p).contains(&"istio-proxy".to_string()).then_some(())
        }
    })
    .await;
    let stored = pods
        .create(&PostParams::default(), &job_pod)
        .await
        .expect("create");
    assert_eq!(
        names(&stored),
        ["whisperer", "istio-proxy"],
        "the Whisperer starts first, and nothing is doubled"
    );
    other.abort();
    ours.stop().await;
}

//! The webhook over real TLS on loopback: HTTP/1.1 and h2, fixture AdmissionReviews, bad
//! input, certificate rotation, config reload and graceful shutdown.

use support::https;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::poll_until;
use whisperer_injector::tls::self_signed;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    /// Writes a file the way a kubelet updates a Secret volume: new file, then rename.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename");
    }
}

/// A poll loop for bodies that need `&mut` state: `while !cond { d.tick().await }`.
struct Deadline {
    what: &'static str,
    until: Instant,
}

impl Deadline {
    fn new(what: &'static str) -> Deadline {
        Deadline {
            what,
            until: Instant::now() + support::WAIT,
        }
    }
    async fn tick(&self) {
        assert!(
            Instant::now() < self.until,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn answers_fixture_reviews_over_http1_and_h2() {
    let (running, ca) = https::started(&[]).await;
    for h2 in [false, true] {
        let mut conn = https::connect(running.addr, &ca, h2)
            .await
            .expect("handshake");
        let review_text = https::fixture("review-pod-optin.json");
        let review: Value = serde_json::from_str(&review_text).expect("json");
        let ans = conn
            .post("/mutate", "application/json", review_text.clone())
            .await;
        assert_eq!(ans.status, 200, "{:?}", ans.body);
        let out = ans.json();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], review["request"]["uid"]);
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let pod = https::apply_response_patch(&review, &out);
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["checkout", "whisperer"]);
        assert!(pod["metadata"]["annotations"]["whisperer.dev/injected"]
            .as_str()
            .expect("marker")
            .starts_with("profile=default,hash="));
        let typed: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(pod).expect("typed pod");
        assert!(typed.spec.is_some());

        // Several requests on the same connection (keep-alive / multiplexed streams).
        for name in [
            "review-pod-not-requested.json",
            "review-configmap.json",
            "review-pod-update.json",
        ] {
            let text = https::fixture(name);
            let ans = conn.post("/mutate", "application/json", text.clone()).await;
            assert_eq!(ans.status, 200, "{name}");
            let out = ans.json();
            let sent: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(out["response"]["uid"], sent["request"]["uid"], "{name}");
            assert_eq!(out["response"]["allowed"], true, "{name}");
            assert!(
                out["response"].get("patch").is_none(),
                "{name} must not be patched"
            );
        }
    }
    running.shutdown().await;
}

#[tokio::test]
async fn skip_reasons_and_problems_are_reported() {
    let (running, ca) = https::started(&[]).await;
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let cases = [
        ("review-pod-not-requested.json", "not-requested", false),
        ("review-pod-opted-out.json", "opted-out", false),
        ("review-configmap.json", "not-a-pod", false),
        ("review-pod-update.json", "not-create", false),
        ("review-pod-unknown-profile.json", "unknown-profile", true),
    ];
    for (fixture, reason, warns) in cases {
        let out = conn
            .post("/mutate", "application/json", https::fixture(fixture))
            .await
            .json();
        let resp = &out["response"];
        assert_eq!(resp["allowed"], true, "{fixture}");
        assert_eq!(resp["auditAnnotations"]["skip-reason"], reason, "{fixture}");
        let warnings = resp["warnings"].as_array().cloned().unwrap_or_default();
        assert_eq!(!warnings.is_empty(), warns, "{fixture}: {warnings:?}");
        if warns {
            assert!(warnings[0]
                .as_str()
                .expect("str")
                .contains("does-not-exist"));
        }
    }
    // dryRun: same answer as the real request.
    let dry = conn
        .post(
            "/mutate",
            "application/json",
            https::fixture("review-pod-dryrun.json"),
        )
        .await
        .json();
    let real = conn
        .post(
            "/mutate",
            "application/json",
            https::fixture("review-pod-optin.json"),
        )
        .await
        .json();
    assert_eq!(dry["response"]["patch"], real["response"]["patch"]);
    let metrics = https::metrics(running.admin_addr).await;
    assert!(
        metrics.contains(
            r#"whisperer_webhook_requests_total{outcome="skipped",reason="unknown-profile"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"whisperer_webhook_requests_total{outcome="injected",reason="none"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("whisperer_webhook_request_duration_seconds_bucket"));
    assert!(metrics.contains("whisperer_tls_certificate_expiry_timestamp_seconds"));
    running.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let (running, ca) = https::started(&[]).await;
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let optin = https::fixture("review-pod-optin.json");
    let mut no_uid: Value = serde_json::from_str(&optin).expect("json");
    no_uid["request"]
        .as_object_mut()
        .expect("obj")
        .remove("uid");
    let mut v1beta1: Value = serde_json::from_str(&optin).expect("json");
    v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_request: Value = serde_json::from_str(&optin).expect("json");
    no_request.as_object_mut().expect("obj").remove("request");
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let mut deep_object: Value = serde_json::from_str(&optin).expect("json");
    deep_object["request"]["object"] = Value::Null;
    let deep_object = deep_object.to_string().replace(
        "\"object\":null",
        &format!(
            "\"object\":{}",
            "{\"a\":".repeat(50_000) + "1" + &"}".repeat(50_000)
        ),
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "not JSON",
            "application/json",
            "hello".into(),
            400,
            "invalid-json",
        ),
        (
            "truncated",
            "application/json",
            optin[..optin.len() / 2].to_string(),
            400,
            "invalid-json",
        ),
        (
            "absurdly nested",
            "application/json",
            nested,
            400,
            "invalid-json",
        ),
        // Skipped without recursion; no `spec`, so not a pod.
        (
            "absurdly nested object",
            "application/json",
            deep_object,
            422,
            "invalid-pod",
        ),
        (
            "not a review",
            "application/json",
            r#"{"hello":"world"}"#.into(),
            400,
            "api-version",
        ),
        (
            "no request",
            "application/json",
            no_request.to_string(),
            400,
            "no-request",
        ),
        (
            "no uid",
            "application/json",
            no_uid.to_string(),
            400,
            "no-uid",
        ),
        (
            "v1beta1",
            "application/json",
            v1beta1.to_string(),
            400,
            "api-version",
        ),
        (
            "pod does not parse",
            "application/json",
            https::fixture("review-pod-malformed.json"),
            422,
            "invalid-pod",
        ),
        (
            "wrong content-type",
            "text/plain",
            optin.clone(),
            415,
            "content-type",
        ),
    ];
    for (name, ct, body, status, kind) in cases {
        let ans = conn.post("/mutate", ct, body).await;
        assert_eq!(
            ans.status,
            status,
            "{name}: {:?}",
            String::from_utf8_lossy(&ans.body)
        );
        let err = ans.json();
        assert_eq!(err["error"], kind, "{name}");
        assert!(
            !err["message"].as_str().expect("message").is_empty(),
            "{name}"
        );
    }
    let get = conn.get("/mutate").await;
    assert_eq!(get.status, 405);
    assert_eq!(get.json()["error"], "method");

    // Over the cap: refused before parsing, connection may be closed; use a fresh one.
    let mut big_conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let big = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(whisperer_injector::webhook::MAX_BODY_BYTES)
    );
    let ans = big_conn.post("/mutate", "application/json", big).await;
    assert_eq!(ans.status, 413);
    assert_eq!(ans.json()["error"], "too-large");

    // The server is still healthy after all that.
    let mut conn = https::connect(running.addr, &ca, true)
        .await
        .expect("handshake");
    assert_eq!(conn.get("/healthz").await.status, 200);
    assert_eq!(conn.get("/readyz").await.status, 200);
    let ok = conn.post("/mutate", "application/json", optin).await;
    assert_eq!(ok.status, 200);
    running.shutdown().await;
}

#[tokio::test]
async fn pod_with_1500_env_vars_is_answered() {
    let (running, ca) = https::started(&[]).await;
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let text = https::fixture("review-pod-1500-env.json");
    let review: Value = serde_json::from_str(&text).expect("json");
    let out = conn.post("/mutate", "application/json", text).await.json();
    let pod = https::apply_response_patch(&review, &out);
    assert_eq!(
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .len(),
        1500
    );
    running.shutdown().await;
}

#[tokio::test]
async fn stalled_client_gets_a_timeout_not_a_hang() {
    use tokio::io::AsyncWriteExt;
    let (running, ca) = https::started(&["--request-timeout", "300ms"]).await;
    let connector = tokio_rustls::TlsConnector::from(https::client_config(&ca, &["http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\":")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
    )
    .await
    .expect("server answers before the client gives up")
    .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("\"error\":\"timeout\""), "{head}");
    // The 300 ms deadline, not the 120 s idle timeout (slack for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    running.shutdown().await;
}

fn write_pair(files: &Files, cert: &str, key: &str) {
    files.write("tls.key", key);
    files.write("tls.crt", cert);
}

#[tokio::test]
async fn rotates_certificates_without_dropping_connections() {
    let first = self_signed().expect("cert");
    let second = self_signed().expect("cert");
    let files = Files::new();
    write_pair(&files, &first.cert_pem, &first.key_pem);
    let (cert, key) = (files.path("tls.crt"), files.path("tls.key"));
    let running = whisperer_injector::app::start(&https::serve_args(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]))
    .await
    .expect("server starts");
    assert!(running.generated_ca.is_none());

    let mut old_h1 = https::connect(running.addr, &first.ca_pem, false)
        .await
        .expect("trusts first CA");
    let mut old_h2 = https::connect(running.addr, &first.ca_pem, true)
        .await
        .expect("trusts first CA");
    let refused = https::connect(running.addr, &second.ca_pem, false).await;
    assert!(
        refused.is_err(),
        "a client trusting another CA must be refused"
    );
    let err = refused.err().unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    write_pair(&files, &second.cert_pem, &second.key_pem);
    let new_conn = poll_until(
        support::WAIT,
        "the new certificate to be served",
        || async {
            https::connect(running.addr, &second.ca_pem, false)
                .await
                .ok()
        },
    )
    .await;
    assert_ne!(new_conn.peer_cert, old_h1.peer_cert);
    assert!(
        https::connect(running.addr, &first.ca_pem, false)
            .await
            .is_err(),
        "old CA no longer matches"
    );

    // Connections opened before the rotation keep working.
    let review = https::fixture("review-pod-optin.json");
    assert_eq!(
        old_h1
            .post("/mutate", "application/json", review.clone())
            .await
            .status,
        200
    );
    assert_eq!(
        old_h2
            .post("/mutate", "application/json", review)
            .await
            .status,
        200
    );

    // A broken pair is rejected and the current certificate stays. (The rotation above may
    // have counted a failure already, had a reload read the new key beside the old certificate.)
    let failures = |m: &str| {
        https::sample(
            m,
            r#"whisperer_reloads_total{kind="certificate",result="failure"}"#,
        )
        .unwrap_or(0.0)
    };
    let before = failures(&https::metrics(running.admin_addr).await);
    files.write("tls.crt", "not a certificate");
    let d = Deadline::new("the failed reload to be counted");
    let metrics = loop {
        let m = https::metrics(running.admin_addr).await;
        if failures(&m) > before {
            break m;
        }
        d.tick().await;
    };
    assert!(
        metrics.contains(r#"whisperer_reloads_total{kind="certificate",result="success"} 1"#),
        "{metrics}"
    );
    assert!(https::connect(running.addr, &second.ca_pem, true)
        .await
        .is_ok());
    running.shutdown().await;
}

fn image_in_patch(out: &Value, review: &Value) -> String {
    let pod = https::apply_response_patch(review, out);
    pod["spec"]["containers"][1]["image"]
        .as_str()
        .expect("image")
        .to_string()
}

#[tokio::test]
async fn reloads_config_and_keeps_the_last_good_one() {
    let files = Files::new();
    let config = |image: &str| {
        format!("defaultProfile: default\nprofiles:\n  default:\n    image: {image}\n")
    };
    files.write("config.yaml", &config("example.com/whisperer:one"));
    let path = files.path("config.yaml");
    let (running, ca) = https::started(&["--config", &path]).await;
    let mut conn = https::connect(running.addr, &ca, false)
        .await
        .expect("handshake");
    let text = https::fixture("review-pod-optin.json");
    let review: Value = serde_json::from_str(&text).expect("json");
    let out = conn
        .post("/mutate", "application/json", text.clone())
        .await
        .json();
    assert_eq!(image_in_patch(&out, &review), "example.com/whisperer:one");

    files.write("config.yaml", &config("example.com/whisperer:two"));
    let d = Deadline::new("the new image to be injected");
    loop {
        let out = conn
            .post("/mutate", "application/json", text.clone())
            .await
            .json();
        if image_in_patch(&out, &review) == "example.com/whisperer:two" {
            break;
        }
        d.tick().await;
    }

    files.write("config.yaml", "defaultProfile: missing\nprofiles: {}\n");
    let d = Deadline::new("the bad config to be rejected");
    loop {
        let m = https::metrics(running.admin_addr).await;
        if m.contains(r#"whisperer_reloads_total{kind="config",result="failure"} 1"#) {
            break;
        }
        d.tick().await;
    }
    let out = conn.post("/mutate", "application/json", text).await.json();
    assert_eq!(
        image_in_patch(&out, &review),
        "example.com/whisperer:two",
        "last good config stays"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn invalid_config_file_is_refused_at_start_naming_the_field() {
    let files = Files::new();
    files.write("config.yaml", "defaultProfile: default\nprofiles:\n  default:\n    image: x\n    hostAliases: [{ip: nope, hostnames: [a]}]\n");
    let path = files.path("config.yaml");
    let err = whisperer_injector::app::start(&https::serve_args(&["--config", &path]))
        .await
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&path) && msg.contains("profiles.default.hostAliases[0].ip"),
        "{msg}"
    );
    assert!(!Path::new(&files.path("nothing")).exists());
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (running, ca) = https::started(&[]).await;
    let connector = tokio_rustls::TlsConnector::from(https::client_config(&ca, &["http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    let body = https::fixture("review-pod-optin.json");
    let (first, rest) = body.split_at(100);
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(first.as_bytes()).await.expect("write");
    tls.flush().await.expect("flush");
    let d = Deadline::new("the server to be reading the request");
    while !https::metrics(running.admin_addr)
        .await
        .contains("whisperer_webhook_requests_in_flight 1")
    {
        d.tick().await;
    }
    let addr = running.addr;
    let stopping = tokio::spawn(running.shutdown());
    // New connections are refused once shutdown has started.
    poll_until(support::WAIT, "the listener to close", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    tls.write_all(rest.as_bytes()).await.expect("write rest");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap_or_else(|e| {
                eprintln!("read error: {e}");
                0
            });
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if String::from_utf8_lossy(&buf).contains("\"allowed\":true") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("705ab4f5-6393-11e8-b7cc-42010a800002"),
        "{text}"
    );
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("drained")
        .expect("join");
}

#[tokio::test]
async fn status_and_metrics_are_on_the_admin_listener_only() {
    let (running, ca) = https::started(&[]).await;
    let report = https::admin_get(running.admin_addr, "/status").await.json();
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert!(report["process"]["rssBytes"].as_u64().expect("rss") > 0);
    assert!(report["uptimeSeconds"].as_f64().expect("uptime") >= 0.0);
    assert_eq!(report["components"][0], "webhook");
    assert!(https::metrics(running.admin_addr)
        .await
        .contains("whisperer_webhook_requests_in_flight"));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            https::admin_get(running.admin_addr, probe).await.status,
            200
        );
    }

    // The HTTPS port, which anything that reaches the Service can call, has neither.
    for h2 in [false, true] {
        let mut conn = https::connect(running.addr, &ca, h2)
            .await
            .expect("handshake");
        for path in ["/status", "/metrics"] {
            let ans = conn.get(path).await;
            assert_eq!(ans.status, 404, "{path} on the webhook port");
            assert_eq!(ans.json()["error"], "not-found");
        }
        assert_eq!(conn.get("/healthz").await.status, 200);
        assert_eq!(conn.get("/readyz").await.status, 200);
    }

    // The status command reads the admin listener.
    let admin_url = format!("http://127.0.0.1:{}", running.admin_addr.port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_whisperer-injector"))
        .args(["status", "--url", &admin_url])
        .output()
        .await
        .expect("run status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("whisperer-injector")
            && text.contains("rss")
            && text.contains("attachments: none"),
        "{text}"
    );

    // Over https (a TLS proxy in front of the admin port) --cacert verifies the server: the
    // webhook port stands in for such a proxy; it answers 404, as it has no /status.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write");
    let https_url = format!("https://localhost:{}", running.addr.port());
    let status = |ca_file: std::path::PathBuf| {
        let url = https_url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_whisperer-injector"))
                .args(["status", "--url", &url, "--cacert"])
                .arg(ca_file)
                .output()
                .await
                .expect("run status")
        }
    };
    let out = status(ca_file.clone()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("server answered 404"), "{err}");

    // A CA that did not sign the server's certificate is refused with a clear error.
    let other = self_signed().expect("cert");
    std::fs::write(&ca_file, &other.ca_pem).expect("write");
    let out = status(ca_file).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    running.shutdown().await;
}

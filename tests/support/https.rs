//! A small HTTPS client for the webhook tests: one connection per `Conn`, HTTP/1.1 or h2 by
//! ALPN, trusting exactly the CA it is given, so tests can hold a connection open across a
//! certificate rotation; plain HTTP for the admin listener; raw TLS streams for tests that
//! write bytes themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

pub struct Conn {
    pub sender: Sender,
    /// The certificate the server presented on this connection.
    pub peer_cert: Vec<u8>,
    /// The task driving the connection: it ends when the server closes it.
    pub driver: tokio::task::JoinHandle<()>,
}

pub fn client_config(ca_pem: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Connects and completes the TLS handshake; `Err` carries the handshake error text.
pub async fn connect(addr: SocketAddr, ca_pem: &str, h2: bool) -> Result<Conn, String> {
    let alpn: &[&str] = if h2 { &["h2"] } else { &["http/1.1"] };
    let connector = TlsConnector::from(client_config(ca_pem, alpn));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let negotiated_h2 = session.alpn_protocol() == Some(b"h2");
    assert_eq!(negotiated_h2, h2, "ALPN must give the protocol asked for");
    let (sender, driver) = over(tls, h2).await?;
    Ok(Conn {
        sender,
        peer_cert,
        driver,
    })
}

/// Plain HTTP/1.1 (the admin listener).
pub async fn connect_plain(addr: SocketAddr) -> Result<Conn, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (sender, driver) = over(tcp, false).await?;
    Ok(Conn {
        sender,
        peer_cert: Vec::new(),
        driver,
    })
}

async fn over<T>(io: T, h2: bool) -> Result<(Sender, tokio::task::JoinHandle<()>), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (s, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((Sender::H2(s), driver))
    } else {
        let (s, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((Sender::H1(s), driver))
    }
}

/// A TLS stream with the given ALPN, for tests that write the protocol bytes themselves.
pub async fn raw_tls(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = TlsConnector::from(client_config(ca_pem, &[alpn]));
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// `GET path` on the admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Answer {
    let mut conn = connect_plain(admin).await.expect("admin listener");
    conn.get(path).await
}

/// The Prometheus text of the admin listener's `/metrics`.
pub async fn metrics(admin: SocketAddr) -> String {
    let ans = admin_get(admin, "/metrics").await;
    assert_eq!(ans.status, 200, "/metrics on the admin listener");
    String::from_utf8(ans.body.to_vec()).expect("metrics are UTF-8")
}

/// The value of a sample in Prometheus text (see `support::metrics`).
#[allow(unused_imports)] // not every test binary reads samples
pub use super::metrics::sample;

pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Conn {
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let resp: Response<hyper::body::Incoming> = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
            Sender::H2(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .expect("body within 30s")
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&mut self, path: &str, content_type: &str, body: impl Into<Bytes>) -> Answer {
        let req = Request::post(format!("https://localhost{path}"))
            .header("content-type", content_type)
            .header("host", "localhost")
            .body(Full::new(body.into()))
            .expect("request");
        self.send(req).await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let req = Request::get(format!("https://localhost{path}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.send(req).await
    }
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Decodes `response.patch` (base64 JSON patch) and applies it to the review's pod.
pub fn apply_response_patch(
    review: &serde_json::Value,
    response: &serde_json::Value,
) -> serde_json::Value {
    use base64::Engine;
    let b64 = response["response"]["patch"]
        .as_str()
        .expect("patch present");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("patch is RFC 6902");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("patch applies to the pod");
    pod
}

/// `serve` flags for a webhook-only server on loopback (both listeners on free ports); `extra`
/// may turn the reconciler or the Pod Security watch on.
pub fn serve_args(extra: &[&str]) -> whisperer_injector::cli::ServeArgs {
    let mut argv = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--dns",
        "off",
        "--reload-interval",
        "100ms",
    ];
    // Webhook only, unless the test turns the reconciler on (with its own --kubeconfig).
    if !extra.contains(&"--reconciler") {
        argv.extend(["--reconciler", "off"]);
    }
    // Never reach for ~/.kube/config from a test: a test that wants the namespace watch
    // names its own control plane with --kubeconfig.
    if !extra.contains(&"--pod-security-check") {
        argv.extend(["--pod-security-check", "off"]);
    }
    argv.extend_from_slice(extra);
    whisperer_injector::cli::ServeArgs::from_flags(argv).expect("flags parse")
}

/// A started webhook with a generated certificate, and the CA that signed it.
pub async fn started(extra: &[&str]) -> (whisperer_injector::app::Running, String) {
    let running = whisperer_injector::app::start(&serve_args(extra))
        .await
        .expect("server starts");
    let ca = running.generated_ca.clone().expect("generated CA");
    (running, ca)
}

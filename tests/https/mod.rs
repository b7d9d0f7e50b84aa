//! A small HTTPS client for the webhook tests: one connection per `Conn`, HTTP/1.1 or h2 by
//! ALPN, trusting exactly the CA it is given, so tests can hold a connection open across a
//! certificate rotation.
#![allow(dead_code)]

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
    let io = TokioIo::new(tls);
    let sender = if h2 {
        let (s, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H1(s)
    };
    Ok(Conn { sender, peer_cert })
}

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
        let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("body within 10s")
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

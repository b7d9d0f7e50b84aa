//! The `status` subcommand: fetch `/status` from the admin listener and print it for people.

use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::StatusReport;

#[derive(Debug, thiserror::Error)]
pub enum StatusClientError {
    #[error("--url {0:?} must look like http://host:port (or https://)")]
    Url(String),
    #[error("cannot read CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{0}")]
    Http(String),
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("answer is not a status report: {0}")]
    Decode(String),
}

/// Fetches the report from the admin listener (`http://`), or over `https://` (e.g. a
/// TLS-terminating proxy in front of it). `ca_pem` None trusts any certificate; give
/// `--cacert` for anything real.
pub async fn fetch(url: &str, ca_pem: Option<&str>) -> Result<StatusReport, StatusClientError> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(StatusClientError::Url(url.to_string()));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addr = if authority.contains(':') {
        authority.to_string()
    } else if tls {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    let connect_error = |e: &dyn std::fmt::Display| StatusClientError::Connect {
        addr: addr.clone(),
        message: e.to_string(),
    };
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| connect_error(&e))?;
    let (status, body) = if tls {
        let config = client_config(ca_pem)?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| StatusClientError::Url(url.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| connect_error(&e))?;
        get_status(stream, authority).await?
    } else {
        get_status(tcp, authority).await?
    };
    if status != 200 {
        return Err(StatusClientError::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| StatusClientError::Decode(e.to_string()))
}

async fn get_status<T>(stream: T, authority: &str) -> Result<(u16, Bytes), StatusClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| StatusClientError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/status")
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| StatusClientError::Http(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    Ok((status, body))
}

fn client_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, StatusClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StatusClientError::Http(e.to_string()))?;
    let cfg = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| StatusClientError::Ca {
                    path: "--cacert".into(),
                    message: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| StatusClientError::Ca {
                    path: "--cacert".into(),
                    message: e.to_string(),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCert(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

pub fn render_text(r: &StatusReport) -> String {
    let mut out = String::new();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(
        out,
        "whisperer-injector {}  up {:.0}s  components: {}",
        r.version,
        r.uptime_seconds,
        r.components.join(", ")
    );
    let _ = writeln!(
        out,
        "process: cpu {:.2}s  rss {:.1} MiB  peak {:.1} MiB",
        r.process.cpu_seconds,
        mb(r.process.rss_bytes),
        mb(r.process.peak_rss_bytes)
    );
    if !r.watched.is_empty() {
        let w: Vec<String> = r.watched.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let _ = writeln!(out, "watched: {}", w.join("  "));
    }
    if r.attachments.is_empty() {
        let _ = writeln!(out, "attachments: none");
    }
    for a in &r.attachments {
        let _ = writeln!(
            out,
            "attachment {}/{}  {}  expires {}  pods {}",
            a.namespace,
            a.name,
            a.phase,
            a.expires_at.as_deref().unwrap_or("never"),
            a.pods.len()
        );
        for p in &a.pods {
            let _ = writeln!(out, "  {:<40} {:<40} {}", p.pod, p.container, p.state);
        }
    }
    out
}

//! The injector's agent control API (`WHISPERER_CONTROL_URL`): `GET` with the bearer token
//! answers `{"action":"run","deadline":...}` or `{"action":"stop","reason":...}`. Polled
//! every `--control-interval` (±20% jitter, so a thousand agents attached at once do not ask
//! in step); errors back off and are logged once per change of state. The deadline is kept
//! by the caller, so an unreachable API never keeps an agent alive past it.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, PollLabels, PollResult};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read the control API CA {path}: {source}")]
    ReadCa {
        path: String,
        source: std::io::Error,
    },
    #[error("the control API CA holds no usable certificate")]
    NoCa,
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid control URL {0:?}")]
    Url(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("the control API answered HTTP {0}")]
    Status(u16),
    #[error("the control API answer is not understood: {0}")]
    Answer(String),
    #[error("timed out")]
    Timeout,
}

pub type HttpClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// An HTTP(S) client trusting `ca_pem` if given, else the system roots.
pub fn https_client<B>(ca_pem: Option<&[u8]>) -> Result<HttpClient<B>, ControlError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut &pem[..]).flatten() {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ControlError::NoCa);
            }
        }
        None => {
            for cert in rustls_native_certs_load() {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = builder.with_root_certificates(roots).with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    // Idle connections close after a few seconds: a poll every 10 s then holds none of the
    // injector's capped connection slots between polls, while a busy collector keeps its own.
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(5))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector))
}

/// The system's CA certificates (none in a scratch image: then only --control-ca works).
fn rustls_native_certs_load() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let mut out = Vec::new();
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(pem) = std::fs::read(path) {
            out.extend(rustls_pemfile::certs(&mut &pem[..]).flatten());
            break;
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run { deadline: Option<jiff::Timestamp> },
    Stop { reason: String },
}

#[derive(Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    deadline: Option<String>,
}

pub fn parse_answer(body: &[u8]) -> Result<Verdict, ControlError> {
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| ControlError::Answer(e.to_string()))?;
    match a.action.as_str() {
        "run" => Ok(Verdict::Run {
            deadline: a.deadline.and_then(|d| d.parse().ok()),
        }),
        "stop" => Ok(Verdict::Stop {
            reason: a.reason.unwrap_or_else(|| "stop".into()),
        }),
        other => Err(ControlError::Answer(format!("unknown action {other:?}"))),
    }
}

pub async fn ask(
    client: &HttpClient<Empty<Bytes>>,
    url: &str,
    token: &str,
) -> Result<Verdict, ControlError> {
    let uri: hyper::Uri = url.parse().map_err(|_| ControlError::Url(url.into()))?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            hyper::header::USER_AGENT,
            concat!("whisperer/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| ControlError::Request(e.to_string()))?;
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| ControlError::Request(format!("{e:#}")))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ControlError::Request(e.to_string()))?
            .to_bytes();
        if status != 200 {
            return Err(ControlError::Status(status));
        }
        parse_answer(&body)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| ControlError::Timeout)?
}

/// What the poller tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    Deadline(jiff::Timestamp),
    Stop(String),
}

/// `base` ±20%, from the process's random hasher keys (no extra dependency for one number).
pub fn jitter(base: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let r = (h.finish() % 401) as f64 / 1000.0; // 0 ..= 0.4
    base.mul_f64(0.8 + r)
}

/// Delay after `failures` failed polls in a row.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    interval
        .saturating_mul(1 << failures.min(4))
        .min(Duration::from_secs(120))
        .max(interval)
}

/// Polls until told to stop (sends `Stop` and returns) or the receiver is gone.
pub async fn poll(
    client: HttpClient<Empty<Bytes>>,
    url: String,
    token: String,
    interval: Duration,
    metrics: Metrics,
    tx: mpsc::Sender<ControlEvent>,
) {
    let mut failures: u32 = 0;
    loop {
        let result = ask(&client, &url, &token).await;
        let label = match &result {
            Ok(Verdict::Run { .. }) => PollResult::run,
            Ok(Verdict::Stop { .. }) => PollResult::stop,
            Err(_) => PollResult::error,
        };
        metrics
            .polls
            .get_or_create(&PollLabels { result: label })
            .inc();
        match result {
            Ok(Verdict::Run { deadline }) => {
                if failures > 0 {
                    tracing::info!("control API reachable again");
                }
                failures = 0;
                if let Some(d) = deadline {
                    if tx.send(ControlEvent::Deadline(d)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Verdict::Stop { reason }) => {
                tracing::info!(%reason, "control API says stop");
                let _ = tx.send(ControlEvent::Stop(reason)).await;
                return;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "control API unreachable; capturing on until the deadline, retrying with back-off");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(jitter(backoff(interval, failures))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(br#"{"action":"run","deadline":"2026-12-01T22:00:00Z"}"#).expect("run"),
            Verdict::Run {
                deadline: Some("2026-12-01T22:00:00Z".parse().expect("ts"))
            }
        );
        assert_eq!(
            parse_answer(br#"{"action":"stop","reason":"detached"}"#).expect("stop"),
            Verdict::Stop {
                reason: "detached".into()
            }
        );
        assert!(parse_answer(br#"{"action":"dance"}"#).is_err());
        assert!(parse_answer(b"<html>").is_err());
    }

    #[test]
    fn jitter_and_backoff_stay_in_range() {
        let base = Duration::from_secs(10);
        for _ in 0..200 {
            let j = jitter(base);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, 1), Duration::from_secs(20));
        assert_eq!(backoff(base, 30), Duration::from_secs(120));
    }
}

//! Routes of the webhook port: `POST /mutate`, `GET /healthz`, `GET /readyz`; and the
//! admin port's `GET /metrics` (see [`admin_router`]).
//!
//! `/mutate` sheds load before it reads a body: a fixed number of reviews at once, and a
//! byte budget for the bodies held in memory, taken from `Content-Length` up front (or per
//! chunk without one). Memory for reviews is therefore bounded by the budget, whatever the
//! number of connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::answer::answer_into;
use super::error::ReviewError;
use super::namespaces::PodSecurityLevels;
use super::prepared::PreparedCache;
use crate::engine::SharedSettings;
use crate::http_error::json_error;
use crate::metrics::{InFlight, Outcome, RequestLabels, WebhookMetrics};

/// Requests above this are refused with 413 before they are parsed (at once when
/// `Content-Length` says so). kube-apiserver refuses objects over about 3 MiB
/// (`--max-request-bytes`/etcd's limit), so no real review is larger.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Room for a typical answer (an injection's base64 patch is 2-4 KB), so the body is written
/// without regrowing.
const ANSWER_CAPACITY: usize = 8 * 1024;

/// How much `/mutate` takes on at once; beyond it a request gets 503 before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct ReviewLimits {
    pub max_concurrent: usize,
    /// Bytes of request bodies held in memory at once, over all requests.
    pub max_buffered_bytes: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        ReviewLimits {
            max_concurrent: 32,
            max_buffered_bytes: 8 * 1024 * 1024,
        }
    }
}

struct Gates {
    limits: ReviewLimits,
    slots: Semaphore,
    /// One permit per byte (tokio permits are plentiful; a body is at most 3 MiB).
    bytes: Semaphore,
}

pub struct WebhookState {
    pub settings: SharedSettings,
    pub metrics: WebhookMetrics,
    pub registry: Arc<Registry>,
    /// False until the server can answer and again once shutdown starts.
    pub ready: AtomicBool,
    /// Filled by a namespace watch when the server has cluster credentials.
    pub pod_security: PodSecurityLevels,
    /// The settings' patch fragments, serialized once per config load.
    prepared: PreparedCache,
    /// Components `/readyz` waits for besides the listener.
    pub readiness: super::readiness::Readiness,
    gates: Gates,
}

impl WebhookState {
    pub fn new(
        settings: SharedSettings,
        metrics: WebhookMetrics,
        registry: Arc<Registry>,
        limits: ReviewLimits,
    ) -> Arc<WebhookState> {
        let prepared = PreparedCache::new(settings.load_full());
        Arc::new(WebhookState {
            settings,
            prepared,
            metrics,
            registry,
            ready: AtomicBool::new(false),
            pod_security: PodSecurityLevels::default(),
            readiness: Default::default(),
            gates: Gates {
                limits,
                slots: Semaphore::new(limits.max_concurrent),
                bytes: Semaphore::new(limits.max_buffered_bytes.min(Semaphore::MAX_PERMITS)),
            },
        })
    }
}

fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not-found", "no such route")
}

/// The HTTPS port: what the API server and kubelet probes call.
pub fn router(state: Arc<WebhookState>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            deadline(req, next, request_timeout)
        }))
        .with_state(state)
}

/// The admin port (plain HTTP, never the API server's way in): metrics, and the probes again
/// so an operator on the admin port sees the same health.
pub fn admin_router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { not_found() })
        .with_state(state)
}

/// A slow or stalled client never holds a request past the deadline.
async fn deadline(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => json_error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            &format!("request not completed within {limit:?}"),
        ),
    }
}

async fn method_not_allowed() -> Response {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        "/mutate accepts POST with an AdmissionReview",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

async fn readyz(State(st): State<Arc<WebhookState>>) -> Response {
    if !st.ready.load(Ordering::Relaxed) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "not ready");
    }
    let pending = st.readiness.pending();
    if pending.is_empty() {
        "ok".into_response()
    } else {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            &format!("waiting for: {}", pending.join(", ")),
        )
    }
}

async fn metrics(State(st): State<Arc<WebhookState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode(&st.registry),
    )
        .into_response()
}

async fn mutate(State(st): State<Arc<WebhookState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start(&st.metrics.in_flight);
    let (labels, resp) = match shed_or_review(&st, &headers, body).await {
        Ok((labels, bytes)) => (
            labels,
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        ),
        Err(e) => {
            tracing::info!(error = %e, "rejected admission request");
            (
                RequestLabels {
                    outcome: Outcome::rejected,
                    reason: e.kind(),
                },
                e.into_response(),
            )
        }
    };
    st.metrics.requests.get_or_create(&labels).inc();
    st.metrics.latency.observe(started.elapsed().as_secs_f64());
    resp
}

async fn shed_or_review(
    st: &WebhookState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(RequestLabels, Vec<u8>), ReviewError> {
    let _slot = st
        .gates
        .slots
        .try_acquire()
        .map_err(|_| ReviewError::Overloaded(st.gates.limits.max_concurrent))?;
    review(st, headers, body).await
}

async fn review(
    st: &WebhookState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(RequestLabels, Vec<u8>), ReviewError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(ReviewError::ContentType(ct.to_string()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut buf = BodyBuffer::new(&st.gates, &st.metrics.body_bytes);
    buf.read(body, declared).await?;
    let prepared = st.prepared.get(&st.settings.load());
    // The body stays charged to the budget while it is parsed.
    let mut out = Vec::with_capacity(ANSWER_CAPACITY);
    let labels = answer_into(&buf.bytes, &prepared, &st.pod_security, &mut out)?;
    Ok((labels, out))
}

/// A request body read into one buffer whose capacity is charged to the byte budget before
/// it is allocated, and given back when the answer is done.
struct BodyBuffer<'a> {
    gates: &'a Gates,
    gauge: &'a Gauge,
    charged: Option<SemaphorePermit<'a>>,
    bytes: Vec<u8>,
}

impl<'a> BodyBuffer<'a> {
    fn new(gates: &'a Gates, gauge: &'a Gauge) -> BodyBuffer<'a> {
        BodyBuffer {
            gates,
            gauge,
            charged: None,
            bytes: Vec::new(),
        }
    }

    fn charged(&self) -> usize {
        self.charged.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Makes room for `need` bytes in all, charging the budget first.
    fn reserve(&mut self, need: usize) -> Result<(), ReviewError> {
        if need > MAX_BODY_BYTES {
            return Err(ReviewError::TooLarge(MAX_BODY_BYTES));
        }
        if need <= self.bytes.capacity() {
            return Ok(());
        }
        // Doubling keeps the copies linear without a Content-Length; never past the cap.
        let target = need.max(self.bytes.capacity() * 2).min(MAX_BODY_BYTES);
        let extra = target - self.charged();
        if extra > 0 {
            let n = u32::try_from(extra).map_err(|_| ReviewError::TooLarge(MAX_BODY_BYTES))?;
            let permit = self
                .gates
                .bytes
                .try_acquire_many(n)
                .map_err(|_| ReviewError::BodyBudget(self.gates.limits.max_buffered_bytes))?;
            self.gauge.inc_by(extra as i64);
            match &mut self.charged {
                Some(p) => p.merge(permit),
                None => self.charged = Some(permit),
            }
        }
        self.bytes.reserve_exact(target - self.bytes.len());
        Ok(())
    }

    async fn read(&mut self, mut body: Body, declared: Option<usize>) -> Result<(), ReviewError> {
        if let Some(n) = declared {
            self.reserve(n)?;
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReviewError::Body(e.to_string()))?;
            if let Ok(chunk) = frame.into_data() {
                self.reserve(self.bytes.len() + chunk.len())?;
                self.bytes.extend_from_slice(&chunk);
            }
        }
        Ok(())
    }
}

impl Drop for BodyBuffer<'_> {
    fn drop(&mut self) {
        self.gauge.dec_by(self.charged() as i64);
    }
}

//! Routes: `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use prometheus_client::registry::Registry;

use super::answer::answer;
use super::error::{json_error, ReviewError};
use super::namespaces::PodSecurityLevels;
use crate::engine::Settings;
use crate::metrics::{InFlight, Outcome, RequestLabels, WebhookMetrics};

/// Requests above this are refused with 413 before they are parsed. kube-apiserver caps
/// objects at 3 MiB in etcd, so a real review is always far below it.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Settings shared by every component and swapped whole when the config file changes.
pub type SharedSettings = Arc<ArcSwap<Settings>>;

pub struct WebhookState {
    pub settings: SharedSettings,
    pub metrics: WebhookMetrics,
    pub registry: Arc<Registry>,
    /// False until the server can answer and again once shutdown starts.
    pub ready: AtomicBool,
    /// Filled by a namespace watch when the server has cluster credentials.
    pub pod_security: PodSecurityLevels,
}

impl WebhookState {
    pub fn new(
        settings: SharedSettings,
        metrics: WebhookMetrics,
        registry: Arc<Registry>,
    ) -> Arc<WebhookState> {
        Arc::new(WebhookState {
            settings,
            metrics,
            registry,
            ready: AtomicBool::new(false),
            pod_security: PodSecurityLevels::default(),
        })
    }
}

pub fn router(state: Arc<WebhookState>, request_timeout: Duration) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            deadline(req, next, request_timeout)
        }))
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
    if st.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        json_error(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "not ready")
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
    let (labels, resp) = match review(&st, &headers, body).await {
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
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ReviewError::TooLarge(MAX_BODY_BYTES)
            } else {
                ReviewError::Body(e.to_string())
            }
        })?
        .to_bytes();

    let settings = st.settings.load();
    answer(&bytes, &settings, &st.pod_security)
}

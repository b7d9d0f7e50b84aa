//! Client mistakes get a 4xx with a JSON message; load shedding (too many reviews at once,
//! body memory budget spent) a 503 with the same shape, answered before the body is read.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("content-type must be application/json, got {0:?}")]
    ContentType(String),
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported apiVersion {0:?}: only admission.k8s.io/v1 is served")]
    ApiVersion(String),
    #[error("kind must be AdmissionReview, got {0:?}")]
    Kind(String),
    #[error("AdmissionReview has no `request`")]
    NoRequest,
    #[error("request has no `uid`")]
    NoUid,
    #[error("request.object is not a valid v1 Pod: {0}")]
    BadPod(String),
    #[error("not a valid Attachment: {0}")]
    BadAttachment(String),
    #[error("body exceeds the {0} byte limit")]
    TooLarge(usize),
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("{0} admission requests are already being answered; retry")]
    Overloaded(usize),
    #[error("the {0} byte budget for request bodies held at once is spent; retry")]
    BodyBudget(usize),
}

impl ReviewError {
    /// Bounded label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReviewError::ContentType(_) => "content-type",
            ReviewError::Json(_) => "invalid-json",
            ReviewError::ApiVersion(_) => "api-version",
            ReviewError::Kind(_) => "not-a-review",
            ReviewError::NoRequest => "no-request",
            ReviewError::NoUid => "no-uid",
            ReviewError::BadPod(_) => "invalid-pod",
            ReviewError::BadAttachment(_) => "invalid-attachment",
            ReviewError::TooLarge(_) => "too-large",
            ReviewError::Body(_) => "body",
            ReviewError::Overloaded(_) => "overloaded",
            ReviewError::BodyBudget(_) => "body-budget",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ReviewError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ReviewError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ReviewError::BadPod(_) | ReviewError::BadAttachment(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ReviewError::Overloaded(_) | ReviewError::BodyBudget(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ReviewError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            Json(json!({ "error": self.kind(), "message": self.to_string() })),
        )
            .into_response()
    }
}

/// A JSON error body for statuses produced outside the handler (timeouts, wrong method).
pub fn json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({ "error": kind, "message": message }))).into_response()
}

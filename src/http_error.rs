//! The JSON error body every HTTP listener answers with (`{"error": kind, "message": ...}`),
//! for statuses produced outside a handler's own error type (timeouts, wrong method, 404).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub fn json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({ "error": kind, "message": message }))).into_response()
}

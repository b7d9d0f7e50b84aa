use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{verdict, AttachmentLookup, TokenKeys};
use crate::webhook::json_error;

#[derive(Clone)]
pub struct ControlState {
    pub key: TokenKeys,
    pub lookup: Arc<dyn AttachmentLookup>,
}

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route(
            "/agent/v1/namespaces/{namespace}/attachments/{name}/{uid}",
            get(agent_state),
        )
        .with_state(state)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn agent_state(
    State(st): State<ControlState>,
    Path((namespace, name, uid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    // Checked before any lookup, with one answer for every failure: a caller without the
    // right token learns nothing, not even whether the attachment exists.
    let authorized = bearer(&headers).is_some_and(|t| st.key.verify(&namespace, &name, &uid, t));
    if !authorized {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let state = st.lookup.attachment(&namespace, &name);
    Json(verdict(state.as_ref(), &uid, jiff::Timestamp::now())).into_response()
}

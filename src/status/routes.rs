use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::{process_stats, StatusReport, StatusSource};

#[derive(Clone)]
pub struct StatusState {
    pub started: Instant,
    pub components: Vec<String>,
    pub sources: Vec<Arc<dyn StatusSource>>,
}

pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/status", get(status))
        .with_state(state)
}

async fn status(State(st): State<StatusState>) -> Json<StatusReport> {
    let mut report = StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: st.started.elapsed().as_secs_f64(),
        process: process_stats(),
        components: st.components.clone(),
        attachments: Vec::new(),
        watched: Default::default(),
    };
    for s in &st.sources {
        report.attachments.extend(s.attachments());
        for (kind, n) in s.watched() {
            *report.watched.entry(kind).or_default() += n;
        }
    }
    report
        .attachments
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Json(report)
}

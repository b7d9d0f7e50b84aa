//! `GET /status` (admin listener): what this injector is doing, as JSON; `whisperer-injector status` prints
//! it for people.

mod client;
mod process;
mod routes;

pub use client::{fetch, render_text, StatusClientError};
pub use process::{process_stats, ProcessStats};
pub use routes::{router, StatusState};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub version: String,
    pub uptime_seconds: f64,
    pub process: ProcessStats,
    pub components: Vec<String>,
    pub attachments: Vec<AttachmentSummary>,
    /// Objects held by watches, by kind.
    pub watched: std::collections::BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentSummary {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub pods: Vec<PodSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    pub pod: String,
    pub container: String,
    pub state: String,
}

/// A component that contributes to the status report.
pub trait StatusSource: Send + Sync + 'static {
    fn attachments(&self) -> Vec<AttachmentSummary> {
        Vec::new()
    }
    /// (kind, count) of watched objects.
    fn watched(&self) -> Vec<(String, usize)> {
        Vec::new()
    }
}

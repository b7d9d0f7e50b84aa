//! The HTTPS admission server: an axum router around the pure engine and renderer, its
//! limits, and the plain-HTTP admin listener (`/metrics`).

mod answer;
mod error;
mod flags;
mod handler;
mod namespaces;
mod pod_shape;
mod prepared;
mod readiness;
mod request;
mod requester;
mod review;
pub(crate) mod server;

pub use answer::{answer, answer_into};
pub use error::ReviewError;
pub use flags::{parse_bytes, LimitArgs};
pub use handler::{admin_router, router, ReviewLimits, WebhookState, MAX_BODY_BYTES};
pub use namespaces::PodSecurityLevels;
pub use pod_shape::parse_admitted_pod;
pub use prepared::{Prepared, PreparedCache};
pub use requester::REQUESTED_BY;
pub use review::API_VERSION;
pub use server::{serve, ConnLimits, ServeError, ServerOptions};

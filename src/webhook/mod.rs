//! The HTTPS admission server: an axum router around the pure engine and renderer.

mod answer;
mod error;
mod handler;
mod namespaces;
mod pod_shape;
mod review;
pub(crate) mod server;

pub use answer::answer;
pub use error::{json_error, ReviewError};
pub use handler::{router, SharedSettings, WebhookState, MAX_BODY_BYTES};
pub use namespaces::PodSecurityLevels;
pub use review::{nesting_exceeds, API_VERSION, MAX_NESTING};
pub use server::{serve, ServeError, ServerOptions};

//! Wiring: builds the long-running parts from flags and connects reloads to them.

mod webhook;

pub use webhook::{start_webhook, AppError, RunningWebhook};

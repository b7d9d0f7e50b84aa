//! The running reconciler as `serve` holds it: stop it, and read the Attachment cache every
//! replica keeps (for the agent control API and `GET /status`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::attachment_cache::AttachmentCache;
use super::metrics::ReconcilerMetrics;
use super::status_source::ReconcilerStatus;

/// A running reconciler. [`ReconcilerHandle::shutdown`] stops it and releases the Lease;
/// dropping the handle stops it abruptly (as a crash would: the Lease is left to expire).
pub struct ReconcilerHandle {
    pub(super) stop: Option<watch::Sender<bool>>,
    pub(super) task: Option<JoinHandle<()>>,
    pub(super) cache: AttachmentCache,
    pub(super) metrics: ReconcilerMetrics,
    pub(super) _cache_task: AbortOnDrop,
}

impl ReconcilerHandle {
    /// Attachments as this replica sees them (leader or not), for the agent control API.
    pub fn attachment_lookup(&self) -> Arc<dyn crate::control::AttachmentLookup> {
        Arc::new(self.cache.clone())
    }

    /// The reconciler's part of `GET /status`.
    pub fn status_source(&self) -> Arc<dyn crate::status::StatusSource> {
        Arc::new(ReconcilerStatus {
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// Stops the controllers and the backstop, then releases the Lease.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(10), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for ReconcilerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Aborts a task when dropped, so aborting a parent stops its children.
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves when a stop is asked for (or the handle is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

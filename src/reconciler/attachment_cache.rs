//! The Attachments as this replica sees them, leader or not: the agent control API
//! (`crate::control`) and `GET /status` answer from this cache on every replica.

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::task::JoinHandle;

use super::crd::{Attachment, Phase};
use super::watch::attachment_watch;
use crate::control::{AttachmentLookup, AttachmentState};

/// Attachments as last seen by this replica's own watch.
#[derive(Clone)]
pub struct AttachmentCache {
    pub(super) store: Store<Attachment>,
}

impl AttachmentCache {
    /// Starts the watch; the task stops when the returned handle is aborted.
    pub fn start(client: &Client) -> (AttachmentCache, JoinHandle<()>) {
        let (store, writer) = reflector::store::<Attachment>();
        let stream = attachment_watch(client).reflect(writer);
        let task = tokio::spawn(stream.for_each(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "attachment watch (control API cache) failed; retrying");
            }
            std::future::ready(())
        }));
        (AttachmentCache { store }, task)
    }
}

impl AttachmentLookup for AttachmentCache {
    fn attachment(&self, namespace: &str, name: &str) -> Option<AttachmentState> {
        let a = self.store.get(&ObjectRef::new(name).within(namespace))?;
        let status = a.status.as_ref();
        Some(AttachmentState {
            uid: a.metadata.uid.clone().unwrap_or_default(),
            phase: status.and_then(|s| s.phase).unwrap_or(Phase::Pending),
            expires_at: status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0),
            deleting: a.metadata.deletion_timestamp.is_some(),
        })
    }
}

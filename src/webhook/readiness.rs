//! What `/readyz` still waits for besides the listener: components that must have synced
//! before this replica's answers are right (the Pod Security namespace list, the serving
//! certificate from a self-managed Secret). Until then the kubelet keeps the replica out of
//! the Service, so the API server only reaches replicas that answer correctly.

use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Readiness {
    pending: Mutex<BTreeSet<&'static str>>,
}

impl Readiness {
    /// `/readyz` fails, naming `what`, until [`Readiness::done`] is called with it.
    pub fn wait_for(&self, what: &'static str) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(what);
        }
    }

    pub fn done(&self, what: &'static str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(what);
        }
    }

    /// What is still awaited, in a stable order; empty when ready.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending
            .lock()
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_until_done() {
        let r = Readiness::default();
        assert!(r.pending().is_empty());
        r.wait_for("serving certificate");
        r.wait_for("namespace list");
        assert_eq!(r.pending(), ["namespace list", "serving certificate"]);
        r.done("namespace list");
        assert_eq!(r.pending(), ["serving certificate"]);
    }
}

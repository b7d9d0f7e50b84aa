//! Strings that many cached pods repeat (labels, images, owner names, container names, the
//! Attachment uid in each Whisperer's env) are kept once: the 10,000 replicas of a Deployment
//! share one `app=web`, one `pod-template-hash` and one image string instead of 10,000 copies.

use std::collections::HashSet;
use std::sync::Arc;

/// New strings between sweeps of those no pod holds any more.
const SWEEP_EVERY: usize = 4096;

#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    added: usize,
}

impl Interner {
    /// The shared copy of `s`.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        self.added += 1;
        if self.added >= SWEEP_EVERY {
            self.added = 0;
            // Rollouts retire template hashes and images: drop what only this set holds.
            self.strings.retain(|s| Arc::strong_count(s) > 1);
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.strings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_share_one_copy_and_unheld_strings_are_swept() {
        let mut i = Interner::default();
        let a = i.get("app");
        let b = i.get("app");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        for n in 0..SWEEP_EVERY {
            let _kept = i.get(&format!("s{n}"));
        }
        assert!(
            i.len() < SWEEP_EVERY,
            "strings no pod holds are dropped at the sweep"
        );
        let held = i.get("held");
        for n in 0..2 * SWEEP_EVERY {
            let _ = i.get(&format!("t{n}"));
        }
        assert!(
            Arc::ptr_eq(&held, &i.get("held")),
            "a held string survives sweeps"
        );
    }
}

//! Back-off: what the reconciler remembers between passes, in memory only — failed attempts
//! with their back-off (2 s doubling to 5 min, so a refused pod is not hammered), and patches
//! the watch has not echoed yet (so a second pass does not patch again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::reconciler::attachment::status::PodEntry;

/// How long a successful patch counts as attached while the watch catches up.
const ECHO_GRACE: Duration = Duration::from_secs(120);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Entries untouched this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// "pod uid/ephemeral container name": one allocation an entry, as a pass over 10,000 pods
/// records 10,000 of them.
type Key = Box<str>;

#[derive(Debug)]
struct Failure {
    attempts: u32,
    retry_at: Instant,
    entry: PodEntry,
}

#[derive(Debug, Default)]
struct Inner {
    attached: HashMap<Key, Instant>,
    failures: HashMap<Key, Failure>,
    last_sweep: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Backoff {
    inner: Mutex<Inner>,
}

fn key(uid: &str, container: &str) -> Key {
    format!("{uid}/{container}").into_boxed_str()
}

/// 2 s, 4 s, 8 s ... capped at 5 min.
pub fn backoff(attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A patch for this container succeeded recently (the watch may not show it yet).
    pub fn recently_attached(&self, uid: &str, container: &str) -> bool {
        self.lock()
            .attached
            .get(&key(uid, container))
            .is_some_and(|at| at.elapsed() < ECHO_GRACE)
    }

    /// The recorded failure while its back-off runs, with the time of the next attempt.
    pub fn backing_off(&self, uid: &str, container: &str) -> Option<(PodEntry, Instant)> {
        let inner = self.lock();
        let f = inner.failures.get(&key(uid, container))?;
        (Instant::now() < f.retry_at).then(|| (f.entry.clone(), f.retry_at))
    }

    pub fn record_attached(&self, uid: &str, container: &str) {
        let mut inner = self.lock();
        let k = key(uid, container);
        inner.failures.remove(&k);
        inner.attached.insert(k, Instant::now());
        Self::sweep(&mut inner);
    }

    /// Returns when the next attempt is due.
    pub fn record_failure(&self, uid: &str, container: &str, entry: PodEntry) -> Instant {
        let mut inner = self.lock();
        let k = key(uid, container);
        let attempts = inner.failures.get(&k).map_or(0, |f| f.attempts) + 1;
        let retry_at = Instant::now() + backoff(attempts);
        inner.failures.insert(
            k,
            Failure {
                attempts,
                retry_at,
                entry,
            },
        );
        Self::sweep(&mut inner);
        retry_at
    }

    /// Attempts so far for this container.
    #[cfg(test)]
    pub fn attempts(&self, uid: &str, container: &str) -> u32 {
        self.lock()
            .failures
            .get(&key(uid, container))
            .map_or(0, |f| f.attempts)
    }

    fn sweep(inner: &mut Inner) {
        let now = Instant::now();
        if inner
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        inner.last_sweep = Some(now);
        inner
            .attached
            .retain(|_, at| now.duration_since(*at) < ECHO_GRACE);
        inner
            .failures
            .retain(|_, f| now.saturating_duration_since(f.retry_at) < FORGET_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::crd::PodState;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn failures_back_off_and_success_clears() {
        let m = Backoff::default();
        assert!(m.backing_off("u", "c").is_none());
        m.record_failure("u", "c", PodEntry::new("p", PodState::Refused));
        assert_eq!(m.attempts("u", "c"), 1);
        assert!(m.backing_off("u", "c").is_some());
        m.record_attached("u", "c");
        assert!(m.backing_off("u", "c").is_none());
        assert!(m.recently_attached("u", "c"));
        assert!(!m.recently_attached("u", "other"));
    }
}

//! Rate limiting of ephemeral-container patches. Two bounds, both held by the patcher
//! (`patcher.rs`) and shared by every Attachment and the backstop: this token bucket
//! (`--patch-qps`, default 200/s, burst one second's worth; dry runs count) and a semaphore of
//! `--reconcile-concurrency` patches in flight. A refused or failed pod is then held back by
//! `backoff.rs`, not retried at the bucket's pace.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Tokens refill at `rate` per second up to `burst`; a caller that finds the bucket empty
/// reserves the next token (the balance goes negative) and sleeps until it is due, so waiters
/// are served in order and the long-run rate never exceeds `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` must be positive; the burst is one second's worth (at least one token).
    pub fn new(rate: f64) -> TokenBucket {
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// How long the caller must wait for its token (already reserved).
    fn reserve(&self) -> Duration {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        s.last = now;
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }

    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_run_rate_is_bounded() {
        let b = TokenBucket::new(100.0);
        let start = Instant::now();
        for _ in 0..130 {
            b.acquire().await;
        }
        // 100 from the burst, 30 more at 100/s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took <= Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn concurrent_waiters_are_spaced() {
        let b = std::sync::Arc::new(TokenBucket::new(50.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..70)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut last = start;
        for t in tasks {
            last = last.max(t.await.expect("task"));
        }
        // 50 from the burst, 20 more at 50/s.
        assert!(last - start >= Duration::from_millis(390));
    }
}

//! Readiness for the injector's `holdApplicationUntilReady`: once capture is open the agent
//! listens on an abstract Unix socket (no file, so a read-only root filesystem is fine; it
//! lives in the pod's network namespace, which the probe shares), and `whisperer ready`
//! (the startupProbe / postStart command) succeeds as soon as it can connect.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Abstract socket name (no filesystem entry).
pub const SOCKET_NAME: &[u8] = b"whisperer-ready";

fn address() -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(SOCKET_NAME)
}

/// Starts answering readiness; the listener lives until the process ends. A second agent in
/// the same pod (an attached one next to a sidecar) finds the name taken: the first one's
/// readiness stands, and that is logged, not fatal.
pub fn announce() {
    match address().and_then(|a| UnixListener::bind_addr(&a)) {
        Ok(listener) => {
            let _ = std::thread::Builder::new()
                .name("ready".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        drop(conn);
                    }
                });
        }
        Err(e) => {
            tracing::info!(error = %e, "readiness socket not bound (another Whisperer in this pod holds it)")
        }
    }
}

/// Whether an agent in this network namespace is ready, waiting up to `wait`.
pub fn wait_ready(wait: Duration) -> bool {
    let started = Instant::now();
    loop {
        if address().and_then(|a| UnixStream::connect_addr(&a)).is_ok() {
            return true;
        }
        if started.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_announced() {
        // Test processes share the host network namespace: the name may be taken by a
        // running agent, so only the transition is checked when it is free.
        if wait_ready(Duration::ZERO) {
            return;
        }
        assert!(!wait_ready(Duration::from_millis(200)));
        announce();
        assert!(wait_ready(Duration::from_secs(2)));
    }
}

//! `serve` flags for what one client may hold: connections, timeouts and admission load.
//! Defaults keep the worst case under the Deployment's 128Mi limit (docs/benchmarks.md).

use std::time::Duration;

use clap::Args;

use super::handler::ReviewLimits;
use super::server::{ConnLimits, ServerOptions};

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Open connections on the HTTPS port; one more is closed right after accept. An idle
    /// connection costs about 30 KB, so the default stays within the 128Mi limit.
    #[arg(long, default_value_t = 2500)]
    pub max_connections: usize,
    /// `POST /mutate` requests answered at once; more get 503 before their body is read.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_reviews: usize,
    /// Bytes of admission request bodies held in memory at once (all requests together);
    /// a request that would pass it gets 503. Accepts KiB/MiB suffixes.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub max_buffered_body_bytes: usize,
    /// TLS handshake plus a complete request head must arrive this long after connecting;
    /// on HTTP/1.1 a later request head this long after its first byte.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    /// Keep it above the client's own idle timeout (kube-apiserver: 90s).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive PING interval.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub h2_keepalive_interval: Duration,
    /// A PING not answered within this closes the HTTP/2 connection.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub h2_keepalive_timeout: Duration,
}

impl LimitArgs {
    pub fn server_options(&self, h2_max_concurrent_streams: u32, drain: Duration) -> ServerOptions {
        ServerOptions {
            h2_max_concurrent_streams,
            drain_timeout: drain,
            limits: ConnLimits {
                max_connections: self.max_connections.max(1),
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                h2_keepalive_interval: self.h2_keepalive_interval,
                h2_keepalive_timeout: self.h2_keepalive_timeout,
            },
        }
    }

    pub fn review_limits(&self) -> ReviewLimits {
        ReviewLimits {
            max_concurrent: self.max_concurrent_reviews.max(1),
            max_buffered_bytes: self.max_buffered_body_bytes,
        }
    }
}

/// `1048576`, `512KiB`, `16MiB`, `1GiB`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 16MiB, 524288)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, LimitArgs};

    #[test]
    fn every_limit_flag_and_admin_listen_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let cmd = <LimitArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let mut flags: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert_eq!(flags.len(), 7, "{flags:?}");
        flags.push("admin-listen");
        for flag in flags {
            assert!(
                readme.contains(&format!("| `--{flag} ")),
                "--{flag} is not in the README's flag table"
            );
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("524288"), Ok(524_288));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert!(parse_bytes("16MB")
            .expect_err("MB is not a unit")
            .contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
    }
}

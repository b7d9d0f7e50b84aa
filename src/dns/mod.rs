//! DNS proxy for Whisperers attached at runtime.
//!
//! An ephemeral container cannot carry `hostAliases`, and captured traffic is recorded by IP,
//! so the injector answers DNS itself:
//!
//! * `PTR` for pod IPs (`<pod>.<namespace>.pod.<cluster-domain>`) and service cluster IPs
//!   (`<svc>.<namespace>.svc.<cluster-domain>`), IPv4 and IPv6, from watched cluster state;
//! * `A`/`AAAA` for the names in every profile's `hostAliases`;
//! * everything else is forwarded to upstream resolvers.
//!
//! Only to trusted sources (pods carrying a Whisperer, `--dns-trusted-cidr`); others get
//! REFUSED. Every source is rate-limited and gets a bounded share of the forwarding slots.
//!
//! The answering rule lives in [`answer`] (pure), the state in [`table`], the per-source limits
//! in [`limits`], sockets in [`server`].
//! See `docs/dns.md` for the rule in prose.

pub mod answer;
pub mod cidr;
pub mod forward;
pub mod limits;
pub mod metrics;
pub mod resolv_conf;
pub mod reverse;
pub mod server;
pub mod table;
pub mod watch;
pub mod whisperer;

use std::net::SocketAddr;
use std::time::Duration;

pub use cidr::Cidr;
pub use limits::RateLimit;
pub use resolv_conf::upstreams_from_resolv_conf;
pub use server::DnsServer;
pub use table::NameTable;
pub use watch::watch_cluster;

/// Environment variable the webhook and the reconciler set on Whisperers: the proxy's address
/// (`ip:port`).
pub const PROXY_ENV: &str = "WHISPERER_DNS_SERVER";

/// Default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Default listen address inside the injector's container.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5353";

/// Default time one upstream gets to answer one forwarded query.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Default per-source query rate.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 200,
    burst: 400,
};

/// Default forwarded queries one source may have in flight.
pub const DEFAULT_FORWARD_QUOTA: usize = 32;

/// Default forwarded queries in flight at once, all sources together.
pub const DEFAULT_MAX_FORWARDS: usize = 1024;

/// How the proxy listens, whom it serves and where it forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP listen address (same port for both).
    pub listen: SocketAddr,
    /// Cluster domain used in PTR answers, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Upstream resolvers, tried in order. Empty: nothing is forwarded.
    pub upstreams: Vec<SocketAddr>,
    /// Time each upstream gets for one forwarded query.
    pub upstream_timeout: Duration,
    /// Sources served besides pods carrying a Whisperer.
    pub trusted_cidrs: Vec<Cidr>,
    /// Per-source query rate; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Forwarded queries one source may have in flight.
    pub forward_quota: usize,
    /// Forwarded queries in flight at once; beyond, SERVFAIL at once.
    pub max_forwards: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5353)),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            upstreams: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            trusted_cidrs: Vec::new(),
            rate_limit: Some(DEFAULT_RATE_LIMIT),
            forward_quota: DEFAULT_FORWARD_QUOTA,
            max_forwards: DEFAULT_MAX_FORWARDS,
        }
    }
}

/// Errors at the DNS proxy's edges.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Binding the UDP socket or TCP listener failed.
    #[error("cannot bind DNS {transport} socket on {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A listening socket failed while serving.
    #[error("DNS {transport} socket failed: {source}")]
    Io {
        transport: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The cluster domain is not a valid DNS name.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    ClusterDomain { domain: String, reason: String },
    /// A watch on the API server ended.
    #[error("watch on {resource} ended unexpectedly")]
    WatchEnded { resource: &'static str },
    /// A serving task panicked or was cancelled.
    #[error("DNS serving task failed: {0}")]
    Task(String),
}

//! Names for the addresses in records: PTR answers from the injector's DNS proxy (which
//! knows pod and service IPs), then the hosts file (hostAliases). Answers are cached with
//! their TTL in a bounded map; a DNS server that does not answer is left alone for a while,
//! so a dead proxy costs one timeout, not one per record. Lookups run on the async side,
//! never on the capture thread.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::metrics::{LookupLabels, LookupResult, Metrics};

/// Entries kept; past it, expired entries go first, then everything.
const MAX_ENTRIES: usize = 4096;
const MIN_TTL: Duration = Duration::from_secs(5);
const MAX_TTL: Duration = Duration::from_secs(300);
const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// How long an unanswering DNS server is not asked.
const BACKOFF: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_millis(800);

pub struct Names {
    resolver: Option<TokioResolver>,
    hosts: HashMap<IpAddr, Arc<str>>,
    cache: HashMap<IpAddr, (Option<Arc<str>>, Instant)>,
    down_until: Option<Instant>,
    metrics: Metrics,
}

/// `ip name...` lines; loopback and the IPv6 multicast names are of no use in a record.
pub fn parse_hosts(text: &str) -> HashMap<IpAddr, Arc<str>> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut parts = line.split_whitespace();
        let (Some(ip), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            continue;
        };
        if ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() {
            continue;
        }
        out.entry(ip).or_insert_with(|| Arc::from(name));
        if out.len() >= MAX_ENTRIES {
            break;
        }
    }
    out
}

fn resolver(server: SocketAddr) -> Option<TokioResolver> {
    let mut conn = ConnectionConfig::udp();
    conn.port = server.port();
    let ns = NameServerConfig::new(server.ip(), true, vec![conn]);
    let mut builder = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = TIMEOUT;
    opts.use_hosts_file = ResolveHosts::Never;
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the DNS resolver; names come from the hosts file only");
            None
        }
    }
}

impl Names {
    pub fn new(dns: Option<SocketAddr>, hosts_file: Option<&Path>, metrics: Metrics) -> Names {
        let hosts = hosts_file
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_hosts(&t))
            .unwrap_or_default();
        Names {
            resolver: dns.and_then(resolver),
            hosts,
            cache: HashMap::new(),
            down_until: None,
            metrics,
        }
    }

    /// Names nothing (`--no-names`).
    pub fn disabled(metrics: Metrics) -> Names {
        Names {
            resolver: None,
            hosts: HashMap::new(),
            cache: HashMap::new(),
            down_until: None,
            metrics,
        }
    }

    fn count(&self, result: LookupResult) {
        self.metrics
            .lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }

    fn remember(&mut self, ip: IpAddr, name: Option<Arc<str>>, ttl: Duration) {
        if self.cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.cache.retain(|_, (_, until)| *until > now);
            if self.cache.len() >= MAX_ENTRIES {
                self.cache.clear();
            }
        }
        self.cache.insert(ip, (name, Instant::now() + ttl));
    }

    pub async fn name(&mut self, ip: IpAddr) -> Option<Arc<str>> {
        if let Some((name, until)) = self.cache.get(&ip) {
            if *until > Instant::now() {
                self.count(LookupResult::hit);
                return name.clone();
            }
        }
        let from_hosts = self.hosts.get(&ip).cloned();
        let Some(resolver) = self.resolver.as_ref() else {
            return from_hosts;
        };
        if self.down_until.is_some_and(|t| t > Instant::now()) {
            return from_hosts;
        }
        match tokio::time::timeout(TIMEOUT * 2, resolver.reverse_lookup(ip)).await {
            Ok(Ok(lookup)) => {
                let name = lookup.answers().iter().find_map(|r| match &r.data {
                    RData::PTR(p) => Some(Arc::<str>::from(p.0.to_ascii().trim_end_matches('.'))),
                    _ => None,
                });
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(MIN_TTL, MAX_TTL);
                let name = name.or(from_hosts);
                self.count(if name.is_some() {
                    LookupResult::resolved
                } else {
                    LookupResult::not_found
                });
                self.down_until = None;
                self.remember(ip, name.clone(), ttl);
                name
            }
            Ok(Err(e)) if e.is_no_records_found() => {
                self.count(LookupResult::not_found);
                self.remember(ip, from_hosts.clone(), NEGATIVE_TTL);
                from_hosts
            }
            Ok(Err(hickory_resolver::net::NetError::Timeout)) | Err(_) => {
                self.count(LookupResult::error);
                if self.down_until.is_none() {
                    tracing::warn!(
                        "DNS server does not answer PTR lookups; trying again in {}s",
                        BACKOFF.as_secs()
                    );
                }
                self.down_until = Some(Instant::now() + BACKOFF);
                from_hosts
            }
            Ok(Err(e)) => {
                // REFUSED, SERVFAIL, unreachable: the proxy will not name this one now.
                self.count(LookupResult::error);
                tracing::debug!(%ip, error = %e, "PTR lookup failed");
                self.remember(ip, from_hosts.clone(), NEGATIVE_TTL);
                from_hosts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let h = parse_hosts(
            "127.0.0.1 localhost\n::1 ip6-localhost\n# comment\n10.244.0.7\tweb-0\n10.96.0.50 collector.whisperer.test collector # alias\nff02::1 ip6-allnodes\nbogus line\n",
        );
        assert_eq!(h.len(), 2);
        assert_eq!(
            h[&"10.244.0.7".parse::<IpAddr>().expect("ip")].as_ref(),
            "web-0"
        );
        assert_eq!(
            h[&"10.96.0.50".parse::<IpAddr>().expect("ip")].as_ref(),
            "collector.whisperer.test"
        );
    }
}

//! The DNS proxy inside `serve`: its table follows the cluster and every accepted config.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use super::AppError;
use crate::cli::{DnsArgs, ServeArgs};
use crate::dns::{DnsConfig, DnsServer, NameTable, RateLimit};
use crate::engine::Settings;
use crate::status::StatusSource;
use crate::webhook::SharedSettings;

fn all_host_aliases(s: &Settings) -> Vec<k8s_openapi::api::core::v1::HostAlias> {
    s.config
        .profiles
        .values()
        .flat_map(|p| p.host_aliases.iter().cloned())
        .collect()
}

/// What the proxy takes from every accepted config: the hostAliases names it answers and the
/// profile images that make a pod's IP a trusted source.
pub(super) fn apply_settings(table: &NameTable, s: &Settings) {
    table.set_host_aliases(&all_host_aliases(s));
    table.set_whisperer_images(s.config.profiles.values().map(|p| p.image.as_str()));
}

/// The proxy's settings from `serve` flags.
pub(super) fn dns_config(opts: &DnsArgs, upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        listen: opts.dns_listen,
        cluster_domain: opts.cluster_domain.clone(),
        upstreams,
        upstream_timeout: opts.dns_upstream_timeout,
        trusted_cidrs: opts.dns_trusted_cidrs.clone(),
        rate_limit: (opts.dns_rate_limit > 0).then_some(RateLimit {
            per_second: opts.dns_rate_limit,
            burst: opts.dns_rate_burst,
        }),
        forward_quota: opts.dns_forward_quota as usize,
        max_forwards: opts.dns_max_forwards as usize,
    }
}

pub(super) struct DnsStatus(pub(super) Arc<NameTable>);

impl StatusSource for DnsStatus {
    fn watched(&self) -> Vec<(String, usize)> {
        let (pods, services) = self.0.counts();
        vec![("Pod".into(), pods), ("Service".into(), services)]
    }
}

pub(super) async fn start_dns(
    args: &ServeArgs,
    client: kube::Client,
    settings: &SharedSettings,
    registry: &mut Registry,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<(SocketAddr, Arc<NameTable>), AppError> {
    let opts = &args.dns_opts;
    let table = Arc::new(NameTable::try_new(&opts.cluster_domain)?);
    apply_settings(&table, &settings.load());
    let upstreams = if opts.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::dns::upstreams_from_resolv_conf(&text)
    } else {
        opts.dns_upstreams.clone()
    };
    let cfg = dns_config(opts, upstreams);
    let server = DnsServer::bind(cfg, table.clone(), registry).await?;
    let addr = server.local_addr();
    background.push(tokio::spawn(async move {
        if let Err(e) = server.run(std::future::pending()).await {
            tracing::error!(error = %e, "DNS proxy stopped");
        }
    }));
    let watched = table.clone();
    background.push(tokio::spawn(async move {
        if let Err(e) = crate::dns::watch_cluster(client, watched).await {
            tracing::error!(error = %e, "DNS proxy's cluster watch stopped");
        }
    }));
    Ok((addr, table))
}

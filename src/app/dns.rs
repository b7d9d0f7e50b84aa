//! The DNS proxy inside `serve`: its table follows the cluster and every accepted config.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use super::AppError;
use crate::cli::ServeArgs;
use crate::dns::{DnsConfig, DnsServer, NameTable};
use crate::engine::Settings;
use crate::engine::SharedSettings;
use crate::status::StatusSource;

pub(super) fn all_host_aliases(s: &Settings) -> Vec<k8s_openapi::api::core::v1::HostAlias> {
    s.config
        .profiles
        .values()
        .flat_map(|p| p.host_aliases.iter().cloned())
        .collect()
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
    table.set_host_aliases(&all_host_aliases(&settings.load()));
    let upstreams = if opts.dns_upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::dns::upstreams_from_resolv_conf(&text)
    } else {
        opts.dns_upstreams.clone()
    };
    let cfg = DnsConfig {
        listen: opts.dns_listen,
        cluster_domain: opts.cluster_domain.clone(),
        upstreams,
        upstream_timeout: opts.dns_upstream_timeout,
    };
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

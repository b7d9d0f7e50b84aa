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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn serve(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        ServeArgs::from_flags(flags.iter().copied())
    }

    #[test]
    fn dns_flags_map_to_the_proxy_config() {
        let args = serve(&[
            "--dns-trusted-cidr",
            "10.244.0.0/16",
            "--dns-trusted-cidr",
            "fd00:10::/64",
            "--dns-rate-limit",
            "50",
            "--dns-rate-burst",
            "70",
            "--dns-forward-quota",
            "3",
            "--dns-max-forwards",
            "9",
        ])
        .expect("flags");
        let cfg = dns_config(&args.dns_opts, vec![]);
        let cidrs: Vec<String> = cfg.trusted_cidrs.iter().map(|c| c.to_string()).collect();
        assert_eq!(cidrs, ["10.244.0.0/16", "fd00:10::/64"]);
        assert_eq!(
            cfg.rate_limit,
            Some(RateLimit {
                per_second: 50,
                burst: 70
            })
        );
        assert_eq!((cfg.forward_quota, cfg.max_forwards), (3, 9));

        let defaults = dns_config(&serve(&[]).expect("flags").dns_opts, vec![]);
        assert_eq!(defaults, DnsConfig::default());
        let off = serve(&["--dns-rate-limit", "0"]).expect("flags");
        assert_eq!(dns_config(&off.dns_opts, vec![]).rate_limit, None);
    }

    #[test]
    fn bad_dns_flags_name_the_flag_and_the_value() {
        for (flag, value, why) in [
            (
                "--dns-trusted-cidr",
                "10.1.2.3/8",
                "host bits are set; the network is 10.0.0.0/8",
            ),
            ("--dns-trusted-cidr", "fd00::/129", "prefix length"),
            ("--dns-trusted-cidr", "pods", "is not an IP address"),
            ("--dns-rate-burst", "0", "0"),
            ("--dns-forward-quota", "0", "0"),
        ] {
            let err = serve(&[flag, value]).expect_err(value).to_string();
            assert!(
                err.contains(flag) && err.contains(value) && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn every_dns_flag_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let serve = <DnsArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let flags: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(flags.len() >= 9, "{flags:?}");
        for flag in flags {
            assert!(
                readme.contains(&format!("`--{flag} ")),
                "--{flag} is not in the README"
            );
        }
    }

    #[test]
    fn every_profile_image_makes_a_trusted_source_and_reload_replaces_them() {
        let yaml = "defaultProfile: a\nprofiles:\n  a:\n    image: example.com/whisperer:1\n  b:\n    image: example.com/whisperer-lite:2\n";
        let cfg = Config::from_bytes(yaml.as_bytes(), "test").expect("config");
        let settings = Settings::new(Arc::new(cfg), "whisperer-system");
        let table = NameTable::new("cluster.local");
        for (uid, ip, image) in [
            ("a", "10.0.0.1", "example.com/whisperer:1"),
            ("b", "10.0.0.2", "example.com/whisperer-lite:2"),
            ("c", "10.0.0.3", "example.com/app:1"),
        ] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": { "name": uid, "namespace": "ns", "uid": uid },
                "spec": { "containers": [{ "name": "c", "image": image }] },
                "status": { "podIP": ip }
            }))
            .expect("pod");
            table.apply_pod(&pod);
        }
        let trusted = |ip: &str| table.is_whisperer_ip(ip.parse().expect("ip"));
        assert!(
            !trusted("10.0.0.1"),
            "nothing trusted before a config is applied"
        );
        apply_settings(&table, &settings);
        assert!(trusted("10.0.0.1") && trusted("10.0.0.2") && !trusted("10.0.0.3"));

        let yaml = "defaultProfile: a\nprofiles:\n  a:\n    image: example.com/whisperer:1\n";
        let reloaded = Settings::new(
            Arc::new(Config::from_bytes(yaml.as_bytes(), "test").expect("config")),
            "whisperer-system",
        );
        apply_settings(&table, &reloaded);
        assert!(trusted("10.0.0.1") && !trusted("10.0.0.2"));
    }
}

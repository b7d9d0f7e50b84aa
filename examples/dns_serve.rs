//! Benchmark fixture: the DNS proxy with N synthetic pods and no API server.
//!
//! ```text
//! cargo run --release --example dns_serve -- [LISTEN] [PODS]
//! ```
//! LISTEN defaults to 127.0.0.1:5353, PODS to 10000. Pod i gets IP 10.(i>>16).(i>>8).(i&255)
//! offset by one (10.0.0.1 is pod 0) and the name `pod-<i>.bench.pod.cluster.local`.
//! Runs on one thread (current-thread runtime) until Ctrl-C or SIGTERM.
//!
//! The load generator runs on 127.0.0.1, which is made the IP of a synthetic pod carrying the
//! default profile's Whisperer: every query pays for the source checks a real Whisperer's do
//! (rate bucket, trust lookup in the table). The rate limit is set far above what one core
//! can serve, so it is charged on every query but never refuses one.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::registry::Registry;
use serde_json::json;
use whisperer_injector::config::DEFAULT_IMAGE;
use whisperer_injector::dns::{DnsConfig, DnsServer, NameTable, RateLimit};

/// The IP of synthetic pod `i`.
fn pod_ip(i: u32) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:5353").parse()?;
    let pods: u32 = args.next().as_deref().unwrap_or("10000").parse()?;

    let table = Arc::new(NameTable::new("cluster.local"));
    for i in 0..pods {
        let ip = pod_ip(i);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": format!("pod-{i}"), "namespace": "bench", "uid": format!("uid-{i}"),
                          "creationTimestamp": "2024-01-01T00:00:00Z" },
            "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }] }
        }))?;
        table.apply_pod(&pod);
    }
    let client: Pod = serde_json::from_value(json!({
        "metadata": { "name": "load", "namespace": "bench", "uid": "uid-load",
                      "creationTimestamp": "2024-01-01T00:00:00Z" },
        "spec": { "containers": [{ "name": "whisperer", "image": DEFAULT_IMAGE }] },
        "status": { "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{ "ip": "127.0.0.1" }] }
    }))?;
    table.apply_pod(&client);
    table.set_whisperer_images([DEFAULT_IMAGE]);
    let cfg = DnsConfig {
        listen,
        rate_limit: Some(RateLimit {
            per_second: 100_000_000,
            burst: 100_000_000,
        }),
        ..DnsConfig::default()
    };
    let mut registry = Registry::default();
    let server = DnsServer::bind(cfg, table.clone(), &mut registry).await?;
    eprintln!(
        "dns_serve: {} pods, listening on {} (udp+tcp)",
        table.counts().0,
        server.local_addr()
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    server.run(shutdown).await?;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    eprint!("{text}");
    Ok(())
}

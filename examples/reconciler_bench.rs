//! Benchmark of the Attachment reconciler against a local control plane (etcd +
//! kube-apiserver + kube-controller-manager from tests/support). Run by
//! bench/reconciler_bench.sh; see docs/reconciler.md for what it measures.
//!
//! `reconciler_bench drive [--sizes 100,1000] [--qps 50,400] [--total-pods 10000]` starts the
//! plane, spawns itself as `reconciler_bench controller` (a separate process, so its memory
//! is its own), makes Deployments' pods Running as a kubelet would, times Attachment creation
//! to all pods attached, then fills the cluster up to `--total-pods` pods and reads the
//! controller's VmHWM / VmRSS from /proc.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;
use support::{builders, install_attachment_crd, kubelet, metrics, poll_until, ControlPlane};
use whisperer_injector::config::Config;
use whisperer_injector::reconciler::{self, Attachment, ReconcilerArgs, TargetKind};

#[derive(Parser)]
enum Cmd {
    /// Start a control plane and measure.
    Drive {
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        sizes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "50,400")]
        qps: Vec<f64>,
        #[arg(long, default_value_t = 10_000)]
        total_pods: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: u16,
    },
    /// Run the reconciler against $KUBECONFIG until stdin closes (used by `drive`).
    Controller {
        own_namespace: String,
        metrics_file: String,
        #[command(flatten)]
        args: ReconcilerArgs,
    },
}

const NODE: &str = kubelet::NODE;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::controlplane::install_rustls_provider();
    let rt = tokio::runtime::Runtime::new()?;
    match Cmd::parse() {
        Cmd::Drive {
            sizes,
            qps,
            total_pods,
            concurrency,
        } => rt.block_on(drive(sizes, qps, total_pods, concurrency)),
        Cmd::Controller {
            own_namespace,
            metrics_file,
            args,
        } => rt.block_on(controller(own_namespace, metrics_file, args)),
    }
}

async fn controller(
    own: String,
    metrics_file: String,
    args: ReconcilerArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let client = Client::try_default().await?;
    let settings = builders::shared_settings(Config::default(), &own);
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = reconciler::start(client, settings, own, &args, &mut registry).await?;
    let registry = Arc::new(registry);
    // Metrics to a file every 500 ms, so the driver can follow the caches.
    let writer = {
        let registry = registry.clone();
        tokio::spawn(async move {
            loop {
                let mut out = String::new();
                if prometheus_client::encoding::text::encode(&mut out, &registry).is_ok() {
                    let tmp = format!("{metrics_file}.tmp");
                    if std::fs::write(&tmp, out).is_ok() {
                        let _ = std::fs::rename(&tmp, &metrics_file);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // Runs until the driver closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await?;
    writer.abort();
    handle.shutdown().await;
    Ok(())
}

/// kB values of VmHWM and VmRSS from /proc/<pid>/status.
fn memory_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sum of the samples of `name` matching `filter` in the controller's metrics file.
fn metric(file: &str, name: &str, filter: &str) -> f64 {
    metrics::sum(
        &std::fs::read_to_string(file).unwrap_or_default(),
        name,
        filter,
    )
}

struct Child {
    child: std::process::Child,
    metrics: String,
}

impl Child {
    fn spawn(
        cp: &ControlPlane,
        own: &str,
        dir: &std::path::Path,
        qps: f64,
        concurrency: u16,
    ) -> Child {
        let metrics = dir.join(format!("metrics-{qps}.txt")).display().to_string();
        let child = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .args([
                "controller",
                own,
                &metrics,
                "--leader-election=false",
                "--patch-qps",
                &qps.to_string(),
                "--reconcile-concurrency",
                &concurrency.to_string(),
            ])
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn controller");
        Child { child, metrics }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> (u64, u64) {
        let mem = memory_of(self.pid());
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        mem
    }
}

/// The bench's pods: one container, so the memory figures stay comparable across runs.
fn deployment(name: &str, replicas: usize) -> Deployment {
    builders::deployment_with(
        name,
        i32::try_from(replicas).expect("replicas"),
        json!({ "metadata": { "labels": { "app": name } },
            "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] } }),
    )
}

async fn drive(
    sizes: Vec<usize>,
    qps: Vec<f64>,
    total_pods: usize,
    concurrency: u16,
) -> Result<(), Box<dyn std::error::Error>> {
    let cp = ControlPlane::start_with_controllers().await;
    let client = cp.client();
    let dir = tempfile::tempdir()?;
    install_attachment_crd(&client).await;
    kubelet::register_node(&client, NODE).await;
    let own = cp.namespace(&[]).await;

    // Deployments first, all pods Running, before any Attachment exists.
    let mut namespaces = BTreeMap::new();
    for &n in &sizes {
        let ns = cp.namespace(&[]).await;
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &deployment("web", n))
            .await?;
        let t = Instant::now();
        kubelet::run_all(&client, &ns, n, Duration::from_secs(900)).await;
        eprintln!("deployment of {n}: all pods Running after {:.1}s (kube-controller-manager creates them)", t.elapsed().as_secs_f64());
        namespaces.insert(n, ns);
    }

    println!(
        "| pods | --patch-qps | create Attachment -> all attached | patches (real / dry run) |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    let mut last = None;
    for (i, &q) in qps.iter().enumerate() {
        // One controller at a time (leader election is off).
        if let Some(prev) = last.take() {
            let _: (u64, u64) = Child::stop(prev);
        }
        let child = Child::spawn(&cp, &own, dir.path(), q, concurrency);
        for (&n, ns) in &namespaces {
            let name = format!("bench-{i}");
            let before = (
                metric(
                    &child.metrics,
                    "whisperer_ephemeral_patches_total",
                    "mode=\"real\"",
                ),
                metric(
                    &child.metrics,
                    "whisperer_ephemeral_patches_total",
                    "mode=\"dry_run\"",
                ),
            );
            let atts = Api::<Attachment>::namespaced(client.clone(), ns);
            let t = Instant::now();
            atts.create(
                &PostParams::default(),
                &builders::attachment(&name, Some((TargetKind::Deployment, "web")), None, None),
            )
            .await?;
            let container = format!("whisperer-{name}");
            poll_until(Duration::from_secs(600), "all attached", || async {
                let st = atts.get(&name).await.ok()?.status?;
                (usize::try_from(st.attached_pods).ok()? >= n).then_some(())
            })
            .await;
            let took = t.elapsed();
            let pods = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?;
            let with = pods
                .items
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.ephemeral_containers.as_ref())
                        .is_some_and(|v| v.iter().any(|c| c.name == container))
                })
                .count();
            assert_eq!(with, n, "pods carrying {container}");
            // Let the metrics file catch up before reading the counters.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let after = (
                metric(
                    &child.metrics,
                    "whisperer_ephemeral_patches_total",
                    "mode=\"real\"",
                ),
                metric(
                    &child.metrics,
                    "whisperer_ephemeral_patches_total",
                    "mode=\"dry_run\"",
                ),
            );
            println!(
                "| {n} | {q} | {:.2} s | {} / {} |",
                took.as_secs_f64(),
                after.0 - before.0,
                after.1 - before.1
            );
        }
        last = Some(child);
    }
    let Some(child) = last else {
        return Ok(());
    };

    // Fill the cluster up to `total_pods` pods (bare pods, created by us: kube-controller-
    // manager's client is limited to 20 requests/s), Running, and watch the controller's memory.
    let existing: usize = sizes.iter().sum();
    let (_, rss) = memory_of(child.pid());
    eprintln!(
        "before filling: {} pods cached, VmRSS {:.1} MiB",
        metric(&child.metrics, "whisperer_watched_objects", "kind=\"pods\""),
        rss as f64 / 1024.0
    );
    let filler = total_pods.saturating_sub(existing);
    let fill_ns = cp.namespace(&[]).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &fill_ns);
    let t = Instant::now();
    stream::iter(0..filler)
        .for_each_concurrent(64, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": format!("filler-{i}"), "labels": { "app": "filler", "shard": (i % 10).to_string() } },
                    "spec": { "nodeName": NODE, "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
                }))
                .expect("pod json");
                if let Ok(p) = pods.create(&PostParams::default(), &pod).await {
                    let _ = kubelet::run_pod(&pods, &p, NODE, &kubelet::next_pod_ip()).await;
                }
            }
        })
        .await;
    eprintln!(
        "{filler} filler pods created and Running in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    poll_until(
        Duration::from_secs(300),
        "controller caches every pod",
        || async {
            let seen = metric(&child.metrics, "whisperer_watched_objects", "kind=\"pods\"");
            (seen >= total_pods as f64).then_some(())
        },
    )
    .await;
    let (hwm, rss) = memory_of(child.pid());
    println!();
    println!(
        "controller process with {} pods cached: VmRSS {:.1} MiB, VmHWM (peak over the whole run) {:.1} MiB",
        metric(&child.metrics, "whisperer_watched_objects", "kind=\"pods\""),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = child.stop();
    Ok(())
}

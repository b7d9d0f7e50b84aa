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
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::reconciler_process::{self, memory_of, ReconcilerProcess};
use support::{builders, install_attachment_crd, kubelet, poll_until, ControlPlane};
use whisperer_injector::reconciler::{Attachment, ReconcilerArgs, TargetKind};

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
        } => rt.block_on(reconciler_process::child_main(
            own_namespace,
            metrics_file,
            args,
        )),
    }
}

fn metric(child: &ReconcilerProcess, name: &str, filter: &str) -> f64 {
    child.metric(name, filter)
}

fn spawn(
    cp: &ControlPlane,
    own: &str,
    dir: &std::path::Path,
    qps: f64,
    concurrency: u16,
) -> ReconcilerProcess {
    let (qps, concurrency) = (qps.to_string(), concurrency.to_string());
    ReconcilerProcess::spawn(
        cp,
        own,
        dir,
        &qps,
        &["--patch-qps", &qps, "--reconcile-concurrency", &concurrency],
    )
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
    let mut last: Option<ReconcilerProcess> = None;
    for (i, &q) in qps.iter().enumerate() {
        // One controller at a time (leader election is off).
        if let Some(prev) = last.take() {
            let _: (u64, u64) = prev.stop();
        }
        let child = spawn(&cp, &own, dir.path(), q, concurrency);
        for (&n, ns) in &namespaces {
            let name = format!("bench-{i}");
            let before = (
                metric(&child, "whisperer_ephemeral_patches_total", "mode=\"real\""),
                metric(
                    &child,
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
                metric(&child, "whisperer_ephemeral_patches_total", "mode=\"real\""),
                metric(
                    &child,
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
        metric(&child, "whisperer_watched_objects", "kind=\"pods\""),
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
            let seen = metric(&child, "whisperer_watched_objects", "kind=\"pods\"");
            (seen >= total_pods as f64).then_some(())
        },
    )
    .await;
    let (hwm, rss) = memory_of(child.pid());
    println!();
    println!(
        "controller process with {} pods cached: VmRSS {:.1} MiB, VmHWM (peak over the whole run) {:.1} MiB",
        metric(&child, "whisperer_watched_objects", "kind=\"pods\""),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = child.stop();
    Ok(())
}

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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::Parser;
use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{poll_until, ControlPlane};
use whisperer_injector::config::Config;
use whisperer_injector::engine::Settings;
use whisperer_injector::reconciler::{
    self, Attachment, AttachmentSpec, ReconcilerArgs, TargetKind, TargetRef,
};

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

const NODE: &str = "bench-node";
static NEXT_IP: AtomicU32 = AtomicU32::new(1);

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
    let settings = Arc::new(ArcSwap::from_pointee(Settings::new(
        Arc::new(Config::default()),
        &own,
    )));
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

fn metric(file: &str, name: &str, filter: &str) -> f64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

async fn run_pod(pods: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let name = pod.name_any();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
    {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding", "metadata": { "name": name },
            "target": { "apiVersion": "v1", "kind": "Node", "name": NODE },
        });
        pods.create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await?;
    }
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let ip = format!(
        "10.{}.{}.{}",
        100 + n / 62_500,
        (n / 250) % 250,
        n % 250 + 2
    );
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({ "status": {
        "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }], "hostIP": "10.255.0.1", "startTime": now,
        "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": now }],
        "containerStatuses": [{ "name": "app", "image": "registry.invalid/app:1", "imageID": "", "ready": true,
            "started": true, "restartCount": 0, "state": { "running": { "startedAt": now } } }],
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Acts as kubelet for `ns` until `want` pods run.
async fn run_all(client: &Client, ns: &str, want: usize) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    poll_until(Duration::from_secs(900), "pods running", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let (running, todo): (Vec<&Pod>, Vec<&Pod>) = list
            .items
            .iter()
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        stream::iter(todo)
            .for_each_concurrent(32, |p| {
                let pods = pods.clone();
                async move {
                    let _ = run_pod(&pods, p).await;
                }
            })
            .await;
        (running.len() >= want).then_some(())
    })
    .await;
}

fn deployment(name: &str, replicas: usize) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] } } }
    }))
    .expect("deployment json")
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
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &reconciler::crd())
        .await?;
    poll_until(Duration::from_secs(60), "CRD served", || async {
        Api::<Attachment>::all(client.clone())
            .list(&ListParams::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let node: Node = serde_json::from_value(
        json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": NODE } }),
    )?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    let own = cp.namespace(&[]).await;

    // Deployments first, all pods Running, before any Attachment exists.
    let mut namespaces = BTreeMap::new();
    for &n in &sizes {
        let ns = cp.namespace(&[]).await;
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &deployment("web", n))
            .await?;
        let t = Instant::now();
        run_all(&client, &ns, n).await;
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
                &Attachment::new(
                    &name,
                    AttachmentSpec {
                        target: Some(TargetRef {
                            kind: TargetKind::Deployment,
                            name: "web".into(),
                        }),
                        selector: None,
                        profile: None,
                        container: None,
                        ttl: None,
                    },
                ),
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
                    let _ = run_pod(&pods, &p).await;
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

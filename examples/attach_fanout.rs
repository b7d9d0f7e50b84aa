//! Attach fan-out at scale, on a simulated cluster (tests/support/kwok.rs: kube-controller-
//! manager + kube-scheduler + kwok, so pods come from real Deployments). Run by
//! bench/attach_fanout.sh; figures in docs/benchmarks.md. In one run:
//!
//! (a) a serial `kubectl debug` loop over the pods of a Deployment, timed, then an Attachment
//!     over the same pods: the per-pod ratio;
//! (b) Attachment created -> every replica attached, for each of `--sizes` (default 1,000 and
//!     10,000), once per reconciler flag set of `--variants` (the first: default flags), and
//!     the reconciler's memory (a child process: VmHWM / VmRSS of its own /proc entry);
//! (c) a rollout of the `--rollout`-replica Deployment under its Attachment: time until every
//!     new replica is attached;
//! (d) a burst of `--burst` pods through the webhook (in this process, registered with the
//!     API server) by a client with `--burst-concurrency` requests in flight, and the
//!     webhook's latency as the API server sees it
//!     (`apiserver_admission_webhook_admission_duration_seconds`, p50/p99 from the histogram
//!     before and after).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use support::builders::{attachment, deployment_with, ephemeral_names};
use support::reconciler_process::{self, ReconcilerProcess};
use support::{injector, install_attachment_crd, metrics, poll_until, ControlPlane};
use whisperer_injector::reconciler::{Attachment, ReconcilerArgs, TargetKind};

#[derive(Parser)]
enum Cmd {
    /// Start a kwok cluster and measure (a) to (d).
    Drive(DriveArgs),
    /// Run the reconciler against $KUBECONFIG until stdin closes (used by `drive`).
    Controller {
        own_namespace: String,
        metrics_file: String,
        #[command(flatten)]
        args: ReconcilerArgs,
    },
}

#[derive(clap::Args)]
struct DriveArgs {
    /// Fake nodes kwok runs.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Pods of (a), the `kubectl debug` loop against the Attachment (0: skip).
    #[arg(long, default_value_t = 200)]
    debug_pods: usize,
    #[arg(long, default_value = "ghcr.io/whisperer-dev/whisperer:v0.1.0")]
    debug_image: String,
    /// kubectl to loop with; default: the one tests/controlplane/build.sh builds.
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Deployment sizes of (b).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// Reconciler flag sets for (b), separated by `;`; `default` is no extra flag; a set
    /// starting with `@PATH` runs the reconciler from another build of this example (e.g. the
    /// previous commit's) for a before/after in one run. (a) and (c) use the first set.
    #[arg(long, default_value = "default")]
    variants: String,
    /// Replicas of the Deployment rolled out in (c); must be one of `--sizes` (0: skip).
    #[arg(long, default_value_t = 1000)]
    rollout: usize,
    /// Pods created through the webhook in (d) (0: skip).
    #[arg(long, default_value_t = 5000)]
    burst: usize,
    #[arg(long, default_value_t = 32)]
    burst_concurrency: usize,
    /// Writes a kube-apiserver CPU profile (`/debug/pprof/profile`, read with `go tool pprof`)
    /// of each attach of (b) into this directory: where the API server's time per pod goes.
    #[arg(long)]
    apiserver_profile: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::controlplane::install_rustls_provider();
    let rt = tokio::runtime::Runtime::new()?;
    match Cmd::parse() {
        Cmd::Drive(args) => rt.block_on(drive(args)),
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

const WAIT: Duration = Duration::from_secs(1200);

fn template(revision: &str) -> serde_json::Value {
    json!({
        "metadata": { "labels": { "app": "web" }, "annotations": { "revision": revision } },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
    })
}

/// Creates Deployment `web` of `n` replicas in `ns`.
async fn create_deployment(client: &Client, ns: &str, n: usize) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &deployment_with("web", i32::try_from(n).expect("replicas"), template("1")),
        )
        .await
        .expect("create deployment");
}

/// Waits until Deployment `web` of `ns` has rolled out: every replica updated and ready.
async fn wait_rolled_out(client: &Client, ns: &str, n: usize) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let want = i32::try_from(n).expect("replicas");
    poll_until(WAIT, &format!("{n} replicas ready in {ns}"), || async {
        let d = api.get("web").await.ok()?;
        let st = d.status.as_ref()?;
        (st.observed_generation >= d.metadata.generation
            && st.updated_replicas == Some(want)
            && st.ready_replicas == Some(want)
            && st.replicas == Some(want))
        .then_some(())
    })
    .await;
}

/// Live pods of `ns` (pages of 500, so a 10,000-pod list does not load the API server at once).
async fn live_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.expect("list pods");
        out.extend(
            page.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none()),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return out,
        }
    }
}

/// Watches Attachment `name` until its status reports `n` pods attached; the time from `t0`.
async fn attached_after(api: &Api<Attachment>, name: &str, n: usize, t0: Instant) -> Duration {
    let stream = watcher::watch_object(api.clone(), name);
    futures::pin_mut!(stream);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .unwrap_or_else(|_| panic!("{name}: not {n} attached within {WAIT:?}"));
        if let Ok(Some(Some(att))) = next {
            let done = att
                .status
                .as_ref()
                .and_then(|s| usize::try_from(s.attached_pods).ok())
                .is_some_and(|a| a >= n);
            if done {
                return t0.elapsed();
            }
        }
    }
}

/// Creates Attachment `name` on Deployment `web` and times it until every one of `n` pods is
/// attached; checks the pods themselves.
async fn attach(client: &Client, ns: &str, name: &str, n: usize) -> Duration {
    let api = Api::<Attachment>::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    api.create(
        &PostParams::default(),
        &attachment(name, Some((TargetKind::Deployment, "web")), None, None),
    )
    .await
    .expect("create attachment");
    let took = attached_after(&api, name, n, t0).await;
    let container = format!("whisperer-{name}");
    let pods = live_pods(client, ns).await;
    let with = pods
        .iter()
        .filter(|p| ephemeral_names(p).contains(&container))
        .count();
    assert_eq!(with, n, "pods of {ns} carrying {container}");
    took
}

/// The profile window: about as long as the attach takes at the goal rate (10,000 in 30 s).
fn profile_seconds(pods: usize) -> u64 {
    (pods as u64 * 3 / 1000).clamp(2, 30)
}

/// Starts a `seconds`-long CPU profile of kube-apiserver, written to `out`; the future ends
/// when the profile has been written.
fn apiserver_profile(
    cp: &ControlPlane,
    kubectl: &std::path::Path,
    out: &std::path::Path,
    seconds: u64,
) -> impl std::future::Future<Output = ()> {
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.args(["--kubeconfig", &cp.kubeconfig_path().display().to_string()])
        .args([
            "get",
            "--raw",
            &format!("/debug/pprof/profile?seconds={seconds}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = out.to_path_buf();
    // Spawned now, not when first polled: the profile window starts with the attach.
    let child = cmd.spawn();
    async move {
        let run = match child {
            Ok(c) => c.wait_with_output().await,
            Err(e) => Err(e),
        };
        match run {
            Ok(o) if o.status.success() => {
                std::fs::write(&out, o.stdout).expect("write profile");
                eprintln!(
                    "kube-apiserver CPU profile ({seconds} s): {}",
                    out.display()
                );
            }
            Ok(o) => eprintln!("no profile: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("no profile: {e}"),
        }
    }
}

async fn delete_attachment(client: &Client, ns: &str, name: &str) {
    let api = Api::<Attachment>::namespaced(client.clone(), ns);
    let _ = api.delete(name, &DeleteParams::default()).await;
    poll_until(WAIT, &format!("attachment {name} gone"), || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

async fn scrape(client: &Client) -> String {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    client.request_text(req).await.expect("scrape /metrics")
}

/// CPU seconds (user + system) a process used so far, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let ticks = f64::from(u32::try_from(rustix::param::clock_ticks_per_second()).unwrap_or(100));
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks
}

/// CPU seconds of the plane's processes (etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler, kwok) and of the reconciler.
fn cpu_snapshot(cp: &ControlPlane, reconciler: u32) -> Vec<f64> {
    cp.pids()
        .into_iter()
        .chain([reconciler])
        .map(cpu_seconds)
        .collect()
}

const CPU_NAMES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "reconciler",
];

fn cpu_note(before: &[f64], after: &[f64]) -> String {
    CPU_NAMES
        .iter()
        .zip(before.iter().zip(after))
        .map(|(n, (b, a))| format!("{n} {:.1}", a - b))
        .collect::<Vec<_>>()
        .join(", ")
}

const PATCH_DURATION: &str = "apiserver_request_duration_seconds";
const PATCH_FILTERS: [&str; 3] = [
    "verb=\"PATCH\"",
    "resource=\"pods\"",
    "subresource=\"ephemeralcontainers\"",
];

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// (a): `kubectl debug` per pod, serially, then an Attachment over the same pods.
async fn debug_loop_vs_attachment(
    cp: &ControlPlane,
    args: &DriveArgs,
    ns: &str,
    kubectl: &std::path::Path,
) {
    let client = cp.client();
    let n = args.debug_pods;
    let names: Vec<String> = live_pods(&client, ns)
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), n);
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let t0 = Instant::now();
    for pod in &names {
        let out = tokio::process::Command::new(kubectl)
            .args(["--kubeconfig", &kubeconfig, "-n", ns, "debug"])
            .arg(format!("pod/{pod}"))
            .args(["--image", &args.debug_image, "--container", "debugger"])
            .output()
            .await
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl debug pod/{pod}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let loop_took = t0.elapsed();
    let with = live_pods(&client, ns)
        .await
        .iter()
        .filter(|p| ephemeral_names(p).iter().any(|c| c == "debugger"))
        .count();
    assert_eq!(with, n, "pods carrying kubectl's debugger");
    let ours = attach(&client, ns, "fanout", n).await;
    let per_kubectl = loop_took.as_secs_f64() * 1000.0 / n as f64;
    let per_ours = ours.as_secs_f64() * 1000.0 / n as f64;
    println!("## (a) serial kubectl debug loop vs one Attachment, {n} pods");
    println!("| | total | per pod |");
    println!("| --- | ---: | ---: |");
    println!(
        "| `kubectl debug pod/X --image=... --container=debugger`, one after another | {:.2} s | {per_kubectl:.1} ms |",
        loop_took.as_secs_f64()
    );
    println!(
        "| Attachment created -> status reports {n} attached | {:.2} s | {per_ours:.2} ms |",
        ours.as_secs_f64()
    );
    println!(
        "ratio (kubectl per pod / Attachment per pod): **{:.1}x**\n",
        per_kubectl / per_ours
    );
}

/// (c): change the template of the `n`-replica Deployment of `ns` (attached by `att`); time
/// until every new replica is Running, and until every one is attached.
async fn rollout(client: &Client, ns: &str, att: &str, n: usize) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let atts = Api::<Attachment>::namespaced(client.clone(), ns);
    let container = format!("whisperer-{att}");
    let t0 = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "template": template("2") } })),
        )
        .await
        .expect("change the template");
    // Both conditions are polled together, so neither waits for the other.
    let running_at: std::cell::Cell<Option<Duration>> = std::cell::Cell::new(None);
    let attached_at = poll_until(WAIT, "rollout: every new replica attached", || async {
        if running_at.get().is_none() {
            let d = deployments.get("web").await.ok()?;
            let st = d.status.as_ref()?;
            let want = i32::try_from(n).ok()?;
            if st.observed_generation >= d.metadata.generation
                && st.updated_replicas == Some(want)
                && st.ready_replicas == Some(want)
                && st.replicas == Some(want)
            {
                running_at.set(Some(t0.elapsed()));
            }
        }
        running_at.get()?;
        let st = atts.get(att).await.ok()?.status?;
        if usize::try_from(st.attached_pods).ok()? < n {
            return None;
        }
        let pods = live_pods(client, ns).await;
        let new = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("revision"))
                    .is_some_and(|r| r == "2")
            })
            .filter(|p| ephemeral_names(p).contains(&container))
            .count();
        (pods.len() == n && new == n).then(|| t0.elapsed())
    })
    .await;
    let running_at = running_at.get().unwrap_or_default();
    println!("## (c) rollout of a {n}-replica Deployment under an Attachment");
    println!("| template changed -> | seconds |");
    println!("| --- | ---: |");
    println!(
        "| every new replica Running and ready (kube-controller-manager, kube-scheduler, kwok) | {:.2} |",
        running_at.as_secs_f64()
    );
    println!(
        "| every new replica attached | **{:.2}** |",
        attached_at.as_secs_f64()
    );
    println!(
        "| attached after the last replica was ready | {:.2} |\n",
        (attached_at.saturating_sub(running_at)).as_secs_f64()
    );
}

/// (d): `burst` opted-in pods created through the webhook, and its latency as the API
/// server measures it.
async fn webhook_burst(cp: &ControlPlane, burst: usize, concurrency: usize) {
    let client = cp.client();
    let ns = cp.namespace(&[("injection", "enabled")]).await;
    let mut hook = injector::start_and_register(cp, &ns, &[]).await;
    let before = scrape(&client).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let t0 = Instant::now();
    let results: Vec<Result<bool, String>> = stream::iter(0..burst)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p = injector::pod(&format!("burst-{i}"), true);
                pods.create(&PostParams::default(), &p)
                    .await
                    .map(|created| injector::has_whisperer(&created))
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = t0.elapsed();
    let after = scrape(&client).await;
    hook.stop().await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let injected = results.iter().filter(|r| matches!(r, Ok(true))).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failed create: {e}");
    }
    let name = "apiserver_admission_webhook_admission_duration_seconds";
    let filters = [
        "name=\"inject.whisperer.dev\"",
        "operation=\"CREATE\"",
        "type=\"admit\"",
    ];
    let calls = metrics::buckets(&after, name, &filters)
        .last()
        .map_or(0.0, |b| b.1)
        - metrics::buckets(&before, name, &filters)
            .last()
            .map_or(0.0, |b| b.1);
    let q = |q| metrics::quantile_between(&before, &after, name, &filters, q).unwrap_or(f64::NAN);
    println!("## (d) {burst}-pod burst through the webhook ({concurrency} creates in flight)");
    println!(
        "| pods created | failed | injected | creates/s | webhook calls (API server) | p50 | p99 |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {failed} | {injected} | {:.0} | {calls} | {:.1} ms | **{:.1} ms** |\n",
        burst - failed,
        (burst - failed) as f64 / took.as_secs_f64(),
        q(0.5) * 1000.0,
        q(0.99) * 1000.0
    );
}

async fn drive(args: DriveArgs) -> Result<(), Box<dyn std::error::Error>> {
    let kubectl = args
        .kubectl
        .clone()
        .unwrap_or_else(|| support::binary_dir().join("kubectl"));
    let t0 = Instant::now();
    if args.apiserver_profile.is_some() {
        std::env::set_var(support::controlplane::APISERVER_PROFILING, "1");
    }
    let cp = ControlPlane::start_with_kwok(args.nodes).await;
    let client = cp.client();
    install_attachment_crd(&client).await;
    let own = cp.namespace(&[]).await;
    let dir = tempfile::tempdir()?;
    eprintln!(
        "kwok cluster with {} nodes up after {:.1?}",
        args.nodes,
        t0.elapsed()
    );

    // Every Deployment first, all replicas Running, before the reconciler starts.
    let debug_ns = cp.namespace(&[]).await;
    let mut sized = Vec::new();
    if args.debug_pods > 0 {
        create_deployment(&client, &debug_ns, args.debug_pods).await;
    }
    for &n in &args.sizes {
        let ns = cp.namespace(&[]).await;
        create_deployment(&client, &ns, n).await;
        sized.push((n, ns));
    }
    let t = Instant::now();
    if args.debug_pods > 0 {
        wait_rolled_out(&client, &debug_ns, args.debug_pods).await;
    }
    for (n, ns) in &sized {
        wait_rolled_out(&client, ns, *n).await;
    }
    let total: usize = args.debug_pods + args.sizes.iter().sum::<usize>();
    eprintln!(
        "{total} replicas Running on kwok after {:.1?} (created by kube-controller-manager, bound by kube-scheduler)",
        t.elapsed()
    );

    let variants: Vec<(Option<PathBuf>, Vec<String>)> = args
        .variants
        .split(';')
        .map(|v| {
            let mut words: Vec<String> = v
                .split_whitespace()
                .filter(|w| *w != "default")
                .map(str::to_string)
                .collect();
            let exe = match words.first() {
                Some(w) if w.starts_with('@') => Some(PathBuf::from(&words.remove(0)[1..])),
                _ => None,
            };
            (exe, words)
        })
        .collect();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (i, (exe, flags)) in variants.iter().enumerate() {
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let child = match exe {
            Some(exe) => {
                ReconcilerProcess::spawn_exe(exe, &cp, &own, dir.path(), &i.to_string(), &refs)
            }
            None => ReconcilerProcess::spawn(&cp, &own, dir.path(), &i.to_string(), &refs),
        };
        poll_until(WAIT, "the reconciler caches every pod", || async {
            let seen = child.metric("whisperer_watched_objects", "kind=\"pods\"");
            (seen >= total as f64).then_some(())
        })
        .await;
        let mut label = if flags.is_empty() {
            "default flags".to_string()
        } else {
            format!("`{}`", flags.join(" "))
        };
        if let Some(exe) = exe {
            label = format!("{label}, {}", exe.display());
        }
        let (_, rss) = child.memory();
        rows.push(format!(
            "| memory | {label} | VmRSS {:.1} MiB with {total} pods cached, before any Attachment | | |",
            mib(rss)
        ));
        if i == 0 && args.debug_pods > 0 {
            debug_loop_vs_attachment(&cp, &args, &debug_ns, &kubectl).await;
        }
        for (n, ns) in &sized {
            let before = child.metric("whisperer_ephemeral_patches_total", "mode=\"real\"");
            let name = format!("bench-{i}");
            let (scrape0, cpu0) = (scrape(&client).await, cpu_snapshot(&cp, child.pid()));
            let profile = args.apiserver_profile.as_ref().map(|dir| {
                let out = dir.join(format!("apiserver-{n}-{i}.pprof"));
                apiserver_profile(&cp, &kubectl, &out, profile_seconds(*n))
            });
            let took = attach(&client, ns, &name, *n).await;
            if let Some(p) = profile {
                p.await;
            }
            let (scrape1, cpu1) = (scrape(&client).await, cpu_snapshot(&cp, child.pid()));
            let q = |q| {
                metrics::quantile_between(&scrape0, &scrape1, PATCH_DURATION, &PATCH_FILTERS, q)
                    .unwrap_or(f64::NAN)
                    * 1000.0
            };
            let writes = |filter| {
                let count = |t| metrics::sum(t, "apiserver_request_total", filter);
                count(&scrape1) - count(&scrape0)
            };
            notes.push(format!(
                "{n} pods, {label}: API server PATCH pods/ephemeralcontainers p50 {:.1} ms, p99 {:.1} ms; Attachment status writes {}, pod status writes {}; CPU seconds: {}",
                q(0.5),
                q(0.99),
                writes("resource=\"attachments\",scope=\"resource\",subresource=\"status\""),
                writes("resource=\"pods\",scope=\"resource\",subresource=\"status\""),
                cpu_note(&cpu0, &cpu1)
            ));
            // The metrics file is rewritten every 500 ms.
            let patches = poll_until(Duration::from_secs(5), "patch counter", || async {
                let now = child.metric("whisperer_ephemeral_patches_total", "mode=\"real\"");
                (now - before >= *n as f64).then_some(now - before)
            })
            .await;
            rows.push(format!(
                "| {n} | {label} | **{:.2} s** | {:.0} | {patches} |",
                took.as_secs_f64(),
                *n as f64 / took.as_secs_f64()
            ));
        }
        let (hwm, rss) = child.memory();
        let cached = child.metric("whisperer_watched_objects", "kind=\"pods\"");
        rows.push(format!(
            "| memory | {label} | VmRSS {:.1} MiB, **VmHWM {:.1} MiB** with {cached} pods cached | | |",
            mib(rss),
            mib(hwm)
        ));
        if i == 0 && args.rollout > 0 {
            let ns = &sized
                .iter()
                .find(|(n, _)| *n == args.rollout)
                .expect("--rollout is one of --sizes")
                .1;
            rollout(&client, ns, "bench-0", args.rollout).await;
            let (hwm, _) = child.memory();
            rows.push(format!(
                "| memory | {label} | VmHWM {:.1} MiB after the rollout | | |",
                mib(hwm)
            ));
        }
        for (_, ns) in &sized {
            delete_attachment(&client, ns, &format!("bench-{i}")).await;
        }
        if i == 0 && args.debug_pods > 0 {
            delete_attachment(&client, &debug_ns, "fanout").await;
        }
        let _ = child.stop();
    }
    println!("## (b) Attachment created -> every replica attached");
    println!("| pods | reconciler flags | time | pods/s | patches |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    for r in rows {
        println!("{r}");
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    println!();

    if args.burst > 0 {
        webhook_burst(&cp, args.burst, args.burst_concurrency).await;
    }
    eprintln!("whole run: {:.1?}", t0.elapsed());
    Ok(())
}

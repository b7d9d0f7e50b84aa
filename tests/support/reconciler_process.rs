//! The reconciler as a child process of a benchmark, so that `/proc/<pid>/status` (VmRSS,
//! VmHWM) is the controller's alone. The benchmark binary re-runs itself with a `controller`
//! subcommand whose body is [`child_main`]; the parent talks to it through its metrics file
//! (written every 500 ms) and stops it by closing its stdin.
//!
//! ```ignore
//! // in the example's clap enum: Controller { own_namespace, metrics_file, #[command(flatten)] args }
//! Cmd::Controller { own_namespace, metrics_file, args } =>
//!     rt.block_on(support::reconciler_process::child_main(own_namespace, metrics_file, args)),
//! let child = ReconcilerProcess::spawn(&cp, &own, dir, "run1", &["--patch-qps", "200"]);
//! child.metric("whisperer_ephemeral_patches_total", "mode=\"real\"");
//! let (peak_kb, rss_kb) = child.stop();
//! ```
//!
//! [`ReconcilerProcess::spawn_serve`] runs the product binary's `serve` instead (reconciler on,
//! DNS proxy off), read through its admin port's `/metrics` and stopped with SIGTERM: the memory
//! of the process that ships.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use whisperer_injector::config::Config;
use whisperer_injector::reconciler::{self, ReconcilerArgs};

use super::{builders, metrics, ControlPlane};

/// The subcommand the child is started with.
pub const SUBCOMMAND: &str = "controller";

/// What the child runs: the reconciler against `$KUBECONFIG` with the default config, until
/// its stdin closes.
pub async fn child_main(
    own: String,
    metrics_file: String,
    args: ReconcilerArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let client = kube::Client::try_default().await?;
    let settings = builders::shared_settings(Config::default(), &own);
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = reconciler::start(client, settings, own, &args, &mut registry).await?;
    let registry = Arc::new(registry);
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
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await?;
    writer.abort();
    handle.shutdown().await;
    Ok(())
}

/// kB values of the named fields (`"VmRSS:"` ...) of /proc/<pid>/status; 0 when missing.
fn status_kb<const N: usize>(pid: u32, names: [&str; N]) -> [u64; N] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    names.map(|name| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// kB values of VmHWM (peak) and VmRSS from /proc/<pid>/status.
pub fn memory_of(pid: u32) -> (u64, u64) {
    let [hwm, rss] = status_kb(pid, ["VmHWM:", "VmRSS:"]);
    (hwm, rss)
}

/// RssAnon (the heap and stacks, what the process holds) in kB; the rest of VmRSS is the
/// mapped binary and libraries.
pub fn anonymous_of(pid: u32) -> u64 {
    let [anon] = status_kb(pid, ["RssAnon:"]);
    anon
}

/// `serve`'s DNS proxy: off, unless `BENCH_SERVE_DNS=on` asks the bench to measure the process
/// as shipped (reconciler and DNS proxy, each watching every pod), on a free loopback port.
fn dns_flags() -> Vec<String> {
    if std::env::var("BENCH_SERVE_DNS").as_deref() == Ok("on") {
        let listen = format!("127.0.0.1:{}", super::controlplane::free_port());
        vec!["--dns".into(), "on".into(), "--dns-listen".into(), listen]
    } else {
        vec!["--dns".into(), "off".into()]
    }
}

pub struct ReconcilerProcess {
    child: Child,
    metrics: MetricsAt,
}

/// Where the child's metrics are read.
enum MetricsAt {
    /// A file of Prometheus text, rewritten every 500 ms.
    File(String),
    /// `GET /metrics` on this loopback port.
    Admin(u16),
}

/// `exe`, or `exe` under `$BENCH_CONTROLLER_WRAP`: a profiler (`heaptrack -o /tmp/r`; the
/// memory figures are then the wrapper's) or a CPU set (`taskset -c 1`, which execs: the same
/// process, on one CPU, as under a pod's CPU limit).
fn wrapped(exe: &Path) -> Command {
    let wrap = std::env::var("BENCH_CONTROLLER_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

/// `GET /metrics` from a plain-HTTP loopback port; empty on any failure.
fn scrape_admin(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    if s.write_all(request.as_bytes()).is_ok() && s.read_to_string(&mut text).is_ok() {
        if let Some(body) = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()) {
            return body;
        }
    }
    String::new()
}

impl ReconcilerProcess {
    /// Starts `<this executable> controller <own> <metrics file> --leader-election=false
    /// <flags>` against the plane; `RUST_LOG` of the child is `$BENCH_CONTROLLER_LOG` or `warn`.
    pub fn spawn(
        cp: &ControlPlane,
        own: &str,
        dir: &Path,
        tag: &str,
        flags: &[&str],
    ) -> ReconcilerProcess {
        let exe = std::env::current_exe().expect("current exe");
        Self::spawn_exe(&exe, cp, own, dir, tag, flags)
    }

    /// [`Self::spawn`] with another build of the same benchmark as the child (a before/after
    /// comparison in one run).
    pub fn spawn_exe(
        exe: &Path,
        cp: &ControlPlane,
        own: &str,
        dir: &Path,
        tag: &str,
        flags: &[&str],
    ) -> ReconcilerProcess {
        let metrics = dir.join(format!("metrics-{tag}.txt")).display().to_string();
        let child = wrapped(exe)
            .args([SUBCOMMAND, own, &metrics, "--leader-election=false"])
            .args(flags)
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn controller");
        ReconcilerProcess {
            child,
            metrics: MetricsAt::File(metrics),
        }
    }

    /// The product: `exe serve` with the reconciler on (no leader election), the DNS proxy
    /// and the Pod Security watch off, a throw-away serving certificate in `dir`.
    pub fn spawn_serve(
        exe: &Path,
        cp: &ControlPlane,
        own: &str,
        dir: &Path,
        flags: &[&str],
    ) -> ReconcilerProcess {
        let pki = super::certs::Pki::generate();
        let (cert, key) = (dir.join("serve-tls.crt"), dir.join("serve-tls.key"));
        std::fs::write(&cert, &pki.serving_cert).expect("write cert");
        std::fs::write(&key, &pki.serving_key).expect("write key");
        let admin = super::controlplane::free_port();
        let listen = format!("127.0.0.1:{}", super::controlplane::free_port());
        let admin_listen = format!("127.0.0.1:{admin}");
        let child = wrapped(exe)
            .arg("serve")
            .args(["--listen", &listen, "--admin-listen", &admin_listen])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--kubeconfig")
            .arg(cp.kubeconfig_path())
            .args(["--namespace", own, "--reconciler", "on"])
            .args(dns_flags())
            .args(["--pod-security-check", "off", "--leader-election", "false"])
            .args(["--log", "warn"])
            .args(flags)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn serve");
        ReconcilerProcess {
            child,
            metrics: MetricsAt::Admin(admin),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmHWM, VmRSS) in kB.
    pub fn memory(&self) -> (u64, u64) {
        memory_of(self.pid())
    }

    /// Sum of the samples of `name` whose line contains `filter`, from the last metrics file.
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        let text = match &self.metrics {
            MetricsAt::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            MetricsAt::Admin(port) => scrape_admin(*port),
        };
        metrics::sum(&text, name, filter)
    }

    /// Stops the child (closes its stdin, or SIGTERM for `serve`, then waits); returns its
    /// last (VmHWM, VmRSS) in kB.
    pub fn stop(mut self) -> (u64, u64) {
        let mem = self.memory();
        if let MetricsAt::Admin(_) = self.metrics {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        mem
    }
}

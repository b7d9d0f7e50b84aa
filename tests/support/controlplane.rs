//! A real Kubernetes control plane on loopback: etcd + kube-apiserver, and
//! optionally kube-controller-manager, built from upstream sources by
//! `tests/controlplane/build.sh`. No kubelet and no scheduler run: pods stay
//! `Pending` until a test binds them and writes their status as the scheduler
//! and a kubelet would (see [`ControlPlane::mark_pod_running`]).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::certs::Pki;

/// Set (to anything) to serve kube-apiserver's `/debug/pprof`.
pub const APISERVER_PROFILING: &str = "WHISPERER_APISERVER_PROFILING";

/// Must equal the `k8s.io/kubernetes` version in `tests/controlplane/go.mod`
/// (checked by a unit test in `tests/controlplane_smoke.rs`).
pub const KUBERNETES_VERSION: &str = "v1.35.4";

/// How long a test waits for something asynchronous (a watch event, a reconciler pass, a
/// controller, a spawned process) before failing. An upper bound sized for a loaded 2-core
/// CI machine: a passing test never waits it out.
pub const WAIT: Duration = Duration::from_secs(60);

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);
const START_ATTEMPTS: usize = 3;
/// Host IP of every node registered by the harness.
pub use super::kubelet::HOST_IP;

/// Where the binaries are: `$WHISPERER_CP_BIN` if set, else
/// `${WHISPERER_CP_CACHE:-<repo>/target/controlplane}/<version>/` (what
/// `tests/controlplane/build.sh` writes).
pub fn binary_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WHISPERER_CP_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("WHISPERER_CP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controlplane"));
    cache.join(KUBERNETES_VERSION)
}

fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    if !path.is_file() {
        panic!(
            "control plane binary {} is missing: run tests/controlplane/build.sh \
             (or set WHISPERER_CP_BIN to a directory holding etcd, kube-apiserver \
             and kube-controller-manager {KUBERNETES_VERSION})",
            path.display()
        );
    }
    path
}

/// Test builds link rustls with both `ring` (kube, the product) and
/// `aws-lc-rs` (reqwest's default features), so rustls cannot pick a
/// process-wide provider by itself and `kube::Client` (or any
/// `ClientConfig::builder()`) panics. Installs ring, like the product; safe to
/// call any number of times. `ControlPlane::start*` call it.
pub fn install_rustls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A free TCP port on 127.0.0.1. Never hands out the same port twice within a
/// process, so parallel tests in one binary do not collide; a collision with
/// another process is caught at start-up and retried.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut seen = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.insert(port) {
            return port;
        }
    }
}

/// Polls `f` every 75 ms until it yields `Some`, and panics naming `what`
/// after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, args: &[String], dir: &Path) -> Proc {
        Self::spawn_binary(name, &binary(name), args, dir)
    }

    fn spawn_binary(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create process log file");
        let err = out.try_clone().expect("clone log file handle");
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Proc { name, child, log }
    }

    /// `Some(description)` if the process has exited.
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: wait failed: {e}", self.name)),
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
    }

    /// Waits until `deadline` for the process to exit after SIGTERM, then
    /// SIGKILLs it; always reaps it.
    fn reap(&mut self, deadline: Instant) {
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct StartError {
    message: String,
    /// A port was taken between `free_port()` and the bind: try again.
    port_clash: bool,
}

/// One running control plane. Dropping it stops the processes (SIGTERM, then
/// SIGKILL after a grace period) and removes its temporary directory, also
/// when the test panics. Set `WHISPERER_CP_KEEP=1` to keep the directory
/// (logs, certificates, kubeconfig) for a post-mortem.
pub struct ControlPlane {
    // Field order matters: processes are stopped in `drop`, then `dir` is removed.
    procs: Vec<Proc>,
    config: Option<kube::Config>,
    kubeconfig: PathBuf,
    apiserver_port: u16,
    ca_pem: String,
    /// Start-up finished; failures before that already carry the log tails.
    booted: bool,
    dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// etcd + kube-apiserver.
    pub async fn start() -> ControlPlane {
        Self::start_inner(false, &[]).await
    }

    /// etcd + kube-apiserver + kube-controller-manager with its default
    /// controllers (Deployment/ReplicaSet, Job, CronJob, StatefulSet,
    /// DaemonSet, garbage collector, namespace, service account ...).
    pub async fn start_with_controllers() -> ControlPlane {
        Self::start_inner(true, &[]).await
    }

    /// Like [`Self::start_with_controllers`], with extra kube-controller-manager flags (the
    /// scale harness, `super::kwok`, lifts its client's 20 requests/s).
    pub(super) async fn start_with_controller_flags(kcm_extra: &[&str]) -> ControlPlane {
        Self::start_inner(true, kcm_extra).await
    }

    async fn start_inner(with_controllers: bool, kcm_extra: &[&str]) -> ControlPlane {
        install_rustls_provider();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut plane = ControlPlane::prepare();
            match plane.boot(with_controllers, kcm_extra).await {
                Ok(()) => return plane,
                Err(e) if e.port_clash => last = e.message,
                Err(e) => panic!("{}", e.message),
            }
            // `plane` drops here: its processes are stopped before the retry.
        }
        panic!(
            "control plane did not start after {START_ATTEMPTS} attempts (port clashes):\n{last}"
        );
    }

    fn prepare() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("whisperer-cp-")
            .tempdir()
            .expect("create control plane temp dir");
        ControlPlane {
            procs: Vec::new(),
            config: None,
            kubeconfig: dir.path().join("kubeconfig"),
            apiserver_port: 0,
            ca_pem: String::new(),
            booted: false,
            dir: Some(dir),
        }
    }

    /// `name` in the plane's temp dir (logs, certificates, kubeconfig, config files).
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir
            .as_ref()
            .expect("temp dir lives as long as the plane")
            .path()
            .join(name)
    }

    pub(super) fn write(&self, name: &str, contents: &str) -> String {
        let path = self.path(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }

    fn failure(&mut self, what: String) -> StartError {
        let mut message = format!(
            "control plane failed to start: {what}\n(binaries from {})",
            binary_dir().display()
        );
        let mut port_clash = false;
        for p in &mut self.procs {
            let tail = p.log_tail(40);
            port_clash |= tail.contains("address already in use");
            let state = p.exited().unwrap_or_else(|| "running".to_string());
            message.push_str(&format!(
                "\n----- {} ({state}), last lines of {} -----\n{tail}",
                p.name,
                p.log.display()
            ));
        }
        StartError {
            message,
            port_clash,
        }
    }

    fn check_alive(&mut self) -> Result<(), StartError> {
        let dead = self.procs.iter_mut().find_map(|p| p.exited());
        match dead {
            Some(what) => Err(self.failure(what)),
            None => Ok(()),
        }
    }

    /// Polls `probe` until it returns true, failing early if a process dies.
    async fn wait_ready<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<(), StartError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if probe().await {
                return Ok(());
            }
            self.check_alive()?;
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failure(format!("{what} not ready after {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn boot(&mut self, with_controllers: bool, kcm_extra: &[&str]) -> Result<(), StartError> {
        let t0 = Instant::now();
        let pki = Pki::generate();
        let ca = self.write("ca.crt", &pki.ca_cert);
        let ca_key = self.write("ca.key", &pki.ca_key);
        let serving_cert = self.write("serving.crt", &pki.serving_cert);
        let serving_key = self.write("serving.key", &pki.serving_key);
        let sa_key = self.write("sa.key", &pki.sa_key);
        let sa_pub = self.write("sa.pub", &pki.sa_pub);
        self.ca_pem = pki.ca_cert.clone();
        let dir = self.path("");

        // etcd: single member, loopback only, no fsync (data is throw-away).
        let etcd_client = free_port();
        let etcd_peer = free_port();
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=whisperer".to_string(),
            format!("--data-dir={}", self.path("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=whisperer={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        self.procs.push(Proc::spawn("etcd", &etcd_args, &dir));
        self.wait_ready("etcd /health", || etcd_healthy(etcd_client))
            .await?;
        let t_etcd = t0.elapsed();

        // kube-apiserver: the flags envtest uses, plus what makes it closer to
        // a real cluster (see tests/README.md).
        self.apiserver_port = free_port();
        let apiserver_args = vec![
            format!("--etcd-servers={client_url}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", self.apiserver_port),
            "--advertise-address=127.0.0.1".to_string(),
            // The `kubernetes` Service would get 127.0.0.1 as endpoint, which
            // Endpoints validation rejects (loopback) and the reconciler would
            // log an error every few seconds. Nothing in-cluster needs it.
            "--endpoint-reconciler-type=none".to_string(),
            format!("--cert-dir={}", self.path("apiserver-certs").display()),
            format!("--tls-cert-file={serving_cert}"),
            format!("--tls-private-key-file={serving_key}"),
            format!("--client-ca-file={ca}"),
            "--authorization-mode=Node,RBAC".to_string(),
            // Admission plugins: upstream defaults, ServiceAccount included
            // (envtest disables it). Pods then get the projected token volume
            // a real cluster adds, before mutating webhooks see them, so
            // JSON patches are tested against realistic pod specs.
            // `namespace()` creates the `default` ServiceAccount that
            // kube-controller-manager would otherwise create.
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--allow-privileged=true".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!("--service-account-key-file={sa_pub}"),
            format!("--service-account-signing-key-file={sa_key}"),
            // Front-proxy (aggregation) client CA, as kubeadm sets it: the
            // apiserver publishes it in kube-system/extension-apiserver-authentication,
            // which kube-controller-manager's delegated authentication reads.
            format!("--requestheader-client-ca-file={ca}"),
            "--requestheader-allowed-names=front-proxy-client".to_string(),
            "--requestheader-username-headers=X-Remote-User".to_string(),
            "--requestheader-group-headers=X-Remote-Group".to_string(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
            // Benchmarks read where the API server's time goes (examples/attach_fanout).
            format!(
                "--profiling={}",
                std::env::var_os(APISERVER_PROFILING).is_some()
            ),
        ];
        self.procs
            .push(Proc::spawn("kube-apiserver", &apiserver_args, &dir));

        let kubeconfig = kubeconfig_yaml(&self.server_url(), &pki);
        let kubeconfig_path = self.write("kubeconfig", &kubeconfig);
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("parse generated kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube::Config from generated kubeconfig");
        let client = kube::Client::try_from(config.clone()).expect("kube client");
        self.config = Some(config.clone());
        self.wait_ready("kube-apiserver /readyz", || {
            let client = client.clone();
            async move { get_ok(&client, "/readyz").await }
        })
        .await?;

        let t_apiserver = t0.elapsed();
        if with_controllers {
            let kcm_port = free_port();
            let mut kcm_args = vec![
                format!("--kubeconfig={kubeconfig_path}"),
                format!("--authentication-kubeconfig={kubeconfig_path}"),
                format!("--authorization-kubeconfig={kubeconfig_path}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={kcm_port}"),
                format!("--tls-cert-file={serving_cert}"),
                format!("--tls-private-key-file={serving_key}"),
                format!("--cert-dir={}", self.path("kcm-certs").display()),
                "--controllers=*".to_string(),
                "--leader-elect=false".to_string(),
                "--use-service-account-credentials=false".to_string(),
                format!("--root-ca-file={ca}"),
                format!("--service-account-private-key-file={sa_key}"),
                format!("--cluster-signing-cert-file={ca}"),
                format!("--cluster-signing-key-file={ca_key}"),
                "--cluster-name=whisperer-test".to_string(),
                "--profiling=false".to_string(),
            ];
            kcm_args.extend(kcm_extra.iter().map(|a| a.to_string()));
            self.procs
                .push(Proc::spawn("kube-controller-manager", &kcm_args, &dir));
            let mut kcm_config = config;
            kcm_config.cluster_url = format!("https://127.0.0.1:{kcm_port}")
                .parse()
                .expect("kcm url");
            let kcm = kube::Client::try_from(kcm_config).expect("kcm client");
            self.wait_ready("kube-controller-manager /healthz", || {
                let kcm = kcm.clone();
                async move { get_ok(&kcm, "/healthz").await }
            })
            .await?;
        }
        self.booted = true;
        // Shown with the output of failing tests (and with --nocapture).
        eprintln!(
            "control plane {} up in {:.1?} (etcd {t_etcd:.1?}, kube-apiserver {t_apiserver:.1?}{})",
            self.server_url(),
            t0.elapsed(),
            if with_controllers {
                ", + kube-controller-manager"
            } else {
                ""
            },
        );
        Ok(())
    }

    /// A fresh client (admin, system:masters) built from the generated
    /// kubeconfig. Must be called inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let config = self.config.clone().expect("plane is started");
        kube::Client::try_from(config).expect("kube client from kubeconfig")
    }

    /// The admin `kube::Config` the clients are built from (see `support::impersonate` for
    /// clients acting as someone else).
    pub fn config(&self) -> kube::Config {
        self.config.clone().expect("plane is started")
    }

    /// The generated kubeconfig (admin client certificate, CA inline).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT` of kube-apiserver.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// PEM of the CA that signed the apiserver serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Process ids of etcd, kube-apiserver (and kube-controller-manager, and what
    /// [`Self::add_process`] started).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Starts another component (`bin` with `args`, log `<name>.log` in the plane's dir) and
    /// waits until `probe` says it is ready: it is then stopped with the plane (before the
    /// processes started earlier) and its log tail printed when a test panics, like the
    /// others'. Panics with every log tail if it exits or is not ready within 60 s.
    pub(super) async fn add_process<F, Fut>(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: &[String],
        probe: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let dir = self.path("");
        self.procs.push(Proc::spawn_binary(name, bin, args, &dir));
        if let Err(e) = self.wait_ready(name, probe).await {
            panic!("{}", e.message);
        }
    }

    /// A client like [`Self::client`] but for another component serving HTTPS on
    /// 127.0.0.1:`port` with the plane's serving certificate (health probes).
    pub(super) fn client_for_port(&self, port: u16) -> kube::Client {
        let mut config = self.config();
        config.cluster_url = format!("https://127.0.0.1:{port}")
            .parse()
            .expect("component url");
        kube::Client::try_from(config).expect("component client")
    }

    /// A fresh namespace with `labels`, ready for pods right away: its
    /// `default` ServiceAccount is created here (kube-controller-manager's
    /// serviceaccount controller does it in a real cluster, and may race us
    /// when it runs: AlreadyExists is fine).
    pub async fn namespace(&self, labels: &[(&str, &str)]) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{n}-{}", random_suffix());
        let client = self.client();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<ServiceAccount>::namespaced(client, &name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create default ServiceAccount in {name}: {e}"),
        }
        name
    }

    /// Registers a `Ready` Node named `node` unless it exists, as a kubelet would (see
    /// [`super::kubelet::register_node`]).
    pub async fn register_node(&self, node: &str) {
        super::kubelet::register_node(&self.client(), node).await;
    }

    /// Does what the scheduler and a kubelet would: registers `node`, binds the pod to it
    /// (unless already bound) and writes a `Running` status with `pod_ip` (see
    /// [`super::kubelet::run_pod`]).
    pub async fn mark_pod_running(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        pod_ip: &str,
    ) -> Pod {
        self.register_node(node).await;
        let pods = Api::<Pod>::namespaced(self.client(), namespace);
        let pod = pods
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("get pod {namespace}/{name}: {e}"));
        super::kubelet::run_pod(&pods, &pod, node, pod_ip)
            .await
            .unwrap_or_else(|e| panic!("run pod {namespace}/{name} on {node}: {e}"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.booted && std::thread::panicking() {
            for p in &self.procs {
                eprintln!(
                    "----- {} log tail ({}) -----\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(20)
                );
            }
        }
        // Stop in reverse start order, each before the next: kube-apiserver
        // cleans up its lease in etcd on SIGTERM and hangs if etcd is gone.
        for p in self.procs.iter_mut().rev() {
            p.terminate();
            p.reap(Instant::now() + STOP_GRACE);
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("WHISPERER_CP_KEEP").is_some() {
                eprintln!("keeping control plane dir {}", dir.keep().display());
            }
        }
    }
}

pub(super) async fn get_ok(client: &kube::Client, path: &str) -> bool {
    let Ok(req) = http::Request::get(path).body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

async fn etcd_healthy(port: u16) -> bool {
    http_get_contains(port, "/health", "\"health\":\"true\"").await
}

/// A plain-HTTP GET of `path` on 127.0.0.1:`port` (2 s at most) whose answer contains
/// `needle`.
pub(super) async fn http_get_contains(port: u16, path: &str, needle: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).contains(needle))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

fn kubeconfig_yaml(server: &str, pki: &Pki) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: whisperer-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: whisperer-test
  context:
    cluster: whisperer-test
    user: admin
    namespace: default
current-context: whisperer-test
",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin_cert),
        key = b64(&pki.admin_key),
    )
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly per instance; no extra dependency needed.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:06x}", h.finish() & 0xff_ffff)
}

//! The Whisperer end to end, in network namespaces this test makes: a "node" namespace with a
//! bridge, and two pod namespaces, `web-0` (an HTTP server, and the agent) and `client-0`
//! (curl and a pipelining client). The whole control plane, `serve` (webhook, reconciler,
//! control API, DNS proxy) runs in the node namespace, so the agent reaches the DNS proxy
//! and the control API at the node's address with its pod IP as the source, as in a cluster.
//!
//! The agent is started with exactly the args and env of the ephemeral container that a real
//! Attachment put on `web-0` (fieldRefs resolved as a kubelet would). Asserted:
//! JSON lines with method/path/status and the pod names of both ends (PTR through the DNS
//! proxy); a pcapng file tshark reads with as many port-8080 packets as tcpdump saw on the
//! same traffic; rotation by size; detach (delete the Attachment) exits 0 within two poll
//! intervals; SIGTERM flushes readable files; the deadline stops the agent.
//!
//! The outer test (`agent_in_pod_namespaces`) builds the namespaces and re-runs this binary
//! inside the node namespace for the inner one. Without root both skip with a message.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{EphemeralContainer, Pod};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use support::netns::{agent_binary, have, sh, PodNs, Topology};
use support::{poll_until, ControlPlane, WAIT};
use whisperer_injector::cli::ServeArgs;
use whisperer_injector::reconciler::{Attachment, TargetKind};

const TOPOLOGY_ENV: &str = "WHISPERER_E2E_TOPOLOGY";
const INNER: &str = "inner_agent_in_pod_namespaces";
const POLL: Duration = Duration::from_secs(2);
const HTTP_PORT: u16 = 8080;

/// The HTTP/1.1 server in web-0's namespace, and the pipelining client in client-0's.
const HELPER_PY: &str = r#"
import http.server, socket, socketserver, struct, sys

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        p = self.path
        if p.startswith("/missing"):
            self.reply(404, b"not here\n")
        elif p.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in [b"hello ", b"chunked ", b"world\n"]:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif p.startswith("/reset"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.wfile.close()
            self.rfile.close()
            self.connection.close()
            self.close_connection = True
        elif p.startswith("/big"):
            n = int(p.split("=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"b" * 65536
            while n > 0:
                k = min(n, len(chunk))
                self.wfile.write(chunk[:k])
                n -= k
        else:
            self.reply(200, ("ok %s\n" % p).encode())
    def do_POST(self):
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                n += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            n = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.reply(201, ("got %d\n" % n).encode())

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

if sys.argv[1] == "serve":
    S((sys.argv[2], int(sys.argv[3])), H).serve_forever()
else:
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])))
    host = "Host: web\r\n"
    s.sendall(("GET /p1 HTTP/1.1\r\n%s\r\nGET /p2 HTTP/1.1\r\n%s\r\nGET /p3 HTTP/1.1\r\n%sConnection: close\r\n\r\n" % (host, host, host)).encode())
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    print(data.count(b"HTTP/1.1 200"))
"#;

#[tokio::test]
async fn agent_in_pod_namespaces() {
    if let Some(why) = Topology::skip_reason() {
        eprintln!("skipping agent_in_pod_namespaces: {why}");
        return;
    }
    for tool in ["tshark", "tcpdump", "curl", "python3"] {
        assert!(have(tool), "{tool} is needed (installed by .ci/run)");
    }
    let agent = agent_binary();
    let topo = Topology::create("a", 2);
    let exe = std::env::current_exe().expect("test executable");
    let desc = json!({
        "node": topo.node.ip,
        "web": {"netns": topo.pods[0].netns, "ip": topo.pods[0].ip},
        "client": {"netns": topo.pods[1].netns, "ip": topo.pods[1].ip},
        "agent": agent,
    });
    let status = topo
        .node
        .command(exe)
        .args([
            INNER,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(TOPOLOGY_ENV, desc.to_string())
        .status()
        .expect("run the inner test in the node namespace");
    assert!(
        status.success(),
        "the inner test failed (its output is above)"
    );
}

struct Env {
    node: String,
    web: PodNs,
    client: PodNs,
    agent: PathBuf,
}

fn topology() -> Option<Env> {
    let v: Value = serde_json::from_str(&std::env::var(TOPOLOGY_ENV).ok()?).ok()?;
    let pod = |k: &str| PodNs {
        netns: v[k]["netns"].as_str().unwrap_or_default().into(),
        ip: v[k]["ip"].as_str().unwrap_or_default().into(),
    };
    Some(Env {
        node: v["node"].as_str()?.into(),
        web: pod("web"),
        client: pod("client"),
        agent: v["agent"].as_str()?.into(),
    })
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    sh("kill", &[&format!("-{sig}"), &child.id().to_string()]);
}

/// The agent's command line and env, read from the ephemeral container as a kubelet would.
fn container_spec(pod: &Pod, name: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let c: &EphemeralContainer = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no ephemeral container {name}"));
    assert!(
        c.volume_mounts.as_deref().unwrap_or_default().is_empty(),
        "an attached Whisperer gets no volumes"
    );
    let mut env = BTreeMap::new();
    for e in c.env.as_deref().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.metadata.name.clone().unwrap_or_default(),
                Some("metadata.namespace") => pod.metadata.namespace.clone().unwrap_or_default(),
                other => panic!("unexpected fieldRef {other:?}"),
            },
            _ => continue,
        };
        env.insert(e.name.clone(), value);
    }
    let mut args = c.command.clone().unwrap_or_default();
    args.extend(c.args.clone().unwrap_or_default());
    (args, env)
}

struct Agent {
    proc: Proc,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Agent {
    async fn start(
        e: &Env,
        dir: &Path,
        tag: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Agent {
        let stdout = dir.join(format!("{tag}.jsonl"));
        let stderr = dir.join(format!("{tag}.log"));
        let child = e
            .web
            .command(&e.agent)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start the agent");
        let mut a = Agent {
            proc: Proc(child),
            stdout,
            stderr,
        };
        let t0 = Instant::now();
        loop {
            let text = a.log();
            let exited = a.proc.0.try_wait().expect("wait");
            assert!(exited.is_none(), "the agent exited ({exited:?}): {text}");
            if text.contains("capturing") {
                break;
            }
            assert!(
                t0.elapsed() < WAIT,
                "the agent did not start capturing in {WAIT:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect()
    }

    fn http(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["type"] == "http")
            .collect()
    }

    async fn exit(&mut self, within: Duration, what: &str) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        let status = poll_until(within, what, || {
            let s = self.proc.0.try_wait().expect("wait");
            async move { s }
        })
        .await;
        (status, t0.elapsed())
    }

    /// Waits until the HTTP lines satisfy `done`; on timeout panics with the agent's output.
    async fn wait_http(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let l = self.http();
            if done(&l) {
                return l;
            }
            if t0.elapsed() > WAIT {
                let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
                panic!(
                    "timed out waiting for {what}\n--- stdout\n{out}\n--- stderr\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A collector on the node: keeps the bodies POSTed to it (HTTP/1.1, keep-alive).
async fn collector(node: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind((node, 0))
        .await
        .expect("bind collector");
    let url = format!("http://{}/ingest", listener.local_addr().expect("addr"));
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = bodies.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&body).into_owned();
                    keep.lock().expect("lock").push(text);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if r.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

fn curl(e: &Env, args: &[&str]) -> std::process::Output {
    e.client
        .command("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl")
}

fn url(e: &Env, path: &str) -> String {
    format!("http://{}:{HTTP_PORT}{path}", e.web.ip)
}

/// Packets `tshark` reads from `file` matching `filter`; panics if tshark cannot read it.
fn tshark_count(file: &Path, filter: &str) -> usize {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Bytes of the frames `tshark` reads from `file` matching `filter`.
fn tshark_bytes(file: &Path, filter: &str) -> u64 {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.cap_len"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark cannot read {}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

fn pcapng_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "pcapng"));
    v.sort();
    v
}

/// No TCP connection on the HTTP port is still exchanging packets in either pod.
fn http_connections_settled(e: &Env) -> bool {
    [&e.web, &e.client].iter().all(|ns| {
        let out = ns
            .command("ss")
            .args(["-Htan", "state", "connected"])
            .output()
            .expect("ss");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!(":{HTTP_PORT}")))
            .all(|l| l.starts_with("TIME-WAIT"))
    })
}

fn find<'a>(lines: &'a [Value], method: &str, path: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["method"] == method && v["path"] == path)
        .unwrap_or_else(|| panic!("no {method} {path} in {lines:#?}"))
}

#[tokio::test]
#[ignore = "run by agent_in_pod_namespaces inside the network namespaces it makes"]
async fn inner_agent_in_pod_namespaces() {
    let Some(e) = topology() else {
        eprintln!("skipping {INNER}: run it through agent_in_pod_namespaces (needs root)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // The control plane and `serve`, on the node's loopback and bridge address.
    let cp = ControlPlane::start().await;
    std::env::set_var("KUBECONFIG", cp.kubeconfig_path());
    support::install_attachment_crd(&cp.client()).await;
    let node_ip: std::net::IpAddr = e.node.parse().expect("node ip");
    let certs = certs_gen::generate(&certs_gen::CertRequest {
        extra_ips: vec![node_ip],
        ..certs_gen::CertRequest::new("whisperer-injector", "whisperer-system")
    })
    .expect("certs");
    std::fs::write(d.join("tls.crt"), &certs.cert_pem).expect("write");
    std::fs::write(d.join("tls.key"), &certs.key_pem).expect("write");
    let captures = d.join("captures");
    std::fs::create_dir(&captures).expect("mkdir");
    // The profile as an operator would write it; the control API's CA travels in its env
    // because an attached Whisperer can mount nothing.
    let config = json!({
        "defaultProfile": "default",
        "profiles": {"default": {
            "image": "ghcr.io/whisperer-dev/whisperer:v0.1.0",
            "args": ["--interface", "any", "--control-interval", format!("{}s", POLL.as_secs()),
                     "--out-dir", captures.display().to_string()],
            "env": [{"name": "WHISPERER_CONTROL_CA", "value": certs.ca_cert_pem}],
        }}
    });
    std::fs::write(d.join("config.yaml"), config.to_string()).expect("write");
    let port = support::free_port();
    let dns_port = support::free_port();
    let listen = format!("{}:{port}", e.node);
    let dns = format!("{}:{dns_port}", e.node);
    let control_url = format!("https://{}:{port}", e.node);
    let path = |f: &str| d.join(f).display().to_string();
    let (crt, key, cfg) = (path("tls.crt"), path("tls.key"), path("config.yaml"));
    let args = ServeArgs::from_flags([
        "--listen",
        &listen,
        "--tls-cert",
        &crt,
        "--tls-key",
        &key,
        "--dns",
        "on",
        "--dns-listen",
        &dns,
        "--dns-server-address",
        &dns,
        "--reconciler",
        "on",
        "--leader-election=false",
        "--control-url",
        &control_url,
        "--resync-interval",
        "1s",
        "--config",
        &cfg,
    ])
    .expect("flags");
    let running = whisperer_injector::app::start(&args)
        .await
        .expect("serve starts");

    // Two pods, Running with the namespaces' addresses, as a kubelet would report them.
    let ns = cp.namespace(&[]).await;
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    for name in ["web-0", "client-0"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    cp.mark_pod_running(&ns, "web-0", "node-a", &e.web.ip).await;
    cp.mark_pod_running(&ns, "client-0", "node-a", &e.client.ip)
        .await;
    let attachments = Api::<Attachment>::namespaced(cp.client(), &ns);
    let attach = |name: &str, ttl: &str| -> Attachment {
        support::builders::attachment(name, Some((TargetKind::Pod, "web-0")), None, Some(ttl))
    };
    let attached = |container: &'static str| {
        let pods = pods.clone();
        async move {
            poll_until(WAIT, "the Whisperer to be attached", || {
                let pods = pods.clone();
                async move {
                    let p = pods.get("web-0").await.ok()?;
                    let has = p
                        .spec
                        .as_ref()?
                        .ephemeral_containers
                        .as_ref()?
                        .iter()
                        .any(|c| {
                            c.name == container
                                && c.env
                                    .iter()
                                    .flatten()
                                    .any(|v| v.name == "WHISPERER_CONTROL_TOKEN")
                        });
                    has.then_some(p)
                }
            })
            .await
        }
    };
    attachments
        .create(&PostParams::default(), &attach("debug", "1h"))
        .await
        .expect("create attachment");
    let pod = attached("whisperer-debug").await;
    let (agent_args, agent_env) = container_spec(&pod, "whisperer-debug");
    assert_eq!(agent_env["WHISPERER_DNS_SERVER"], dns);
    assert_eq!(agent_env["WHISPERER_POD_NAME"], "web-0");

    // The HTTP server in web-0, reachable from client-0.
    std::fs::write(d.join("helper.py"), HELPER_PY).expect("write");
    let helper = path("helper.py");
    let port_s = HTTP_PORT.to_string();
    let _server = Proc(
        e.web
            .command("python3")
            .args([&helper, "serve", &e.web.ip, &port_s])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the HTTP server"),
    );
    poll_until(WAIT, "the HTTP server", || {
        let ok = curl(&e, &["-o", "/dev/null", &url(&e, "/ready")])
            .status
            .success();
        async move { ok.then_some(()) }
    })
    .await;

    // The reference: tcpdump on the same namespace and traffic.
    let reference = d.join("reference.pcap");
    let tcpdump_log = d.join("tcpdump.log");
    let tcpdump = Proc(
        e.web
            .command("tcpdump")
            // Immediate mode: every packet is in the file when tcpdump is stopped; its ring
            // then has one 256 KiB slot per packet, so make it large enough for the bursts.
            .args([
                "-i",
                "any",
                "--immediate-mode",
                "-B",
                "32768",
                "-U",
                "-n",
                "-w",
            ])
            .arg(&reference)
            .arg(format!("tcp port {HTTP_PORT}"))
            .stderr(std::fs::File::create(&tcpdump_log).expect("log"))
            .spawn()
            .expect("tcpdump"),
    );
    poll_until(WAIT, "tcpdump to listen", || {
        let t = std::fs::read_to_string(&tcpdump_log).unwrap_or_default();
        async move { t.contains("listening on").then_some(()) }
    })
    .await;

    let mut agent = Agent::start(&e, d, "attached", &agent_args, &agent_env).await;

    // Traffic: keep-alive, a chunked upload, a chunked answer, a 404, pipelining, a reset.
    let ka = curl(
        &e,
        &[
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url(&e, "/ka1"),
            &url(&e, "/ka2"),
        ],
    );
    assert!(ka.status.success());
    std::fs::write(d.join("upload"), vec![b'u'; 20_000]).expect("write");
    let upload = format!("@{}", path("upload"));
    let up = curl(
        &e,
        &[
            "-o",
            "/dev/null",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload,
            &url(&e, "/upload"),
        ],
    );
    assert!(up.status.success());
    assert!(curl(&e, &["-o", "/dev/null", &url(&e, "/chunked")])
        .status
        .success());
    assert!(curl(&e, &["-o", "/dev/null", &url(&e, "/missing")])
        .status
        .success());
    let piped = e
        .client
        .command("python3")
        .args([&helper, "pipeline", &e.web.ip, &port_s])
        .output()
        .expect("pipelining client");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).trim(), "3");
    let reset = curl(&e, &["-o", "/dev/null", &url(&e, "/reset")]);
    assert!(
        !reset.status.success(),
        "the reset connection fails for curl"
    );

    let want = [
        "/ka1", "/ka2", "/upload", "/chunked", "/missing", "/p1", "/p2", "/p3", "/reset",
    ];
    let lines = agent
        .wait_http("the exchanges as JSON lines", |l| {
            want.iter().all(|p| l.iter().any(|v| v["path"] == *p))
        })
        .await;
    let web_name = format!("web-0.{ns}.pod.cluster.local");
    let client_name = format!("client-0.{ns}.pod.cluster.local");
    for v in &lines {
        assert_eq!(v["src_name"], client_name.as_str(), "{v}");
        assert_eq!(v["dst_name"], web_name.as_str(), "{v}");
        assert_eq!(v["dst"], format!("{}:{HTTP_PORT}", e.web.ip));
    }
    let (ka1, ka2) = (find(&lines, "GET", "/ka1"), find(&lines, "GET", "/ka2"));
    assert_eq!((&ka1["status"], &ka2["status"]), (&json!(200), &json!(200)));
    assert_eq!(ka1["src"], ka2["src"], "keep-alive: one connection");
    let up = find(&lines, "POST", "/upload");
    assert_eq!(up["status"], 201);
    assert!(
        up["request_bytes"].as_u64().expect("bytes") > 20_000,
        "{up}"
    );
    assert_eq!(find(&lines, "GET", "/chunked")["status"], 200);
    assert_eq!(find(&lines, "GET", "/missing")["status"], 404);
    let p: Vec<&Value> = ["/p1", "/p2", "/p3"]
        .iter()
        .map(|x| find(&lines, "GET", x))
        .collect();
    assert!(p
        .iter()
        .all(|v| v["status"] == 200 && v["src"] == p[0]["src"]));
    let r = find(&lines, "GET", "/reset");
    assert_eq!(
        (&r["status"], &r["truncated"]),
        (&json!(200), &json!(true)),
        "{r}"
    );
    assert!(lines
        .iter()
        .filter(|v| v["path"] != "/reset")
        .all(|v| v["truncated"] == false));

    // The pcapng file holds what tcpdump saw on the HTTP port, packet for packet.
    poll_until(WAIT, "the HTTP connections to close", || {
        let s = http_connections_settled(&e);
        async move { s.then_some(()) }
    })
    .await;
    let mut tcpdump = tcpdump;
    signal(&tcpdump.0, "INT");
    poll_until(WAIT, "tcpdump to exit", || {
        let s = tcpdump.0.try_wait().expect("wait");
        async move { s }
    })
    .await;
    let expected = tshark_count(&reference, "tcp");
    assert!(expected > 40, "tcpdump saw {expected} packets");

    // Detach: the agent is told to stop at its next poll and exits 0: within a few poll
    // intervals (slack for a loaded machine), far from its deadline an hour away.
    attachments
        .delete("debug", &Default::default())
        .await
        .expect("delete attachment");
    let (status, took) = agent.exit(WAIT, "the agent to exit after detach").await;
    let log = agent.log();
    assert!(status.success(), "exit {status}: {log}");
    assert!(
        took <= POLL * 5,
        "took {took:?} to stop after detach: {log}"
    );
    assert!(log.contains("detached"), "{log}");
    let files = pcapng_files(&captures);
    assert_eq!(files.len(), 1, "{files:?}");
    let got = tshark_count(&files[0], &format!("tcp.port == {HTTP_PORT}"));
    if got != expected {
        let list = |f: &Path| {
            let out = Command::new("tshark")
                .args(["-n", "-r"])
                .arg(f)
                .args([
                    "-Y",
                    "tcp",
                    "-T",
                    "fields",
                    "-e",
                    "frame.time_epoch",
                    "-e",
                    "tcp.srcport",
                    "-e",
                    "tcp.dstport",
                    "-e",
                    "tcp.flags.str",
                    "-e",
                    "tcp.seq_raw",
                    "-e",
                    "tcp.len",
                ])
                .output()
                .expect("tshark");
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        panic!(
            "pcapng has {got} packets on port {HTTP_PORT}, tcpdump {expected}\n--- pcapng\n{}\n--- tcpdump ({})\n{}",
            list(&files[0]),
            std::fs::read_to_string(&tcpdump_log).unwrap_or_default(),
            list(&reference)
        );
    }

    // Rotation by size, and SIGTERM flushing readable files.
    let rotated = d.join("rotated");
    std::fs::create_dir(&rotated).expect("mkdir");
    attachments
        .create(&PostParams::default(), &attach("rotate", "1h"))
        .await
        .expect("create attachment");
    let pod = attached("whisperer-rotate").await;
    let (mut args, env) = container_spec(&pod, "whisperer-rotate");
    args.extend(
        [
            "--out-dir",
            &rotated.display().to_string(),
            "--rotate-size",
            "256KiB",
            "--keep",
            "100",
            // The whole download fits in the ring: on a busy machine nothing is dropped.
            "--buffer-size",
            "32MiB",
        ]
        .map(String::from),
    );
    let mut agent = Agent::start(&e, d, "rotate", &args, &env).await;
    let big = curl(&e, &["-o", "/dev/null", &url(&e, "/big?n=4194304")]);
    assert!(big.status.success());
    let l = agent
        .wait_http("the big download's line", |l| {
            l.iter().any(|v| v["path"] == "/big?n=4194304")
        })
        .await;
    let b = find(&l, "GET", "/big?n=4194304");
    assert!(
        b["response_bytes"].as_u64().expect("bytes") > 4 << 20,
        "{b}"
    );
    signal(&agent.proc.0, "TERM");
    let (status, _) = agent.exit(WAIT, "the agent to exit on SIGTERM").await;
    assert!(status.success(), "exit {status}: {}", agent.log());
    let files = pcapng_files(&rotated);
    assert!(files.len() >= 10, "4 MiB in 256 KiB files: {files:?}");
    let mut captured = 0;
    for f in &files {
        let size = std::fs::metadata(f).expect("meta").len();
        assert!(size <= 256 << 10, "{} is {size} bytes", f.display());
        captured += tshark_bytes(f, &format!("tcp.srcport == {HTTP_PORT}"));
    }
    assert!(
        captured > 4 << 20,
        "{captured} bytes from the server in the rotated files"
    );

    // No writable --out-dir (an attached Whisperer has no volume): said once, counted, and
    // the JSON lines go on. Then the deadline stops the agent. The TTL leaves a loaded machine
    // time to attach, start the agent and make the checks below before it runs out.
    attachments
        .create(&PostParams::default(), &attach("short", "20s"))
        .await
        .expect("create attachment");
    let pod = attached("whisperer-short").await;
    let (mut args, env) = container_spec(&pod, "whisperer-short");
    let (collector_url, collected) = collector(&e.node).await;
    args.extend(
        [
            "--out-dir",
            "/nonexistent/captures",
            "--metrics-listen",
            "127.0.0.1:9099",
            "--collector",
            &collector_url,
        ]
        .map(String::from),
    );
    let deadline: jiff::Timestamp = env["WHISPERER_DEADLINE"].parse().expect("deadline");
    let mut agent = Agent::start(&e, d, "short", &args, &env).await;
    for path in ["/no-volume-1", "/no-volume-2"] {
        assert!(curl(&e, &["-o", "/dev/null", &url(&e, path)])
            .status
            .success());
    }
    agent
        .wait_http("lines without a capture volume", |l| {
            l.iter()
                .filter(|v| {
                    v["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/no-volume"))
                })
                .count()
                == 2
        })
        .await;
    let metrics = e
        .web
        .command("curl")
        .args(["-fs", "http://127.0.0.1:9099/metrics"])
        .output()
        .expect("curl metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(
        sample("whisperer_dropped_total{what=\"pcap_unwritable\"}") > 0.0,
        "{metrics}"
    );
    assert!(sample("whisperer_http_exchanges_total") >= 2.0, "{metrics}");
    assert!(sample("whisperer_packets_total") > 0.0, "{metrics}");
    assert_eq!(
        agent.log().matches("pcapng output unavailable").count(),
        1,
        "{}",
        agent.log()
    );
    // The same lines reach the collector as NDJSON batches.
    poll_until(WAIT, "the lines at the collector", || {
        let got = collected.lock().expect("lock").clone();
        async move {
            let n = got
                .iter()
                .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
                .map(|l| serde_json::from_str::<Value>(&l).expect("NDJSON"))
                .filter(|v| {
                    v["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/no-volume"))
                })
                .count();
            (n == 2).then_some(())
        }
    })
    .await;
    let (status, _) = agent.exit(WAIT, "the agent to stop at its deadline").await;
    let now = jiff::Timestamp::now();
    assert!(status.success(), "exit {status}: {}", agent.log());
    assert!(
        now >= deadline - jiff::SignedDuration::from_millis(1500),
        "stopped at {now}, before the deadline {deadline}"
    );
    running.shutdown().await;
}

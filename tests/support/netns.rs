//! Network namespaces made by a test: a "node" namespace holding a bridge, and pod
//! namespaces wired to it by veth pairs, addresses in 10.213.<n>.0/24. Every address lives in
//! a namespace the test created; nothing is added to the machine's own namespace. Dropping
//! the topology kills what still runs in the namespaces and deletes them.
//!
//! Needs root (and `ip` from iproute2); [`Topology::skip_reason`] says why a test cannot run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs a command and panics with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One pod's namespace: its name for `ip netns exec` and its address.
#[derive(Debug, Clone)]
pub struct PodNs {
    pub netns: String,
    pub ip: String,
}

impl PodNs {
    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.netns).arg(program);
        c
    }
}

pub struct Topology {
    pub node: PodNs,
    pub pods: Vec<PodNs>,
    names: Vec<String>,
}

impl Topology {
    /// Why this machine cannot run netns tests, if it cannot.
    pub fn skip_reason() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("needs root to create network namespaces (CI runs as root)".into());
        }
        if !have("ip") {
            return Some("needs `ip` (iproute2)".into());
        }
        None
    }

    /// A node namespace (bridge at .1) and `pods` pod namespaces at .2, .3, ...
    pub fn create(tag: &str, pods: usize) -> Topology {
        let n = std::process::id() % 250;
        let prefix = format!("10.213.{n}");
        let base = format!("wh{tag}{}", std::process::id());
        let node_ns = format!("{base}-node");
        let mut names = vec![node_ns.clone()];
        sh("ip", &["netns", "add", &node_ns]);
        let topo_guard = Topology {
            node: PodNs {
                netns: node_ns.clone(),
                ip: format!("{prefix}.1"),
            },
            pods: Vec::new(),
            names: names.clone(),
        };
        let ipn = |ns: &str, args: &[&str]| {
            let mut a = vec!["-n", ns];
            a.extend_from_slice(args);
            sh("ip", &a);
        };
        let quiet = |ns: &str| {
            // No IPv6 chatter (router solicitations, MLD): packet counts stay exact.
            for key in ["all", "default", "lo"] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                    .status();
            }
        };
        quiet(&node_ns);
        ipn(&node_ns, &["link", "set", "lo", "up"]);
        ipn(&node_ns, &["link", "add", "br0", "type", "bridge"]);
        ipn(
            &node_ns,
            &["addr", "add", &format!("{prefix}.1/24"), "dev", "br0"],
        );
        ipn(&node_ns, &["link", "set", "br0", "up"]);
        let mut topo = topo_guard;
        for i in 0..pods {
            let ns = format!("{base}-p{i}");
            sh("ip", &["netns", "add", &ns]);
            names.push(ns.clone());
            topo.names = names.clone();
            quiet(&ns);
            let peer = format!("v{i}");
            ipn(
                &node_ns,
                &[
                    "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            ipn(&node_ns, &["link", "set", &peer, "master", "br0"]);
            ipn(&node_ns, &["link", "set", &peer, "up"]);
            let ip = format!("{prefix}.{}", i + 2);
            ipn(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ipn(&ns, &["link", "set", "eth0", "up"]);
            ipn(&ns, &["link", "set", "lo", "up"]);
            topo.pods.push(PodNs { netns: ns, ip });
        }
        topo
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The `whisperer` binary of this workspace: next to the test executable's target dir, built
/// with `cargo build -p whisperer` if it is not there yet.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/whisperer
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let bin = profile_dir.join("whisperer");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "whisperer"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p whisperer");
        assert!(status.success(), "cargo build -p whisperer failed");
    }
    assert!(bin.exists(), "no agent binary at {}", bin.display());
    bin
}

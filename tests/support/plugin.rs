//! The kubectl plugin run as a user runs it: the built binary as a real subprocess, through a
//! `kubectl-whisper` symlink (argv[0] dispatch), or through the real `kubectl` finding that
//! symlink on PATH. Always async (`tokio::process`): the injector under test runs in the same
//! runtime and must keep answering while the plugin waits.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both outputs unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A directory holding `kubectl-whisper`, a symlink to the built `whisperer-injector`.
pub struct PluginDir {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl PluginDir {
    /// The plugin on a fresh PATH directory, talking to the cluster of `kubeconfig` (given to
    /// both the plugin and kubectl as `$KUBECONFIG`, as a user's shell would).
    pub fn new(kubeconfig: &Path) -> PluginDir {
        let dir = tempfile::tempdir().expect("tempdir");
        // Set for integration tests and benches only (examples share this module too).
        let Some(binary) = option_env!("CARGO_BIN_EXE_whisperer-injector") else {
            panic!("the plugin runs from integration tests (CARGO_BIN_EXE_whisperer-injector)")
        };
        std::os::unix::fs::symlink(binary, dir.path().join("kubectl-whisper"))
            .expect("symlink kubectl-whisper");
        PluginDir {
            dir,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn run(&self, mut cmd: tokio::process::Command) -> Run {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("WHISPERER_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd.output().await.expect("run the plugin");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `kubectl-whisper ARGS` (the symlink itself).
    pub async fn whisper(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new(self.dir.path().join("kubectl-whisper"));
        cmd.args(args);
        self.run(cmd).await
    }

    /// `kubectl whisper ARGS`: kubectl finds the plugin on PATH.
    pub async fn kubectl_whisper(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("whisper").args(args);
        self.run(cmd).await
    }

    /// `kubectl-whisper ARGS` with stdout on a terminal (a pseudo-terminal from util-linux
    /// `script`, which also turns `\n` into `\r\n`), to see what a person at a terminal sees.
    pub async fn whisper_on_tty(&self, args: &[&str]) -> Run {
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let line = std::iter::once(
            self.dir
                .path()
                .join("kubectl-whisper")
                .display()
                .to_string(),
        )
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
        let mut cmd = tokio::process::Command::new("script");
        cmd.args([
            "--quiet",
            "--return",
            "--flush",
            "--command",
            &line,
            "/dev/null",
        ]);
        self.run(cmd).await
    }
}

//! `kubectl whisper`: the kubectl plugin (issue 11 part 3). The same binary answers to the
//! name `kubectl-whisper` (argv[0], see `main.rs`) and to `whisperer-injector whisper`.
//!
//! It acts with the user's kubeconfig and the user's own RBAC only (`--kubeconfig`,
//! `--context`, `-n`, `--as`, `--as-group` as kubectl has them), never with the injector's
//! credentials: what the user may not do, the API server refuses, and the plugin prints
//! the API server's message. Every `-o json` shape is a serde struct in [`output`].

pub mod attach;
pub mod check_inject;
pub mod detach;
pub mod error;
pub mod logs;
pub mod ls;
pub mod outdated;
pub mod output;
pub mod target;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use error::PluginError;

/// What the binary parses when it runs as `kubectl-whisper`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-whisper",
    bin_name = "kubectl whisper",
    version,
    about = "Attach, list and explain Whisperer capture agents (kubectl plugin)"
)]
pub struct PluginCli {
    #[command(flatten)]
    pub args: WhisperArgs,
}

#[derive(Debug, Args)]
pub struct WhisperArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// kubectl's own connection flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster options (as kubectl's)")]
pub struct GlobalArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace; default: the context's namespace (else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Act as this user (impersonation, like `kubectl --as`).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act with this group, repeatable (like `kubectl --as-group`).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_groups: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Attach the Whisperer to a workload's running pods (creates an Attachment) and wait.
    Attach(attach::AttachArgs),
    /// Delete Attachments (the Whisperers stop; ephemeral containers end with them).
    Detach(detach::DetachArgs),
    /// List Attachments: target, phase, pods attached/selected, expiry, profile.
    #[command(alias = "list")]
    Ls(ls::LsArgs),
    /// Why a pod is (or would be) injected or not, rule by rule (same report as `explain`).
    CheckInject(check_inject::CheckInjectArgs),
    /// Pods whose injected Whisperer differs from what their profile gives today.
    Outdated(outdated::OutdatedArgs),
    /// Follow the Whisperers' output (sidecar and attached) of all of a workload's pods.
    Logs(logs::LogsArgs),
}

/// A client as the user: their kubeconfig, context and impersonation flags.
pub struct Session {
    pub client: kube::Client,
    /// `-n`, else the context's namespace.
    pub namespace: String,
}

impl Session {
    /// The injector's settings (see [`crate::explain::InjectorSource`]); a fallback to the
    /// built-in profile is said on standard error.
    pub async fn injector_settings(
        &self,
        source: &crate::explain::InjectorSource,
    ) -> Result<crate::engine::Settings, PluginError> {
        let (settings, note) = source.settings(&self.client).await?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(settings)
    }
}

impl GlobalArgs {
    pub async fn session(&self) -> Result<Session, PluginError> {
        let opts = crate::kubeclient::ClientOptions {
            kubeconfig: self.kubeconfig.as_deref(),
            context: self.context.as_deref(),
            impersonate: self.as_user.as_deref(),
            impersonate_groups: &self.as_groups,
        };
        let config = crate::kubeclient::config(&opts).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client =
            kube::Client::try_from(config).map_err(crate::kubeclient::ClientError::from)?;
        Ok(Session { client, namespace })
    }
}

/// How a subcommand ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The command ran but what it waited for did not happen (attach timed out, pods refused,
    /// log streams unavailable): exit code 3 (2 is a usage error).
    Incomplete,
}

/// Runs one plugin command; output goes to stdout, progress and notes to stderr.
pub async fn run(args: WhisperArgs) -> Result<Outcome, PluginError> {
    let session = args.global.session().await?;
    match args.command {
        PluginCommand::Attach(a) => attach::run(&session, &a).await,
        PluginCommand::Detach(a) => detach::run(&session, &a).await,
        PluginCommand::Ls(a) => ls::run(&session, &a).await,
        PluginCommand::CheckInject(a) => check_inject::run(&session, &a).await,
        PluginCommand::Outdated(a) => outdated::run(&session, &a).await,
        PluginCommand::Logs(a) => logs::run(&session, &a).await,
    }
}

/// Whether the program was started under the plugin's name (`kubectl-whisper`, as kubectl
/// runs plugins found on PATH).
pub fn invoked_as_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_stem()
        .is_some_and(|n| n == "kubectl-whisper")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_dispatch() {
        assert!(invoked_as_plugin("/usr/local/bin/kubectl-whisper".as_ref()));
        assert!(invoked_as_plugin("kubectl-whisper".as_ref()));
        assert!(invoked_as_plugin("kubectl-whisper.exe".as_ref()));
        assert!(!invoked_as_plugin("/usr/bin/whisperer-injector".as_ref()));
        assert!(!invoked_as_plugin("kubectl-whisperer".as_ref()));
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let cli = PluginCli::try_parse_from([
            "kubectl-whisper",
            "attach",
            "deploy/web",
            "-n",
            "shop",
            "--ttl",
            "30m",
            "--context",
            "prod",
        ])
        .expect("parse");
        assert_eq!(cli.args.global.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.args.global.context.as_deref(), Some("prod"));
        let PluginCommand::Attach(a) = cli.args.command else {
            panic!("attach")
        };
        assert_eq!(a.target, "deploy/web");
        assert_eq!(a.ttl.as_deref(), Some("30m"));
        assert!(a.wait());
    }
}

//! `kubectl whisper check-inject [pod/NAME | deploy/NAME | -f FILE]`: the report of
//! `whisperer-injector explain`, produced by the same code (`crate::explain`), with the
//! plugin's client (context, impersonation) and namespace.

use std::path::PathBuf;

use super::{Outcome, PluginError, Session};
use crate::explain::{self, ExplainArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct CheckInjectArgs {
    /// pod/NAME, deployment/NAME (its pod template), statefulset/NAME, daemonset/NAME,
    /// replicaset/NAME, job/NAME or cronjob/NAME; a bare name is a pod.
    pub target: Option<String>,
    /// A manifest file (Pods and workloads) to check instead of a live object; `-` reads
    /// standard input.
    #[arg(short = 'f', long = "filename", conflicts_with = "target")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub source: explain::InjectorSource,
    /// Output: text or json (explain's report).
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

impl CheckInjectArgs {
    /// The explain arguments these flags mean, in namespace `namespace`.
    pub fn explain_args(&self, namespace: &str) -> ExplainArgs {
        ExplainArgs {
            target: self.target.clone(),
            file: self.file.clone(),
            namespace: namespace.to_string(),
            source: self.source.clone(),
            kubeconfig: None,
            output: self.output.clone(),
        }
    }
}

pub async fn run(s: &Session, args: &CheckInjectArgs) -> Result<Outcome, PluginError> {
    let report = explain::run_with_client(&args.explain_args(&s.namespace), &s.client).await?;
    print!("{report}");
    if args.output == "json" {
        println!();
    }
    Ok(Outcome::Ok)
}

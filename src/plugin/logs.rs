//! `kubectl whisper logs KIND/NAME [-f] [--since 10m]`: the output of every Whisperer
//! (webhook sidecar and attached ephemeral containers, identified by
//! `engine::ours::whisperer_containers`) in all of the workload's pods, each line prefixed
//! with `[pod/container]`, merged as lines arrive. Ends when every stream ends, or on Ctrl-C.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use futures::io::AsyncBufReadExt;
use futures::stream::{self, BoxStream, StreamExt};
use kube::api::{ListParams, LogParams};
use kube::Api;

use super::error::api_message;
use super::{target, Outcome, PluginError, Session};
use crate::engine::ours::{whisperer_containers, OurContainer};
use crate::reconciler::Attachment;

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// deployment/NAME, statefulset/NAME, daemonset/NAME, replicaset/NAME, job/NAME or pod/NAME.
    pub target: String,
    /// Keep following the logs.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines newer than this, e.g. 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    #[command(flatten)]
    pub source: crate::explain::InjectorSource,
}

/// One stream to open: `[pod/container]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub pod: String,
    pub container: OurContainer,
}

impl Source {
    pub fn prefix(&self) -> String {
        format!("[{}/{}]", self.pod, self.container.name())
    }
}

enum Item {
    Line(String, String),
    Unavailable(String, String),
}

/// The Whisperer containers of the target's pods, in pod order.
pub async fn sources(s: &Session, args: &LogsArgs) -> Result<(Vec<Source>, usize), PluginError> {
    let (kind, name) = target::parse(&args.target)?;
    let settings = s.injector_settings(&args.source).await?;
    // Attached Whisperers carry their Attachment's uid; when the user may list Attachments,
    // only those of live Attachments count.
    let uids: Option<HashSet<String>> =
        Api::<Attachment>::namespaced(s.client.clone(), &s.namespace)
            .list(&ListParams::default())
            .await
            .ok()
            .map(|l| l.items.into_iter().filter_map(|a| a.metadata.uid).collect());
    let pods = target::pods(&s.client, &s.namespace, kind, &name).await?;
    let mut out = Vec::new();
    for p in &pods {
        let pod = p.metadata.name.clone().unwrap_or_default();
        for c in whisperer_containers(p, &settings.config, uids.as_ref()) {
            out.push(Source {
                pod: pod.clone(),
                container: c,
            });
        }
    }
    Ok((out, pods.len()))
}

pub async fn run(s: &Session, args: &LogsArgs) -> Result<Outcome, PluginError> {
    let (sources, pod_count) = sources(s, args).await?;
    let shown = &args.target;
    if sources.is_empty() {
        return Err(PluginError::Usage(format!(
            "no Whisperer in the {pod_count} pod{} of {shown} in namespace {}: attach one with \
             `kubectl whisper attach {shown} -n {}`",
            if pod_count == 1 { "" } else { "s" },
            s.namespace,
            s.namespace
        )));
    }
    for src in &sources {
        let kind = match &src.container {
            OurContainer::Sidecar { .. } => "sidecar",
            OurContainer::Attached { .. } => "attached",
        };
        eprintln!("streaming {} ({kind})", src.prefix());
    }
    let api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(s.client.clone(), &s.namespace);
    let since_seconds = args
        .since
        .map(|d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX));
    let streams: Vec<BoxStream<'static, Item>> = sources
        .iter()
        .map(|src| {
            let api = api.clone();
            let prefix = src.prefix();
            let pod = src.pod.clone();
            let params = LogParams {
                container: Some(src.container.name().to_string()),
                follow: args.follow,
                since_seconds,
                ..Default::default()
            };
            stream::once(async move {
                match api.log_stream(&pod, &params).await {
                    Ok(reader) => {
                        let p = prefix.clone();
                        reader
                            .lines()
                            .map(move |l| match l {
                                Ok(line) => Item::Line(p.clone(), line),
                                Err(e) => Item::Unavailable(p.clone(), e.to_string()),
                            })
                            .boxed()
                    }
                    Err(e) => stream::iter([Item::Unavailable(prefix, api_message(&e))]).boxed(),
                }
            })
            .flatten()
            .boxed()
        })
        .collect();
    let mut merged = stream::select_all(streams);
    let mut unavailable = 0usize;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            item = merged.next() => match item {
                None => break,
                Some(Item::Line(prefix, line)) => {
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "{prefix} {line}").is_err() {
                        // The reader went away (`| head`): stop quietly.
                        break;
                    }
                }
                Some(Item::Unavailable(prefix, why)) => {
                    unavailable += 1;
                    eprintln!("{prefix} logs unavailable: {why}");
                }
            }
        }
    }
    if unavailable > 0 {
        eprintln!(
            "{unavailable} of {} log stream{} could not be read",
            sources.len(),
            if sources.len() == 1 { "" } else { "s" }
        );
        return Ok(Outcome::Incomplete);
    }
    Ok(Outcome::Ok)
}

//! `whisperer-injector explain`: why a pod is (or is not, or would not be) injected, rule by
//! rule, with the one command that fixes it. Read-only, with the user's own credentials; the
//! rules are the engine's (see [`report`]).

pub mod report;

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::config::{Config, ConfigError};
use crate::engine::Settings;
use crate::reconciler::Attachment;
use report::{AttachmentView, Facts, Report, Webhook};

/// Name of the shipped MutatingWebhookConfiguration and config map.
pub const WEBHOOK_NAME: &str = "whisperer-injector";
pub const CONFIG_MAP: &str = "whisperer-injector-config";

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0:?} is not KIND/NAME (pod/web-0, deployment/web, statefulset/db, daemonset/agent, job/x, cronjob/y)")]
    Target(String),
    #[error("give a target (pod/NAME, deployment/NAME ...) or -f FILE")]
    NoTarget,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] crate::offline::InjectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] crate::kubeclient::ClientError),
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("cannot render the report: {0}")]
    Render(String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// What to explain: pod/NAME, deployment/NAME (its pod template), statefulset/NAME,
    /// daemonset/NAME, replicaset/NAME, job/NAME or cronjob/NAME.
    pub target: Option<String>,
    /// A manifest file (Pods and workloads) to explain instead of a live object; `-` reads
    /// standard input.
    #[arg(short = 'f', long = "filename", conflicts_with = "target")]
    pub file: Option<PathBuf>,
    /// Namespace of the target (and of documents that name none).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub source: InjectorSource,
    /// Kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output: text or json.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

#[derive(Debug, clap::Parser)]
#[command(name = "explain")]
struct ExplainOnly {
    #[command(flatten)]
    args: ExplainArgs,
}

impl ExplainArgs {
    /// Parses `explain` flags exactly as the CLI does (for tests and the kubectl plugin).
    pub fn from_flags<I, T>(flags: I) -> Result<ExplainArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let argv = std::iter::once(std::ffi::OsString::from("explain"))
            .chain(flags.into_iter().map(Into::into));
        ExplainOnly::try_parse_from(argv).map(|e| e.args)
    }
}

/// Where the injector's settings are read from (explain and the kubectl plugin).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectorSource {
    /// Where the injector runs (its config map is read from there).
    #[arg(long, default_value = "whisperer-system")]
    pub injector_namespace: String,
    /// Profiles file to judge with instead of the injector's config map.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The injector runs with --inject-by-default.
    #[arg(long)]
    pub inject_by_default: bool,
}

impl InjectorSource {
    /// The config the injector runs with: `--config`, else its config map, else
    /// (unreadable) the built-in default, said in the note.
    pub async fn settings(
        &self,
        client: &Client,
    ) -> Result<(Settings, Option<String>), ExplainError> {
        injector_settings(
            client,
            &self.injector_namespace,
            self.config.as_deref(),
            self.inject_by_default,
        )
        .await
    }
}

async fn settings(
    args: &ExplainArgs,
    client: &Client,
) -> Result<(Settings, Option<String>), ExplainError> {
    args.source.settings(client).await
}

/// The injector's settings as explain judges with them (also `kubectl whisper outdated`):
/// `config` if given, else the config map in `injector_namespace`, else (missing or
/// unreadable) the built-in default, with a note saying so.
pub async fn injector_settings(
    client: &Client,
    injector_namespace: &str,
    config: Option<&std::path::Path>,
    inject_by_default: bool,
) -> Result<(Settings, Option<String>), ExplainError> {
    let (config, note) = match config {
        Some(path) => (Config::load(path)?, None),
        None => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), injector_namespace);
            match cms.get_opt(CONFIG_MAP).await {
                Ok(Some(cm)) => {
                    let origin = format!("configmap {injector_namespace}/{CONFIG_MAP}");
                    let text = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("config.yaml"))
                        .cloned()
                        .unwrap_or_default();
                    (Config::parse(&text, &origin)?, None)
                }
                Ok(None) => (
                    Config::default(),
                    Some(format!(
                        "no configmap {injector_namespace}/{CONFIG_MAP}: judged with the built-in default profile"
                    )),
                ),
                Err(e) => (
                    Config::default(),
                    Some(format!(
                        "cannot read configmap {injector_namespace}/{CONFIG_MAP} ({e}): judged with the built-in default profile"
                    )),
                ),
            }
        }
    };
    let mut s = Settings::new(Arc::new(config), injector_namespace);
    s.inject_by_default = inject_by_default;
    Ok((s, note))
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> ExplainError {
    move |source| ExplainError::Kube { what, source }
}

/// The workload's pod template as the pod its controller would create.
async fn workload_pod(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<(String, Pod), ExplainError> {
    async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Value, ExplainError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj = Api::<K>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .map_err(kube_err(format!("cannot get {} {ns}/{name}", K::kind(&()))))?;
        serde_json::to_value(obj).map_err(|e| ExplainError::Render(e.to_string()))
    }
    let (canonical, doc) = match kind {
        "deployment" | "deploy" | "deployments" => {
            ("deployment", get::<Deployment>(client, ns, name).await?)
        }
        "statefulset" | "sts" | "statefulsets" => {
            ("statefulset", get::<StatefulSet>(client, ns, name).await?)
        }
        "daemonset" | "ds" | "daemonsets" => {
            ("daemonset", get::<DaemonSet>(client, ns, name).await?)
        }
        "replicaset" | "rs" | "replicasets" => {
            ("replicaset", get::<ReplicaSet>(client, ns, name).await?)
        }
        "job" | "jobs" => ("job", get::<Job>(client, ns, name).await?),
        "cronjob" | "cj" | "cronjobs" => ("cronjob", get::<CronJob>(client, ns, name).await?),
        _ => return Err(ExplainError::Target(format!("{kind}/{name}"))),
    };
    let found = crate::offline::document_pod(&doc, &format!("{canonical}/{name}"), 0)?
        .ok_or_else(|| ExplainError::Target(format!("{kind}/{name}")))?;
    Ok((format!("{canonical}/{name}"), found.pod))
}

/// `deployment/web` for a pod whose ReplicaSet a Deployment owns, and so on.
pub async fn owning_workload(client: &Client, ns: &str, pod: &Pod) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get(&owner.name)
                .await
                .ok()?;
            let up = rs
                .metadata
                .owner_references
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                .map(|o| format!("deployment/{}", o.name));
            Some(up.unwrap_or_else(|| format!("replicaset/{}", owner.name)))
        }
        "StatefulSet" | "DaemonSet" | "Job" => Some(format!(
            "{}/{}",
            owner.kind.to_ascii_lowercase(),
            owner.name
        )),
        _ => None,
    }
}

async fn namespace_labels(
    client: &Client,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, String>, ExplainError> {
    let n = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .map_err(kube_err(format!("cannot get namespace {ns}")))?;
    Ok(n.metadata.labels.unwrap_or_default())
}

async fn webhook(client: &Client) -> Webhook {
    match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_NAME)
        .await
    {
        Ok(Some(cfg)) => {
            let pods = cfg.webhooks.unwrap_or_default().into_iter().find(|w| {
                w.rules.iter().flatten().any(|r| {
                    r.resources
                        .iter()
                        .flatten()
                        .any(|res| res == "pods" || res == "*")
                })
            });
            Webhook::Registered(pods.and_then(|w| w.namespace_selector))
        }
        Ok(None) => Webhook::Missing,
        Err(e) => Webhook::Unreadable(e.to_string()),
    }
}

async fn attachments(client: &Client, ns: &str, pod: &str) -> Vec<AttachmentView> {
    let Ok(list) = Api::<Attachment>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .map(|a| AttachmentView {
            name: a.metadata.name.clone().unwrap_or_default(),
            entry: a.status.and_then(|s| {
                s.pods
                    .into_iter()
                    .find(|e| e.pod == pod)
                    .map(|e| (format!("{:?}", e.state), e.reason, e.message))
            }),
        })
        .collect()
}

/// Reads the facts and explains every pod the arguments name.
pub async fn run(args: &ExplainArgs) -> Result<String, ExplainError> {
    let client = crate::kubeclient::client(args.kubeconfig.as_deref()).await?;
    run_with_client(args, &client).await
}

/// [`run`] with a client the caller built (the kubectl plugin's, with `--context`/`--as`);
/// `args.kubeconfig` is ignored.
pub async fn run_with_client(args: &ExplainArgs, client: &Client) -> Result<String, ExplainError> {
    let client = client.clone();
    let (settings, note) = settings(args, &client).await?;
    let webhook = webhook(&client).await;
    let mut facts: Vec<Facts> = Vec::new();
    match (&args.target, &args.file) {
        (_, Some(path)) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            }
            .map_err(|source| ExplainError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let origin = path.display().to_string();
            for d in crate::offline::pods_in_yaml(&text, &origin)? {
                let ns = d
                    .namespace
                    .clone()
                    .unwrap_or_else(|| args.namespace.clone());
                facts.push(Facts {
                    subject: format!("{origin}: {} {}", d.kind, d.name),
                    live: false,
                    workload: (d.kind != "Pod")
                        .then(|| format!("{}/{}", d.kind.to_ascii_lowercase(), d.name)),
                    namespace_labels: namespace_labels(&client, &ns).await.unwrap_or_default(),
                    namespace: ns,
                    webhook: webhook.clone(),
                    attachments: Vec::new(),
                    pod: d.pod,
                });
            }
        }
        (Some(target), None) => {
            let (kind, name) = target
                .split_once('/')
                .map_or(("pod", target.as_str()), |(k, n)| (k, n));
            if name.is_empty() {
                return Err(ExplainError::Target(target.clone()));
            }
            let ns = &args.namespace;
            let labels = namespace_labels(&client, ns).await?;
            match kind.to_ascii_lowercase().as_str() {
                "pod" | "po" | "pods" => {
                    let pod = Api::<Pod>::namespaced(client.clone(), ns)
                        .get(name)
                        .await
                        .map_err(kube_err(format!("cannot get pod {ns}/{name}")))?;
                    facts.push(Facts {
                        subject: format!("pod/{name}"),
                        live: true,
                        workload: owning_workload(&client, ns, &pod).await,
                        namespace: ns.clone(),
                        namespace_labels: labels,
                        webhook: webhook.clone(),
                        attachments: attachments(&client, ns, name).await,
                        pod,
                    });
                }
                other => {
                    let (workload, pod) = workload_pod(&client, ns, other, name).await?;
                    facts.push(Facts {
                        subject: format!("{workload} (pod template)"),
                        live: false,
                        workload: Some(workload),
                        namespace: ns.clone(),
                        namespace_labels: labels,
                        webhook: webhook.clone(),
                        attachments: Vec::new(),
                        pod,
                    });
                }
            }
        }
        (None, None) => return Err(ExplainError::NoTarget),
    }
    let mut reports: Vec<Report> = facts
        .iter()
        .map(|f| report::explain(f, &settings))
        .collect();
    if let Some(note) = note {
        for r in &mut reports {
            r.notes.push(note.clone());
        }
    }
    if args.output == "json" {
        return serde_json::to_string_pretty(&reports)
            .map_err(|e| ExplainError::Render(e.to_string()));
    }
    Ok(reports
        .iter()
        .map(report::render_text)
        .collect::<Vec<_>>()
        .join("\n"))
}

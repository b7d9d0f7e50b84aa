//! `kubectl whisper outdated [-A] [-o json]`: injected pods whose Whisperer differs from what
//! their profile injects today (judged by `engine::stale`, with the injector's config read
//! the way explain reads it), their workload, and the commands that roll them.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use super::error::kube as kube_err;
use super::output::{self, Format, OutdatedList, OutdatedRow};
use super::{Outcome, PluginError, Session};
use crate::engine::stale::{freshness, Freshness};
use crate::engine::ANNOTATION_INJECTED;

#[derive(Debug, Clone, clap::Args)]
pub struct OutdatedArgs {
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub source: crate::explain::InjectorSource,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// The hash part of a marker (`profile=default,hash=1a2b...` → `1a2b...`).
fn hash_of(marker: &str) -> &str {
    marker
        .split(',')
        .find_map(|kv| kv.strip_prefix("hash="))
        .unwrap_or(marker)
}

/// The command that gives `row`'s pod the current Whisperer.
pub fn roll_command(row: &OutdatedRow) -> String {
    match row.workload.as_deref() {
        Some(w)
            if w.starts_with("deployment/")
                || w.starts_with("statefulset/")
                || w.starts_with("daemonset/") =>
        {
            format!("kubectl rollout restart {w} -n {}", row.namespace)
        }
        Some(w) => format!(
            "kubectl delete pod {} -n {}   # {w} creates it again",
            row.pod, row.namespace
        ),
        None => format!(
            "kubectl delete pod {} -n {}   # then create it again from its manifest",
            row.pod, row.namespace
        ),
    }
}

pub fn render(list: &OutdatedList, all_namespaces: bool) -> String {
    if list.items.is_empty() {
        return format!(
            "No outdated Whisperers ({} injected pod{} checked{}).\n",
            list.checked_pods,
            if list.checked_pods == 1 { "" } else { "s" },
            if all_namespaces {
                " in every namespace"
            } else {
                ""
            }
        );
    }
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|r| {
            vec![
                r.namespace.clone(),
                r.workload.clone().unwrap_or_else(|| "-".into()),
                r.pod.clone(),
                format!(
                    "{}→{}",
                    hash_of(&r.old),
                    r.new.as_deref().map_or("(not injected any more)", hash_of)
                ),
            ]
        })
        .collect();
    let mut out = output::table(&["NAMESPACE", "WORKLOAD", "POD", "OLD→NEW"], &rows);
    out.push_str("\nTo roll them (the webhook injects today's Whisperer into the new pods):\n");
    for c in &list.commands {
        out.push_str(&format!("  {c}\n"));
    }
    out
}

pub async fn run(s: &Session, args: &OutdatedArgs) -> Result<Outcome, PluginError> {
    let settings = s.injector_settings(&args.source).await?;
    let api: Api<Pod> = if args.all_namespaces {
        Api::all(s.client.clone())
    } else {
        Api::namespaced(s.client.clone(), &s.namespace)
    };
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err(if args.all_namespaces {
            "cannot list pods in any namespace".to_string()
        } else {
            format!("cannot list pods in namespace {}", s.namespace)
        }))?
        .items;
    let mut items = Vec::new();
    let mut checked = 0;
    // Pods of one ReplicaSet share their workload: one lookup per owner.
    let mut owners: HashMap<(String, String), Option<String>> = HashMap::new();
    for pod in pods.iter().filter(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_INJECTED))
    }) {
        checked += 1;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let Freshness::Outdated { old, new } = freshness(pod, &ns, &settings) else {
            continue;
        };
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name));
        let workload = match owner {
            Some(o) => match owners.get(&(ns.clone(), o.clone())) {
                Some(w) => w.clone(),
                None => {
                    let w = crate::explain::owning_workload(&s.client, &ns, pod).await;
                    owners.insert((ns.clone(), o), w.clone());
                    w
                }
            },
            None => None,
        };
        items.push(OutdatedRow {
            namespace: ns,
            workload,
            pod: pod.metadata.name.clone().unwrap_or_default(),
            old,
            new,
        });
    }
    items.sort_by(|a, b| {
        (&a.namespace, &a.workload, &a.pod).cmp(&(&b.namespace, &b.workload, &b.pod))
    });
    let commands: Vec<String> = items
        .iter()
        .map(roll_command)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let list = OutdatedList {
        items,
        commands,
        checked_pods: checked,
    };
    match args.output {
        Format::Json => print!("{}", output::json(&list)?),
        Format::Text => print!("{}", render(&list, args.all_namespaces)),
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: Option<&str>) -> OutdatedRow {
        OutdatedRow {
            namespace: "shop".into(),
            workload: workload.map(str::to_string),
            pod: "web-1".into(),
            old: "profile=default,hash=aaaaaaaaaaaaaaaa".into(),
            new: Some("profile=default,hash=bbbbbbbbbbbbbbbb".into()),
        }
    }

    #[test]
    fn roll_commands_per_owner() {
        assert_eq!(
            roll_command(&row(Some("deployment/web"))),
            "kubectl rollout restart deployment/web -n shop"
        );
        assert!(roll_command(&row(Some("job/x"))).starts_with("kubectl delete pod web-1 -n shop"));
        assert!(roll_command(&row(None)).starts_with("kubectl delete pod web-1 -n shop"));
        let list = OutdatedList {
            items: vec![row(Some("deployment/web"))],
            commands: vec![roll_command(&row(Some("deployment/web")))],
            checked_pods: 1,
        };
        let text = render(&list, false);
        assert!(text.contains("aaaaaaaaaaaaaaaa→bbbbbbbbbbbbbbbb"), "{text}");
        assert!(
            text.contains("  kubectl rollout restart deployment/web -n shop\n"),
            "{text}"
        );
    }
}

//! `kubectl whisper ls [-A] [-o json]`.

use kube::api::ListParams;
use kube::Api;

use super::error::kube as kube_err;
use super::output::{self, AttachmentRow, Format, List};
use super::{Outcome, PluginError, Session};
use crate::reconciler::Attachment;

#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// Attachments of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

pub fn row(a: &Attachment) -> AttachmentRow {
    let status = a.status.clone().unwrap_or_default();
    AttachmentRow {
        name: a.metadata.name.clone().unwrap_or_default(),
        namespace: a.metadata.namespace.clone().unwrap_or_default(),
        target: status
            .target
            .clone()
            .unwrap_or_else(|| a.target_description()),
        phase: status.phase.map(|p| p.as_str().to_string()),
        attached_pods: status.attached_pods,
        selected_pods: status.selected_pods,
        expires_at: status.expires_at.as_ref().map(|t| t.0.to_string()),
        profile: a.spec.profile.clone(),
        requested_by: status.requested_by.clone(),
    }
}

/// The table `ls` prints (NAMESPACE only with `-A`).
pub fn render(
    rows: &[AttachmentRow],
    all_namespaces: bool,
    now: k8s_openapi::jiff::Timestamp,
) -> String {
    let mut header = vec!["NAME"];
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["TARGET", "PHASE", "PODS", "EXPIRES", "PROFILE"]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![r.name.clone()];
            if all_namespaces {
                c.push(r.namespace.clone());
            }
            let expires = r
                .expires_at
                .as_deref()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map_or_else(|| "-".to_string(), |t| output::relative(t, now));
            c.extend([
                r.target.clone(),
                r.phase.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", r.attached_pods, r.selected_pods),
                expires,
                r.profile.clone().unwrap_or_else(|| "(default)".into()),
            ]);
            c
        })
        .collect();
    output::table(&header, &cells)
}

pub async fn run(s: &Session, args: &LsArgs) -> Result<Outcome, PluginError> {
    let api: Api<Attachment> = if args.all_namespaces {
        Api::all(s.client.clone())
    } else {
        Api::namespaced(s.client.clone(), &s.namespace)
    };
    let what = if args.all_namespaces {
        "cannot list Attachments in any namespace".to_string()
    } else {
        format!("cannot list Attachments in namespace {}", s.namespace)
    };
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err(what))?
        .items;
    list.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let rows: Vec<AttachmentRow> = list.iter().map(row).collect();
    match args.output {
        Format::Json => print!("{}", output::json(&List { items: rows })?),
        Format::Text if rows.is_empty() => {
            if args.all_namespaces {
                eprintln!("No Attachments found.");
            } else {
                eprintln!("No Attachments found in {} namespace.", s.namespace);
            }
        }
        Format::Text => print!(
            "{}",
            render(
                &rows,
                args.all_namespaces,
                k8s_openapi::jiff::Timestamp::now()
            )
        ),
    }
    Ok(Outcome::Ok)
}

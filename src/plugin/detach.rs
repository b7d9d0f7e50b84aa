//! `kubectl whisper detach NAME... | --all`: deletes Attachments, as `kubectl delete` would
//! (`--all` asks no confirmation, like `kubectl delete --all`). The reconciler records the
//! detach (its finalizer) and the agents stop themselves.

use kube::api::{DeleteParams, ListParams};
use kube::Api;

use super::error::kube as kube_err;
use super::{Outcome, PluginError, Session};
use crate::reconciler::Attachment;

#[derive(Debug, Clone, clap::Args)]
pub struct DetachArgs {
    /// Attachments to delete.
    #[arg(required = false, conflicts_with = "all")]
    pub names: Vec<String>,
    /// Delete every Attachment of the namespace.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(s: &Session, args: &DetachArgs) -> Result<Outcome, PluginError> {
    if args.names.is_empty() && !args.all {
        return Err(PluginError::Usage(
            "name the Attachments to detach (kubectl whisper ls lists them), or give --all".into(),
        ));
    }
    let api = Api::<Attachment>::namespaced(s.client.clone(), &s.namespace);
    let names = if args.all {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(kube_err(format!(
                "cannot list Attachments in namespace {}",
                s.namespace
            )))?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|a| a.metadata.name)
            .collect();
        names.sort();
        if names.is_empty() {
            eprintln!("No Attachments found in {} namespace.", s.namespace);
        }
        names
    } else {
        args.names.clone()
    };
    for name in names {
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(kube_err(format!(
                "cannot delete Attachment {}/{name}",
                s.namespace
            )))?;
        println!("attachment.whisperer.dev \"{name}\" deleted");
    }
    Ok(Outcome::Ok)
}

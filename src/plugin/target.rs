//! `deployment/web`, `deploy/web`, `sts/db`, `pod/web-0` ...: the workload a command names,
//! and the pods it runs now.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client};

use super::error::kube as kube_err;
use super::PluginError;
use crate::reconciler::TargetKind;

/// Parses `KIND/NAME` (kubectl's short names accepted).
pub fn parse(target: &str) -> Result<(TargetKind, String), PluginError> {
    let bad = || {
        PluginError::Usage(format!(
            "{target:?} is not KIND/NAME: deployment/web, statefulset/db, daemonset/agent, \
             replicaset/web-5d4f, job/backup, cronjob/nightly or pod/web-0"
        ))
    };
    let (kind, name) = target.split_once('/').ok_or_else(bad)?;
    if name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deployments" | "deploy" => TargetKind::Deployment,
        "statefulset" | "statefulsets" | "sts" => TargetKind::StatefulSet,
        "daemonset" | "daemonsets" | "ds" => TargetKind::DaemonSet,
        "replicaset" | "replicasets" | "rs" => TargetKind::ReplicaSet,
        "job" | "jobs" => TargetKind::Job,
        "cronjob" | "cronjobs" | "cj" => TargetKind::CronJob,
        "pod" | "pods" | "po" => TargetKind::Pod,
        _ => return Err(bad()),
    };
    Ok((kind, name.to_string()))
}

/// kubectl's spelling of a target: `deployment/web`.
pub fn display(kind: TargetKind, name: &str) -> String {
    format!("{}/{name}", kind.as_str().to_ascii_lowercase())
}

async fn selector_of<K>(client: &Client, ns: &str, name: &str) -> Result<LabelSelector, PluginError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K: HasSelector,
{
    let obj = Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(kube_err(format!("cannot get {} {ns}/{name}", K::kind(&()))))?;
    obj.selector()
        .ok_or_else(|| PluginError::Usage(format!("{} {ns}/{name} has no selector", K::kind(&()))))
}

/// The workload kinds whose pods are found through `spec.selector`.
pub trait HasSelector {
    fn selector(&self) -> Option<LabelSelector>;
}

macro_rules! has_selector {
    ($($t:ty => $e:expr),* $(,)?) => {$(
        impl HasSelector for $t {
            fn selector(&self) -> Option<LabelSelector> {
                let f: fn(&$t) -> Option<LabelSelector> = $e;
                f(self)
            }
        }
    )*};
}

has_selector! {
    Deployment => |o| o.spec.as_ref().map(|s| s.selector.clone()),
    StatefulSet => |o| o.spec.as_ref().map(|s| s.selector.clone()),
    DaemonSet => |o| o.spec.as_ref().map(|s| s.selector.clone()),
    ReplicaSet => |o| o.spec.as_ref().map(|s| s.selector.clone()),
    Job => |o| o.spec.as_ref().and_then(|s| s.selector.clone()),
}

/// The live (not terminating) pods of the target, sorted by name.
pub async fn pods(
    client: &Client,
    ns: &str,
    kind: TargetKind,
    name: &str,
) -> Result<Vec<Pod>, PluginError> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let selector = match kind {
        TargetKind::Pod => {
            let pod = api
                .get(name)
                .await
                .map_err(kube_err(format!("cannot get pod {ns}/{name}")))?;
            return Ok(vec![pod]);
        }
        TargetKind::Deployment => selector_of::<Deployment>(client, ns, name).await?,
        TargetKind::StatefulSet => selector_of::<StatefulSet>(client, ns, name).await?,
        TargetKind::DaemonSet => selector_of::<DaemonSet>(client, ns, name).await?,
        TargetKind::ReplicaSet => selector_of::<ReplicaSet>(client, ns, name).await?,
        TargetKind::Job => selector_of::<Job>(client, ns, name).await?,
        TargetKind::CronJob => {
            return Err(PluginError::Usage(format!(
                "cronjob/{name}: name one of its jobs (job/NAME) or pods instead"
            )))
        }
    };
    let selector = kube::core::Selector::try_from(selector).map_err(|e| {
        PluginError::Usage(format!("{}: invalid selector: {e}", display(kind, name)))
    })?;
    let mut pods: Vec<Pod> = api
        .list(&ListParams::default().labels_from(&selector))
        .await
        .map_err(kube_err(format!(
            "cannot list the pods of {}",
            display(kind, name)
        )))?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_short_names() {
        assert_eq!(
            parse("deploy/web").expect("ok"),
            (TargetKind::Deployment, "web".into())
        );
        assert_eq!(parse("sts/db").expect("ok").0, TargetKind::StatefulSet);
        assert_eq!(parse("Pod/web-0").expect("ok").0, TargetKind::Pod);
        for bad in ["web", "deployment/", "service/web", "pod/a/b"] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains("not KIND/NAME"), "{e}");
        }
        assert_eq!(display(TargetKind::StatefulSet, "db"), "statefulset/db");
    }
}

//! Keep a [`NameTable`] in step with the cluster's pods and services.

use std::sync::Arc;

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use super::table::{Kind, NameTable, OwnerRecord};
use super::DnsError;

/// Watch pods and services in all namespaces and apply every change to `table`.
///
/// A (re-)list is buffered and swapped in whole at `InitDone`, so entries of objects deleted
/// while the watch was down vanish and the table never serves a half-listed state. Watch
/// errors are logged and retried with backoff; this returns only if a watch stream ends.
pub async fn watch_cluster(client: Client, table: Arc<NameTable>) -> Result<(), DnsError> {
    let pods = follow::<Pod>(Api::all(client.clone()), &table);
    let services = follow::<Service>(Api::all(client), &table);
    tokio::select! {
        r = pods => r,
        r = services => r,
    }
}

/// An object kind the table records.
trait Watched: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    const KIND: Kind;
    const RESOURCE: &'static str;
    fn record(&self, table: &NameTable) -> Option<OwnerRecord>;
    fn apply(&self, table: &NameTable);
    fn delete(&self, table: &NameTable);
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
    const RESOURCE: &'static str = "pods";
    fn record(&self, table: &NameTable) -> Option<OwnerRecord> {
        table.pod_record(self)
    }
    fn apply(&self, table: &NameTable) {
        table.apply_pod(self);
    }
    fn delete(&self, table: &NameTable) {
        table.delete_pod(self);
    }
}

impl Watched for Service {
    const KIND: Kind = Kind::Service;
    const RESOURCE: &'static str = "services";
    fn record(&self, table: &NameTable) -> Option<OwnerRecord> {
        table.service_record(self)
    }
    fn apply(&self, table: &NameTable) {
        table.apply_service(self);
    }
    fn delete(&self, table: &NameTable) {
        table.delete_service(self);
    }
}

async fn follow<K: Watched>(api: Api<K>, table: &NameTable) -> Result<(), DnsError>
where
    K::DynamicType: Default,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut relist: Option<Vec<OwnerRecord>> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, resource = K::RESOURCE, "DNS proxy watch error; retrying");
                continue;
            }
        };
        match event {
            Event::Init => relist = Some(Vec::new()),
            Event::InitApply(obj) => {
                if let (Some(buffer), Some(rec)) = (relist.as_mut(), obj.record(table)) {
                    buffer.push(rec);
                }
            }
            Event::InitDone => {
                let records = relist.take().unwrap_or_default();
                tracing::debug!(
                    resource = K::RESOURCE,
                    count = records.len(),
                    "DNS proxy re-listed"
                );
                table.replace_kind(K::KIND, records);
            }
            Event::Apply(obj) => obj.apply(table),
            Event::Delete(obj) => obj.delete(table),
        }
    }
    Err(DnsError::WatchEnded {
        resource: K::RESOURCE,
    })
}

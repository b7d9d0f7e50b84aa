//! Keep a [`NameTable`] in step with the cluster's pods and services.

use std::sync::Arc;

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;

use super::table::{Kind, NameTable, OwnerRecord};
use super::DnsError;
use crate::lean_json::{lean_object_meta, KeepAnnotation};

/// A watched pod, its metadata read without `managedFields` or annotations (the table reads
/// neither): with 10,000 pods the full metadata of every list page was most of the proxy's
/// transient allocation.
#[derive(Clone, Debug)]
struct LeanPod(Pod);

struct NoAnnotations;

impl KeepAnnotation for NoAnnotations {
    fn keep(_: &str) -> bool {
        false
    }
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
            lean_object_meta::<NoAnnotations, D>(d)
        }
        #[derive(Deserialize)]
        struct Shape {
            #[serde(default, deserialize_with = "meta")]
            metadata: ObjectMeta,
            spec: Option<PodSpec>,
            status: Option<PodStatus>,
        }
        let Shape {
            metadata,
            spec,
            status,
        } = Shape::deserialize(d)?;
        Ok(LeanPod(Pod {
            metadata,
            spec,
            status,
        }))
    }
}

impl k8s_openapi::Resource for LeanPod {
    const API_VERSION: &'static str = Pod::API_VERSION;
    const GROUP: &'static str = Pod::GROUP;
    const KIND: &'static str = Pod::KIND;
    const VERSION: &'static str = Pod::VERSION;
    const URL_PATH_SEGMENT: &'static str = Pod::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for LeanPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Watch pods and services in all namespaces and apply every change to `table`.
///
/// A (re-)list is buffered and swapped in whole at `InitDone`, so entries of objects deleted
/// while the watch was down vanish and the table never serves a half-listed state. Watch
/// errors are logged and retried with backoff; this returns only if a watch stream ends.
pub async fn watch_cluster(client: Client, table: Arc<NameTable>) -> Result<(), DnsError> {
    let pods = follow::<LeanPod>(Api::all(client.clone()), &table);
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

impl Watched for LeanPod {
    const KIND: Kind = Kind::Pod;
    const RESOURCE: &'static str = "pods";
    fn record(&self, table: &NameTable) -> Option<OwnerRecord> {
        table.pod_record(&self.0)
    }
    fn apply(&self, table: &NameTable) {
        table.apply_pod(&self.0);
    }
    fn delete(&self, table: &NameTable) {
        table.delete_pod(&self.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_pod_gives_the_record_of_the_full_pod() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1", "resourceVersion": "9",
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "annotations": {"whisperer.dev/injected": "default/abc", "other": "x"},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:status": {"f:podIP": {}}}}]
            },
            "spec": {"containers": [{"name": "app", "image": "shop:1"},
                                    {"name": "whisperer", "image": "ghcr.io/whisperer/agent:1"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                       "containerStatuses": [
                         {"name": "app", "image": "shop:1", "imageID": "", "ready": true, "restartCount": 0,
                          "state": {"running": {}}},
                         {"name": "whisperer", "image": "ghcr.io/whisperer/agent:1", "imageID": "", "ready": true,
                          "restartCount": 0, "state": {"running": {}}}]}
        });
        let full: Pod = serde_json::from_value(json.clone()).expect("pod");
        let lean: LeanPod = serde_json::from_value(json).expect("lean pod");
        assert!(lean.0.metadata.managed_fields.is_none());
        assert!(lean.0.metadata.annotations.is_none());
        assert_eq!(lean.0.metadata.resource_version.as_deref(), Some("9"));
        let table = NameTable::new("cluster.local");
        let (want, got) = (table.pod_record(&full), table.pod_record(&lean.0));
        assert!(want.is_some());
        assert_eq!(got, want);
    }
}

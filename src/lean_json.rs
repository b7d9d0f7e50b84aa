//! Reading JSON without allocating what is thrown away: strings borrowed from the input when
//! they have no escapes, string maps of which only some keys are kept, and an object's
//! metadata without `managedFields`. The webhook's review reader, the reconciler's pod watch
//! and the DNS proxy's pod watch use them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A string borrowed from the input when it has no escapes.
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A map of strings of which only the keys `keep` accepts are allocated; the others are
/// still type-checked (every value a string), so a malformed map is still an error.
pub fn kept_strings<'de, D: Deserializer<'de>>(
    d: D,
    keep: fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Kept(fn(&str) -> bool);
    impl<'de> Visitor<'de> for Kept {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<Text<'de>>()? {
                let value = map.next_value::<Text<'de>>()?;
                if (self.0)(&key.0) {
                    kept.insert(key.0.into_owned(), value.0.into_owned());
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_map(Kept(keep))
}

/// Which annotation keys a lean read keeps.
pub trait KeepAnnotation {
    fn keep(key: &str) -> bool;
}

/// The metadata fields our watches read. Everything else, `managedFields` above all (most of a
/// pod's metadata, thousands of small JSON maps per list page), is skipped by serde unallocated.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound = "")]
struct LeanMeta<K: KeepAnnotation> {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<KeptAnnotations<K>>,
    owner_references: Option<Vec<OwnerReference>>,
}

/// An annotations map read with only the keys `K` keeps.
pub struct KeptAnnotations<K>(pub BTreeMap<String, String>, PhantomData<K>);

impl<'de, K: KeepAnnotation> Deserialize<'de> for KeptAnnotations<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        kept_strings(d, K::keep).map(|m| KeptAnnotations(m, PhantomData))
    }
}

/// An `ObjectMeta` with name, namespace, uid, resourceVersion, creation and deletion times,
/// labels, the annotations `K` keeps and the controller owner reference; the other fields
/// are left empty.
pub fn lean_object_meta<'de, K: KeepAnnotation, D: Deserializer<'de>>(
    d: D,
) -> Result<ObjectMeta, D::Error> {
    let m = LeanMeta::<K>::deserialize(d)?;
    let owner_references = m
        .owner_references
        .map(|refs| {
            refs.into_iter()
                .filter(|o| o.controller == Some(true))
                .collect::<Vec<_>>()
        })
        .filter(|refs| !refs.is_empty());
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels,
        annotations: m.annotations.map(|a| a.0).filter(|a| !a.is_empty()),
        owner_references,
        ..ObjectMeta::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "only_a")]
        map: BTreeMap<String, String>,
    }

    fn only_a<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        kept_strings(d, |k| k.starts_with('a'))
    }

    struct A;
    impl KeepAnnotation for A {
        fn keep(key: &str) -> bool {
            key.starts_with('a')
        }
    }

    #[derive(Deserialize)]
    struct Object {
        #[serde(deserialize_with = "meta_a")]
        metadata: ObjectMeta,
    }

    fn meta_a<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
        lean_object_meta::<A, D>(d)
    }

    #[test]
    fn lean_metadata_drops_managed_fields_and_foreign_owners() {
        let o: Object = serde_json::from_str(
            r#"{"metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "3",
                "creationTimestamp": "2026-12-01T10:00:00Z", "labels": {"app": "web"},
                "annotations": {"a/kept": "1", "b": "2"},
                "ownerReferences": [
                  {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r", "controller": true},
                  {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "c"}],
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:x": {}}}}],
                "finalizers": ["f"]}}"#,
        )
        .expect("object");
        let m = o.metadata;
        assert_eq!(m.name.as_deref(), Some("p"));
        assert_eq!(m.resource_version.as_deref(), Some("3"));
        assert!(m.creation_timestamp.is_some());
        assert_eq!(m.labels.unwrap_or_default()["app"], "web");
        assert_eq!(m.annotations.unwrap_or_default().len(), 1);
        let owners = m.owner_references.unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ReplicaSet");
        assert!(m.managed_fields.is_none() && m.finalizers.is_none());
    }

    #[test]
    fn keeps_only_accepted_keys_and_still_type_checks_the_rest() {
        let h: Holder =
            serde_json::from_str(r#"{"map": {"a1": "x", "b": "y", "a\"2": "z"}}"#).expect("map");
        assert_eq!(h.map.len(), 2);
        assert_eq!(h.map["a\"2"], "z");
        let bad = serde_json::from_str::<Holder>(r#"{"map": {"a1": "x", "b": 3}}"#);
        assert!(
            bad.is_err(),
            "a non-string value is an error even when not kept"
        );
    }
}

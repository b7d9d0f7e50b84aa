//! `request` of an AdmissionReview, read in one pass: when `kind` and `operation` (which
//! kube-apiserver writes before `object`) say a pod is being created, `object` is read
//! straight into the pod shape the engine uses instead of being kept as raw text and parsed
//! again. Any other object (or a pod whose `object` comes first) stays raw.
//!
//! Depth: typed fields are bounded by serde_json's recursion limit (a 400); skipped fields are
//! skipped without recursion, in time linear in their length, so a deeply nested skipped field
//! costs no more than a flat one of the same size and the body cap bounds both.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Pod;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ReviewError;
use super::pod_shape::{admitted_pod, parse_admitted_pod};
use super::review::{GroupVersionKind, ReviewIn, UserInfo};
use crate::lean_json::Text;

#[derive(Debug, Default)]
pub struct RequestIn<'a> {
    pub uid: Option<Cow<'a, str>>,
    pub kind: GroupVersionKind<'a>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub namespace: Cow<'a, str>,
    pub operation: Option<Cow<'a, str>>,
    /// `object` as text, unless it was read into [`RequestIn::pod`].
    pub object: Option<&'a RawValue>,
    /// `object` read while the review was parsed: a pod being created (boxed: a `Pod` is
    /// a few KB, moved with the review several times).
    pub pod: Option<Box<Pod>>,
    /// Only Attachment updates read it (did the spec change?).
    pub old_object: Option<&'a RawValue>,
    pub dry_run: bool,
    pub user_info: UserInfo<'a>,
}

impl RequestIn<'_> {
    /// A core `Pod` CREATE: the only request whose object the engine reads.
    pub fn is_pod_create(&self) -> bool {
        self.kind.group.is_empty()
            && self.kind.kind == "Pod"
            && self.operation.as_deref() == Some("CREATE")
    }
}

/// Why a review did not parse: an invalid pod (422) when the review is sound once its pod
/// `object` is kept as text and the pod alone fails, invalid JSON (400) otherwise. Only failed
/// reviews get here, so reading the body again costs the answers that succeed nothing.
pub fn parse_error(body: &[u8], e: serde_json::Error) -> ReviewError {
    if let Ok(ReviewIn {
        request: Some(TextObject(RequestIn {
            object: Some(raw), ..
        })),
        ..
    }) = serde_json::from_slice::<ReviewIn<'_, TextObject<'_>>>(body)
    {
        if let Err(pod) = parse_admitted_pod(raw.get()) {
            return ReviewError::BadPod(pod.to_string());
        }
    }
    ReviewError::Json(e.to_string())
}

/// A request read with its `object` kept as text whatever the kind.
struct TextObject<'a>(RequestIn<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for TextObject<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor {
            read_pod: false,
            lifetime: PhantomData,
        })
        .map(TextObject)
    }
}

fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0))
}

/// A pod `object` read into the engine's pod shape.
struct AdmittedPod(Box<Pod>);

impl<'de> Deserialize<'de> for AdmittedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        admitted_pod(d).map(|p| AdmittedPod(Box::new(p)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor {
            read_pod: true,
            lifetime: PhantomData,
        })
    }
}

struct RequestVisitor<'a> {
    /// Read a pod CREATE's `object` into the pod shape (else keep it as text).
    read_pod: bool,
    lifetime: PhantomData<&'a ()>,
}

const FIELDS: [&str; 9] = [
    "uid",
    "kind",
    "subResource",
    "namespace",
    "operation",
    "object",
    "oldObject",
    "dryRun",
    "userInfo",
];

impl<'de: 'a, 'a> Visitor<'de> for RequestVisitor<'a> {
    type Value = RequestIn<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an admission request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = RequestIn::default();
        let mut seen = [false; FIELDS.len()];
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let Some(i) = FIELDS.iter().position(|f| *f == key.0) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(de::Error::duplicate_field(FIELDS[i]));
            }
            match FIELDS[i] {
                "uid" => r.uid = text(&mut map)?,
                "kind" => r.kind = map.next_value::<Option<_>>()?.unwrap_or_default(),
                "subResource" => r.sub_resource = text(&mut map)?,
                "namespace" => r.namespace = text(&mut map)?.unwrap_or_default(),
                "operation" => r.operation = text(&mut map)?,
                "object" if self.read_pod && r.is_pod_create() => {
                    r.pod = map.next_value::<Option<AdmittedPod>>()?.map(|p| p.0)
                }
                "object" => r.object = map.next_value()?,
                "oldObject" => r.old_object = map.next_value()?,
                "dryRun" => r.dry_run = map.next_value::<Option<bool>>()?.unwrap_or_default(),
                _ => r.user_info = map.next_value::<Option<_>>()?.unwrap_or_default(),
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<RequestIn<'_>, ReviewError> {
        serde_json::from_str::<ReviewIn<'_>>(body)
            .map_err(|e| parse_error(body.as_bytes(), e))
            .map(|r| r.request.expect("request"))
    }

    #[test]
    fn a_pod_create_is_read_in_the_same_pass_and_anything_else_stays_raw() {
        let pod = r#"{"metadata":{"name":"web"},"spec":{"containers":[{"name":"app"}]}}"#;
        let create = format!(
            r#"{{"request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"namespace":"ns","operation":"CREATE","object":{pod},"dryRun":true,"userInfo":{{"username":"alice"}}}}}}"#
        );
        let r = request(&create).expect("parses");
        assert!(r.object.is_none());
        let read = r.pod.expect("the pod");
        assert_eq!(read.metadata.name.as_deref(), Some("web"));
        assert!(r.dry_run);
        assert_eq!(r.user_info.username.as_deref(), Some("alice"));
        assert!(matches!(r.uid, Some(Cow::Borrowed("u"))), "borrowed");

        // An update, or an object before the kind: kept as text for the caller.
        for body in [
            create.replace("CREATE", "UPDATE"),
            format!(
                r#"{{"request":{{"object":{pod},"uid":"u","kind":{{"kind":"Pod"}},"operation":"CREATE"}}}}"#
            ),
        ] {
            let r = request(&body).expect("parses");
            assert!(r.pod.is_none());
            assert_eq!(r.object.map(RawValue::get), Some(pod));
        }
    }

    #[test]
    fn errors_inside_a_pod_are_invalid_pods_and_elsewhere_invalid_json() {
        let head = r#"{"request":{"uid":"u","kind":{"kind":"Pod"},"operation":"CREATE","object":"#;
        match request(&format!(r#"{head}{{"spec":{{"containers":"x"}}}}}}}}"#)) {
            Err(ReviewError::BadPod(m)) => {
                assert!(m.starts_with("invalid type: string"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match request(&format!(r#"{head}{{"metadata":{{}}}}}}}}"#)) {
            Err(ReviewError::BadPod(m)) => assert!(m.contains("`spec`"), "{m}"),
            other => panic!("{other:?}"),
        }
        match request(&format!(r#"{head}null}}}}"#)) {
            Ok(r) => assert!(r.pod.is_none() && r.object.is_none()),
            other => panic!("{other:?}"),
        }
        let nested = "[".repeat(500) + &"]".repeat(500);
        for bad in [
            nested.as_str(),
            r#"{"request":{"uid":7}}"#,
            r#"{"request":{"uid":"a","uid":"b"}}"#,
            r#"{"request":{"kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[]}}"#,
        ] {
            assert!(matches!(request(bad), Err(ReviewError::Json(_))), "{bad}");
        }
    }

    #[test]
    fn escaped_strings_are_owned() {
        let r = request(r#"{"request":{"uid":"a\"b","namespace":"n"}}"#).expect("parses");
        assert_eq!(r.uid.as_deref(), Some("a\"b"));
        assert_eq!(r.namespace, "n");
    }
}

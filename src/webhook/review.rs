//! `admission.k8s.io/v1` AdmissionReview, read leniently enough to name what is wrong and
//! written exactly as kube-apiserver expects.

use std::borrow::Cow;

use base64::Engine;
use serde::{Deserialize, Serialize};

pub use super::request::RequestIn;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// `R`: how `request` is read (the pod object read with it, or kept as text).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<'a, R = RequestIn<'a>> {
    #[serde(borrow)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kind: Option<Cow<'a, str>>,
    pub request: Option<R>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    #[serde(default, borrow)]
    pub kind: Cow<'a, str>,
}

/// Who sent the request, as the API server authenticated them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo<'a> {
    #[serde(borrow)]
    pub username: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOut<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseOut<'a> {
    pub uid: &'a str,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// base64 of the JSON patch: the API's `[]byte` encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "audit_map")]
    pub audit_annotations: Vec<(&'static str, String)>,
}

fn audit_map<S: serde::Serializer>(v: &[(&'static str, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        m.serialize_entry(k, val)?;
    }
    m.end()
}

impl<'a> ResponseOut<'a> {
    pub fn allow(uid: &'a str) -> Self {
        ResponseOut {
            uid,
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        }
    }

    pub fn with_patch(mut self, patch_json: &[u8]) -> Self {
        self.patch_type = Some("JSONPatch");
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch_json));
        self
    }

    pub fn into_review(self) -> ReviewOut<'a> {
        ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: self,
        }
    }
}

/// Writes the AdmissionReview of an answer into `out`: the bytes serde writes for
/// [`ResponseOut::into_review`] with the same fields, with the patch base64-encoded straight
/// into the buffer (no intermediate string).
pub fn write_review(
    out: &mut Vec<u8>,
    uid: &str,
    patch: Option<&[u8]>,
    warnings: &[String],
    audit_annotations: &[(&str, &str)],
) {
    // Writing JSON into a Vec cannot fail.
    let string = |out: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *out, s);
    };
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    string(out, uid);
    out.extend_from_slice(br#","allowed":true"#);
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        let start = out.len();
        let len = base64::encoded_len(patch.len(), true).unwrap_or(0);
        out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(patch, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, w);
        }
        out.push(b']');
    }
    if !audit_annotations.is_empty() {
        out.extend_from_slice(br#","auditAnnotations":{"#);
        for (i, (k, v)) in audit_annotations.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, k);
            out.push(b':');
            string(out, v);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_review_is_what_serde_writes() {
        let patch = br#"[{"op":"add","path":"/x","value":"\u00e9\""}]"#;
        let warnings = vec![
            "whisperer: a \"quoted\" warning".to_string(),
            "two".to_string(),
        ];
        for (patch, warnings, audit) in [
            (None, vec![], vec![]),
            (
                Some(&patch[..]),
                vec![],
                vec![("injected", "profile=p,hash=00")],
            ),
            (
                Some(&patch[..]),
                warnings.clone(),
                vec![("a", "1"), ("b", "2")],
            ),
            (None, warnings, vec![("skip-reason", "not-requested")]),
        ] {
            let mut typed = ResponseOut::allow("uid-\"é");
            if let Some(p) = patch {
                typed = typed.with_patch(p);
            }
            typed.warnings = warnings.clone();
            typed.audit_annotations = audit.iter().map(|(k, v)| (*k, v.to_string())).collect();
            let want = serde_json::to_vec(&typed.into_review()).expect("serde");
            let mut got = b"left alone".to_vec();
            write_review(&mut got, "uid-\"é", patch, &warnings, &audit);
            assert_eq!(
                String::from_utf8_lossy(&got[10..]),
                String::from_utf8_lossy(&want)
            );
        }
    }
}

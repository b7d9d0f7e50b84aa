//! `admission.k8s.io/v1` AdmissionReview, read leniently enough to name what is wrong and
//! written exactly as kube-apiserver expects.

use std::borrow::Cow;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewIn<'a> {
    #[serde(borrow)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub request: Option<RequestIn<'a>>,
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIn<'a> {
    #[serde(borrow)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(borrow)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub operation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub object: Option<&'a RawValue>,
    /// Only Attachment updates read it (did the spec change?).
    #[serde(borrow)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, borrow)]
    pub user_info: UserInfo<'a>,
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

/// Deepest `{`/`[` nesting allowed anywhere in a review. A real pod review nests about 20
/// levels (managedFields being the deepest part); this bounds the work any body can cause,
/// including inside fields a typed parse would skip.
pub const MAX_NESTING: usize = 100;

/// True when the JSON text nests deeper than `max`. One linear pass; strings (with escapes)
/// are skipped so brackets inside them do not count.
pub fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        i += 1;
        match b {
            b'"' => match skip_string(json, i) {
                Some(end) => i = end,
                None => return false,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The index after the quote that ends the string whose contents start at `i`; `None` when
/// the text ends first. Most strings of a pod are short (keys, names), where a byte loop beats
/// a `memchr` call; a long one (an annotation, a script) is searched with `memchr`.
fn skip_string(json: &[u8], mut i: usize) -> Option<usize> {
    const SHORT: usize = 32;
    let short_end = json.len().min(i + SHORT);
    while i < short_end {
        match json[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    loop {
        let rest = json.get(i..)?;
        let off = memchr::memchr2(b'"', b'\\', rest)?;
        if json[i + off] == b'\\' {
            i += off + 2;
        } else {
            return Some(i + off + 1);
        }
    }
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

    #[test]
    fn nesting() {
        assert!(!nesting_exceeds(br#"{"a":[{"b":"[[[[[[[["}]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!nesting_exceeds(br#"{"s":"\"{{{{"}"#, 1));
        assert!(nesting_exceeds(&[b'['; 101], MAX_NESTING));
        assert!(
            !nesting_exceeds(br#"{"a":"x\\"}"#, 1),
            "escaped backslash ends the escape"
        );
        assert!(!nesting_exceeds(br#"{"a":"unterminated \"#, 1));
    }

    /// The scan before the short-string loop: the reference the faster one must agree with.
    fn reference(json: &[u8], max: usize) -> bool {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut i = 0;
        while i < json.len() {
            match (in_string, json[i]) {
                (true, b'\\') => i += 1,
                (true, b'"') | (false, b'"') => in_string = !in_string,
                (false, b'{' | b'[') => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                (false, b'}' | b']') => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        false
    }

    #[test]
    fn nesting_scan_agrees_with_the_reference_on_short_and_long_strings() {
        let alphabet = br#"{}[]"\ax"#;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0, 1, 5, 31, 32, 33, 64, 200, 1000] {
            for _ in 0..300 {
                let mut input: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                // Long runs of plain string bytes, past the short-string loop.
                if len > 0 && next() % 2 == 0 {
                    let at = (next() % len as u64) as usize;
                    input.splice(
                        at..at,
                        std::iter::repeat_n(b'a', 40 + (next() % 100) as usize),
                    );
                }
                for max in [1, 3, 8] {
                    assert_eq!(
                        nesting_exceeds(&input, max),
                        reference(&input, max),
                        "{} max {max}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }

    #[test]
    fn nesting_scan_never_panics() {
        // Deterministic xorshift over an alphabet heavy in the bytes the scanner acts on.
        let alphabet = br#"{}[]"\a:,"#;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..64 {
            for _ in 0..200 {
                let input: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % alphabet.len() as u64) as usize]
                    })
                    .collect();
                let _ = nesting_exceeds(&input, 3);
            }
        }
    }
}

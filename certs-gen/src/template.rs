//! Rendering of `webhook.yaml.tmpl`.
//!
//! Syntax, kept deliberately small:
//! * `${NAME}` is replaced by the value of placeholder `NAME` (see [`PLACEHOLDERS`]);
//!   an unknown name, or a known one without a value, is an error naming it.
//! * A line holding only `#@if service` or `#@if url` opens a section that ends at a line
//!   holding only `#@endif`. The `service` section is kept for the in-cluster form
//!   (`TemplateValues::url` is `None`), the `url` section for the out-of-cluster form.
//!   The directive lines themselves are dropped. Sections do not nest.
//! * Other comment lines (first non-blank character `#`) are copied verbatim, without
//!   placeholder substitution, except the template's leading comment block (everything
//!   before the first line that is neither blank nor a comment), which documents the
//!   template and is dropped from the output.

use base64::Engine as _;

use crate::{GeneratedCerts, DEFAULT_NAMESPACE, DEFAULT_PATH, DEFAULT_PORT, DEFAULT_SERVICE};

/// Default `metadata.name` of the `MutatingWebhookConfiguration`.
pub const DEFAULT_WEBHOOK_NAME: &str = "whisperer-injector";

/// Placeholders the template may use, with what they hold.
pub const PLACEHOLDERS: [(&str, &str); 7] = [
    (
        "WEBHOOK_NAME",
        "metadata.name of the MutatingWebhookConfiguration",
    ),
    ("CA_BUNDLE", "base64 of the PEM CA certificate (caBundle)"),
    ("SERVICE_NAME", "webhook Service name (service form)"),
    (
        "NAMESPACE",
        "injector namespace: the Service's namespace, never injected",
    ),
    ("WEBHOOK_PATH", "HTTP path of the webhook (service form)"),
    ("WEBHOOK_PORT", "Service port of the webhook (service form)"),
    ("WEBHOOK_URL", "https URL of the webhook (url form)"),
];

/// Section names usable with `#@if NAME`.
pub const SECTIONS: [&str; 2] = ["service", "url"];

/// Values for the template's placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateValues {
    /// `metadata.name` of the `MutatingWebhookConfiguration` (`WEBHOOK_NAME`).
    pub name: String,
    /// base64 of the PEM CA bundle (`CA_BUNDLE`); see [`ca_bundle_b64`].
    pub ca_bundle_b64: String,
    /// Service name (`SERVICE_NAME`).
    pub service: String,
    /// Injector namespace (`NAMESPACE`), also excluded by the `namespaceSelector`.
    pub namespace: String,
    /// Webhook path (`WEBHOOK_PATH`), must start with `/`.
    pub path: String,
    /// Service port (`WEBHOOK_PORT`).
    pub port: u16,
    /// Out-of-cluster form: the full `https://` URL (`WEBHOOK_URL`). When set, the template's
    /// `url` section is rendered instead of its `service` section.
    pub url: Option<String>,
}

impl Default for TemplateValues {
    /// Defaults for everything but the CA bundle, which stays empty (a missing value).
    fn default() -> Self {
        Self {
            name: DEFAULT_WEBHOOK_NAME.to_owned(),
            ca_bundle_b64: String::new(),
            service: DEFAULT_SERVICE.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            path: DEFAULT_PATH.to_owned(),
            port: DEFAULT_PORT,
            url: None,
        }
    }
}

impl TemplateValues {
    /// In-cluster form: the API server calls `service.namespace:443/mutate`.
    pub fn for_service(
        certs: &GeneratedCerts,
        service: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            ca_bundle_b64: ca_bundle_b64(&certs.ca_cert_pem),
            service: service.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    /// Out-of-cluster form: the API server calls `url` (e.g. `https://127.0.0.1:8443/mutate`).
    pub fn for_url(
        certs: &GeneratedCerts,
        url: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            ca_bundle_b64: ca_bundle_b64(&certs.ca_cert_pem),
            namespace: namespace.into(),
            url: Some(url.into()),
            ..Self::default()
        }
    }

    fn lookup(&self, name: &str) -> Lookup {
        match name {
            "WEBHOOK_NAME" => Lookup::Value(self.name.clone()),
            "CA_BUNDLE" => Lookup::Value(self.ca_bundle_b64.clone()),
            "SERVICE_NAME" => Lookup::Value(self.service.clone()),
            "NAMESPACE" => Lookup::Value(self.namespace.clone()),
            "WEBHOOK_PATH" => Lookup::Value(self.path.clone()),
            "WEBHOOK_PORT" => Lookup::Value(if self.port == 0 {
                String::new()
            } else {
                self.port.to_string()
            }),
            "WEBHOOK_URL" => Lookup::Value(self.url.clone().unwrap_or_default()),
            _ => Lookup::Unknown,
        }
    }
}

enum Lookup {
    Value(String),
    Unknown,
}

/// base64 (standard, padded) of a PEM bundle, as `clientConfig.caBundle` wants it.
pub fn ca_bundle_b64(ca_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes())
}

/// A placeholder and the template line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderAt {
    pub name: String,
    pub line: usize,
}

fn list(items: &[PlaceholderAt]) -> String {
    items
        .iter()
        .map(|p| format!("${{{}}} (line {})", p.name, p.line))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_names() -> String {
    PLACEHOLDERS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown placeholder(s) in template: {}; known placeholders: {}", list(.placeholders), known_names())]
    UnknownPlaceholders { placeholders: Vec<PlaceholderAt> },
    #[error("no value for placeholder(s): {}", list(.placeholders))]
    MissingValues { placeholders: Vec<PlaceholderAt> },
    #[error("invalid value for placeholder ${{{name}}}: {value:?} {reason}")]
    InvalidValue {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("unterminated placeholder on template line {line}: expected `}}` after `${{`")]
    Unterminated { line: usize },
    #[error("template line {line}: {reason}")]
    Section { line: usize, reason: String },
}

/// Renders the webhook template with `values`.
///
/// Checks, in order: section structure, unknown placeholders (anywhere in the template, even
/// in a section that is dropped), values (quotes, newlines, an https URL, a path starting
/// with `/`), then missing values for the placeholders actually rendered.
pub fn render_webhook(template: &str, values: &TemplateValues) -> Result<String, RenderError> {
    let kept = select_sections(template, values.url.is_some())?;

    let mut unknown = Vec::new();
    for (line_no, line) in template.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for name in placeholders_in(line, line_no + 1)? {
            if matches!(values.lookup(&name), Lookup::Unknown) {
                unknown.push(PlaceholderAt {
                    name,
                    line: line_no + 1,
                });
            }
        }
    }
    if !unknown.is_empty() {
        return Err(RenderError::UnknownPlaceholders {
            placeholders: unknown,
        });
    }

    validate_values(values)?;

    let mut missing = Vec::new();
    let mut out = String::with_capacity(template.len() + values.ca_bundle_b64.len());
    for (line_no, line) in kept {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or(RenderError::Unterminated { line: line_no })?;
            let name = &after[..end];
            match values.lookup(name) {
                Lookup::Value(v) if !v.trim().is_empty() => out.push_str(&v),
                _ => {
                    if !missing.iter().any(|p: &PlaceholderAt| p.name == name) {
                        missing.push(PlaceholderAt {
                            name: name.to_owned(),
                            line: line_no,
                        });
                    }
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if !missing.is_empty() {
        return Err(RenderError::MissingValues {
            placeholders: missing,
        });
    }
    Ok(out)
}

/// The template lines (1-based number, text with its newline) to render.
fn select_sections(template: &str, url_form: bool) -> Result<Vec<(usize, &str)>, RenderError> {
    let mut kept = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    let mut in_header = true;
    for (i, line) in template.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if in_header {
            if trimmed.is_empty() || (trimmed.starts_with('#') && !trimmed.starts_with("#@")) {
                continue;
            }
            in_header = false;
        }
        if let Some(rest) = trimmed.strip_prefix("#@if") {
            let name = rest.trim();
            if let Some((outer, at)) = open {
                return Err(RenderError::Section {
                    line: line_no,
                    reason: format!(
                        "`#@if {name}` inside section `{outer}` opened on line {at}; sections do not nest"
                    ),
                });
            }
            let Some(known) = SECTIONS.iter().find(|s| **s == name) else {
                return Err(RenderError::Section {
                    line: line_no,
                    reason: format!(
                        "unknown section {name:?}; known sections: {}",
                        SECTIONS.join(", ")
                    ),
                });
            };
            open = Some((known, line_no));
            continue;
        }
        if trimmed == "#@endif" {
            if open.take().is_none() {
                return Err(RenderError::Section {
                    line: line_no,
                    reason: "`#@endif` without `#@if`".into(),
                });
            }
            continue;
        }
        if trimmed.starts_with("#@") {
            return Err(RenderError::Section {
                line: line_no,
                reason: format!(
                    "unknown directive {trimmed:?} (expected `#@if service`, `#@if url` or `#@endif`)"
                ),
            });
        }
        let keep = match open {
            None => true,
            Some(("url", _)) => url_form,
            Some(_) => !url_form,
        };
        if keep {
            kept.push((line_no, line));
        }
    }
    if let Some((name, at)) = open {
        return Err(RenderError::Section {
            line: at,
            reason: format!("section `{name}` is never closed with `#@endif`"),
        });
    }
    Ok(kept)
}

fn placeholders_in(line: &str, line_no: usize) -> Result<Vec<String>, RenderError> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or(RenderError::Unterminated { line: line_no })?;
        names.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    Ok(names)
}

fn validate_values(values: &TemplateValues) -> Result<(), RenderError> {
    let invalid = |name: &'static str, value: &str, reason: &str| RenderError::InvalidValue {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let strings: [(&'static str, &str); 5] = [
        ("WEBHOOK_NAME", &values.name),
        ("CA_BUNDLE", &values.ca_bundle_b64),
        ("SERVICE_NAME", &values.service),
        ("NAMESPACE", &values.namespace),
        ("WEBHOOK_PATH", &values.path),
    ];
    let url = values.url.as_deref().map(|u| ("WEBHOOK_URL", u));
    for (name, value) in strings.into_iter().chain(url) {
        if value
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\' || c == '\'')
        {
            return Err(invalid(
                name,
                value,
                "contains quotes, backslashes or control characters",
            ));
        }
    }
    if !values.path.is_empty() && !values.path.starts_with('/') {
        return Err(invalid("WEBHOOK_PATH", &values.path, "must start with '/'"));
    }
    if let Some(url) = &values.url {
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(invalid(
                "WEBHOOK_URL",
                url,
                "must start with https:// (the API server only calls webhooks over TLS)",
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid("WEBHOOK_URL", url, "has no host"));
        }
        if url.contains('#') || url.contains('?') || url.contains('@') {
            return Err(invalid(
                "WEBHOOK_URL",
                url,
                "must not contain user info, a query or a fragment",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            ca_bundle_b64: "Q0E=".into(),
            ..TemplateValues::default()
        }
    }

    const T: &str = "# header ${WHATEVER}\n\na: ${CA_BUNDLE}\n#@if service\ns: ${SERVICE_NAME}:${WEBHOOK_PORT}\n#@endif\n  #@if url\nu: \"${WEBHOOK_URL}\"\n  #@endif\n  # kept ${X}\n";

    #[test]
    fn sections_select_form() {
        assert_eq!(
            render_webhook(T, &values()).expect("service"),
            "a: Q0E=\ns: whisperer-injector:443\n  # kept ${X}\n"
        );
        let v = TemplateValues {
            url: Some("https://127.0.0.1:8443/mutate".into()),
            ..values()
        };
        assert_eq!(
            render_webhook(T, &v).expect("url"),
            "a: Q0E=\nu: \"https://127.0.0.1:8443/mutate\"\n  # kept ${X}\n"
        );
    }

    #[test]
    fn structure_errors() {
        let e = render_webhook("#@if bogus\n#@endif\n", &values()).expect_err("unknown");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = render_webhook("#@if url\n", &values()).expect_err("unclosed");
        assert!(e.to_string().contains("never closed"), "{e}");
        let e = render_webhook("#@endif\n", &values()).expect_err("stray");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = render_webhook("x\na: ${CA_BUNDLE\n", &values()).expect_err("unterminated");
        assert!(matches!(e, RenderError::Unterminated { line: 2 }), "{e}");
    }

    #[test]
    fn value_checks() {
        let v = TemplateValues {
            url: Some("http://x/mutate".into()),
            ..values()
        };
        let e = render_webhook(T, &v).expect_err("http");
        assert!(e.to_string().contains("WEBHOOK_URL"), "{e}");
        let v = TemplateValues {
            name: "a\"b".into(),
            ..values()
        };
        assert!(render_webhook(T, &v).is_err());
    }
}

//! Certificates and manifests for the whisperer-injector webhook.
//!
//! * [`generate`] makes a private CA and a serving certificate signed by it, valid for the
//!   in-cluster names of the webhook Service ([`sans`]) plus any extra names and addresses.
//! * [`render_webhook`] fills in `webhook.yaml.tmpl` (the `MutatingWebhookConfiguration`),
//!   either in the in-cluster form (`clientConfig.service`) or the out-of-cluster form
//!   (`clientConfig.url`).
//! * [`secret_manifest`] writes the `kubernetes.io/tls` Secret the Deployment mounts.
//!
//! The CA private key never goes into a manifest: keep it outside the cluster (or throw it
//! away and regenerate everything when the serving certificate expires).

mod certs;
mod secret;
mod template;

pub use certs::{
    generate, generate_ca, issue_serving, sans, validate_request, CertRequest, CertsError,
    GeneratedCerts, IssuedPem, KeyAlgorithm, NOT_BEFORE_SKEW,
};
pub use secret::secret_manifest;
pub use template::{
    ca_bundle_b64, render_webhook, RenderError, TemplateValues, DEFAULT_WEBHOOK_NAME, PLACEHOLDERS,
    SECTIONS,
};
pub use time::{Duration, OffsetDateTime};

/// Default name of the webhook Service (and of the Deployment behind it).
pub const DEFAULT_SERVICE: &str = "whisperer-injector";
/// Default namespace the injector runs in.
pub const DEFAULT_NAMESPACE: &str = "whisperer-system";
/// Default name of the `kubernetes.io/tls` Secret the Deployment mounts.
pub const DEFAULT_SECRET_NAME: &str = "whisperer-injector-tls";
/// Default HTTP path of the mutating webhook.
pub const DEFAULT_PATH: &str = "/mutate";
/// Default Service port of the webhook.
pub const DEFAULT_PORT: u16 = 443;

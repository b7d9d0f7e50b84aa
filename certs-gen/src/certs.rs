//! CA + serving certificate generation (rcgen, ring backend).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};

use crate::{DEFAULT_NAMESPACE, DEFAULT_SERVICE};

/// Backdating of `notBefore`, so that a node whose clock is a little behind still accepts
/// a certificate minted a moment ago.
pub const NOT_BEFORE_SKEW: Duration = Duration::minutes(5);

/// Key algorithm of both the CA and the serving certificate.
///
/// Only what rcgen can generate with its `ring` backend (no C toolchain beyond ring's own):
/// RSA key generation would need aws-lc-rs, so it is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default; accepted everywhere).
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    /// Ed25519.
    #[value(name = "ed25519")]
    Ed25519,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order the CLI lists them.
    pub const ALL: [KeyAlgorithm; 3] = [Self::EcdsaP256, Self::EcdsaP384, Self::Ed25519];

    /// The name used on the command line (`ecdsa-p256`, `ecdsa-p384`, `ed25519`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = CertsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| CertsError::UnknownKeyAlgorithm(s.to_owned()))
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Name of the webhook Service (a DNS-1123 label).
    pub service: String,
    /// Namespace of the webhook Service (a DNS-1123 label).
    pub namespace: String,
    /// Extra DNS names for the serving certificate (wildcards such as `*.example.com` allowed).
    pub extra_dns: Vec<String>,
    /// Extra IP addresses for the serving certificate (e.g. `127.0.0.1` for a local API server).
    pub extra_ips: Vec<IpAddr>,
    /// Lifetime of the serving certificate, in days (at most `ca_validity_days`).
    pub validity_days: u32,
    /// Lifetime of the CA certificate, in days.
    pub ca_validity_days: u32,
    /// Key algorithm of the CA and the serving certificate.
    pub key_algorithm: KeyAlgorithm,
}

impl Default for CertRequest {
    fn default() -> Self {
        Self {
            service: DEFAULT_SERVICE.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            extra_dns: Vec::new(),
            extra_ips: Vec::new(),
            validity_days: 365,
            ca_validity_days: 3650,
            key_algorithm: KeyAlgorithm::default(),
        }
    }
}

impl CertRequest {
    /// A request for `service` in `namespace` with the default lifetimes and algorithm.
    pub fn new(service: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }
}

/// A CA and a serving certificate signed by it, all PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    /// CA certificate (goes into `caBundle` and the Secret's `ca.crt`).
    pub ca_cert_pem: String,
    /// CA private key, PKCS#8. Keep it out of the cluster.
    pub ca_key_pem: String,
    /// Serving certificate (`tls.crt`).
    pub cert_pem: String,
    /// Serving private key, PKCS#8 (`tls.key`).
    pub key_pem: String,
    /// Expiry of the serving certificate.
    pub not_after: OffsetDateTime,
    /// Expiry of the CA certificate.
    pub ca_not_after: OffsetDateTime,
    /// Subject alternative names of the serving certificate, as [`sans`] lists them.
    pub sans: Vec<String>,
}

impl fmt::Debug for GeneratedCerts {
    // Private keys stay out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("not_after", &self.not_after)
            .field("ca_not_after", &self.ca_not_after)
            .field("sans", &self.sans)
            .finish()
    }
}

impl GeneratedCerts {
    /// Expiry of the serving certificate, RFC 3339.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }

    /// Expiry of the CA certificate, RFC 3339.
    pub fn ca_not_after_rfc3339(&self) -> String {
        rfc3339(self.ca_not_after)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Why certificates could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidName {
        /// Which input: `service`, `namespace` or `extra DNS name`.
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid {field}: {days} days ({reason})")]
    InvalidValidity {
        /// `validity_days` or `ca_validity_days`.
        field: &'static str,
        days: u32,
        reason: String,
    },
    #[error("unknown key algorithm {0:?} (expected one of: ecdsa-p256, ecdsa-p384, ed25519)")]
    UnknownKeyAlgorithm(String),
    #[error("cannot generate the {what}: {source}")]
    Rcgen {
        /// Which step failed (`CA key`, `CA certificate`, `serving key`, ...).
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
}

/// Subject alternative names of the serving certificate, in order and without duplicates:
/// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, then
/// `extra_dns`, then `extra_ips` (formatted as text).
pub fn sans(req: &CertRequest) -> Vec<String> {
    let svc = req.service.trim();
    let ns = req.namespace.trim();
    let mut out: Vec<String> = Vec::new();
    let candidates = [
        svc.to_owned(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ]
    .into_iter()
    .chain(req.extra_dns.iter().map(|d| d.trim().to_owned()))
    .chain(req.extra_ips.iter().map(IpAddr::to_string));
    for name in candidates {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&name)) {
            out.push(name);
        }
    }
    out
}

/// Generates a fresh CA and a serving certificate for the request.
pub fn generate(req: &CertRequest) -> Result<GeneratedCerts, CertsError> {
    validate_request(req)?;
    if req.ca_validity_days == 0 {
        return Err(CertsError::InvalidValidity {
            field: "ca_validity_days",
            days: 0,
            reason: "must be at least 1".into(),
        });
    }
    if req.validity_days == 0 {
        return Err(CertsError::InvalidValidity {
            field: "validity_days",
            days: 0,
            reason: "must be at least 1".into(),
        });
    }
    if req.validity_days > req.ca_validity_days {
        return Err(CertsError::InvalidValidity {
            field: "validity_days",
            days: req.validity_days,
            reason: format!(
                "longer than the CA's {} days; the serving certificate would outlive its CA",
                req.ca_validity_days
            ),
        });
    }
    let now = OffsetDateTime::now_utc();
    let ca = generate_ca(req, now, Duration::days(i64::from(req.ca_validity_days)))?;
    let leaf = issue_serving(req, &ca, now, Duration::days(i64::from(req.validity_days)))?;
    Ok(GeneratedCerts {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
        not_after: leaf.not_after,
        ca_not_after: ca.not_after,
        sans: leaf.sans,
    })
}

/// A certificate and its PKCS#8 key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedPem {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: OffsetDateTime,
    /// Subject alternative names (empty for a CA).
    pub sans: Vec<String>,
}

impl fmt::Debug for IssuedPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("not_after", &self.not_after)
            .field("sans", &self.sans)
            .finish()
    }
}

/// Whole seconds: X.509 times have no fraction, and the reported expiry should match.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t - Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn check_lifetime(field: &'static str, lifetime: Duration) -> Result<(), CertsError> {
    if lifetime < Duration::seconds(1) {
        return Err(CertsError::InvalidValidity {
            field,
            days: 0,
            reason: "must be at least one second".into(),
        });
    }
    Ok(())
}

/// A new CA for the request's Service, valid from `now` (backdated by the clock skew) for
/// `lifetime`. Its common name carries the issue time so two generations of CA can be told
/// apart in a bundle.
pub fn generate_ca(
    req: &CertRequest,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<IssuedPem, CertsError> {
    validate_request(req)?;
    check_lifetime("ca_validity", lifetime)?;
    let now = whole_seconds(now);
    let not_after = now + lifetime;
    let alg = req.key_algorithm.signature_algorithm();
    let rc = |what: &'static str| move |source| CertsError::Rcgen { what, source };
    let ca_key = KeyPair::generate_for(alg).map_err(rc("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "whisperer.dev");
        dn.push(
            DnType::CommonName,
            format!(
                "{}.{} webhook CA {}",
                req.service.trim(),
                req.namespace.trim(),
                now.unix_timestamp()
            ),
        );
        dn
    };
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - NOT_BEFORE_SKEW;
    ca_params.not_after = not_after;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(rc("CA certificate"))?;
    Ok(IssuedPem {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
        not_after,
        sans: Vec::new(),
    })
}

/// A serving certificate for the request's names, signed by `ca`, valid from `now`
/// (backdated by the clock skew) for `lifetime` but never past the CA's own expiry.
pub fn issue_serving(
    req: &CertRequest,
    ca: &IssuedPem,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<IssuedPem, CertsError> {
    validate_request(req)?;
    check_lifetime("validity", lifetime)?;
    let now = whole_seconds(now);
    let not_after = (now + lifetime).min(ca.not_after);
    let alg = req.key_algorithm.signature_algorithm();
    let rc = |what: &'static str| move |source| CertsError::Rcgen { what, source };
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rc("CA key (parse)"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(rc("CA certificate (parse)"))?;

    let names = sans(req);
    let mut subject_alt_names = Vec::with_capacity(names.len());
    for name in &names {
        // Extra DNS names were checked not to be IP addresses, so text that parses as one
        // came from `extra_ips`.
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(|e: rcgen::Error| {
                CertsError::InvalidName {
                    field: "extra DNS name",
                    value: name.clone(),
                    reason: e.to_string(),
                }
            })?),
        };
        subject_alt_names.push(san);
    }
    let key = KeyPair::generate_for(alg).map_err(rc("serving key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "whisperer.dev");
        dn.push(
            DnType::CommonName,
            format!("{}.{}.svc", req.service.trim(), req.namespace.trim()),
        );
        dn
    };
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - NOT_BEFORE_SKEW;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rc("serving certificate"))?;
    Ok(IssuedPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
        sans: names,
    })
}

/// Checks the names of a request (Service, namespace, extra DNS names) as issuing would.
pub fn validate_request(req: &CertRequest) -> Result<(), CertsError> {
    validate_label("service", &req.service)?;
    validate_label("namespace", &req.namespace)?;
    for dns in &req.extra_dns {
        validate_dns_name(dns.trim())?;
    }
    Ok(())
}

/// A DNS-1123 label, as Kubernetes requires for Service and namespace names.
fn validate_label(field: &'static str, value: &str) -> Result<(), CertsError> {
    let bad = |reason: &str| CertsError::InvalidName {
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.is_empty() {
        return Err(bad("must not be empty"));
    }
    if value.len() > 63 {
        return Err(bad("longer than 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            "only lowercase letters, digits and '-' are allowed (a DNS-1123 label)",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(bad("must start and end with a letter or digit"));
    }
    Ok(())
}

/// A DNS name for a SAN: labels of letters, digits and '-', optionally a leading `*.`.
fn validate_dns_name(value: &str) -> Result<(), CertsError> {
    let bad = |reason: &str| CertsError::InvalidName {
        field: "extra DNS name",
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if value.parse::<IpAddr>().is_ok() {
        return Err(bad("is an IP address; pass it as an IP (--ip / extra_ips)"));
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for (i, label) in name.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        if label.is_empty() {
            return Err(bad("has an empty label"));
        }
        if label.len() > 63 {
            return Err(bad("has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "labels may hold only letters, digits and '-' (wildcard only as a whole first label)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label must start and end with a letter or digit"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_order_and_dedup() {
        let mut req = CertRequest::new("hook", "sys");
        req.extra_dns = vec!["hook".into(), "hook.example.com".into()];
        req.extra_ips = vec!["127.0.0.1".parse().expect("ip")];
        assert_eq!(
            sans(&req),
            vec![
                "hook",
                "hook.sys",
                "hook.sys.svc",
                "hook.sys.svc.cluster.local",
                "hook.example.com",
                "127.0.0.1",
            ]
        );
    }

    #[test]
    fn key_algorithm_parses() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.name().parse::<KeyAlgorithm>().expect("parse"), alg);
        }
        assert!(matches!(
            "rsa".parse::<KeyAlgorithm>(),
            Err(CertsError::UnknownKeyAlgorithm(s)) if s == "rsa"
        ));
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut req = CertRequest::new("Bad_Name", "sys");
        let err = generate(&req).expect_err("bad service");
        assert!(err.to_string().contains("service"), "{err}");
        req.service = "hook".into();
        req.extra_dns = vec!["10.0.0.1".into()];
        let err = generate(&req).expect_err("ip as dns");
        assert!(err.to_string().contains("10.0.0.1"), "{err}");
        req.extra_dns = vec!["a..b".into()];
        assert!(generate(&req).is_err());
        req.extra_dns.clear();
        req.validity_days = 4000;
        let err = generate(&req).expect_err("outlives CA");
        assert!(err.to_string().contains("validity_days"), "{err}");
        req.validity_days = 0;
        assert!(generate(&req).is_err());
    }

    #[test]
    fn expiry_matches_request() {
        let mut req = CertRequest::new("hook", "sys");
        req.validity_days = 10;
        req.ca_validity_days = 20;
        let certs = generate(&req).expect("generate");
        // Whole seconds: X.509 times have no fraction, and the reported expiry should match.
        let now = OffsetDateTime::now_utc();
        let now = now - Duration::nanoseconds(i64::from(now.nanosecond()));
        let left = certs.not_after - now;
        assert!(left <= Duration::days(10) && left > Duration::days(10) - Duration::minutes(1));
        assert!(certs.ca_not_after > certs.not_after);
        assert!(certs.not_after_rfc3339().ends_with('Z'));
        assert!(!format!("{certs:?}").contains("PRIVATE KEY"));
    }
}

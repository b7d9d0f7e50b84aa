//! The self-managed PKI kept in one `kubernetes.io/tls` Secret: what is in it, and what the
//! leader should do next. Pure (the caller passes the time); the Kubernetes side lives in
//! [`super::managed`].
//!
//! The Secret holds `ca.crt` (every CA currently trusted, newest first: this is the
//! `caBundle`), `ca.key` (the newest CA's key), `tls.crt` and `tls.key` (the serving pair).
//! A CA roll goes in three writes so that the API server always trusts whatever any replica
//! serves: (1) a new CA is put in front of the bundle, the serving pair stays; (2) once the
//! bundle has been published in the webhook configuration for `overlap`, a serving pair from
//! the new CA; (3) `overlap` later, the old CA leaves the bundle.

use std::collections::BTreeMap;

use certs_gen::{CertRequest, IssuedPem, OffsetDateTime};
use rcgen::PublicKeyData;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::GeneralName;

pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// Lifetimes and names the leader keeps the Secret to.
#[derive(Debug, Clone)]
pub struct PkiPolicy {
    pub request: CertRequest,
    pub cert_lifetime: certs_gen::Duration,
    pub ca_lifetime: certs_gen::Duration,
    /// How long a new CA is published before the serving certificate moves to it, and how
    /// long the old CA stays trusted after that.
    pub overlap: certs_gen::Duration,
}

#[derive(Debug, Clone)]
struct Ca {
    pem: String,
    not_before: i64,
    not_after: i64,
    key_id: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Leaf {
    not_before: i64,
    not_after: i64,
    issuer_key_id: Option<Vec<u8>>,
    sans: Vec<String>,
}

/// The parsed contents of the Secret.
#[derive(Debug, Clone)]
pub struct Pki {
    cas: Vec<Ca>,
    ca_key_pem: String,
    leaf: Leaf,
    tls_crt: Vec<u8>,
    tls_key: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    #[error("key {0} is missing")]
    Missing(&'static str),
    #[error("key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot issue: {0}")]
    Issue(String),
}

/// What the leader does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do for this many seconds.
    Wait(i64),
    /// Write the Secret with this change ([`apply`]).
    Write(Change),
}

/// A change to the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing usable in the Secret: a new CA and serving pair.
    Create(PkiError),
    /// The CA is two-thirds through its life: a new one goes in front of the bundle.
    RollCa,
    /// A new serving pair from the newest CA, for the reason given.
    IssueLeaf(&'static str),
    /// The serving pair comes from the newest CA and the overlap is over: trust only it.
    DropOldCas,
}

/// Two-thirds of the way from issue (`notBefore` is backdated by the clock skew) to expiry.
fn renew_point(not_before: i64, not_after: i64) -> i64 {
    let issued = not_before + skew();
    issued + (not_after - issued) * 2 / 3
}

fn skew() -> i64 {
    certs_gen::NOT_BEFORE_SKEW.whole_seconds()
}

impl Pki {
    pub fn parse(data: &BTreeMap<String, Vec<u8>>) -> Result<Pki, PkiError> {
        let get = |k: &'static str| {
            data.get(k)
                .filter(|v| !v.is_empty())
                .ok_or(PkiError::Missing(k))
        };
        let invalid = |key: &'static str, reason: String| PkiError::Invalid { key, reason };
        let ca_crt = get(CA_CRT)?;
        let ca_key_pem = String::from_utf8(get(CA_KEY)?.clone())
            .map_err(|_| invalid(CA_KEY, "not UTF-8 PEM".into()))?;
        let (tls_crt, tls_key) = (get(TLS_CRT)?.clone(), get(TLS_KEY)?.clone());
        let mut cas = Vec::new();
        for der in rustls_pemfile::certs(&mut &ca_crt[..]) {
            let der = der.map_err(|e| invalid(CA_CRT, e.to_string()))?;
            let (_, c) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| invalid(CA_CRT, e.to_string()))?;
            let pem = pem_of(&der);
            cas.push(Ca {
                pem,
                not_before: c.validity().not_before.timestamp(),
                not_after: c.validity().not_after.timestamp(),
                key_id: subject_key_id(&c),
            });
        }
        if cas.is_empty() {
            return Err(invalid(CA_CRT, "no PEM certificate".into()));
        }
        let ca_key =
            rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| invalid(CA_KEY, e.to_string()))?;
        let newest = rustls_pemfile::certs(&mut cas[0].pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| invalid(CA_CRT, "unreadable".into()))?;
        let spki_matches = x509_parser::parse_x509_certificate(&newest)
            .map(|(_, c)| c.public_key().subject_public_key.data.as_ref() == ca_key.der_bytes())
            .unwrap_or(false);
        if !spki_matches {
            return Err(invalid(
                CA_KEY,
                "does not belong to the first CA in ca.crt".into(),
            ));
        }
        // The serving pair must load exactly as the server will load it.
        super::parse_pem(&tls_crt, &tls_key, TLS_CRT, TLS_KEY)
            .map_err(|e| invalid(TLS_CRT, e.to_string()))?;
        let leaf_der = rustls_pemfile::certs(&mut &tls_crt[..])
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| invalid(TLS_CRT, "no PEM certificate".into()))?;
        let (_, c) = x509_parser::parse_x509_certificate(&leaf_der)
            .map_err(|e| invalid(TLS_CRT, e.to_string()))?;
        let leaf = Leaf {
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            issuer_key_id: authority_key_id(&c),
            sans: sans_of(&c),
        };
        Ok(Pki {
            cas,
            ca_key_pem,
            leaf,
            tls_crt,
            tls_key,
        })
    }

    /// The `caBundle`: every trusted CA, newest first.
    pub fn ca_bundle(&self) -> String {
        self.cas.iter().map(|c| c.pem.as_str()).collect()
    }

    pub fn serving_not_after(&self) -> i64 {
        self.leaf.not_after
    }

    /// Number of CAs in the bundle (two during a roll).
    pub fn trusted_cas(&self) -> usize {
        self.cas.len()
    }

    fn leaf_from_newest(&self) -> bool {
        self.leaf.issuer_key_id.is_some() && self.leaf.issuer_key_id == self.cas[0].key_id
    }

    fn leaf_from_any(&self) -> bool {
        self.leaf.issuer_key_id.is_some()
            && self.cas.iter().any(|c| c.key_id == self.leaf.issuer_key_id)
    }
}

/// The next step for the Secret as read (`None` when it does not exist) at `now` (Unix
/// seconds). `published`: the webhook configuration's caBundle equals this `ca.crt`.
pub fn next_step(
    read: Option<Result<&Pki, &PkiError>>,
    policy: &PkiPolicy,
    now: i64,
    published: bool,
) -> Step {
    let pki = match read {
        None => return Step::Write(Change::Create(PkiError::Missing(TLS_CRT))),
        Some(Err(e)) => return Step::Write(Change::Create(e.clone())),
        Some(Ok(p)) => p,
    };
    let overlap = policy.overlap.whole_seconds();
    let newest = &pki.cas[0];
    if now >= newest.not_after {
        return Step::Write(Change::Create(PkiError::Invalid {
            key: CA_CRT,
            reason: "the CA has expired".into(),
        }));
    }
    if now >= renew_point(newest.not_before, newest.not_after) {
        return Step::Write(Change::RollCa);
    }
    if !pki.leaf_from_any() || now >= pki.leaf.not_after {
        return Step::Write(Change::IssueLeaf(
            "the serving certificate is not from a trusted CA or expired",
        ));
    }
    let ca_published_at = newest.not_before + skew();
    if !pki.leaf_from_newest() {
        if published && now >= ca_published_at + overlap {
            return Step::Write(Change::IssueLeaf("moving to the new CA"));
        }
        let wait = (ca_published_at + overlap - now).max(1);
        return Step::Wait(if published { wait } else { 1 });
    }
    let wanted = certs_gen::sans(&policy.request);
    if pki.leaf.sans != wanted {
        return Step::Write(Change::IssueLeaf(
            "the serving certificate's names differ from the flags",
        ));
    }
    let leaf_renew = renew_point(pki.leaf.not_before, pki.leaf.not_after);
    if now >= leaf_renew {
        return Step::Write(Change::IssueLeaf(
            "the serving certificate is two-thirds through its life",
        ));
    }
    let leaf_issued_at = pki.leaf.not_before + skew();
    if pki.cas.len() > 1 {
        if now >= leaf_issued_at + overlap {
            return Step::Write(Change::DropOldCas);
        }
        return Step::Wait((leaf_issued_at + overlap - now).max(1));
    }
    let ca_renew = renew_point(newest.not_before, newest.not_after);
    Step::Wait((leaf_renew.min(ca_renew) - now).max(1))
}

/// The Secret data after `change`.
pub fn apply(
    change: &Change,
    read: Option<&Pki>,
    policy: &PkiPolicy,
    now: OffsetDateTime,
) -> Result<BTreeMap<String, Vec<u8>>, PkiError> {
    let issue = |e: certs_gen::CertsError| PkiError::Issue(e.to_string());
    let new_ca = || certs_gen::generate_ca(&policy.request, now, policy.ca_lifetime).map_err(issue);
    let leaf_from = |ca: &IssuedPem| {
        certs_gen::issue_serving(&policy.request, ca, now, policy.cert_lifetime).map_err(issue)
    };
    let newest_of = |p: &Pki| IssuedPem {
        cert_pem: p.cas[0].pem.clone(),
        key_pem: p.ca_key_pem.clone(),
        not_after: OffsetDateTime::from_unix_timestamp(p.cas[0].not_after)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        sans: Vec::new(),
    };
    let pack = |bundle: String, ca_key: &str, crt: Vec<u8>, key: Vec<u8>| {
        BTreeMap::from([
            (CA_CRT.to_string(), bundle.into_bytes()),
            (CA_KEY.to_string(), ca_key.as_bytes().to_vec()),
            (TLS_CRT.to_string(), crt),
            (TLS_KEY.to_string(), key),
        ])
    };
    match (change, read) {
        (Change::Create(_), _) | (_, None) => {
            let ca = new_ca()?;
            let leaf = leaf_from(&ca)?;
            Ok(pack(
                ca.cert_pem.clone(),
                &ca.key_pem,
                leaf.cert_pem.into_bytes(),
                leaf.key_pem.into_bytes(),
            ))
        }
        (Change::RollCa, Some(p)) => {
            let ca = new_ca()?;
            let at = now.unix_timestamp();
            let still_valid: String = p
                .cas
                .iter()
                .filter(|c| c.not_after > at)
                .map(|c| c.pem.as_str())
                .collect();
            Ok(pack(
                format!("{}{still_valid}", ca.cert_pem),
                &ca.key_pem,
                p.tls_crt.clone(),
                p.tls_key.clone(),
            ))
        }
        (Change::IssueLeaf(_), Some(p)) => {
            let leaf = leaf_from(&newest_of(p))?;
            Ok(pack(
                p.ca_bundle(),
                &p.ca_key_pem,
                leaf.cert_pem.into_bytes(),
                leaf.key_pem.into_bytes(),
            ))
        }
        (Change::DropOldCas, Some(p)) => Ok(pack(
            p.cas[0].pem.clone(),
            &p.ca_key_pem,
            p.tls_crt.clone(),
            p.tls_key.clone(),
        )),
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn subject_key_id(c: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(c: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

fn sans_of(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;

//! Serving certificate: loaded from PEM files and swapped in place when they change, or
//! generated in memory (self-signed CA + leaf for localhost) so `serve` works with no files.
//!
//! Swapping goes through a `ResolvesServerCert`, so new handshakes get the new certificate
//! while established connections keep theirs untouched.

pub mod managed;
pub mod pki;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("private key is not usable: {0}")]
    Key(rustls::Error),
    #[error("certificate and private key do not match: {0}")]
    Mismatch(rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("--tls-secret: {0}")]
    Managed(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and key ready to serve, with its notAfter (Unix seconds) if parseable.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub not_after: Option<i64>,
}

pub fn parse_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &str,
    key_path: &str,
) -> Result<LoadedCert, TlsError> {
    let pem_err = |path: &str, e: std::io::Error| TlsError::Pem {
        path: path.to_string(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert_path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_string(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| pem_err(key_path, e))?
        .ok_or_else(|| TlsError::NoKey {
            path: key_path.to_string(),
        })?;
    let signing = any_supported_type(&key).map_err(TlsError::Key)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    let not_after = not_after(&certified.cert[0]);
    Ok(LoadedCert {
        key: Arc::new(certified),
        not_after,
    })
}

/// Loads the pair and also returns the bytes parsed (`[cert, key]`), so a reload watcher can
/// start from them.
pub fn load_files(cert: &Path, key: &Path) -> Result<(LoadedCert, Vec<Vec<u8>>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let bytes = vec![read(cert)?, read(key)?];
    let loaded = parse_pem(
        &bytes[0],
        &bytes[1],
        &cert.display().to_string(),
        &key.display().to_string(),
    )?;
    Ok((loaded, bytes))
}

fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    x509_parser::parse_x509_certificate(cert)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

/// An in-memory CA and a serving certificate for localhost, 127.0.0.1 and ::1.
pub struct SelfSigned {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed() -> Result<SelfSigned, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "whisperer-injector ephemeral CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "whisperer-injector");
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, &issuer)?;
    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// Hands out whatever certificate is current at handshake time.
#[derive(Debug)]
pub struct SwappableCert {
    current: ArcSwap<CertifiedKey>,
}

impl SwappableCert {
    pub fn new(key: Arc<CertifiedKey>) -> Arc<SwappableCert> {
        Arc::new(SwappableCert {
            current: ArcSwap::new(key),
        })
    }

    pub fn swap(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// rustls server config offering h2 and http/1.1 (kube-apiserver speaks http/1.1).
pub fn server_config(resolver: Arc<SwappableCert>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_parses_and_has_expiry() {
        let s = self_signed().expect("generate");
        let loaded =
            parse_pem(s.cert_pem.as_bytes(), s.key_pem.as_bytes(), "c", "k").expect("parse");
        assert!(loaded.not_after.is_some_and(|t| t > 1_700_000_000));
    }

    #[test]
    fn errors_name_the_file() {
        let s = self_signed().expect("generate");
        let e = parse_pem(b"junk", s.key_pem.as_bytes(), "/x/tls.crt", "k")
            .err()
            .expect("error");
        assert!(e.to_string().contains("/x/tls.crt"), "{e}");
        let e = parse_pem(s.cert_pem.as_bytes(), b"", "c", "/x/tls.key")
            .err()
            .expect("error");
        assert!(e.to_string().contains("/x/tls.key"), "{e}");
        let other = self_signed().expect("generate");
        let e = parse_pem(s.cert_pem.as_bytes(), other.key_pem.as_bytes(), "c", "k")
            .err()
            .expect("error");
        assert!(matches!(e, TlsError::Mismatch(_)), "{e}");
    }
}

/// Accepts any server certificate but still checks handshake signatures: for clients that
/// inspect or compare the certificate themselves (`status` without `--cacert`, `check`).
#[derive(Debug)]
pub struct AnyCert(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

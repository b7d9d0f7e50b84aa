//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

pub fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook.yaml.tmpl")
}

pub fn template() -> String {
    std::fs::read_to_string(template_path()).expect("read webhook.yaml.tmpl")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.expect("CA PEM"))
            .expect("add CA to root store");
    }
    assert!(!roots.is_empty(), "no CA certificate in PEM");
    Arc::new(roots)
}

/// Verifies the serving certificate for `name` (a DNS name or an IP address) with rustls'
/// WebPkiServerVerifier, with the CA as the only root, at time `now`.
pub fn verify_at(
    ca_pem: &str,
    cert_pem: &str,
    name: &str,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("build verifier");
    let end_entity = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM");
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier
        .verify_server_cert(&end_entity, &[], &server_name, &[], now)
        .map(|_| ())
}

pub fn verify(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
    verify_at(ca_pem, cert_pem, name, UnixTime::now())
}

/// A full in-memory TLS handshake: rustls client trusting only the CA, rustls server with
/// the serving certificate and key. Proves the key matches the certificate.
pub fn handshake(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    name: &str,
) -> Result<(), rustls::Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let server_config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(Arc::new(client_config), server_name)?;
    let mut server = ServerConnection::new(Arc::new(server_config))?;
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write_tls");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read_tls");
        }
        server.process_new_packets()?;
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write_tls");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read_tls");
        }
        client.process_new_packets()?;
    }
    panic!("handshake did not finish");
}

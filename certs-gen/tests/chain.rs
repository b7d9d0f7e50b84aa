//! The generated chain verifies for every SAN and only for them.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use certs_gen::{generate, sans, CertRequest, KeyAlgorithm};
use rustls::pki_types::UnixTime;

fn request(alg: KeyAlgorithm) -> CertRequest {
    CertRequest {
        extra_dns: vec!["hook.example.com".into(), "*.wild.example.org".into()],
        extra_ips: vec![
            "127.0.0.1".parse().expect("ip"),
            "::1".parse().expect("ip"),
            "10.96.0.42".parse().expect("ip"),
        ],
        key_algorithm: alg,
        ..CertRequest::new("whisperer-injector", "whisperer-system")
    }
}

#[test]
fn sans_cover_in_cluster_names_and_extras() {
    let req = request(KeyAlgorithm::EcdsaP256);
    assert_eq!(
        sans(&req),
        [
            "whisperer-injector",
            "whisperer-injector.whisperer-system",
            "whisperer-injector.whisperer-system.svc",
            "whisperer-injector.whisperer-system.svc.cluster.local",
            "hook.example.com",
            "*.wild.example.org",
            "127.0.0.1",
            "::1",
            "10.96.0.42",
        ]
    );
}

#[test]
fn chain_verifies_for_each_san_and_fails_otherwise() {
    for alg in KeyAlgorithm::ALL {
        let req = request(alg);
        let certs = generate(&req).expect("generate");
        assert!(certs.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        for name in sans(&req) {
            let name = if name.starts_with("*.") {
                name.replacen('*', "anything", 1)
            } else {
                name
            };
            common::verify(&certs.ca_cert_pem, &certs.cert_pem, &name)
                .unwrap_or_else(|e| panic!("{alg}: {name} should verify: {e}"));
        }
        for ip in &req.extra_ips {
            common::verify(&certs.ca_cert_pem, &certs.cert_pem, &ip.to_string())
                .unwrap_or_else(|e| panic!("{alg}: ip {ip} should verify: {e}"));
        }

        for wrong in [
            "other.whisperer-system.svc",
            "whisperer-injector.default.svc",
            "example.com",
            "a.b.wild.example.org",
            "127.0.0.2",
            "::2",
        ] {
            let err = common::verify(&certs.ca_cert_pem, &certs.cert_pem, wrong)
                .expect_err(&format!("{alg}: {wrong} must not verify"));
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                            | rustls::CertificateError::NotValidForNameContext { .. }
                    )
                ),
                "{alg}: {wrong}: unexpected error {err:?}"
            );
        }

        // The key matches the certificate: a real handshake succeeds.
        common::handshake(
            &certs.ca_cert_pem,
            &certs.cert_pem,
            &certs.key_pem,
            "whisperer-injector.whisperer-system.svc",
        )
        .unwrap_or_else(|e| panic!("{alg}: handshake: {e}"));
    }
}

#[test]
fn another_ca_does_not_verify() {
    let a = generate(&request(KeyAlgorithm::EcdsaP256)).expect("a");
    let b = generate(&request(KeyAlgorithm::EcdsaP256)).expect("b");
    let err = common::verify(
        &b.ca_cert_pem,
        &a.cert_pem,
        "whisperer-injector.whisperer-system.svc",
    )
    .expect_err("foreign CA");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err:?}"
    );
}

#[test]
fn expires_after_validity_days() {
    let mut req = request(KeyAlgorithm::EcdsaP256);
    req.validity_days = 2;
    req.ca_validity_days = 30;
    let certs = generate(&req).expect("generate");
    let name = "whisperer-injector.whisperer-system.svc";
    let later = |days: u64| {
        UnixTime::since_unix_epoch(
            UnixTime::now()
                .as_secs()
                .checked_add(days * 86_400)
                .map(Duration::from_secs)
                .expect("time"),
        )
    };
    common::verify_at(&certs.ca_cert_pem, &certs.cert_pem, name, later(1)).expect("valid tomorrow");
    let err = common::verify_at(&certs.ca_cert_pem, &certs.cert_pem, name, later(3))
        .expect_err("expired in 3 days");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
    let unix_not_after = certs.not_after.unix_timestamp();
    let expected = i64::try_from(later(2).as_secs()).expect("fits");
    assert!(
        (unix_not_after - expected).abs() < 120,
        "{unix_not_after} vs {expected}"
    );
}

#[test]
fn ip_only_extra_and_ipv6() {
    let req = CertRequest {
        extra_ips: vec![IpAddr::from([127, 0, 0, 1])],
        ..CertRequest::default()
    };
    let certs = generate(&req).expect("generate");
    common::verify(&certs.ca_cert_pem, &certs.cert_pem, "127.0.0.1").expect("ip SAN");
    common::verify(&certs.ca_cert_pem, &certs.cert_pem, "whisperer-injector").expect("short name");
    common::verify(&certs.ca_cert_pem, &certs.cert_pem, "::1").expect_err("no ::1");
}

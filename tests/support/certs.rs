//! Throw-away PKI for one local control plane: a CA, the kube-apiserver serving
//! certificate, an admin client certificate and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM material, all freshly generated (ECDSA P-256, fast to make).
pub struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    /// Serving certificate for 127.0.0.1 / localhost (and the in-cluster names),
    /// used by kube-apiserver and kube-controller-manager.
    pub serving_cert: String,
    pub serving_key: String,
    /// Client certificate CN=admin, O=system:masters.
    pub admin_cert: String,
    pub admin_key: String,
    /// Service-account token signing key (private, PKCS#8) and its public half.
    pub sa_key: String,
    pub sa_pub: String,
}

impl Pki {
    pub fn generate() -> Pki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "whisperer-test-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, &ca_key);

        let serving_key = KeyPair::generate().expect("generate serving key");
        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            // What a real apiserver certificate also carries: the first
            // service IP of --service-cluster-ip-range and the service names.
            "10.0.0.1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])
        .expect("serving params");
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .expect("sign serving cert");

        let admin_key = KeyPair::generate().expect("generate admin key");
        let mut admin = CertificateParams::new(Vec::<String>::new()).expect("admin params");
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin
            .signed_by(&admin_key, &issuer)
            .expect("sign admin cert");

        let sa = KeyPair::generate().expect("generate service-account key");

        Pki {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
        }
    }
}

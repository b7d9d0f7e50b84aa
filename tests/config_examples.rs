//! The config shipped in manifests/ is a config the server accepts.

use whisperer_injector::config::Config;

#[test]
fn shipped_configmap_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/configmap.yaml");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("configmap.yaml"))
            .expect("ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .expect("data.config.yaml");
    let cfg = Config::parse(text, path).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.profiles.contains_key(&cfg.default_profile));
    assert_eq!(
        cfg.profiles["default"].max_ttl,
        Some(std::time::Duration::from_secs(24 * 3600))
    );
}

/// The shipped profile and the built-in one (used without --config) grant the same
/// privileges, and both are the hardened least privilege.
#[test]
fn shipped_profile_is_the_hardened_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/configmap.yaml");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("configmap.yaml"))
            .expect("ConfigMap");
    let text = &cm.data.as_ref().expect("data")["config.yaml"];
    let shipped = Config::parse(text, path).unwrap_or_else(|e| panic!("{e}"));
    let built_in = Config::default();
    let hardened = whisperer_injector::config::hardened_security_context();
    for cfg in [&shipped, &built_in] {
        let sc = cfg.profiles["default"]
            .security_context
            .as_ref()
            .expect("securityContext");
        assert_eq!(sc, &hardened);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.add.as_deref(), Some(&["NET_RAW".to_string()][..]));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, None);
        assert!(!cfg.profiles["default"].allow_host_namespaces);
    }
}

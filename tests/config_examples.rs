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

//! The env that tells an attached Whisperer where its control API is and which token to
//! show it (see `crate::control`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::EnvVar;

use crate::control::{agent_path, TokenKeys, ENV_CONTROL_TOKEN, ENV_CONTROL_URL};

/// Extra env for the Whisperer of one Attachment, from its (namespace, name, uid).
pub type AgentEnv = Arc<dyn Fn(&str, &str, &str) -> Vec<EnvVar> + Send + Sync>;

/// `WHISPERER_CONTROL_URL` (`base_url` + the Attachment's agent path) and
/// `WHISPERER_CONTROL_TOKEN` (minted with `key`, which every replica shares).
pub fn control_api_env(base_url: &str, key: TokenKeys) -> AgentEnv {
    let base = base_url.trim_end_matches('/').to_string();
    Arc::new(move |namespace: &str, name: &str, uid: &str| {
        vec![
            EnvVar {
                name: ENV_CONTROL_URL.into(),
                value: Some(format!("{base}{}", agent_path(namespace, name, uid))),
                ..EnvVar::default()
            },
            EnvVar {
                name: ENV_CONTROL_TOKEN.into(),
                value: Some(key.mint(namespace, name, uid)),
                ..EnvVar::default()
            },
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_carries_url_and_a_verifiable_token() {
        let key = TokenKeys::single(crate::control::TokenKey::from_bytes(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ));
        let env = control_api_env("https://injector.whisperer-system.svc:8443/", key.clone())(
            "team-a", "cap", "u1",
        );
        assert_eq!(env[0].name, ENV_CONTROL_URL);
        assert_eq!(
            env[0].value.as_deref(),
            Some("https://injector.whisperer-system.svc:8443/agent/v1/namespaces/team-a/attachments/cap/u1")
        );
        assert!(key.verify(
            "team-a",
            "cap",
            "u1",
            env[1].value.as_deref().unwrap_or_default()
        ));
    }
}

//! The plugin's errors: each says what was asked and what the API server answered (its own
//! message for Forbidden, NotFound, Invalid), never a debug dump.

use crate::kubeclient::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{what}: {}", api_message(.source))]
    Kube { what: String, source: kube::Error },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Explain(#[from] crate::explain::ExplainError),
    #[error("cannot write the output: {0}")]
    Output(String),
}

/// The API server's own words for a refused request (`attachments.whisperer.dev is
/// forbidden: User "alice" cannot create ...`), with its reason and code.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            let reason = if s.reason.is_empty() {
                String::new()
            } else {
                format!("{}, ", s.reason)
            };
            format!("{} ({reason}HTTP {})", s.message, s.code)
        }
        other => other.to_string(),
    }
}

/// Wraps a kube error with what was being done.
pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> PluginError {
    let what = what.into();
    move |source| PluginError::Kube { what, source }
}

//! Agent control API: a Whisperer asks whether it should keep running. Ephemeral
//! containers cannot be removed, so this is how "detach" and TTL expiry reach one.
//!
//! `GET /agent/v1/namespaces/{ns}/attachments/{name}/{uid}` with
//! `Authorization: Bearer <token>` answers `{"action":"run","deadline":...}` or
//! `{"action":"stop","reason":...}`. The token is an HMAC of the attachment's identity
//! under a key every injector replica shares, so no token is stored anywhere; a wrong
//! token gets the same 401 whether or not the attachment exists.

mod routes;
mod token;
mod verdict;

pub use routes::{router, ControlState};
pub use token::{KeyPair, TokenKey, TokenKeyError, TokenKeys, CURRENT_KEY_FILE};
pub use verdict::{verdict, AttachmentLookup, AttachmentState, Verdict};

/// Env vars the reconciler gives an attached Whisperer.
pub const ENV_CONTROL_URL: &str = "WHISPERER_CONTROL_URL";
pub const ENV_CONTROL_TOKEN: &str = "WHISPERER_CONTROL_TOKEN";
/// PEM of the CA that signed the control API's certificate.
pub const ENV_CONTROL_CA: &str = "WHISPERER_CONTROL_CA";

/// Path of one attachment's control endpoint, relative to the server's base URL.
pub fn agent_path(namespace: &str, name: &str, uid: &str) -> String {
    format!("/agent/v1/namespaces/{namespace}/attachments/{name}/{uid}")
}

//! Per-attachment tokens: HMAC-SHA256 over (namespace, name, uid), compared in constant time.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("cannot read agent token key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("operating system random source failed: {0}")]
    Random(String),
    #[error("agent token key {path} is too short: {len} bytes, at least 32 needed")]
    TooShort { path: String, len: usize },
}

#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: Vec<u8>) -> TokenKey {
        TokenKey(bytes)
    }

    /// Reads a shared key (e.g. from a Secret volume) so every replica mints the same tokens.
    pub fn from_file(path: &Path) -> Result<TokenKey, TokenKeyError> {
        let bytes = std::fs::read(path).map_err(|source| TokenKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = bytes.trim_ascii().to_vec();
        if trimmed.len() < 32 {
            return Err(TokenKeyError::TooShort {
                path: path.display().to_string(),
                len: trimmed.len(),
            });
        }
        Ok(TokenKey(trimmed))
    }

    /// A random key for a single replica (tokens die with the process).
    pub fn random() -> Result<TokenKey, TokenKeyError> {
        let mut k = vec![0u8; 32];
        getrandom::fill(&mut k).map_err(|e| TokenKeyError::Random(e.to_string()))?;
        Ok(TokenKey(k))
    }

    fn mac(&self, namespace: &str, name: &str, uid: &str) -> Hmac<Sha256> {
        // new_from_slice accepts any key length for HMAC.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in [namespace, name, uid] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn mint(&self, namespace: &str, name: &str, uid: &str) -> String {
        hex::encode(self.mac(namespace, name, uid).finalize().into_bytes())
    }

    pub fn verify(&self, namespace: &str, name: &str, uid: &str, token: &str) -> bool {
        let Ok(raw) = hex::decode(token) else {
            return false;
        };
        self.mac(namespace, name, uid).verify_slice(&raw).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let k = TokenKey::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec());
        let t = k.mint("team-a", "debug", "uid-1");
        assert!(k.verify("team-a", "debug", "uid-1", &t));
        assert!(!k.verify("team-a", "debug", "uid-2", &t));
        assert!(!k.verify("team-b", "debug", "uid-1", &t));
        assert!(!k.verify("team-a", "debug", "uid-1", "zz"));
        assert!(!k.verify("team-a", "debug", "uid-1", ""));
        // Field boundaries matter: ("ab","c") is not ("a","bc").
        assert_ne!(k.mint("ab", "c", "u"), k.mint("a", "bc", "u"));
        let other = TokenKey::from_bytes(b"another key of thirty-two bytes!".to_vec());
        assert!(!other.verify("team-a", "debug", "uid-1", &t));
    }

    #[test]
    fn short_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        std::fs::write(&p, "short").expect("write");
        let e = TokenKey::from_file(&p).expect_err("too short");
        assert!(e.to_string().contains("too short"), "{e}");
    }
}

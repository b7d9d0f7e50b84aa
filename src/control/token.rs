//! Per-attachment tokens: HMAC-SHA256 over (namespace, name, uid), compared in constant time.
//!
//! Keys live in a dedicated Secret holding a `current` and an optional `previous` key: tokens
//! are minted with `current` and accepted under either, so a rotation (old `current` moves to
//! `previous`, a new `current` is written) never cuts off a running agent. A token is baked
//! into the agent's env when it is attached and lives as long as the agent, so `previous` must
//! stay until every agent attached before the rotation has ended (at most the longest
//! profile `maxTtl`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// File names inside the `--agent-token-keys` directory (the Secret's keys).
pub const CURRENT_KEY_FILE: &str = "current";
pub const PREVIOUS_KEY_FILE: &str = "previous";

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
        TokenKey::parse(&bytes, path)
    }

    /// A key from file contents; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<TokenKey, TokenKeyError> {
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

/// The keys in force: tokens are minted with `current` and accepted under either.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub current: TokenKey,
    pub previous: Option<TokenKey>,
}

impl KeyPair {
    /// Parses the contents of the `current` and `previous` files (`previous` empty or absent:
    /// none).
    pub fn parse(dir: &Path, current: &[u8], previous: &[u8]) -> Result<KeyPair, TokenKeyError> {
        let previous = if previous.trim_ascii().is_empty() {
            None
        } else {
            Some(TokenKey::parse(previous, &dir.join(PREVIOUS_KEY_FILE))?)
        };
        Ok(KeyPair {
            current: TokenKey::parse(current, &dir.join(CURRENT_KEY_FILE))?,
            previous,
        })
    }

    /// The two files of a key directory, as [`KeyPair::parse`] and the reload watcher read them.
    pub fn files(dir: &Path) -> [PathBuf; 2] {
        [dir.join(CURRENT_KEY_FILE), dir.join(PREVIOUS_KEY_FILE)]
    }

    /// Reads a key directory; returns the bytes read so a reload watcher starts from them.
    pub fn load(dir: &Path) -> Result<(KeyPair, Vec<Vec<u8>>), TokenKeyError> {
        let [current, previous] = KeyPair::files(dir);
        let cur = std::fs::read(&current).map_err(|source| TokenKeyError::Read {
            path: current.display().to_string(),
            source,
        })?;
        let prev = match std::fs::read(&previous) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(TokenKeyError::Read {
                    path: previous.display().to_string(),
                    source,
                })
            }
        };
        let pair = KeyPair::parse(dir, &cur, &prev)?;
        Ok((pair, vec![cur, prev]))
    }
}

/// The key pair shared by the control API (verifies) and the reconciler (mints), swapped
/// whole when the Secret changes.
#[derive(Debug, Clone)]
pub struct TokenKeys(Arc<ArcSwap<KeyPair>>);

impl TokenKeys {
    pub fn new(pair: KeyPair) -> TokenKeys {
        TokenKeys(Arc::new(ArcSwap::from_pointee(pair)))
    }

    pub fn single(key: TokenKey) -> TokenKeys {
        TokenKeys::new(KeyPair {
            current: key,
            previous: None,
        })
    }

    pub fn swap(&self, pair: KeyPair) {
        self.0.store(Arc::new(pair));
    }

    pub fn mint(&self, namespace: &str, name: &str, uid: &str) -> String {
        self.0.load().current.mint(namespace, name, uid)
    }

    pub fn verify(&self, namespace: &str, name: &str, uid: &str, token: &str) -> bool {
        let pair = self.0.load();
        pair.current.verify(namespace, name, uid, token)
            || pair
                .previous
                .as_ref()
                .is_some_and(|k| k.verify(namespace, name, uid, token))
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

    #[test]
    fn rotation_keeps_old_tokens_until_previous_is_dropped() {
        let dir = std::path::Path::new("/keys");
        let a = b"a-key-of-at-least-thirty-two-bytes".as_slice();
        let b = b"b-key-of-at-least-thirty-two-bytes".as_slice();
        let keys = TokenKeys::new(KeyPair::parse(dir, a, b"").expect("a"));
        let old = keys.mint("ns", "cap", "u1");
        // Rotate: a moves to previous, b is current.
        keys.swap(KeyPair::parse(dir, b, a).expect("b+a"));
        assert!(
            keys.verify("ns", "cap", "u1", &old),
            "old token survives the rotation"
        );
        let new = keys.mint("ns", "cap", "u1");
        assert_ne!(new, old, "new tokens come from the new key");
        // Drop previous: the old token dies, the new one lives.
        keys.swap(KeyPair::parse(dir, b, b"\n").expect("b"));
        assert!(!keys.verify("ns", "cap", "u1", &old));
        assert!(keys.verify("ns", "cap", "u1", &new));
    }

    #[test]
    fn key_files_name_themselves_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = KeyPair::load(dir.path()).expect_err("no current");
        assert!(e.to_string().contains("current"), "{e}");
        std::fs::write(dir.path().join(CURRENT_KEY_FILE), "k".repeat(40)).expect("write");
        let (pair, bytes) = KeyPair::load(dir.path()).expect("current only");
        assert!(pair.previous.is_none() && bytes[1].is_empty());
        std::fs::write(dir.path().join(PREVIOUS_KEY_FILE), "short").expect("write");
        let e = KeyPair::load(dir.path()).expect_err("short previous");
        assert!(
            e.to_string().contains("previous") && e.to_string().contains("too short"),
            "{e}"
        );
    }
}

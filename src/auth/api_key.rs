//! API keys for machine clients, stored only as SHA-256 hashes and compared
//! in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::ApiKeyConfig;

/// The SHA-256 of a secret key, as configuration stores it; the key itself
/// is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// Reads a 64-character hex SHA-256 (`printf %s KEY | sha256sum`).
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut digest = [0_u8; 32];
        for (index, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
        }
        Some(Self(digest))
    }

    /// Whether `presented` hashes to this digest, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

/// A known key: its hash and what it grants.
#[derive(Debug, Clone)]
struct StoredKey {
    digest: KeyDigest,
    name: String,
    scopes: Vec<String>,
    revoked: bool,
}

/// The configured API keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<StoredKey>,
}

/// The client an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    /// The key's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl ApiKeys {
    /// Builds the key store from validated entries.
    pub fn new(configs: &[ApiKeyConfig]) -> Self {
        let keys = configs
            .iter()
            .filter_map(|config| {
                Some(StoredKey {
                    digest: KeyDigest::from_hex(&config.sha256)?,
                    name: config.name.clone(),
                    scopes: config.scopes.clone(),
                    revoked: config.revoked,
                })
            })
            .collect();
        Self { keys }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The client for a presented key. Every stored hash is compared, in
    /// constant time, so timing reveals neither which key matched nor how
    /// much of it.
    pub fn verify(&self, presented: &[u8]) -> Option<ApiClient> {
        let mut found: Option<&StoredKey> = None;
        for key in &self.keys {
            if key.digest.matches(presented) {
                found = Some(key);
            }
        }
        found.filter(|key| !key.revoked).map(|key| ApiClient { name: key.name.clone(), scopes: key.scopes.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, key: &str, revoked: bool) -> ApiKeyConfig {
        let hash: String = Sha256::digest(key.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
        ApiKeyConfig { name: name.to_owned(), sha256: hash, scopes: vec!["reports:read".to_owned()], revoked }
    }

    #[test]
    fn digests_are_read_from_hex() {
        assert_eq!(KeyDigest::from_hex(&"ab".repeat(32)), Some(KeyDigest([0xab; 32])));
        assert_eq!(KeyDigest::from_hex("abc"), None);
        assert_eq!(KeyDigest::from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn keys_are_found_by_hash_and_revoked_ones_refused() {
        let keys = ApiKeys::new(&[config("reporting", "s3cret-key", false), config("old", "old-key", true)]);
        assert_eq!(keys.verify(b"s3cret-key").map(|client| client.name), Some("reporting".to_owned()));
        assert_eq!(keys.verify(b"s3cret-keY"), None);
        assert_eq!(keys.verify(b"old-key"), None, "revoked");
        assert_eq!(keys.verify(b""), None);
    }
}

//! The `[identity_signing]` section: the shared keys identity is signed with.

use serde::Deserialize;

use crate::problems::Problems;

/// Shortest secret accepted: a 256-bit HMAC key.
const MIN_SECRET_LENGTH: usize = 32;

/// How portico signs what it tells the services about the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySigningConfig {
    /// Shared HMAC-SHA256 keys. The first signs; services accept every key
    /// listed in their own settings, so a rotation adds the new key to the
    /// services, then puts it first here, then removes the old one. Empty:
    /// nothing is signed.
    pub keys: Vec<SigningKeyConfig>,
}

/// One shared key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// The `keyid` services look the secret up by.
    pub id: String,
    /// The secret, at least 32 bytes; usually `"${PORTICO_SIGNING_KEY}"`.
    pub secret: String,
}

impl std::fmt::Debug for SigningKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret's digest, so reloads see a change without logging it.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(self.secret.as_bytes());
        let digest: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
        f.debug_struct("SigningKeyConfig").field("id", &self.id).field("secret_sha256", &digest).finish()
    }
}

impl IdentitySigningConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        for (index, key) in self.keys.iter().enumerate() {
            let prefix = format!("identity_signing.keys[{index}]");
            let token = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
            if key.id.is_empty() || key.id.len() > 64 || !key.id.chars().all(token) {
                problems.push(
                    format!("{prefix}.id"),
                    format!("{:?}: 1 to 64 letters, digits or - _ . :, e.g. \"k1\"", key.id),
                );
            }
            if self.keys[..index].iter().any(|earlier| earlier.id == key.id) {
                problems
                    .push(format!("{prefix}.id"), format!("{:?} is listed twice; each key needs its own id", key.id));
            }
            if key.secret.len() < MIN_SECRET_LENGTH {
                problems.push(
                    format!("{prefix}.secret"),
                    format!("must be at least {MIN_SECRET_LENGTH} bytes; generate one with `openssl rand -hex 32`"),
                );
            }
        }
    }
}

//! The `[auth]` section: how callers prove who they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::jwt::{load_key_file, LoadedKeys};
use crate::problems::Problems;

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// JSON Web Tokens in `Authorization: Bearer ...`.
    pub jwt: Option<JwtConfig>,
    /// API keys for machine clients.
    pub api_keys: Vec<ApiKeyConfig>,
    /// A file with more `[[api_keys]]` entries (TOML), so keys can be
    /// rotated without touching the main configuration.
    pub api_keys_file: Option<PathBuf>,
    /// The header that carries an API key.
    pub api_key_header: String,
    /// The header that tells backends which API client is calling.
    pub api_client_header: String,
    /// Whether the client's own `Authorization` / API-key header is passed
    /// on to backends (they trust the gateway's identity headers instead).
    pub forward_credentials: bool,
    /// The entries of `api_keys_file`, read during validation.
    #[serde(skip)]
    pub(crate) loaded_api_keys: Option<Vec<ApiKeyConfig>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt: None,
            api_keys: Vec::new(),
            api_keys_file: None,
            api_key_header: "X-API-KEY".to_owned(),
            api_client_header: "X-Api-Client".to_owned(),
            forward_credentials: false,
            loaded_api_keys: None,
        }
    }
}

/// How JWTs are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms, chosen here and never by the token.
    pub algorithms: Vec<String>,
    /// Shared secret for HS256/384/512.
    pub secret: Option<String>,
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and refreshed.
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Least time between two fetches, also when tokens name unknown keys.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (any one must match).
    pub audience: Vec<String>,
    /// Clock skew tolerated for `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Claims every token must carry.
    pub required_claims: Vec<String>,
    /// Claim holding scopes: a space-separated string (`scope`) or an array (`scp`).
    pub scope_claim: String,
    /// Claims forwarded to backends, as `claim = "Header-Name"`.
    pub forward_claims: BTreeMap<String, String>,
    /// The keys of `public_key_file` or `jwks_file`, read during validation.
    #[serde(skip)]
    pub(crate) loaded_keys: Option<LoadedKeys>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".to_owned()],
            secret: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_interval: Duration::from_secs(300),
            jwks_min_refresh_interval: Duration::from_secs(5),
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            required_claims: vec!["exp".to_owned(), "sub".to_owned()],
            scope_claim: "scope".to_owned(),
            forward_claims: BTreeMap::from([("sub".to_owned(), "X-User-Id".to_owned())]),
            loaded_keys: None,
        }
    }
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The client's name, its identity in logs and rate limits.
    pub name: String,
    /// Lowercase hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub sha256: String,
    /// Scopes the key grants.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A revoked key is refused like an unknown one.
    #[serde(default)]
    pub revoked: bool,
}

/// What a route asks of callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Valid credentials are required.
    Required,
    /// Credentials are verified when present; anonymous calls pass.
    #[default]
    Optional,
    /// Credentials are not looked at and no identity is forwarded.
    None,
}

/// The algorithm families, which must match the kind of key configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Hmac,
    Asymmetric,
}

pub(crate) fn family(algorithm: &str) -> Option<Family> {
    match algorithm {
        "HS256" | "HS384" | "HS512" => Some(Family::Hmac),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA" => {
            Some(Family::Asymmetric)
        }
        _ => None,
    }
}

impl AuthConfig {
    /// The headers only the gateway may send a backend: the user id, the
    /// API client's name and every forwarded claim's header.
    pub fn identity_header_names(&self) -> Vec<http::HeaderName> {
        let claims = self.jwt.iter().flat_map(|jwt| jwt.forward_claims.values());
        std::iter::once(&self.api_client_header)
            .chain(claims)
            .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
            .chain([crate::identity::USER_ID])
            .collect()
    }

    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Some(jwt) = &self.jwt {
            jwt.validate(problems);
        }
        for (index, key) in self.api_keys.iter().enumerate() {
            key.validate(&format!("auth.api_keys[{index}]"), problems);
        }
        for (name, value) in [("api_key_header", &self.api_key_header), ("api_client_header", &self.api_client_header)]
        {
            if http::HeaderName::try_from(value.as_str()).is_err() {
                problems.push(format!("auth.{name}"), format!("{value:?} is not a header name"));
            }
        }
    }
}

impl AuthConfig {
    /// Reads the key files (relative paths against `base_dir`) so that
    /// `portico check` reports unusable ones and `serve` uses what was read
    /// here instead of reading the files a second time.
    pub(crate) fn load_files(&mut self, base_dir: &Path, problems: &mut Problems) {
        if let Some(jwt) = &mut self.jwt {
            match load_key_file(jwt, base_dir) {
                Ok(loaded) => jwt.loaded_keys = loaded,
                Err(error) => problems.push(error.config_key(), error.message()),
            }
        }
        if let Some(path) = &self.api_keys_file {
            match load_api_keys_file(&base_dir.join(path)) {
                Ok(keys) => self.loaded_api_keys = Some(keys),
                Err(error) => {
                    for message in error.messages() {
                        problems.push("auth.api_keys_file", message);
                    }
                }
            }
        }
    }
}

/// The API keys file: more `[[api_keys]]` entries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    api_keys: Vec<ApiKeyConfig>,
}

/// Why an API keys file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape.
    #[error(
        "{}{}: {}",
        path.display(),
        position.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default(),
        source.message().trim()
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line and column, when the parser knows them.
        position: Option<(usize, usize)>,
        /// The TOML error (boxed: it is large, and setup errors travel in
        /// `Result`s).
        source: Box<toml::de::Error>,
    },
    /// Entries are invalid; every problem is kept.
    #[error("{}", self.messages().join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problems, keyed within the file (`api_keys[0].sha256`).
        problems: Problems,
    },
}

impl KeysFileError {
    /// One message per problem, each naming the file.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Invalid { path, problems } => problems
                .iter()
                .map(|problem| format!("{}: {}: {}", path.display(), problem.key, problem.message))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

/// The entries of an API keys file, or every problem found in it.
pub(crate) fn load_api_keys_file(path: &Path) -> Result<Vec<ApiKeyConfig>, KeysFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysFileError::Read { path: path.to_owned(), source })?;
    let file: KeysFile = toml::from_str(&text).map_err(|source| KeysFileError::Syntax {
        path: path.to_owned(),
        position: source.span().map(|span| crate::problems::line_and_column(&text, span.start)),
        source: Box::new(source),
    })?;
    let mut problems = Problems::default();
    for (index, key) in file.api_keys.iter().enumerate() {
        key.validate(&format!("api_keys[{index}]"), &mut problems);
    }
    if problems.is_empty() {
        Ok(file.api_keys)
    } else {
        Err(KeysFileError::Invalid { path: path.to_owned(), problems })
    }
}

impl ApiKeyConfig {
    pub(crate) fn validate(&self, key: &str, problems: &mut Problems) {
        if self.name.is_empty() {
            problems.push(format!("{key}.name"), "every API key needs a name (the client's identity)");
        }
        if super::KeyDigest::from_hex(&self.sha256).is_none() {
            problems.push(
                format!("{key}.sha256"),
                "must be the 64-character hex SHA-256 of the key; compute it with `printf %s KEY | sha256sum`",
            );
        }
    }
}

impl JwtConfig {
    fn validate(&self, problems: &mut Problems) {
        let sources =
            [self.secret.is_some(), self.public_key_file.is_some(), self.jwks_file.is_some(), self.jwks_url.is_some()];
        let count = sources.iter().filter(|given| **given).count();
        if count != 1 {
            problems
                .push("auth.jwt", "set exactly one key source: secret (HS*), public_key_file, jwks_file or jwks_url");
        }
        if self.algorithms.is_empty() {
            problems.push("auth.jwt.algorithms", "list at least one algorithm, e.g. [\"RS256\"]");
        }
        for (index, algorithm) in self.algorithms.iter().enumerate() {
            match family(algorithm) {
                None => problems.push(
                    format!("auth.jwt.algorithms[{index}]"),
                    format!("{algorithm:?} is not supported; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
                ),
                Some(Family::Hmac) if self.secret.is_none() && count == 1 => problems.push(
                    format!("auth.jwt.algorithms[{index}]"),
                    format!("{algorithm} needs `secret`; public keys only verify asymmetric algorithms"),
                ),
                Some(Family::Asymmetric) if self.secret.is_some() => problems.push(
                    format!("auth.jwt.algorithms[{index}]"),
                    format!("{algorithm} needs a public key (public_key_file, jwks_file or jwks_url), not a secret"),
                ),
                _ => {}
            }
        }
        if self.secret.as_deref().is_some_and(|secret| secret.len() < 32) {
            problems.push("auth.jwt.secret", "must be at least 32 bytes long; use e.g. `openssl rand -hex 32`");
        }
        if let Some(url) = &self.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push("auth.jwt.jwks_url", format!("{url:?} must be an http:// or https:// URL"));
            }
        }
        if self.jwks_min_refresh_interval.is_zero() || self.jwks_refresh_interval.is_zero() {
            problems.push("auth.jwt", "JWKS refresh intervals must be greater than zero");
        }
        for header in self.forward_claims.values() {
            if http::HeaderName::try_from(header.as_str()).is_err() {
                problems.push("auth.jwt.forward_claims", format!("{header:?} is not a header name"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_unusable_keys_file_keeps_its_cause_and_every_problem() {
        let folder = tempfile::tempdir().expect("temporary folder");
        let missing = folder.path().join("missing.toml");
        let error = load_api_keys_file(&missing).expect_err("no such file");
        let cause = error.source().and_then(|cause| cause.downcast_ref::<std::io::Error>()).expect("the I/O error");
        assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);

        let invalid = folder.path().join("keys.toml");
        std::fs::write(&invalid, "[[api_keys]]\nname = \"\"\nsha256 = \"nope\"\n").expect("write");
        let error = load_api_keys_file(&invalid).expect_err("two problems");
        let messages = error.messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("keys.toml: api_keys[0].name: "), "{messages:?}");
        assert!(messages[1].contains("keys.toml: api_keys[0].sha256: "), "{messages:?}");
    }
}

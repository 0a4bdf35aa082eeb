//! JWT verification with keys from a secret, a PEM file, a JWKS file or a
//! JWKS URL.
//!
//! The accepted algorithms come from configuration, never from the token:
//! a token's `alg` must be on the list and must match the family of the key
//! that verifies it, which rules out `alg: none` and the HS-with-a-public-key
//! confusion. Remote key sets are refreshed on an interval and when a token
//! names an unknown `kid`, at most once per `jwks_min_refresh_interval`, so
//! forged kids cannot flood the identity provider; a fetched set that does
//! not parse never replaces a good one.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value as Json;
use tokio::time::Instant;

use super::config::{family, Family, JwtConfig};
use super::AuthError;

/// Spec claims jsonwebtoken checks itself when required.
const SPEC_CLAIMS: [&str; 5] = ["exp", "nbf", "aud", "iss", "sub"];
/// JWKS documents larger than this are refused.
const MAX_JWKS_SIZE: usize = 1024 * 1024;

/// Why the JWT settings could not be turned into a verifier.
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    /// A key file could not be read or holds no usable key.
    #[error("{key}: {message}")]
    File {
        /// The setting that names the file, such as `auth.jwt.public_key_file`.
        key: &'static str,
        /// What is wrong with the file, naming its path.
        message: String,
    },
    /// The key source is unusable.
    #[error("auth.jwt: {0}")]
    Key(String),
    /// `jwks_url` is not a URL.
    #[error("auth.jwt: jwks_url {url:?} is not a URL")]
    JwksUrl {
        /// The value given.
        url: String,
        /// Why it does not parse.
        source: http::uri::InvalidUri,
    },
    /// The TLS client for `jwks_url` could not be built.
    #[error("auth.jwt: TLS setup for jwks_url failed: {0}")]
    JwksTls(#[source] tokio_rustls::rustls::Error),
}

impl JwtSetupError {
    /// The configuration key the problem belongs to.
    pub fn config_key(&self) -> &'static str {
        match self {
            Self::File { key, .. } => key,
            Self::Key(_) | Self::JwksUrl { .. } | Self::JwksTls(_) => "auth.jwt",
        }
    }

    /// The problem without its key.
    pub fn message(&self) -> String {
        match self {
            Self::File { message, .. } | Self::Key(message) => message.clone(),
            Self::JwksUrl { url, .. } => format!("jwks_url {url:?} is not a URL"),
            Self::JwksTls(source) => format!("TLS setup for jwks_url failed: {source}"),
        }
    }
}

/// The keys read from `public_key_file` or `jwks_file` during validation,
/// so that `serve` verifies with exactly what `portico check` accepted.
/// The file's SHA-256 is kept so that a reload sees a changed file (the
/// configuration's `Debug` rendering, which reloads compare, shows it).
#[derive(Clone)]
pub struct LoadedKeys(Arc<Vec<VerifyingKey>>, [u8; 32]);

impl std::fmt::Debug for LoadedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest: String = self.1.iter().map(|byte| format!("{byte:02x}")).collect();
        f.debug_struct("LoadedKeys").field("keys", &self.0.len()).field("sha256", &digest).finish()
    }
}

/// Reads and checks the key file the settings name (relative paths against
/// `base`): `None` when the keys come from a secret or a URL.
pub(crate) fn load_key_file(config: &JwtConfig, base: &Path) -> Result<Option<LoadedKeys>, JwtSetupError> {
    let (key, path) = match (&config.public_key_file, &config.jwks_file) {
        (Some(path), _) => ("auth.jwt.public_key_file", path),
        (None, Some(path)) => ("auth.jwt.jwks_file", path),
        (None, None) => return Ok(None),
    };
    let path = base.join(path);
    let failure = |message: String| JwtSetupError::File { key, message };
    let bytes = std::fs::read(&path).map_err(|error| failure(format!("cannot read {}: {error}", path.display())))?;
    // Algorithm names were checked by validation; only asymmetric ones use a key file.
    let algorithms: Vec<Algorithm> = config
        .algorithms
        .iter()
        .filter(|name| family(name) == Some(Family::Asymmetric))
        .filter_map(|name| Algorithm::from_str(name).ok())
        .collect();
    let keys = if config.public_key_file.is_some() {
        if algorithms.is_empty() {
            return Ok(None);
        }
        vec![pem_key(&bytes, &algorithms)
            .map_err(|refused| failure(format!("{}: not a PEM public key for {}", path.display(), names(&refused))))?]
    } else {
        let keys = parse_jwks(&bytes).map_err(|error| failure(format!("{}: {error}", path.display())))?;
        if !algorithms.is_empty() && !keys.iter().any(|key| algorithms.iter().any(|algorithm| key.suits(*algorithm))) {
            return Err(failure(format!("{}: no key in the set suits {}", path.display(), names(&algorithms))));
        }
        keys
    };
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    Ok(Some(LoadedKeys(Arc::new(keys), digest)))
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms.iter().map(|algorithm| format!("{algorithm:?}")).collect::<Vec<_>>().join(", ")
}

/// One key able to verify signatures.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    kind: KeyKind,
    /// The JWK's `alg`, when it pins one.
    algorithm: Option<Algorithm>,
}

/// The kind of key, which decides the algorithms it can verify: a token's
/// `alg` picks only keys of its own kind, which rules out verifying an HS
/// token with a public key as the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Secret,
    Rsa,
    EllipticCurve,
    Edwards,
}

impl KeyKind {
    fn of(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Self::Secret,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Self::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => Self::EllipticCurve,
            Algorithm::EdDSA => Self::Edwards,
        }
    }
}

impl VerifyingKey {
    fn suits(&self, algorithm: Algorithm) -> bool {
        self.kind == KeyKind::of(algorithm) && self.algorithm.is_none_or(|pinned| pinned == algorithm)
    }
}

/// Where the verifying keys come from.
enum Keys {
    Static(Vec<VerifyingKey>),
    Remote(Arc<RemoteKeys>),
}

/// Verifies tokens and extracts what the gateway needs from them.
pub struct JwtVerifier {
    algorithms: Vec<Algorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    required_claims: Vec<String>,
    scope_claim: String,
    forward_claims: Vec<(String, HeaderName)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

/// What a verified token says.
#[derive(Debug)]
pub struct VerifiedToken {
    /// All claims.
    pub claims: Json,
    /// `sub`.
    pub subject: Option<String>,
    /// Granted scopes.
    pub scopes: BTreeSet<String>,
    /// Headers to forward to backends.
    pub forwarded_headers: Vec<(HeaderName, HeaderValue)>,
}

impl JwtVerifier {
    /// Builds the verifier; `base` resolves relative key file paths. A JWKS
    /// URL is fetched in the background (see [`JwtVerifier::spawn_refresh`]).
    pub fn new(config: &JwtConfig, base: &Path) -> Result<Self, JwtSetupError> {
        let algorithms = config.algorithms.iter().filter_map(|name| Algorithm::from_str(name).ok()).collect::<Vec<_>>();
        let keys = if let Some(secret) = &config.secret {
            Keys::Static(vec![VerifyingKey {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                kind: KeyKind::Secret,
                algorithm: None,
            }])
        } else if config.public_key_file.is_some() || config.jwks_file.is_some() {
            // Read during validation; a configuration built without it is read now.
            let loaded = match &config.loaded_keys {
                Some(loaded) => loaded.clone(),
                None => load_key_file(config, base)?
                    .ok_or_else(|| JwtSetupError::Key("the key file suits none of the algorithms".to_owned()))?,
            };
            Keys::Static(loaded.0.to_vec())
        } else if let Some(url) = &config.jwks_url {
            Keys::Remote(Arc::new(RemoteKeys::new(
                url,
                config.jwks_min_refresh_interval,
                config.jwks_refresh_interval,
            )?))
        } else {
            return Err(JwtSetupError::Key("no key source is configured".to_owned()));
        };
        Ok(Self {
            algorithms,
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
            required_claims: config.required_claims.clone(),
            scope_claim: config.scope_claim.clone(),
            forward_claims: config
                .forward_claims
                .iter()
                .filter_map(|(claim, header)| Some((claim.clone(), HeaderName::try_from(header.as_str()).ok()?)))
                .collect(),
        })
    }

    /// The headers this verifier may set; clients may never send them.
    pub fn forwarded_header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.forward_claims.iter().map(|(_, header)| header)
    }

    /// Starts fetching a remote key set now and on its interval; the task
    /// ends when the returned handle is dropped.
    pub fn spawn_refresh(&self) -> Option<RefreshTask> {
        let Keys::Remote(remote) = &self.keys else { return None };
        let remote = Arc::clone(remote);
        Some(RefreshTask(tokio::spawn(async move { remote.run().await })))
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let matching = |keys: &[VerifyingKey]| -> Vec<VerifyingKey> {
            keys.iter()
                .filter(|key| key.suits(header.alg))
                .filter(|key| match (&header.kid, &key.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    (Some(_), None) | (None, _) => true,
                })
                .cloned()
                .collect()
        };
        let candidates = match &self.keys {
            Keys::Static(keys) => matching(keys),
            Keys::Remote(remote) => {
                let mut found = matching(&remote.current());
                if found.is_empty() {
                    // Perhaps the identity provider rotated its keys.
                    remote.refresh_if_allowed().await;
                    found = matching(&remote.current());
                }
                if found.is_empty() && remote.current().is_empty() {
                    return Err(AuthError::NoKeys);
                }
                found
            }
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }

        let validation = self.validation(header.alg);
        let mut outcome = Err(AuthError::BadSignature);
        for candidate in &candidates {
            match jsonwebtoken::decode::<Json>(token, &candidate.key, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(error) => {
                    outcome = Err(classify(error.kind()));
                    if !matches!(error.kind(), ErrorKind::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        let claims = outcome?;
        // jsonwebtoken also accepts an `iss` array that merely contains the
        // issuer; RFC 7519 makes `iss` one string, so only that one passes.
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Json::as_str) != Some(issuer.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        for claim in &self.required_claims {
            if claims.get(claim).is_none_or(Json::is_null) {
                return Err(AuthError::MissingClaim(claim.clone()));
            }
        }
        Ok(self.verified(claims))
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims =
            self.required_claims.iter().filter(|claim| SPEC_CLAIMS.contains(&claim.as_str())).cloned().collect();
        // jsonwebtoken compares `iss` and `aud` only when the token carries
        // them (as strings), so a configured issuer or audience must also be
        // required, or a token without the claim would pass as anyone's.
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        validation
    }

    fn verified(&self, claims: Json) -> VerifiedToken {
        let text = |value: &Json| match value {
            Json::String(text) => Some(text.clone()),
            Json::Number(number) => Some(number.to_string()),
            _ => None,
        };
        let subject = claims.get("sub").and_then(text);
        let scope_value = claims
            .get(&self.scope_claim)
            .or_else(|| (self.scope_claim == "scope").then(|| claims.get("scp")).flatten());
        let scopes = match scope_value {
            Some(Json::String(list)) => list.split_whitespace().map(str::to_owned).collect(),
            Some(Json::Array(items)) => items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect(),
            _ => BTreeSet::new(),
        };
        let forwarded_headers = self
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = claims.get(claim).and_then(text)?;
                Some((header.clone(), HeaderValue::try_from(value).ok()?))
            })
            .collect();
        VerifiedToken { claims, subject, scopes, forwarded_headers }
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed
        }
        _ => AuthError::MalformedToken,
    }
}

/// A PEM public key that every one of the (asymmetric) `algorithms`
/// accepts; otherwise the algorithms it does not suit. One file holds one
/// key, so a list that mixes key kinds could never verify all its tokens.
fn pem_key(pem: &[u8], algorithms: &[Algorithm]) -> Result<VerifyingKey, Vec<Algorithm>> {
    let decode = |kind: KeyKind| match kind {
        KeyKind::Rsa => DecodingKey::from_rsa_pem(pem).ok(),
        KeyKind::EllipticCurve => DecodingKey::from_ec_pem(pem).ok(),
        KeyKind::Edwards => DecodingKey::from_ed_pem(pem).ok(),
        KeyKind::Secret => None,
    };
    let mut found = None;
    let mut refused = Vec::new();
    for algorithm in algorithms {
        let kind = KeyKind::of(*algorithm);
        match decode(kind) {
            Some(key) => {
                found.get_or_insert(VerifyingKey { kid: None, key, kind, algorithm: None });
            }
            None => refused.push(*algorithm),
        }
    }
    match found {
        Some(key) if refused.is_empty() => Ok(key),
        _ => Err(refused),
    }
}

/// The usable keys of a JWKS document. Symmetric (`oct`) keys are refused:
/// a published key set holds public keys only.
fn parse_jwks(document: &[u8]) -> Result<Vec<VerifyingKey>, String> {
    let set: JwkSet = serde_json::from_slice(document).map_err(|error| format!("not a JWKS document: {error}"))?;
    let keys: Vec<VerifyingKey> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyKind::EllipticCurve,
                AlgorithmParameters::OctetKeyPair(_) => KeyKind::Edwards,
                AlgorithmParameters::OctetKey(_) => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let algorithm =
                jwk.common.key_algorithm.and_then(|algorithm| Algorithm::from_str(&algorithm.to_string()).ok());
            Some(VerifyingKey { kid: jwk.common.key_id.clone(), key, kind, algorithm })
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS document holds no usable public key".to_owned());
    }
    Ok(keys)
}

/// Stops the JWKS refresh task when dropped.
#[derive(Debug)]
pub struct RefreshTask(tokio::task::JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A key set fetched from a URL.
struct RemoteKeys {
    url: http::Uri,
    client: Client<crate::upstream::Connector, Empty<Bytes>>,
    current: RwLock<Arc<Vec<VerifyingKey>>>,
    last_attempt: Mutex<Option<Instant>>,
    /// One fetch at a time; concurrent requests with an unknown kid wait for
    /// it instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
    min_interval: Duration,
    interval: Duration,
}

impl RemoteKeys {
    fn new(url: &str, min_interval: Duration, interval: Duration) -> Result<Self, JwtSetupError> {
        let url: http::Uri = url.parse().map_err(|source| JwtSetupError::JwksUrl { url: url.to_owned(), source })?;
        let connector = crate::upstream::public_connector(Duration::from_secs(5)).map_err(JwtSetupError::JwksTls)?;
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
            current: RwLock::new(Arc::new(Vec::new())),
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            min_interval,
            interval,
        })
    }

    fn current(&self) -> Arc<Vec<VerifyingKey>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    async fn run(self: Arc<Self>) {
        loop {
            self.refresh_if_allowed().await;
            // Until keys arrive, retry at the minimum interval.
            let wait = if self.current().is_empty() { self.min_interval } else { self.interval };
            tokio::time::sleep(wait).await;
        }
    }

    /// Fetches the set unless a fetch happened less than `min_interval` ago.
    async fn refresh_if_allowed(&self) {
        let _single_flight = self.fetching.lock().await;
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|last| last.elapsed() < self.min_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            Err(error) if self.current().is_empty() => {
                tracing::error!(url = %self.url, %error, "JWKS unavailable: tokens are refused with 401 until keys arrive");
            }
            Err(error) => tracing::warn!(url = %self.url, %error, "JWKS refresh failed; keeping the previous keys"),
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, String> {
        let request = http::Request::get(self.url.clone()).body(Empty::new()).map_err(|error| error.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|error| format!("request failed: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_SIZE)
            .collect()
            .await
            .map_err(|error| format!("reading the body failed: {error}"))?
            .to_bytes();
        parse_jwks(&body)
    }
}

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
use jsonwebtoken::jwk::JwkSet;
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
    /// A key file could not be read or parsed.
    #[error("auth.jwt: {0}")]
    Key(String),
}

/// One key able to verify signatures.
#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    family: Family,
    /// The JWK's `alg`, when it pins one.
    algorithm: Option<Algorithm>,
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
                family: Family::Hmac,
                algorithm: None,
            }])
        } else if let Some(path) = &config.public_key_file {
            let path = base.join(path);
            let pem = std::fs::read(&path)
                .map_err(|error| JwtSetupError::Key(format!("cannot read {}: {error}", path.display())))?;
            Keys::Static(vec![pem_key(&pem, &algorithms).ok_or_else(|| {
                JwtSetupError::Key(format!(
                    "{} holds no public key usable with {:?}",
                    path.display(),
                    config.algorithms
                ))
            })?])
        } else if let Some(path) = &config.jwks_file {
            let path = base.join(path);
            let document = std::fs::read(&path)
                .map_err(|error| JwtSetupError::Key(format!("cannot read {}: {error}", path.display())))?;
            Keys::Static(
                parse_jwks(&document).map_err(|error| JwtSetupError::Key(format!("{}: {error}", path.display())))?,
            )
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
        let token_family = family(&format!("{:?}", header.alg)).ok_or(AuthError::AlgorithmNotAllowed)?;
        let matching = |keys: &[VerifyingKey]| -> Vec<VerifyingKey> {
            keys.iter()
                .filter(|key| key.family == token_family)
                .filter(|key| key.algorithm.is_none_or(|algorithm| algorithm == header.alg))
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
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
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

/// A PEM public key, for the first configured algorithm that accepts it.
fn pem_key(pem: &[u8], algorithms: &[Algorithm]) -> Option<VerifyingKey> {
    algorithms.iter().find_map(|algorithm| {
        let key = match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem).ok()?,
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem).ok()?,
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).ok()?,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
        };
        Some(VerifyingKey { kid: None, key, family: Family::Asymmetric, algorithm: None })
    })
}

/// The usable keys of a JWKS document. Symmetric (`oct`) keys are refused:
/// a published key set holds public keys only.
fn parse_jwks(document: &[u8]) -> Result<Vec<VerifyingKey>, String> {
    let set: JwkSet = serde_json::from_slice(document).map_err(|error| format!("not a JWKS document: {error}"))?;
    let keys: Vec<VerifyingKey> = set
        .keys
        .iter()
        .filter(|jwk| !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let algorithm =
                jwk.common.key_algorithm.and_then(|algorithm| Algorithm::from_str(&algorithm.to_string()).ok());
            Some(VerifyingKey { kid: jwk.common.key_id.clone(), key, family: Family::Asymmetric, algorithm })
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
        let url: http::Uri = url.parse().map_err(|_| JwtSetupError::Key(format!("jwks_url {url:?} is not a URL")))?;
        let connector = crate::upstream::public_connector(Duration::from_secs(5))
            .map_err(|error| JwtSetupError::Key(format!("TLS setup for jwks_url failed: {error}")))?;
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

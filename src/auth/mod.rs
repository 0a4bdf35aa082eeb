//! Authentication: the one place where callers prove who they are.
//!
//! The [`AuthLayer`] strips identity headers a client may have
//! forged, verifies a bearer JWT or an API key, applies the policy of the
//! request's route (`required`, `optional` or `none`, plus required scopes),
//! and records the verified [`Identity`] in request extensions, together
//! with the headers that tell backends who is calling. Doors and later
//! layers read the identity; they never look at credentials.

mod api_key;
mod config;
mod error;
mod jwt;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::marker::PhantomData;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request};
use serde_json::json;
use tower::{Layer, Service};

pub use api_key::{ApiClient, ApiKeys, KeyDigest};
pub use config::{ApiKeyConfig, AuthConfig, AuthMode, JwtConfig, KeysFileError};
pub use error::AuthError;
pub use jwt::{JwtSetupError, JwtVerifier, RefreshTask};

use crate::client::{Caller, ClientAddress};
use crate::identity::Identity;
use crate::telemetry::RequestLog;

/// Longest `Authorization` header looked at; longer ones are refused
/// before any parsing.
const MAX_AUTHORIZATION_LENGTH: usize = 8 * 1024;

/// What a path asks of callers.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Whether credentials are required, optional or ignored.
    pub mode: AuthMode,
    /// Scopes required (all of them).
    pub scopes: Vec<String>,
}

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The JWT settings are unusable.
    #[error(transparent)]
    Jwt(#[from] JwtSetupError),
    /// The API keys file is unusable.
    #[error("auth.api_keys_file: {0}")]
    KeysFile(#[source] config::KeysFileError),
}

/// The verifier built from `[auth]`.
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    api_keys: ApiKeys,
    api_key_header: HeaderName,
    api_client_header: HeaderName,
    forward_credentials: bool,
    /// Headers only the gateway may set.
    identity_headers: Vec<HeaderName>,
    /// `Authorization` and the API key header, removed before forwarding
    /// unless `forward_credentials`.
    credential_headers: [HeaderName; 2],
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("jwt", &self.jwt).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier from validated config.
    pub fn new(config: &AuthConfig, base: &Path) -> Result<Self, AuthSetupError> {
        let jwt = config.jwt.as_ref().map(|jwt| JwtVerifier::new(jwt, base)).transpose()?;
        let mut keys = config.api_keys.clone();
        // Read during validation; a configuration built without it is read now.
        match (&config.loaded_api_keys, &config.api_keys_file) {
            (Some(loaded), _) => keys.extend(loaded.iter().cloned()),
            (None, Some(path)) => {
                keys.extend(config::load_api_keys_file(&base.join(path)).map_err(AuthSetupError::KeysFile)?)
            }
            (None, None) => {}
        }
        let api_key_header =
            HeaderName::try_from(config.api_key_header.as_str()).unwrap_or(HeaderName::from_static("x-api-key"));
        let api_client_header =
            HeaderName::try_from(config.api_client_header.as_str()).unwrap_or(HeaderName::from_static("x-api-client"));
        let mut identity_headers: Vec<HeaderName> = vec![crate::identity::USER_ID, api_client_header.clone()];
        if let Some(jwt) = &jwt {
            identity_headers.extend(jwt.forwarded_header_names().cloned());
        }
        identity_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        identity_headers.dedup();
        Ok(Self {
            jwt,
            api_keys: ApiKeys::new(&keys),
            credential_headers: [header::AUTHORIZATION, api_key_header.clone()],
            api_key_header,
            api_client_header,
            forward_credentials: config.forward_credentials,
            identity_headers,
        })
    }

    /// Starts background work (JWKS refresh), stopped when dropped.
    pub fn spawn_background(&self) -> Option<RefreshTask> {
        self.jwt.as_ref().and_then(JwtVerifier::spawn_refresh)
    }

    /// The verified identity of the request's credentials, if it has any.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let token = bearer_token(authorization)?;
            let Some(jwt) = &self.jwt else { return Err(AuthError::MalformedToken) };
            let verified = jwt.verify(token).await?;
            return Ok(Some(Identity {
                subject: verified.subject,
                client: None,
                scopes: verified.scopes,
                claims: Arc::new(verified.claims),
                forwarded_headers: verified.forwarded_headers,
            }));
        }
        self.identify_api_key(headers)
    }

    /// The verified identity of the request's API key, if it has one.
    fn identify_api_key(&self, headers: &HeaderMap) -> Result<Option<Identity>, AuthError> {
        if let Some(key) = headers.get(&self.api_key_header) {
            let client = self.api_keys.verify(key.as_bytes()).ok_or(AuthError::InvalidApiKey)?;
            let forwarded_headers = HeaderValue::try_from(client.name.as_str())
                .map(|value| vec![(self.api_client_header.clone(), value)])
                .unwrap_or_default();
            let claims = json!({ "client": client.name, "scope": client.scopes.join(" ") });
            return Ok(Some(Identity {
                subject: None,
                client: Some(client.name),
                scopes: client.scopes.into_iter().collect::<BTreeSet<_>>(),
                claims: Arc::new(claims),
                forwarded_headers,
            }));
        }
        Ok(None)
    }
}

fn bearer_token(value: &HeaderValue) -> Result<&str, AuthError> {
    if value.len() > MAX_AUTHORIZATION_LENGTH {
        return Err(AuthError::MalformedHeader);
    }
    let text = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// What the auth layer needs to know about the request's route.
pub trait ProtectedRoute: Send + Sync + 'static {
    /// The route's policy.
    fn auth_policy(&self) -> &Policy;
}

/// The authentication layer (see the module docs). `R` is the route type
/// the route lookup leaves in request extensions (as `Arc<R>`), `E` the
/// stack's error type.
pub struct AuthLayer<R, E> {
    auth: Arc<Authenticator>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<R, E> AuthLayer<R, E> {
    /// The layer, verifying with `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth, _types: PhantomData }
    }
}

impl<R, E> Clone for AuthLayer<R, E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.auth))
    }
}

impl<S, R, E> Layer<S> for AuthLayer<R, E> {
    type Service = Authenticate<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: Arc::clone(&self.auth), _types: PhantomData }
    }
}

/// The service of [`AuthLayer`].
pub struct Authenticate<S, R, E> {
    inner: S,
    auth: Arc<Authenticator>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<S: Clone, R, E> Clone for Authenticate<S, R, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), auth: Arc::clone(&self.auth), _types: PhantomData }
    }
}

impl<S, R, E> Service<Request<Body>> for Authenticate<S, R, E>
where
    S: Service<Request<Body>, Response = Response, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: ProtectedRoute,
    E: From<AuthError> + Send + 'static,
{
    type Response = Response;
    type Error = E;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let auth = &self.auth;
        crate::request::remove_headers(request.headers_mut(), &auth.identity_headers);
        let route = request.extensions().get::<Arc<R>>().cloned();
        let default_policy = Policy::default();
        let policy = route.as_deref().map_or(&default_policy, ProtectedRoute::auth_policy);
        if policy.mode == AuthMode::None {
            strip_credentials(auth, request.headers_mut());
            record_caller(&request, None);
            return Either::Left(self.inner.call(request));
        }
        // Only a bearer token needs to wait (for a key set being fetched);
        // API keys and anonymous requests are decided here and now.
        if !request.headers().contains_key(header::AUTHORIZATION) {
            let outcome = auth.identify_api_key(request.headers());
            return match admit(auth, policy, outcome, &mut request) {
                Ok(()) => Either::Left(self.inner.call(request)),
                Err(error) => Either::Right(Box::pin(std::future::ready(Err(error.into())))),
            };
        }
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let auth = Arc::clone(auth);
        Either::Right(Box::pin(async move {
            let default_policy = Policy::default();
            let policy = route.as_deref().map_or(&default_policy, ProtectedRoute::auth_policy);
            let outcome = auth.identify(request.headers()).await;
            admit(&auth, policy, outcome, &mut request)?;
            inner.call(request).await
        }))
    }
}

/// Applies `policy` to the verification's outcome; an admitted request
/// carries the identity and the headers that tell backends who calls.
fn admit(
    auth: &Authenticator,
    policy: &Policy,
    outcome: Result<Option<Identity>, AuthError>,
    request: &mut Request<Body>,
) -> Result<(), AuthError> {
    let outcome = match outcome {
        Ok(None) if policy.mode == AuthMode::Required => Err(AuthError::MissingCredentials),
        Ok(Some(identity)) if !identity.has_scopes(&policy.scopes) => {
            Err(AuthError::InsufficientScope { required: policy.scopes.clone() })
        }
        other => other,
    };
    match outcome {
        Ok(identity) => {
            if !auth.forward_credentials {
                strip_credentials(auth, request.headers_mut());
            }
            record_caller(request, identity.as_ref());
            if let Some(identity) = identity {
                for (name, value) in &identity.forwarded_headers {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
                request.extensions_mut().insert(Arc::new(identity));
            }
            Ok(())
        }
        Err(error) => {
            tracing::info!(error = %error, path = request.uri().path(), "request refused by authentication");
            Err(error)
        }
    }
}

/// Names the admitted caller in the access log, by the rule the rate limit
/// keys on ([`Caller::of`]).
fn record_caller(request: &Request<Body>, identity: Option<&Identity>) {
    if let Some(log) = request.extensions().get::<Arc<RequestLog>>() {
        log.set_caller(Caller::of(identity, ClientAddress::of(request.extensions()).client));
    }
}

fn strip_credentials(auth: &Authenticator, headers: &mut HeaderMap) {
    crate::request::remove_headers(headers, &auth.credential_headers);
}

/// Mints an HS256 development token (for `portico token`).
pub fn mint_token(
    secret: &str,
    subject: &str,
    scopes: &[String],
    lifetime: Duration,
    issuer: Option<&str>,
    audience: &[String],
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut claims = json!({ "sub": subject, "iat": now, "nbf": now, "exp": now + lifetime.as_secs() });
    if !scopes.is_empty() {
        claims["scope"] = json!(scopes.join(" "));
    }
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    if !audience.is_empty() {
        claims["aud"] = json!(audience);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_read_once_during_validation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
        std::fs::copy(fixtures.join("rsa.pub"), dir.path().join("rsa.pub")).expect("key copied");
        let digest = "ab".repeat(32);
        std::fs::write(dir.path().join("keys.toml"), format!("[[api_keys]]\nname = \"ci\"\nsha256 = \"{digest}\"\n"))
            .expect("keys written");
        let text = "[auth]\napi_keys_file = \"keys.toml\"\n[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\n";
        let config = crate::Config::parse_in(text, "test.toml", dir.path()).expect("valid");
        std::fs::remove_file(dir.path().join("rsa.pub")).expect("removed");
        std::fs::remove_file(dir.path().join("keys.toml")).expect("removed");
        let auth = Authenticator::new(&config.auth, dir.path()).expect("built from what was read");
        assert!(!auth.api_keys.is_empty());
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let header = |text: &str| HeaderValue::try_from(text).expect("header");
        assert_eq!(bearer_token(&header("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(&header("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&header("Basic abc")), Err(AuthError::MalformedHeader));
        assert_eq!(bearer_token(&header("Bearer")), Err(AuthError::MalformedHeader));
        assert_eq!(bearer_token(&header("Bearer a b")), Err(AuthError::MalformedHeader));
        assert_eq!(bearer_token(&header(&format!("Bearer {}", "a".repeat(9000)))), Err(AuthError::MalformedHeader));
    }
}

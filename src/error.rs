//! The one place where failures become answers to clients.
//!
//! Every module reports failures as its own typed error; this edge decides
//! the status, the stable `code` clients can match on, and a message that
//! says what happened without revealing internals. The full error, with its
//! causes, goes to the log only.
//!
//! Layers and doors never render their own refusals: each returns its typed
//! error up the stack (every layer's error type is `E: From<ItsError>`), and
//! [`ErrorEdgeLayer`], just inside the access log, turns it into the answer.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Request, StatusCode};
use pin_project_lite::pin_project;
use serde_json::json;
use tower::{Layer, Service};

use crate::auth::AuthError;
use crate::cache::CacheError;
use crate::graphql::error::RequestError;
use crate::operations::{self, OperationError};
use crate::proxy::ProxyError;
use crate::ratelimit::{retry_after_seconds, RateLimitError, Refused};
use crate::request::REQUEST_ID;
use crate::routing::{PathError, RouteError};
use crate::server::ProtocolError;
use crate::telemetry::ErrorChain;
use crate::upstream::UpstreamError;

/// Any failure that ends a request with a gateway-made answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// From the REST passthrough.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// From the connection-level request checks.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The path cannot be made canonical safely.
    #[error(transparent)]
    Path(#[from] PathError),
    /// No route serves the request.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The caller's credentials were refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A cache admin request was refused.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The caller is over its rate limit.
    #[error(transparent)]
    RateLimit(#[from] Refused),
    /// A stored operation's endpoint refused or failed the request.
    #[error(transparent)]
    Operation(#[from] OperationError),
}

/// How an error is presented.
struct Presentation {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Close the connection after answering, because the request's framing
    /// can no longer be trusted.
    close: bool,
    /// A failed operation's GraphQL errors.
    errors: Option<serde_json::Value>,
}

impl Presentation {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), close: false, errors: None }
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl GatewayError {
    fn present(&self) -> Presentation {
        match self {
            Self::Proxy(error) => present_proxy(error),
            Self::Path(error) => Presentation::new(StatusCode::BAD_REQUEST, "invalid_path", error.to_string()),
            Self::Route(error @ RouteError::NotFound) => {
                Presentation::new(StatusCode::NOT_FOUND, "route_not_found", error.to_string())
            }
            Self::Route(error @ RouteError::MethodNotAllowed { .. }) => {
                Presentation::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", error.to_string())
            }
            Self::Auth(error) if error.is_forbidden() => {
                Presentation::new(StatusCode::FORBIDDEN, "insufficient_scope", error.to_string())
            }
            Self::Auth(AuthError::MissingCredentials) => Presentation::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                AuthError::MissingCredentials.to_string(),
            ),
            Self::Auth(error) => Presentation::new(StatusCode::UNAUTHORIZED, "invalid_credentials", error.to_string()),
            Self::Cache(error @ CacheError::AdminKeyMissing) => {
                Presentation::new(StatusCode::UNAUTHORIZED, "admin_key_missing", error.to_string())
            }
            Self::Cache(error @ CacheError::AdminKeyInvalid) => {
                Presentation::new(StatusCode::FORBIDDEN, "admin_key_invalid", error.to_string())
            }
            Self::Cache(error @ CacheError::BadPurge(_)) => {
                Presentation::new(StatusCode::BAD_REQUEST, "bad_purge", error.to_string())
            }
            Self::Cache(error @ CacheError::MethodNotAllowed) => {
                Presentation::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", error.to_string())
            }
            Self::RateLimit(Refused { error: error @ RateLimitError::Exceeded { .. }, .. }) => {
                Presentation::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", error.to_string())
            }
            Self::RateLimit(Refused { error: error @ RateLimitError::Unavailable, .. }) => {
                Presentation::new(StatusCode::SERVICE_UNAVAILABLE, "rate_limiter_unavailable", error.to_string())
            }
            Self::Operation(error) => present_operation(error),
            Self::Protocol(error @ ProtocolError::MissingHost) => {
                Presentation::new(StatusCode::BAD_REQUEST, "missing_host", error.to_string()).closing()
            }
            Self::Protocol(error @ ProtocolError::DuplicateHost) => {
                Presentation::new(StatusCode::BAD_REQUEST, "duplicate_host", error.to_string()).closing()
            }
        }
    }

    /// The answer for this error; `request_id` is echoed so the client can
    /// quote it when reporting the problem.
    pub(crate) fn into_response_with_id(self, request_id: Option<&HeaderValue>) -> Response {
        let presentation = self.present();
        if presentation.status.is_server_error() {
            tracing::warn!(error = %ErrorChain(&self), code = presentation.code, "request failed");
        } else {
            tracing::debug!(error = %ErrorChain(&self), code = presentation.code, "request refused");
        }
        let request_id = request_id.and_then(|value| value.to_str().ok());
        let mut body = json!({
            "error": {
                "code": presentation.code,
                "message": presentation.message,
                "request_id": request_id,
            }
        });
        if let Some(errors) = presentation.errors {
            body["error"]["errors"] = errors;
        }
        let mut response = (presentation.status, axum::Json(body)).into_response();
        if presentation.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::RateLimit(refused) = &self {
            if let RateLimitError::Exceeded { retry_after } = &refused.error {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*retry_after)));
            }
            response.headers_mut().extend(refused.headers.clone());
        }
        if let Self::Operation(OperationError::Refused(RequestError::OverBudget {
            source: RateLimitError::Exceeded { retry_after },
            ..
        })) = &self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*retry_after)));
        }
        if let Self::Auth(error) = &self {
            if let Ok(challenge) = HeaderValue::try_from(bearer_challenge(error)) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        let allowed = match &self {
            Self::Proxy(ProxyError::MethodNotAllowed { allowed, .. }) => Some(allowed.as_slice()),
            Self::Route(RouteError::MethodNotAllowed { allowed })
            | Self::Operation(OperationError::MethodNotAllowed { allowed }) => Some(*allowed),
            _ => None,
        };
        if let Some(allowed) = allowed {
            let allow = allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(allow) = HeaderValue::try_from(allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
        }
        response
    }
}

/// Renders the stack's errors: the one edge between typed failures and
/// answers. It sits inside the request id layer, so every error body quotes
/// the id, and inside the access log, so refusals are logged with their
/// status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorEdgeLayer;

impl<S> Layer<S> for ErrorEdgeLayer {
    type Service = ErrorEdge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorEdge { inner }
    }
}

/// The service of [`ErrorEdgeLayer`].
#[derive(Debug, Clone)]
pub struct ErrorEdge<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ErrorEdge<S>
where
    S: Service<Request<B>, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ErrorEdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every service of the stack is always ready; an error here would
        // have no request to answer.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let request_id = request.headers().get(REQUEST_ID).cloned();
        ErrorEdgeFuture { inner: self.inner.call(request), request_id }
    }
}

pin_project! {
    /// The future of [`ErrorEdge`].
    pub struct ErrorEdgeFuture<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
    }
}

impl<F> Future for ErrorEdgeFuture<F>
where
    F: Future<Output = Result<Response, GatewayError>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => Poll::Ready(Ok(response)),
            Err(error) => Poll::Ready(Ok(error.into_response_with_id(this.request_id.as_ref()))),
        }
    }
}

/// The RFC 6750 challenge for a refused request.
fn bearer_challenge(error: &AuthError) -> String {
    match error {
        AuthError::MissingCredentials => "Bearer realm=\"portico\"".to_owned(),
        AuthError::InsufficientScope { required } => {
            format!("Bearer realm=\"portico\", error=\"insufficient_scope\", scope=\"{}\"", required.join(" "))
        }
        other => format!("Bearer realm=\"portico\", error=\"invalid_token\", error_description=\"{other}\""),
    }
}

fn present_proxy(error: &ProxyError) -> Presentation {
    match error {
        ProxyError::MethodNotAllowed { .. } => {
            Presentation::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", error.to_string())
        }
        ProxyError::UnforwardablePath => Presentation::new(StatusCode::BAD_REQUEST, "invalid_path", error.to_string()),
        ProxyError::BodyTooLarge { .. } => {
            Presentation::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", error.to_string()).closing()
        }
        ProxyError::Upstream(upstream) => present_upstream(upstream),
        ProxyError::DeadlineExceeded { .. } => {
            Presentation::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", error.to_string())
        }
    }
}

fn present_operation(error: &OperationError) -> Presentation {
    let message = error.to_string();
    match error {
        OperationError::MethodNotAllowed { .. } => {
            Presentation::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
        }
        OperationError::UnknownParameter { .. } => {
            Presentation::new(StatusCode::BAD_REQUEST, "unknown_parameter", message)
        }
        OperationError::MissingParameter { .. } => {
            Presentation::new(StatusCode::BAD_REQUEST, "missing_parameter", message)
        }
        OperationError::RepeatedParameter { .. } | OperationError::InvalidParameter { .. } => {
            Presentation::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        }
        OperationError::UnsupportedMediaType => {
            Presentation::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
        }
        OperationError::BodyTooLarge { .. } => {
            Presentation::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).closing()
        }
        OperationError::InvalidBody => Presentation::new(StatusCode::BAD_REQUEST, "malformed_body", message),
        OperationError::Refused(refused) => {
            let refusal = refused.refusal();
            let mut presentation = Presentation::new(refusal.status, "operation_refused", message);
            presentation.errors =
                Some(json!([{ "message": refused.to_string(), "extensions": { "code": refusal.code.as_str() } }]));
            presentation
        }
        OperationError::Failed { codes, errors } => {
            let mut presentation = Presentation::new(operations::failure_status(codes), "operation_failed", message);
            presentation.errors = Some(errors.clone());
            presentation
        }
    }
}

fn present_upstream(error: &UpstreamError) -> Presentation {
    // Display of UpstreamError names the service, never an address.
    let message = error.to_string();
    match error {
        UpstreamError::NoHealthyEndpoint { .. } => {
            Presentation::new(StatusCode::SERVICE_UNAVAILABLE, "no_healthy_upstream", message)
        }
        UpstreamError::Connect { .. } => Presentation::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", message),
        UpstreamError::Timeout { .. } => Presentation::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message),
        UpstreamError::Protocol { .. } => Presentation::new(StatusCode::BAD_GATEWAY, "bad_upstream_response", message),
        UpstreamError::RequestBody { source, .. } => {
            let source: &(dyn StdError + 'static) = source.as_ref();
            if chain_contains::<http_body_util::LengthLimitError>(source) {
                Presentation::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is larger than the limit",
                )
                .closing()
            } else if chain_contains::<tower_http::timeout::TimeoutError>(source) {
                Presentation::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the request body arrived too slowly")
                    .closing()
            } else {
                Presentation::new(StatusCode::BAD_REQUEST, "malformed_body", "the request body could not be read")
                    .closing()
            }
        }
    }
}

/// Whether `error` or any of its causes is a `T`.
fn chain_contains<T: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<T>() {
            return true;
        }
        current = match error.downcast_ref::<axum::Error>() {
            Some(axum_error) => axum_error.source(),
            None => error.source(),
        };
    }
    false
}

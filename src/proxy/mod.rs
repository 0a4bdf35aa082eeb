//! The REST front door: passthrough of `[[routes]]` to backend services.
//!
//! Like NGINX's `location /payment/ { proxy_pass http://payment/; }`: the
//! longest matching prefix picks the service, the prefix is stripped, and
//! method, query and body stream through. Bodies are never buffered whole.
//!
//! Architecture invariant: this module does not import `graphql`; both front
//! doors reach backends only through `upstream`.

mod config;
mod headers;
mod routing;

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytesize::ByteSize;
use http::uri::PathAndQuery;
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body::Body as _;
use tracing::Instrument as _;

pub use config::RouteConfig;
pub use headers::remove_hop_by_hop;
pub use routing::Route;

use crate::client::ClientAddress;
use crate::identity::Identity;
use crate::request::ConnectionInfo;
use crate::telemetry::RequestLog;
use crate::upstream::{SendError, UpstreamError, UpstreamRequestBody};

/// Why the proxy refused a request before any backend was called.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The route does not accept the method.
    #[error("method {method} is not allowed on this route")]
    MethodNotAllowed {
        /// The refused method.
        method: Method,
        /// What the route accepts.
        allowed: Vec<Method>,
    },
    /// The path and query could not be rebuilt for the backend.
    #[error("the request path cannot be forwarded")]
    UnforwardablePath,
    /// The declared body is larger than the limit.
    #[error("the request body is larger than the limit of {limit}")]
    BodyTooLarge {
        /// The configured limit.
        limit: ByteSize,
    },
    /// The backend call failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// No answer within the request's total deadline (retries included).
    #[error("no answer within the gateway's deadline of {}", humantime::format_duration(*.timeout))]
    DeadlineExceeded {
        /// The deadline that passed.
        timeout: std::time::Duration,
    },
}

/// Forwards one request on its route. The request's total deadline (the
/// route's `timeout`, else `server.request_timeout`) covers every attempt
/// up to the answer's head; past it the work is dropped with its future,
/// which abandons the backend connection. The answer's body is not covered:
/// it streams under the service's idle timeout.
///
/// Generic over the caller's error type, so that the caller can box this
/// future as it is (it is large: every attempt's state lives in it)
/// instead of moving it once more into an adapter that converts the error.
pub async fn forward<E: From<ProxyError>>(route: Arc<Route>, request: Request<Body>) -> Result<Response, E> {
    let deadline = tokio::time::Instant::now() + route.timeout();
    Ok(forward_before(&route, request, deadline).await?)
}

async fn forward_before(
    route: &Route,
    request: Request<Body>,
    deadline: tokio::time::Instant,
) -> Result<Response, ProxyError> {
    let (mut parts, body) = request.into_parts();
    // The canonical-path layer has normalised the path already. The URI is
    // shared bytes, so keeping a copy costs a reference count, not a string.
    let uri = parts.uri.clone();
    let path = uri.path();
    let log = parts.extensions.get::<Arc<RequestLog>>().cloned();
    if !route.allows(&parts.method) {
        return Err(ProxyError::MethodNotAllowed { method: parts.method, allowed: route.allowed_methods().to_vec() });
    }

    let upstream_path = route.upstream_path(path);
    let path_and_query = match parts.uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{upstream_path}?{query}")),
        None => PathAndQuery::try_from(upstream_path.into_owned()),
    }
    .map_err(|_| ProxyError::UnforwardablePath)?;

    let declared_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body_limit = route.body_limit();
    if declared_length.is_some_and(|length| length > body_limit.as_u64()) {
        return Err(ProxyError::BodyTooLarge { limit: body_limit });
    }
    let body = if body.is_end_stream() {
        UpstreamRequestBody::Empty
    } else {
        let limit = usize::try_from(body_limit.as_u64()).unwrap_or(usize::MAX);
        UpstreamRequestBody::streaming(Body::new(http_body_util::Limited::new(body, limit)))
    };

    let address = ClientAddress::of(&parts.extensions);
    // HTTP/2 clients name the host in `:authority` rather than `Host`.
    let original_host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|authority| HeaderValue::try_from(authority.as_str()).ok()));
    let client_scheme = parts.extensions.get::<ConnectionInfo>().map_or("http", |info| info.scheme());
    if let Some(rules) = route.request_headers() {
        let identity = parts.extensions.get::<Arc<Identity>>().map(Arc::as_ref);
        rules.apply_in_place(&mut parts.headers, identity, &route.prefix);
    }
    headers::prepare_request_headers(&mut parts.headers, address, original_host.as_ref(), client_scheme);
    // The backend call joins the request's trace, with its own span as parent.
    let span = match &log {
        Some(log) => {
            let span = log.backend_span(route.service.name(), &parts.method, path_and_query.path());
            log.inject_trace(&mut parts.headers, &span);
            span
        }
        None => tracing::Span::none(),
    };

    if let Some(signer) = route.identity_signer() {
        let identity = parts.extensions.get::<Arc<Identity>>();
        let covered: Vec<&HeaderName> = identity
            .map(|identity| identity.forwarded_headers.iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        if covered.is_empty() {
            // Only the gateway's signature may reach a backend.
            parts.headers.remove(&crate::signing::SIGNATURE);
            parts.headers.remove(&crate::signing::SIGNATURE_INPUT);
        } else {
            signer.sign(&parts.method, path_and_query.as_str(), &covered, &mut parts.headers);
        }
    }

    let mut upstream_request = http::Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = path_and_query.into();
    *upstream_request.headers_mut() = parts.headers;

    let answer = match route.service.send_before(upstream_request, deadline).instrument(span).await {
        Ok(answer) => answer,
        Err(SendError::DeadlinePassed) => return Err(ProxyError::DeadlineExceeded { timeout: route.timeout() }),
        Err(SendError::Upstream(error)) => {
            // The access log names the replica that failed, not only the one that answers.
            if let (Some(log), Some((endpoint, retries))) = (&log, error.attempt()) {
                log.set_upstream(endpoint, retries);
            }
            return Err(error.into());
        }
    };
    if let Some(log) = &log {
        log.set_upstream(&answer.endpoint, answer.retries);
    }
    let (mut response_parts, response_body) = answer.response.into_parts();
    remove_hop_by_hop(&mut response_parts.headers);
    headers::hide(&mut response_parts.headers, route.hidden_response_headers());
    Ok(Response::from_parts(response_parts, Body::new(response_body)))
}

/// `301` to a route's prefix for a request to the prefix without its slash
/// (NGINX does the same).
pub fn redirect_to_slash(prefix: &str, query: Option<&str>) -> Response {
    let location = match query {
        Some(query) => format!("{prefix}?{query}"),
        None => prefix.to_owned(),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

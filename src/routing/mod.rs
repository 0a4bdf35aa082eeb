//! Canonical request paths, and prefix matching over them.
//!
//! The [`canonical_path`] layer rewrites every request's path to its safe,
//! normalised form (or refuses it) before any layer or door looks at it, so
//! that authentication policies, rate limits, caches and routes all decide
//! on the same path. Nothing downstream re-normalises. [`PathRewrite`] says
//! how a route's gateway paths become its service's paths.

mod path;
mod prefix;
mod rewrite;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::uri::{PathAndQuery, Uri};

pub use path::{normalize, PathError};
pub use prefix::{PrefixMatch, PrefixTable};
pub use rewrite::PathRewrite;

use crate::error::GatewayError;
use crate::request::REQUEST_ID;

/// Rewrites the request path to its canonical form; refuses paths that
/// cannot be made safe.
pub async fn canonical_path(mut request: Request, next: Next) -> Response {
    let rewritten = match normalize(request.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => None,
        Ok(std::borrow::Cow::Owned(path)) => Some(path),
        Err(error) => {
            let request_id = request.headers().get(REQUEST_ID);
            return GatewayError::from(error).into_response_with_id(request_id);
        }
    };
    if let Some(path) = rewritten {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    next.run(request).await
}

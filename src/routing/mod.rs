//! Canonical request paths, and prefix matching over them.
//!
//! The [`CanonicalPath`] check rewrites every request's path to its safe,
//! normalised form (or refuses it) before any layer or door looks at it, so
//! that the one route lookup and everything after it decide on the same
//! path. Nothing downstream re-normalises. [`PrefixTable`] is the
//! longest-prefix matcher that lookup uses, and [`PathRewrite`] says how a
//! route's gateway paths become its service's paths.
//!
//! This module knows nothing of what a route is for: it is a leaf that the
//! route table, the cache and the proxy build on.

mod path;
mod prefix;
mod rewrite;

use std::borrow::Cow;

use axum::body::Body;
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request};

use crate::check::Check;

pub use path::{normalize, PathError};
pub use prefix::{PrefixMatch, PrefixTable};
pub use rewrite::PathRewrite;

/// A request the route table cannot serve.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// No route matches the path.
    #[error("no route matches this path")]
    NotFound,
    /// The gateway's own endpoint does not take the method.
    #[error("this method is not allowed here")]
    MethodNotAllowed {
        /// What the endpoint accepts.
        allowed: &'static [Method],
    },
}

/// Makes every request's path canonical; a path that cannot be made safe
/// ends the request with a [`PathError`], which the error edge renders (a
/// [`Check`] for the [`crate::check::CheckLayer`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CanonicalPath;

impl Check<Body> for CanonicalPath {
    type Error = PathError;

    fn check(&self, request: &mut Request<Body>) -> Result<(), PathError> {
        match normalize(request.uri().path())? {
            Cow::Borrowed(_) => {}
            Cow::Owned(path) => replace_path(request, path),
        }
        Ok(())
    }
}

fn replace_path(request: &mut Request<Body>, path: String) {
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

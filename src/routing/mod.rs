//! Canonical request paths, and prefix matching over them.
//!
//! The [`CanonicalPathLayer`] rewrites every request's path to its safe,
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
use std::marker::PhantomData;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::{self, Either, Ready};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request};
use tower::{Layer, Service};

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
/// ends the request with a [`PathError`], which the error edge renders.
#[derive(Debug)]
pub struct CanonicalPathLayer<E> {
    _error: PhantomData<fn() -> E>,
}

impl<E> CanonicalPathLayer<E> {
    /// The layer; `E` is the stack's error type.
    pub fn new() -> Self {
        Self { _error: PhantomData }
    }
}

impl<E> Default for CanonicalPathLayer<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for CanonicalPathLayer<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<S, E> Layer<S> for CanonicalPathLayer<E> {
    type Service = CanonicalPath<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        CanonicalPath { inner, _error: PhantomData }
    }
}

/// The service of [`CanonicalPathLayer`].
#[derive(Debug)]
pub struct CanonicalPath<S, E> {
    inner: S,
    _error: PhantomData<fn() -> E>,
}

impl<S: Clone, E> Clone for CanonicalPath<S, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _error: PhantomData }
    }
}

impl<S, E> Service<Request<Body>> for CanonicalPath<S, E>
where
    S: Service<Request<Body>, Error = E>,
    E: From<PathError>,
{
    type Response = S::Response;
    type Error = E;
    type Future = Either<S::Future, Ready<Result<S::Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match normalize(request.uri().path()) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(path)) => replace_path(&mut request, path),
            Err(error) => return Either::Right(future::ready(Err(error.into()))),
        }
        Either::Left(self.inner.call(request))
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

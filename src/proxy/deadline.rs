//! The total deadline of a REST request.
//!
//! A service's `request_timeout` bounds one attempt; with retries on other
//! replicas, a request can take several of them. [`DeadlineLayer`] bounds
//! the whole: from the moment the request reaches the REST door until the
//! answer's head is ready, retries included (`server.request_timeout`, or a
//! route's own `timeout`). Past it the client gets 504 and the work is
//! dropped with its future, which abandons the backend connection. The
//! answer's body is not covered: it streams under the services' idle
//! timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Request};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{ProxyError, RouteConfig};
use crate::error::GatewayError;
use crate::request::REQUEST_ID;
use crate::routing::{PrefixMatch, PrefixTable};

/// Each route's deadline, by prefix.
#[derive(Debug)]
struct Deadlines {
    default: Duration,
    routes: PrefixTable<Duration>,
}

/// Adds the request deadline around the REST door.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    deadlines: Arc<Deadlines>,
}

impl DeadlineLayer {
    /// `default` for every path, unless the matching route sets `timeout`.
    pub fn new(default: Duration, routes: &[RouteConfig]) -> Self {
        // Every route is listed, so a route without `timeout` under a longer
        // prefix is not given the timeout of a shorter one.
        let routes = routes.iter().map(|route| (Arc::from(route.prefix.as_str()), route.timeout.unwrap_or(default)));
        Self { deadlines: Arc::new(Deadlines { default, routes: PrefixTable::new(routes) }) }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, deadlines: Arc::clone(&self.deadlines) }
    }
}

/// The deadline middleware.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    deadlines: Arc<Deadlines>,
}

impl<S> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let timeout = match self.deadlines.routes.lookup(request.uri().path()) {
            PrefixMatch::Found(timeout) => *timeout,
            PrefixMatch::AddSlash(..) | PrefixMatch::NotFound => self.deadlines.default,
        };
        let request_id = request.headers().get(REQUEST_ID).cloned();
        DeadlineFuture { inner: tokio::time::timeout(timeout, self.inner.call(request)), timeout, request_id }
    }
}

pin_project! {
    /// The door's answer, or a 504 once the deadline passes.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        timeout: Duration,
        request_id: Option<HeaderValue>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(answer) => Poll::Ready(answer),
            Err(_elapsed) => {
                let error = GatewayError::from(ProxyError::DeadlineExceeded { timeout: *this.timeout });
                Poll::Ready(Ok(error.into_response_with_id(this.request_id.as_ref())))
            }
        }
    }
}

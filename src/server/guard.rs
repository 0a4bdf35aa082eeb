//! Request checks that belong to the protocol rather than to any route.
//!
//! Framing attacks are handled below this layer: hyper refuses conflicting
//! `Content-Length`s and bad chunk sizes with 400, and for a request with
//! both `Content-Length` and `Transfer-Encoding` it drops the length, reads
//! the chunked body and closes the connection after answering (RFC 9112
//! 6.3), so a smuggled second request is never read.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::uri::Authority;
use http::{header, Request, Version};
use tower::{Layer, Service};

/// A request refused at the protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No `Host` (or HTTP/2 `:authority`), or one that is not a host name.
    #[error("the request needs a valid Host header")]
    MissingHost,
    /// More than one `Host` header: which host is meant is ambiguous, and
    /// RFC 9112 3.2 requires a 400.
    #[error("the request has more than one Host header")]
    DuplicateHost,
}

/// Refuses requests without exactly one valid host, before any route or
/// door sees them.
#[derive(Debug)]
pub struct HostGuardLayer<E> {
    _error: PhantomData<fn() -> E>,
}

impl<E> HostGuardLayer<E> {
    /// The layer; `E` is the stack's error type.
    pub fn new() -> Self {
        Self { _error: PhantomData }
    }
}

impl<E> Default for HostGuardLayer<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for HostGuardLayer<E> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<S, E> Layer<S> for HostGuardLayer<E> {
    type Service = HostGuard<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        HostGuard { inner, _error: PhantomData }
    }
}

/// The service of [`HostGuardLayer`].
#[derive(Debug)]
pub struct HostGuard<S, E> {
    inner: S,
    _error: PhantomData<fn() -> E>,
}

impl<S: Clone, E> Clone for HostGuard<S, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _error: PhantomData }
    }
}

impl<S, B, E> Service<Request<B>> for HostGuard<S, E>
where
    S: Service<Request<B>, Error = E>,
    E: From<ProtocolError>,
{
    type Response = S::Response;
    type Error = E;
    type Future = Either<S::Future, Ready<Result<S::Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match check(&request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(error) => Either::Right(future::ready(Err(error.into()))),
        }
    }
}

fn check<B>(request: &Request<B>) -> Result<(), ProtocolError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next().map(|value| value.as_bytes());
    if hosts.next().is_some() {
        return Err(ProtocolError::DuplicateHost);
    }
    let valid = match (host, request.version()) {
        (Some(host), _) => {
            !host.is_empty() && Authority::try_from(host).is_ok_and(|authority| !authority.host().is_empty())
        }
        (None, Version::HTTP_2 | Version::HTTP_3) => request.uri().authority().is_some(),
        (None, _) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ProtocolError::MissingHost)
    }
}

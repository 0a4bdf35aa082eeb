//! A layer for the checks that decide on a request before anything else
//! runs: synchronous, cheap, and either letting the request (possibly
//! rewritten) through or ending it with a typed error for the error edge.
//! The host guard and the canonical path are such checks.
//!
//! tower's `Filter` does the same with boxed errors; this one keeps the
//! stack's error type (`E: From<C::Error>`), so the error edge matches on
//! types instead of downcasting.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::Request;
use tower::{Layer, Service};

/// One check of a request.
pub trait Check<B>: Clone {
    /// Why a request is refused.
    type Error;

    /// Lets `request` through (possibly rewritten) or refuses it.
    fn check(&self, request: &mut Request<B>) -> Result<(), Self::Error>;
}

/// Runs the check `C` on every request; `E` is the stack's error type.
#[derive(Debug)]
pub struct CheckLayer<C, E> {
    check: C,
    _error: PhantomData<fn() -> E>,
}

impl<C, E> CheckLayer<C, E> {
    /// The layer running `check`.
    pub fn new(check: C) -> Self {
        Self { check, _error: PhantomData }
    }
}

impl<C: Clone, E> Clone for CheckLayer<C, E> {
    fn clone(&self) -> Self {
        Self::new(self.check.clone())
    }
}

impl<S, C: Clone, E> Layer<S> for CheckLayer<C, E> {
    type Service = Checked<S, C, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked { inner, check: self.check.clone(), _error: PhantomData }
    }
}

/// The service of [`CheckLayer`].
#[derive(Debug)]
pub struct Checked<S, C, E> {
    inner: S,
    check: C,
    _error: PhantomData<fn() -> E>,
}

impl<S: Clone, C: Clone, E> Clone for Checked<S, C, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), check: self.check.clone(), _error: PhantomData }
    }
}

impl<S, C, B, E> Service<Request<B>> for Checked<S, C, E>
where
    S: Service<Request<B>, Error = E>,
    C: Check<B>,
    E: From<C::Error>,
{
    type Response = S::Response;
    type Error = E;
    type Future = Either<S::Future, Ready<Result<S::Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(error) => Either::Right(future::ready(Err(error.into()))),
        }
    }
}

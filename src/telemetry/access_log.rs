//! One access-log event per request, written when the answer's body has been
//! sent (or abandoned), so that duration and byte counts are true for
//! streamed answers too.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::REQUEST_ID;

/// What the front doors learned about a request, for its access-log line.
#[derive(Debug, Default)]
pub struct RequestLog {
    route: OnceLock<(Arc<str>, Arc<str>)>,
    upstream: OnceLock<(Arc<str>, u32)>,
    bytes_in: AtomicU64,
}

impl RequestLog {
    /// Records the matched route and its service.
    pub fn set_route(&self, route: &Arc<str>, service: &Arc<str>) {
        let _ = self.route.set((Arc::clone(route), Arc::clone(service)));
    }

    /// Records the endpoint that answered and the retries it took.
    pub fn set_upstream(&self, endpoint: &Arc<str>, retries: u32) {
        let _ = self.upstream.set((Arc::clone(endpoint), retries));
    }
}

/// Adds the access log around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The access-log middleware.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

/// The request facts captured before the request is handed on.
#[derive(Debug)]
struct Entry {
    started: Instant,
    method: Method,
    path: String,
    request_id: Option<String>,
    log: Arc<RequestLog>,
}

impl<S> Service<Request<Body>> for AccessLog<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let log = Arc::new(RequestLog::default());
        let entry = Entry {
            started: Instant::now(),
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            request_id: request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).map(str::to_owned),
            log: Arc::clone(&log),
        };
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(Arc::clone(&log));
        let body = if body.is_end_stream() {
            body
        } else {
            Body::new(CountingBody { inner: body, counter: CounterTarget::In(log) })
        };
        AccessLogFuture { inner: self.inner.call(Request::from_parts(parts, body)), entry: Some(entry) }
    }
}

pin_project! {
    /// Waits for the answer's head, then hands the entry to the body.
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        entry: Option<Entry>,
    }
}

impl<F, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(result.map(|response| match this.entry.take() {
            Some(entry) => {
                let status = response.status();
                response.map(|body| {
                    // An empty body may never be polled; it is complete already.
                    let complete = body.is_end_stream();
                    let finished = Finished { entry, status, bytes_out: 0, complete };
                    Body::new(CountingBody { inner: body, counter: CounterTarget::Out(Box::new(finished)) })
                })
            }
            None => response,
        }))
    }
}

/// Where a counting body adds its bytes.
#[derive(Debug)]
enum CounterTarget {
    In(Arc<RequestLog>),
    Out(Box<Finished>),
}

/// The access-log line in waiting: written when dropped.
#[derive(Debug)]
struct Finished {
    entry: Entry,
    status: StatusCode,
    bytes_out: u64,
    complete: bool,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let entry = &self.entry;
        let (route, service) = entry.log.route.get().map_or(("", ""), |(route, service)| (&**route, &**service));
        let (endpoint, retries) =
            entry.log.upstream.get().map_or(("", 0), |(endpoint, retries)| (&**endpoint, *retries));
        tracing::info!(
            target: "portico::access",
            request_id = entry.request_id.as_deref().unwrap_or(""),
            method = %entry.method,
            path = %entry.path,
            route,
            service,
            endpoint,
            status = self.status.as_u16(),
            duration_ms = entry.started.elapsed().as_secs_f64() * 1000.0,
            bytes_in = entry.log.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            retries,
            complete = self.complete,
            "request"
        );
    }
}

pin_project! {
    struct CountingBody {
        #[pin]
        inner: Body,
        counter: CounterTarget,
    }
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match (&frame, this.counter) {
            (Some(Ok(frame)), CounterTarget::In(log)) => {
                if let Some(data) = frame.data_ref() {
                    log.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            (Some(Ok(frame)), CounterTarget::Out(finished)) => {
                if let Some(data) = frame.data_ref() {
                    finished.bytes_out += data.len() as u64;
                }
            }
            (None, CounterTarget::Out(finished)) => finished.complete = true,
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

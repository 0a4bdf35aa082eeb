//! One access-log event and one set of request metrics per request,
//! written when the answer's body has been sent (or abandoned), so that
//! duration and byte counts are true for streamed answers too. The layer
//! also opens the request's `request` span and its trace context, which the
//! doors reach through [`RequestLog`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::metrics::{InFlight, Metrics};
use super::trace::{RemoteParent, TraceContext};
use super::Telemetry;
use crate::client::{Caller, ClientAddress};
use crate::request::REQUEST_ID;

/// What the front doors learned about a request, for its access-log line
/// and metrics; also the request's trace context and span, which backend
/// calls descend from.
#[derive(Debug)]
pub struct RequestLog {
    route: OnceLock<(Arc<str>, Arc<str>)>,
    upstream: OnceLock<(Arc<str>, u32)>,
    operation: OnceLock<Arc<str>>,
    caller: OnceLock<Caller>,
    bytes_in: AtomicU64,
    trace: TraceContext,
    span: tracing::Span,
    metrics: Arc<Metrics>,
}

impl RequestLog {
    /// Records the matched route and its service.
    pub fn set_route(&self, route: &Arc<str>, service: &Arc<str>) {
        let _ = self.route.set((Arc::clone(route), Arc::clone(service)));
    }

    /// Records who called (set once authentication has decided).
    pub fn set_caller(&self, caller: Caller) {
        let _ = self.caller.set(caller);
    }

    /// Records the endpoint that answered and the retries it took.
    pub fn set_upstream(&self, endpoint: &Arc<str>, retries: u32) {
        let _ = self.upstream.set((Arc::clone(endpoint), retries));
    }

    /// Records the GraphQL operation's name (`None`: anonymous); it becomes
    /// a metrics label only while the number of distinct names is small.
    pub fn set_graphql_operation(&self, name: Option<&str>) {
        let label = self.metrics.operation_label(name);
        self.span.record("graphql.operation.name", &*label);
        let _ = self.operation.set(label);
    }

    /// Counts a GraphQL error sent to the client, by its `extensions.code`.
    pub fn graphql_error(&self, code: &str) {
        self.metrics.graphql_error(code);
    }

    /// Counts how the operation's plan was found (see [`Metrics::graphql_plan`]).
    pub fn graphql_plan(&self, result: &'static str) {
        self.metrics.graphql_plan(result);
    }

    /// The request's trace context.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// The request's span; spans of work done for it descend from it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A span for one call to a backend, child of the request's span.
    pub fn backend_span(&self, service: &str, method: &Method, path: &str) -> tracing::Span {
        tracing::info_span!(
            target: "portico::backend",
            parent: &self.span,
            "backend.call",
            otel.kind = "client",
            trace_id = %self.trace.trace_id(),
            service,
            http.request.method = %method,
            url.path = path,
        )
    }

    /// A span for a GraphQL field resolved by a backend call, child of the
    /// request's span.
    pub fn field_span(&self, field: &str, service: &str) -> tracing::Span {
        tracing::info_span!(
            target: "portico::graphql",
            parent: &self.span,
            "graphql.field",
            trace_id = %self.trace.trace_id(),
            graphql.field.name = field,
            service,
        )
    }

    /// Sets `traceparent` / `tracestate` on a backend request made in `span`.
    pub fn inject_trace(&self, headers: &mut HeaderMap, span: &tracing::Span) {
        self.trace.inject(headers, span);
    }
}

/// Adds the access log, request metrics and the request span around a service.
#[derive(Debug, Clone, Default)]
pub struct AccessLogLayer {
    telemetry: Telemetry,
}

impl AccessLogLayer {
    /// The layer, reporting into `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner, telemetry: self.telemetry.clone() }
    }
}

/// The access-log middleware.
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
    telemetry: Telemetry,
}

/// The request facts captured before the request is handed on.
#[derive(Debug)]
struct Entry {
    started: Instant,
    method: Method,
    /// The path and request id as the log line quotes them; left empty when
    /// no subscriber wants the line, so a request with access logs off
    /// copies neither.
    path: String,
    request_id: String,
    /// The router's path for named routes (`/graphql`, `/healthz`).
    log: Arc<RequestLog>,
    _in_flight: InFlight,
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
        let metrics = self.telemetry.metrics();
        let in_flight = metrics.request_started();
        let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("");
        let span = tracing::info_span!(
            target: "portico::request",
            parent: None,
            "request",
            otel.kind = "server",
            trace_id = tracing::field::Empty,
            request_id,
            http.request.method = %request.method(),
            url.path = request.uri().path(),
            graphql.operation.name = tracing::field::Empty,
        );
        // Trace context is believed from the socket peer, by the same
        // address record the rate limit and the proxy use.
        let trusted = request
            .extensions()
            .get::<ClientAddress>()
            .is_some_and(|address| self.telemetry.trusts_trace_context_from(address.peer));
        let remote = if trusted { RemoteParent::from_headers(request.headers()) } else { None };
        let trace = TraceContext::start(&span, remote);
        span.record("trace_id", tracing::field::display(trace.trace_id()));
        // Asked inside the request span, where the line is written, so that
        // span-scoped filters decide as they will for the line itself.
        let access_logged = span.in_scope(|| tracing::enabled!(target: "portico::access", tracing::Level::INFO));
        let (path, request_id) =
            if access_logged { (request.uri().path().to_owned(), request_id.to_owned()) } else { Default::default() };
        let log = Arc::new(RequestLog {
            route: OnceLock::new(),
            upstream: OnceLock::new(),
            operation: OnceLock::new(),
            caller: OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            trace,
            span,
            metrics: Arc::clone(metrics),
        });
        let entry = Entry {
            started: Instant::now(),
            method: request.method().clone(),
            path,
            request_id,
            log: Arc::clone(&log),
            _in_flight: in_flight,
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
        let result = {
            let _entered = this.entry.as_ref().map(|entry| entry.log.span.enter());
            std::task::ready!(this.inner.poll(cx))
        };
        Poll::Ready(result.map(|response| match this.entry.take() {
            Some(entry) => {
                let status = response.status();
                // hyper frames the answer by its `Content-Length` and, once
                // that many bytes are written, drops the body without polling
                // it to its end (and wrapped bodies may not report
                // `is_end_stream`), so the declared length is what tells a
                // whole answer from a cut one.
                let declared_length = response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok());
                response.map(|body| {
                    let declared_length = declared_length.or_else(|| body.size_hint().exact());
                    // An empty body may never be polled; it is complete already.
                    let complete = body.is_end_stream();
                    let finished = Finished { entry, status, bytes_out: 0, declared_length, complete };
                    Body::new(CountingBody { inner: body, counter: CounterTarget::Out(finished) })
                })
            }
            None => response,
        }))
    }
}

/// Where a counting body adds its bytes. `Out` is held inline: the
/// counting body is boxed into an axum `Body` anyway, and a second box
/// would be one more allocation per request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum CounterTarget {
    In(Arc<RequestLog>),
    Out(Finished),
}

/// The access-log line in waiting: written when dropped.
#[derive(Debug)]
struct Finished {
    entry: Entry,
    status: StatusCode,
    bytes_out: u64,
    /// The answer's length, when known before it is sent.
    declared_length: Option<u64>,
    /// Whether the body was sent whole.
    complete: bool,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let entry = &self.entry;
        let duration = entry.started.elapsed();
        let log = &entry.log;
        let route_label = log.route.get().map(|(route, _)| &**route);
        log.metrics.request_finished(route_label, &entry.method, log.operation.get(), self.status, duration);

        let _entered = log.span.enter();
        let (route, service) = log.route.get().map_or(("", ""), |(route, service)| (&**route, &**service));
        let (endpoint, retries) = log.upstream.get().map_or(("", 0), |(endpoint, retries)| (&**endpoint, *retries));
        let client = log.caller.get().map(tracing::field::display);
        tracing::info!(
            target: "portico::access",
            request_id = entry.request_id.as_str(),
            trace_id = %log.trace.trace_id(),
            method = %entry.method,
            path = %entry.path,
            client,
            route,
            service,
            endpoint,
            status = self.status.as_u16(),
            duration_ms = duration.as_secs_f64() * 1000.0,
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
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        // hyper stops polling once a sized body has delivered its length, so
        // the end is also noticed here (or by the declared length), not only
        // when `None` comes.
        let ended = this.inner.is_end_stream();
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
                finished.complete |= ended || finished.declared_length == Some(finished.bytes_out);
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

//! The listener: accepting connections, protecting the gateway from hostile
//! or broken clients at the protocol level, terminating HTTPS, and shutting
//! down gracefully.
//!
//! [`run`] takes an already bound listener, the gateway's service and a
//! shutdown future; it knows nothing of what the service does (the
//! composition root, `app`, builds it). With `[server.tls]`
//! the listener speaks HTTPS, and an optional second, plain-HTTP listener
//! only redirects to it.

mod config;
mod first_byte;
mod guard;
mod redirect;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub use config::{HstsConfig, HttpRedirectConfig, ReadinessConfig, ServerConfig, TlsConfig};
pub use guard::{HostGuard, ProtocolError};
pub use tls::{CertificateError, CertificateFile, TlsSetupError};

use crate::request::ConnectionInfo;
use crate::telemetry::{MetricsConfig, Telemetry};
use first_byte::FirstByteDeadline;
use tls::TlsTermination;

/// Why the listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// HTTPS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The metrics admin listener could not be bound.
    #[error("telemetry.metrics.listen: cannot listen on {address}: {source}")]
    MetricsBind {
        /// The configured address.
        address: SocketAddr,
        /// The bind error.
        source: io::Error,
    },
    /// The plain-HTTP redirect listener could not be bound.
    #[error("server.tls.http_redirect.listen: cannot listen on {address}: {source}")]
    RedirectBind {
        /// The configured address.
        address: SocketAddr,
        /// The bind error.
        source: io::Error,
    },
}

/// Whether the gateway is draining: set once, when shutdown starts, and
/// read by `/readyz`. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The service hyper calls for each request of one connection.
///
/// hyper calls a service by `&self`; hyper-util's `TowerToHyperService`
/// bridges that to tower's `&mut self` by cloning the whole layer stack
/// for every request (a reference count per layer, up and down again:
/// measured at 1.5 % of a passthrough request's instructions). The stack's
/// layers are always ready, so here the connection's one stack is borrowed
/// for the call instead; only if it were not ready would a call clone it
/// and wait.
///
/// While draining, answers to HTTP/1 requests carry `Connection: close`,
/// so that a keep-alive client (a pooled connection that a Service's
/// kube-proxy rule keeps pinned to this pod) opens a new connection, which
/// reaches a replica that is not going away, instead of racing the
/// listener's close. (HTTP/2 gets its GOAWAY from the graceful shutdown;
/// the header is illegal there.) Otherwise one atomic load per request.
struct ConnectionService<S> {
    /// Borrowed only inside `call`, never across an `.await`.
    stack: std::cell::RefCell<S>,
    draining: Draining,
}

impl<S> ConnectionService<S> {
    fn new(stack: S, draining: Draining) -> Self {
        Self { stack: std::cell::RefCell::new(stack), draining }
    }
}

type Answer = Result<axum::response::Response, Infallible>;
type CloseFn = fn(Answer) -> Answer;

/// The answer of a ready stack, or of a clone that had to wait.
type Called<S, R> = futures_util::future::Either<<S as tower::Service<R>>::Future, tower::util::Oneshot<S, R>>;

impl<S, B> hyper::service::Service<http::Request<B>> for ConnectionService<S>
where
    S: tower::Service<http::Request<B>, Response = axum::response::Response, Error = Infallible> + Clone,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        Called<S, http::Request<B>>,
        futures_util::future::Map<Called<S, http::Request<B>>, CloseFn>,
    >;

    fn call(&self, request: http::Request<B>) -> Self::Future {
        use futures_util::future::Either;
        use futures_util::FutureExt as _;
        use tower::ServiceExt as _;
        let closing = self.draining.is_draining() && request.version() <= http::Version::HTTP_11;
        let called = {
            let mut stack = self.stack.borrow_mut();
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            match stack.poll_ready(&mut context) {
                std::task::Poll::Ready(Ok(())) => Either::Left(stack.call(request)),
                std::task::Poll::Ready(Err(never)) => match never {},
                std::task::Poll::Pending => Either::Right(stack.clone().oneshot(request)),
            }
        };
        if closing {
            let close: CloseFn = |answer| {
                answer.map(|mut response| {
                    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    response
                })
            };
            Either::Right(called.map(close))
        } else {
            Either::Left(called)
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes; then marks
/// `draining` (so `/readyz` turns 503) and keeps accepting for
/// `server.readiness.drain_delay`, so that load balancers stop sending
/// traffic while it is still served; then stops accepting (on the redirect
/// listener too) and lets in-flight requests finish for up to
/// `server.shutdown_timeout`.
pub async fn run<S>(
    config: &ServerConfig,
    base_dir: &std::path::Path,
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    draining: Draining,
) -> Result<(), ServerError>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let tls = match &config.tls {
        Some(tls) => Some(TlsTermination::start(tls, base_dir)?),
        None => None,
    };
    let redirect = match config.tls.as_ref().and_then(|tls| tls.http_redirect.as_ref()) {
        Some(redirect) => {
            let redirect_listener = TcpListener::bind(redirect.listen)
                .await
                .map_err(|source| ServerError::RedirectBind { address: redirect.listen, source })?;
            let https_port = redirect
                .https_port
                .or_else(|| listener.local_addr().ok().map(|address| address.port()))
                .unwrap_or(config.listen.port());
            Some((redirect_listener, https_port))
        }
        None => None,
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_headers)
        .max_buf_size(usize::try_from(config.max_header_size.as_u64()).unwrap_or(usize::MAX).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_size.as_u64()).unwrap_or(u32::MAX));
    // Shared with the per-connection tasks that finish a TLS handshake first.
    let builder = Arc::new(builder);
    let connection_info = ConnectionInfo { tls: tls.is_some() };

    let graceful = GracefulShutdown::new();
    let drain_delay = config.readiness.drain_delay;
    let closing = draining.clone();
    let shutdown = async move {
        shutdown.await;
        draining.start();
        if !drain_delay.is_zero() {
            tracing::info!(
                ?drain_delay,
                "shutdown requested: /readyz answers 503 draining; still serving until the drain delay ends"
            );
            tokio::time::sleep(drain_delay).await;
        }
    };
    tokio::pin!(shutdown);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, tls = connection_info.tls, "portico listening");
    }
    if let Some(Ok(address)) = redirect.as_ref().map(|(redirect_listener, _)| redirect_listener.local_addr()) {
        tracing::info!(%address, "redirecting plain HTTP to HTTPS");
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted.map(|(stream, peer)| (stream, peer, false)),
            accepted = accept_optional(redirect.as_ref().map(|(redirect_listener, _)| redirect_listener)) => {
                accepted.map(|(stream, peer)| (stream, peer, true))
            }
            () = &mut shutdown => break,
        };
        let (stream, peer, redirecting) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let first_byte_timeout = config.header_read_timeout;
        if let (true, Some((_, https_port))) = (redirecting, &redirect) {
            let https_port = *https_port;
            let service = hyper::service::service_fn(move |request| redirect::serve_redirect(request, https_port));
            let stream = FirstByteDeadline::new(stream, first_byte_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            spawn_connection(graceful.watch(connection.into_owned()), peer);
            continue;
        }
        let service = service.clone().map_request(move |mut request: http::Request<_>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request.extensions_mut().insert(connection_info);
            request
        });
        let service = ConnectionService::new(service, closing.clone());
        match &tls {
            None => {
                let stream = FirstByteDeadline::new(stream, first_byte_timeout);
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                spawn_connection(graceful.watch(connection.into_owned()), peer);
            }
            Some(tls) => {
                // The handshake runs in the connection's own task, so a slow
                // or silent client never holds up the accept loop.
                let handshake = tls.acceptor().accept(stream);
                let handshake_timeout = config.header_read_timeout;
                let watcher = graceful.watcher();
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(handshake_timeout, handshake).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // The handshake's bytes do not count as the first request byte.
                    let stream = FirstByteDeadline::new(stream, first_byte_timeout);
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    }
                });
            }
        }
    }

    drop(listener);
    drop(redirect);
    tracing::info!("shutting down: no longer accepting, draining in-flight requests");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?config.shutdown_timeout, "drain timeout reached; closing remaining connections");
    }
    Ok(())
}

/// Stops the admin listener's task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the scrape path on `[telemetry.metrics] listen`, when configured,
/// until the returned guard is dropped.
pub(crate) async fn serve_admin(
    metrics: &MetricsConfig,
    telemetry: &Telemetry,
) -> Result<Option<AbortOnDrop>, ServerError> {
    let Some(address) = metrics.listen.filter(|_| metrics.enabled) else { return Ok(None) };
    let listener = TcpListener::bind(address).await.map_err(|source| ServerError::MetricsBind { address, source })?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, path = %metrics.path, "serving metrics");
    }
    let router = crate::telemetry::admin_router(metrics, Arc::clone(telemetry.metrics()));
    Ok(Some(AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    }))))
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept_optional(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Runs a connection that is being watched for graceful shutdown.
fn spawn_connection<E>(connection: impl Future<Output = Result<(), E>> + Send + 'static, peer: SocketAddr)
where
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, error = %error, "connection ended with an error");
        }
    });
}

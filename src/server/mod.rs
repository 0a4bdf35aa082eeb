//! The listener: accepting connections, protecting the gateway from hostile
//! or broken clients at the protocol level, and shutting down gracefully.
//!
//! [`serve`] takes an already bound listener and a shutdown future, so the
//! binary and the tests start the gateway the same way.

mod config;
mod guard;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use config::ServerConfig;
pub use guard::{protocol_guard, ProtocolError};

use crate::app::{app, AppState};
use crate::config::Config;
use crate::graphql::GraphqlSetupError;
use crate::upstream::{UpstreamBuildError, Upstreams};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A backend service could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamBuildError),
    /// The GraphQL endpoint could not be set up.
    #[error(transparent)]
    Graphql(#[from] GraphqlSetupError),
}

/// Serves `config` on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish for up to
/// `server.shutdown_timeout`.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let upstreams = Upstreams::new(&config.services)?;
    let _health_checks = upstreams.spawn_health_checks();
    let state = AppState::new(&config, upstreams)?;
    let router = app(state, &config);

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .max_headers(config.server.max_headers)
        .max_buf_size(usize::try_from(config.server.max_header_size.as_u64()).unwrap_or(usize::MAX).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.server.max_header_size.as_u64()).unwrap_or(u32::MAX));

    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "portico listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut request: http::Request<_>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request
        });
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, error = %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!("shutting down: no longer accepting, draining in-flight requests");
    if tokio::time::timeout(config.server.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?config.server.shutdown_timeout, "drain timeout reached; closing remaining connections");
    }
    Ok(())
}

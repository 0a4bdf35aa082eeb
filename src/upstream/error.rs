//! What can go wrong when calling a backend.

use std::sync::Arc;
use std::time::Duration;

/// A failed backend call. Messages name the service, never an address: the
/// edge that answers clients relies on that. The replica that failed is
/// carried for logs ([`UpstreamError::attempt`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The service has no replica at all to try.
    #[error("no healthy endpoint for service {service}")]
    NoHealthyEndpoint {
        /// The service called.
        service: Arc<str>,
    },
    /// No connection could be opened.
    #[error("could not connect to service {service}")]
    Connect {
        /// The service called.
        service: Arc<str>,
        /// The replica tried last (`host:port`).
        endpoint: Arc<str>,
        /// Retries made before the last attempt.
        retries: u32,
        /// The client's error, for logs.
        #[source]
        source: AttemptError,
    },
    /// The replica did not start answering in time.
    #[error("service {service} did not answer within {after:?}")]
    Timeout {
        /// The service called.
        service: Arc<str>,
        /// The replica tried last (`host:port`).
        endpoint: Arc<str>,
        /// Retries made before the last attempt.
        retries: u32,
        /// The configured limit.
        after: Duration,
    },
    /// The caller's request body failed while it was forwarded (too large,
    /// too slow, malformed framing).
    #[error("the request body could not be forwarded to service {service}")]
    RequestBody {
        /// The service called.
        service: Arc<str>,
        /// The replica tried last (`host:port`).
        endpoint: Arc<str>,
        /// Retries made before the last attempt.
        retries: u32,
        /// Why the body failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The replica answered something that is not HTTP, or hung up.
    #[error("service {service} sent an invalid or incomplete answer")]
    Protocol {
        /// The service called.
        service: Arc<str>,
        /// The replica tried last (`host:port`).
        endpoint: Arc<str>,
        /// Retries made before the last attempt.
        retries: u32,
        /// The client's error, for logs.
        #[source]
        source: AttemptError,
    },
}

impl UpstreamError {
    /// The service the failed call was for.
    pub fn service(&self) -> &str {
        match self {
            Self::NoHealthyEndpoint { service }
            | Self::Connect { service, .. }
            | Self::Timeout { service, .. }
            | Self::RequestBody { service, .. }
            | Self::Protocol { service, .. } => service,
        }
    }

    /// The replica the last attempt went to and the retries made before it,
    /// for the access log; `None` when no replica was tried.
    pub fn attempt(&self) -> Option<(&Arc<str>, u32)> {
        match self {
            Self::NoHealthyEndpoint { .. } => None,
            Self::Connect { endpoint, retries, .. }
            | Self::Timeout { endpoint, retries, .. }
            | Self::RequestBody { endpoint, retries, .. }
            | Self::Protocol { endpoint, retries, .. } => Some((endpoint, *retries)),
        }
    }
}

/// Why one attempt on a replica failed before its answer's head.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No connection could be opened (TCP or TLS).
    #[error("could not connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed: the request could not be written, or the
    /// answer's head was not HTTP, or the replica hung up.
    #[error(transparent)]
    Http(hyper::Error),
}

impl AttemptError {
    /// Whether nothing reached the replica because no connection was made.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

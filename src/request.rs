//! What every layer and door reads off a request, whoever put it there:
//! the request-id header and how the client connected.
//!
//! A leaf, so that the layers, the doors, telemetry and the server can all
//! name these without importing one another.

/// The request id header, kept from the client or generated.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// How the client reached the gateway; the accept loop puts it into every
/// request's extensions, next to the peer address (`ConnectInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Whether the connection is TLS (HTTPS).
    pub tls: bool,
}

impl ConnectionInfo {
    /// The scheme the client used, as `X-Forwarded-Proto` reports it.
    pub fn scheme(self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

//! The `[server]` section: the listener and the limits that protect it.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::Problems;

/// Listener settings and the limits applied to every client connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to accept connections on.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones are answered 413.
    pub request_body_limit: ByteSize,
    /// Time a client has to send a complete request head. Hyper starts this
    /// clock when it waits for the next request, so it also closes keep-alive
    /// connections that stay idle this long.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest number of request headers.
    pub max_headers: usize,
    /// Largest request head (request line plus headers), answered 431 above it.
    pub max_header_size: ByteSize,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            request_body_limit: ByteSize::mib(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_size: ByteSize::kib(32),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.header_read_timeout.is_zero() {
            problems.push("server.header_read_timeout", "must be greater than zero, e.g. \"30s\"");
        }
        if self.body_read_timeout.is_zero() {
            problems.push("server.body_read_timeout", "must be greater than zero, e.g. \"30s\"");
        }
        if self.max_headers == 0 {
            problems.push("server.max_headers", "must be at least 1 (100 is a common limit)");
        }
        if self.max_header_size < ByteSize::kib(1) {
            problems.push("server.max_header_size", "must be at least \"1KiB\" (\"32KiB\" is a common limit)");
        }
    }
}

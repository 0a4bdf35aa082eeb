//! Request checks that belong to the protocol rather than to any route.
//!
//! Framing attacks are handled below this layer: hyper refuses conflicting
//! `Content-Length`s and bad chunk sizes with 400, and for a request with
//! both `Content-Length` and `Transfer-Encoding` it drops the length, reads
//! the chunked body and closes the connection after answering (RFC 9112
//! 6.3), so a smuggled second request is never read.

use http::uri::Authority;
use http::{header, Request, Version};

use crate::check::Check;

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
/// door sees them (a [`Check`] for the [`crate::check::CheckLayer`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostGuard;

impl<B> Check<B> for HostGuard {
    type Error = ProtocolError;

    fn check(&self, request: &mut Request<B>) -> Result<(), ProtocolError> {
        check(request)
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

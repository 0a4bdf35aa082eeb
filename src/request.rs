//! What every layer and door reads off a request, whoever put it there:
//! the request-id header and how the client connected; and the one way
//! headers are removed on the hot path.
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

/// Removes each of `names` that `headers` holds. A request or an answer
/// carries a handful of headers and usually none of these, so comparing
/// the names present costs less than a hash and a probe for each absent
/// name (measured: ten removals per passthrough request were 2 % of its
/// instructions).
pub fn remove_headers(headers: &mut http::HeaderMap, names: &[http::HeaderName]) {
    for name in names {
        if headers.keys().any(|present| present == name) {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn only_the_named_headers_are_removed_every_value_of_them() {
        let mut headers = HeaderMap::new();
        headers.append("server", HeaderValue::from_static("nginx"));
        headers.append("x-powered-by", HeaderValue::from_static("a"));
        headers.append("x-powered-by", HeaderValue::from_static("b"));
        headers.append("content-type", HeaderValue::from_static("application/json"));
        let names =
            [HeaderName::from_static("x-powered-by"), http::header::SERVER, HeaderName::from_static("x-absent")];
        super::remove_headers(&mut headers, &names);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["content-type"], "application/json");
    }
}

//! The plain-HTTP listener's only answer: go to the same URL over HTTPS.
//!
//! It mirrors NGINX's `return 301 https://$host$request_uri`: the host the
//! client asked for (without its port), the HTTPS port unless it is 443,
//! and the path and query unchanged. Nothing else of the gateway runs
//! here, so no request reaches a backend over plain HTTP.

use std::convert::Infallible;

use bytes::Bytes;
use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Full;

/// Answers `request` with a 301 to its HTTPS URL, or 400 when it names no
/// valid host.
pub(super) fn redirect_to_https<B>(request: &Request<B>, https_port: u16) -> Response<Full<Bytes>> {
    match https_location(request, https_port) {
        Some(location) => {
            let mut response = Response::new(Full::default());
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        None => {
            let mut response = Response::new(Full::from("the request needs a valid Host header\n"));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// The hyper service of the redirect listener.
pub(super) async fn serve_redirect<B>(
    request: Request<B>,
    https_port: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(redirect_to_https(&request, https_port))
}

fn https_location<B>(request: &Request<B>, https_port: u16) -> Option<HeaderValue> {
    let authority = match (request.headers().get(header::HOST), request.version()) {
        (Some(host), _) => Authority::try_from(host.as_bytes()).ok()?,
        (None, Version::HTTP_2 | Version::HTTP_3) => request.uri().authority()?.clone(),
        (None, _) => return None,
    };
    // A Host header is `host[:port]` (RFC 9110 7.2); user info is not allowed
    // and would make the redirect target ambiguous.
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let path_and_query = request.uri().path_and_query().map_or("/", |path| path.as_str());
    let path_and_query = if path_and_query.starts_with('/') { path_and_query } else { "/" };
    let location = if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    };
    HeaderValue::try_from(location).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, target: &str, https_port: u16) -> Option<String> {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = redirect_to_https(&request.body(()).expect("request"), https_port);
        match response.status() {
            StatusCode::MOVED_PERMANENTLY => {
                Some(response.headers()[header::LOCATION].to_str().expect("ascii").to_owned())
            }
            StatusCode::BAD_REQUEST => None,
            other => panic!("unexpected status {other}"),
        }
    }

    #[test]
    fn the_port_is_replaced_and_the_path_and_query_kept() {
        assert_eq!(
            location(Some("Gateway.Example:8081"), "/api/x?a=1&b=%20", 8443).as_deref(),
            Some("https://gateway.example:8443/api/x?a=1&b=%20")
        );
        assert_eq!(location(Some("gateway.example"), "/", 443).as_deref(), Some("https://gateway.example/"));
        assert_eq!(location(Some("[::1]:80"), "/a", 8443).as_deref(), Some("https://[::1]:8443/a"));
        assert_eq!(location(Some("10.0.0.1"), "*", 443).as_deref(), Some("https://10.0.0.1/"));
    }

    #[test]
    fn requests_without_a_valid_host_are_refused() {
        assert_eq!(location(None, "/", 443), None);
        assert_eq!(location(Some(""), "/", 443), None);
        assert_eq!(location(Some("a b"), "/", 443), None);
        assert_eq!(location(Some("user@evil.example"), "/", 443), None);
    }
}

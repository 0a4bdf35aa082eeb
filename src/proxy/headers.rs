//! Header rules for passthrough: what is removed, added or rewritten on the
//! way to the backend and back.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::client::ClientAddress;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether `name` describes one connection, not the message (RFC 9110
/// 7.6.1), so that it never crosses the gateway. By its text: a `match` on
/// strings compiles to a switch on the length and at most one comparison,
/// where comparing with each name of a list took nine (measured: those
/// comparisons were 2 % of a passthrough request's instructions).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none, or `Connection: keep-alive` alone (most
    // backends' answers): one pass over the few names present decides.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let doomed: Vec<HeaderName> = {
        let connection = headers.get_all(header::CONNECTION);
        // `keep-alive`, the usual token, is a hop name anyway.
        let names_more =
            connection.iter().any(|value| !value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"keep-alive"));
        let listed = |name: &HeaderName| {
            connection
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
        };
        headers.keys().filter(|name| is_hop_by_hop(name) || (names_more && listed(name))).cloned().collect()
    };
    for name in &doomed {
        headers.remove(name);
    }
}

/// Removes the headers a route keeps from clients.
pub fn hide(headers: &mut HeaderMap, hidden: &[HeaderName]) {
    crate::request::remove_headers(headers, hidden);
}

/// Rewrites a client's headers for the backend: hop-by-hop headers go,
/// forwarding headers describe the original request: `X-Forwarded-For`
/// gains the socket peer, `X-Real-IP` is the client (the peer, or the
/// client behind trusted proxies). (Identity headers were already replaced
/// by the authentication layer.)
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    address: ClientAddress,
    original_host: Option<&HeaderValue>,
    client_scheme: &'static str,
) {
    remove_hop_by_hop(headers);
    headers.remove(header::HOST);

    // An address prints as plain ASCII, so these conversions cannot fail.
    if let Some(peer) = address_value(address.peer) {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|value| value.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => {
                HeaderValue::try_from(format!("{earlier}, {}", address.peer)).unwrap_or_else(|_| peer.clone())
            }
            _ => peer.clone(),
        };
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        let real_ip = if address.client == address.peer { peer } else { address_value(address.client).unwrap_or(peer) };
        headers.insert(X_REAL_IP, real_ip);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client_scheme));
    match original_host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// An address as a header value, written without a growing `String` (and
/// an IPv4 address, the usual case, without the formatting machinery: it
/// is written on every forwarded request).
fn address_value(address: IpAddr) -> Option<HeaderValue> {
    use std::io::Write as _;
    // The longest address text: eight groups of four hex digits, the last
    // two written as a dotted IPv4 address.
    let mut text = [0_u8; 45];
    let length = match address {
        IpAddr::V4(v4) => {
            let mut length = 0;
            let mut digits = itoa::Buffer::new();
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    text[length] = b'.';
                    length += 1;
                }
                let written = digits.format(octet).as_bytes();
                text[length..length + written.len()].copy_from_slice(written);
                length += written.len();
            }
            length
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{address}").ok()?;
            usize::try_from(cursor.position()).ok()?
        }
    };
    HeaderValue::from_bytes(&text[..length]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_cleaned_and_forwarding_headers_added() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("gw.example"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        let host = headers.get(header::HOST).cloned();

        let peer = "10.0.0.7".parse().expect("ip");
        prepare_request_headers(&mut headers, ClientAddress { peer, client: peer }, host.as_ref(), "http");

        for gone in ["host", "connection", "x-secret-hop", "te"] {
            assert!(!headers.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.7");
        assert_eq!(headers["x-real-ip"], "10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "gw.example");
        assert_eq!(headers["accept"], "application/json");
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers_and_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(header::SERVER, HeaderValue::from_static("nginx"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["server", "content-type"]);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.append(header::CONNECTION, HeaderValue::from_static("X-Hop, upgrade"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("close", HeaderValue::from_static("named by the connection header too"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["etag"]);
    }

    #[test]
    fn behind_a_trusted_proxy_the_real_ip_is_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7"));
        let address =
            ClientAddress { peer: "10.0.0.2".parse().expect("ip"), client: "198.51.100.7".parse().expect("ip") };
        prepare_request_headers(&mut headers, address, None, "https");
        assert_eq!(headers["x-forwarded-for"], "198.51.100.7, 10.0.0.2");
        assert_eq!(headers["x-real-ip"], "198.51.100.7");
    }

    #[test]
    fn the_longest_addresses_are_written_whole() {
        for text in [
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "255.255.255.255",
            "0.0.0.0",
            "10.0.20.7",
        ] {
            let address: IpAddr = text.parse().expect("ip");
            assert_eq!(address_value(address).expect("a value"), text);
        }
    }
}

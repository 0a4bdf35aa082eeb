//! Who is calling: the client's address, and the one caller key.
//!
//! Rate limiting, caching and logging all need to name the caller, and the
//! proxy tells backends the client's address (`X-Real-IP`). They share one
//! rule, here: the client's address is the socket peer unless the peer is a
//! trusted proxy (`rate_limiting.trusted_proxies`), in which case it is the
//! last address in `X-Forwarded-For` (or RFC 7239 `Forwarded`) that is not
//! itself a trusted proxy. [`ClientAddressLayer`] applies it once per
//! request and leaves a [`ClientAddress`] in request extensions; a
//! [`Caller`] is the verified subject, else the API key's name, else that
//! address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::identity::Identity;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts peers in `networks`.
    pub fn new(networks: &[IpNet]) -> Self {
        Self { networks: Arc::from(networks) }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(&address))
    }

    /// The client's address for a request from `peer` (see the module docs).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded_for = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|item| item.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        let chain = if forwarded_for.is_empty() { forwarded_addresses(headers) } else { forwarded_for };
        chain.into_iter().rev().find(|address| !self.trusts(*address)).unwrap_or(peer)
    }
}

/// Addresses of the RFC 7239 `Forwarded: for=...` header, in order.
fn forwarded_addresses(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all(FORWARDED)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            if !name.eq_ignore_ascii_case("for") {
                return None;
            }
            let value = value.trim_matches('"');
            let host = value.strip_prefix('[').and_then(|rest| rest.split(']').next()).unwrap_or_else(|| {
                // `1.2.3.4:5678` carries a port; bare IPv6 does not appear unbracketed.
                value.rsplit_once(':').filter(|(host, _)| !host.contains(':')).map_or(value, |(host, _)| host)
            });
            host.parse().ok()
        })
        .collect()
}

/// Where a request came from, in request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The socket peer.
    pub peer: IpAddr,
    /// The client, through trusted proxies.
    pub client: IpAddr,
}

impl ClientAddress {
    /// The address recorded in a request's extensions, or the unspecified address for
    /// a request that did not come through the listener (tests).
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions
            .get::<Self>()
            .copied()
            .unwrap_or(Self { peer: Ipv4Addr::UNSPECIFIED.into(), client: Ipv4Addr::UNSPECIFIED.into() })
    }
}

/// Records every request's [`ClientAddress`].
#[derive(Debug, Clone)]
pub struct ClientAddressLayer {
    trusted: TrustedProxies,
}

impl ClientAddressLayer {
    /// The layer, believing forwarding headers from `trusted` only.
    pub fn new(trusted: TrustedProxies) -> Self {
        Self { trusted }
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = ClientAddressService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddressService { inner, trusted: self.trusted.clone() }
    }
}

/// The service of [`ClientAddressLayer`].
#[derive(Debug, Clone)]
pub struct ClientAddressService<S> {
    inner: S,
    trusted: TrustedProxies,
}

impl<S, B> Service<Request<B>> for ClientAddressService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            let peer = peer.ip();
            let client = self.trusted.client_address(peer, request.headers());
            request.extensions_mut().insert(ClientAddress { peer, client });
        }
        self.inner.call(request)
    }
}

/// The one name of a caller, for per-client limits, per-caller cache
/// partitions and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A person: the verified token's `sub`.
    Subject(Arc<str>),
    /// A machine client: the verified API key's name.
    ApiClient(Arc<str>),
    /// Nobody verified: the client's address.
    Address(IpAddr),
}

impl Caller {
    /// The caller of a request with this identity from this address.
    pub fn of(identity: Option<&Identity>, address: IpAddr) -> Self {
        match identity {
            Some(Identity { subject: Some(subject), .. }) => Self::Subject(Arc::from(subject.as_str())),
            Some(Identity { client: Some(client), .. }) => Self::ApiClient(Arc::from(client.as_str())),
            _ => Self::Address(address),
        }
    }

    /// The verified caller only, never an address.
    pub fn verified(identity: &Identity) -> Option<Self> {
        match Self::of(Some(identity), Ipv4Addr::UNSPECIFIED.into()) {
            Self::Address(_) => None,
            caller => Some(caller),
        }
    }
}

/// `sub:<subject>`, `key:<name>` or `ip:<address>`: the form used in store
/// keys and logs.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subject(subject) => write!(f, "sub:{subject}"),
            Self::ApiClient(client) => write!(f, "key:{client}"),
            Self::Address(address) => write!(f, "ip:{address}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted = TrustedProxies::new(&["10.0.0.0/8".parse().expect("cidr")]);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let untrusted_peer: IpAddr = "203.0.113.5".parse().expect("ip");
        assert_eq!(trusted.client_address(untrusted_peer, &spoofed), untrusted_peer, "a direct client cannot pick");

        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(
            trusted.client_address(proxy, &chain),
            "198.51.100.7".parse::<IpAddr>().expect("ip"),
            "the last untrusted hop"
        );
        let forwarded = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(trusted.client_address(proxy, &forwarded), "2001:db8::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(trusted.client_address(proxy, &HeaderMap::new()), proxy);
    }

    #[test]
    fn the_caller_is_the_subject_else_the_key_else_the_address() {
        let identity = |subject: Option<&str>, client: Option<&str>| Identity {
            subject: subject.map(str::to_owned),
            client: client.map(str::to_owned),
            scopes: Default::default(),
            claims: Arc::new(serde_json::Value::Null),
            forwarded_headers: Vec::new(),
        };
        let address: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(Caller::of(Some(&identity(Some("7"), Some("ci"))), address).to_string(), "sub:7");
        assert_eq!(Caller::of(Some(&identity(None, Some("ci"))), address).to_string(), "key:ci");
        assert_eq!(Caller::of(None, address).to_string(), "ip:192.0.2.1");
        assert_eq!(Caller::verified(&identity(None, None)), None);
    }
}

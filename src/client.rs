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
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, Request};
use ipnet::IpNet;
use serde::Deserialize;
use tower::{Layer, Service};

use crate::identity::Identity;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// A network written as a CIDR (`10.0.0.0/8`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNetwork(IpNet);

impl PeerNetwork {
    /// Whether `address` is inside the network.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.contains(&address.to_canonical())
    }
}

impl FromStr for PeerNetwork {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(network) = text.parse::<IpNet>() {
            return Ok(Self(network.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|address| Self(IpNet::from(address)))
            .map_err(|_| format!("{text:?} is not a network; write e.g. \"10.0.0.0/8\" or \"127.0.0.1\""))
    }
}

impl<'de> Deserialize<'de> for PeerNetwork {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `peer` is in any of `networks` (the one membership rule: trusted
/// proxies, trusted trace peers and scrape peers alike).
pub fn peer_in(networks: &[PeerNetwork], peer: IpAddr) -> bool {
    networks.iter().any(|network| network.contains(peer))
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Arc<[PeerNetwork]>,
}

impl TrustedProxies {
    /// Trusts peers in `networks`.
    pub fn new(networks: &[PeerNetwork]) -> Self {
        Self { networks: Arc::from(networks) }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        peer_in(&self.networks, address)
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
        match Name::of(identity, address) {
            Name::Subject(subject) => Self::Subject(Arc::from(subject)),
            Name::ApiClient(client) => Self::ApiClient(Arc::from(client)),
            Name::Address(address) => Self::Address(address),
        }
    }

    /// The caller's key text (see [`Display`](fmt::Display)) without building
    /// a `Caller`: what store keys need on the hot path.
    pub fn key(identity: Option<&Identity>, address: IpAddr) -> String {
        Name::of(identity, address).to_string()
    }

    /// The verified caller only, never an address.
    pub fn verified(identity: &Identity) -> Option<Self> {
        match Self::of(Some(identity), Ipv4Addr::UNSPECIFIED.into()) {
            Self::Address(_) => None,
            caller => Some(caller),
        }
    }

    fn name(&self) -> Name<'_> {
        match self {
            Self::Subject(subject) => Name::Subject(subject),
            Self::ApiClient(client) => Name::ApiClient(client),
            Self::Address(address) => Name::Address(*address),
        }
    }
}

/// `sub:<subject>`, `key:<name>` or `ip:<address>`: the form used in store
/// keys and logs.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.name().fmt(f)
    }
}

/// A caller, borrowed from the identity: the one rule, and its text.
enum Name<'a> {
    Subject(&'a str),
    ApiClient(&'a str),
    Address(IpAddr),
}

impl<'a> Name<'a> {
    fn of(identity: Option<&'a Identity>, address: IpAddr) -> Self {
        match identity {
            Some(Identity { subject: Some(subject), .. }) => Self::Subject(subject),
            Some(Identity { client: Some(client), .. }) => Self::ApiClient(client),
            _ => Self::Address(address),
        }
    }
}

impl fmt::Display for Name<'_> {
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
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        let chain = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            trusted.client_address(mapped, &chain),
            "198.51.100.7".parse::<IpAddr>().expect("ip"),
            "a trusted proxy on a dual-stack socket is still trusted"
        );
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
    fn networks_accept_cidrs_and_single_addresses() {
        let networks: Vec<PeerNetwork> =
            ["10.0.0.0/8", "127.0.0.1", "::1"].iter().map(|text| text.parse().expect("valid")).collect();
        assert!(peer_in(&networks, "10.1.2.3".parse().expect("ip")));
        assert!(peer_in(&networks, "127.0.0.1".parse().expect("ip")));
        assert!(peer_in(&networks, "::ffff:127.0.0.1".parse().expect("ip")), "IPv4-mapped addresses match");
        assert!(!peer_in(&networks, "192.168.0.1".parse().expect("ip")));
        assert!("not-a-network".parse::<PeerNetwork>().is_err());
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
        assert_eq!(Caller::key(Some(&identity(None, Some("ci"))), address), "key:ci", "the same text, borrowed");
        assert_eq!(Caller::verified(&identity(None, None)), None);
    }
}

//! DNS discovery of a service's replicas (`discovery = "dns"`): each
//! endpoint URL's host is a name (a Kubernetes headless service, a Route 53
//! record) whose A/AAAA records are the replicas, asked again every
//! `dns_refresh` or when the records' TTL runs out, whichever comes first.
//!
//! This module only asks DNS and says when to ask again; the service
//! (`mod.rs`) turns the answer into replicas, keeping those whose address
//! stays (their pools and health with them) and letting removed ones drain.
//! A failed or empty answer is never applied: the last good set stays.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// The shortest wait a record's TTL can impose, so that a TTL of 0 does not
/// turn the refresh into a busy loop. A shorter `dns_refresh` still applies.
const TTL_FLOOR: Duration = Duration::from_secs(1);

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The resolver could not be set up (no usable `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
    /// The lookup failed (timeout, refusal, no such name).
    #[error("looking up {name:?} failed: {message}")]
    Lookup {
        /// The name asked for.
        name: String,
        /// The resolver's complaint.
        message: String,
    },
    /// The name exists but has no address.
    #[error("{name:?} has no A or AAAA record")]
    Empty {
        /// The name asked for.
        name: String,
    },
}

/// What one name resolved to.
#[derive(Debug)]
pub struct Resolved {
    /// The addresses, deduplicated, in the order DNS gave them.
    pub addresses: Vec<IpAddr>,
    /// How long the answer may be used.
    pub ttl: Duration,
}

/// A resolver asking `server`, or the servers of `/etc/resolv.conf`. Its
/// cache is off: the refresh loop decides when to ask again, by the TTL.
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(address) => {
            let mut name_server = NameServerConfig::udp_and_tcp(address.ip());
            for connection in &mut name_server.connections {
                connection.port = address.port();
            }
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(vec![name_server]), provider)
        }
        None => TokioResolver::builder(provider).map_err(|error| DiscoveryError::Setup(error.to_string()))?,
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().map_err(|error| DiscoveryError::Setup(error.to_string()))
}

/// Every address of `name`. An answer without any is an error, so that
/// it is never mistaken for "every replica is gone".
pub async fn resolve(resolver: &TokioResolver, name: &str) -> Result<Resolved, DiscoveryError> {
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|error| DiscoveryError::Lookup { name: name.to_owned(), message: error.to_string() })?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for address in lookup.iter() {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err(DiscoveryError::Empty { name: name.to_owned() });
    }
    let ttl = lookup.valid_until().saturating_duration_since(Instant::now());
    Ok(Resolved { addresses, ttl })
}

/// When to ask again: after `refresh`, or sooner when the answer's `ttl`
/// runs out, but never sooner than a second because of the TTL.
pub fn next_refresh(refresh: Duration, ttl: Option<Duration>) -> Duration {
    match ttl {
        Some(ttl) => refresh.min(ttl.max(TTL_FLOOR)),
        None => refresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_brings_the_refresh_forward_but_cannot_spin() {
        let refresh = Duration::from_secs(30);
        assert_eq!(next_refresh(refresh, None), refresh);
        assert_eq!(next_refresh(refresh, Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(next_refresh(refresh, Some(Duration::from_secs(300))), refresh);
        assert_eq!(next_refresh(refresh, Some(Duration::ZERO)), TTL_FLOOR);
        let short = Duration::from_millis(100);
        assert_eq!(next_refresh(short, Some(Duration::ZERO)), short, "a configured refresh is kept");
    }
}

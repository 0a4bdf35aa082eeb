//! The `[services.<name>]` sections: where a backend lives and how the
//! gateway talks to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::Deserialize;
use tokio_rustls::rustls::RootCertStore;

use super::tls::load_ca_file;
use crate::problems::Problems;

/// One backend service: its endpoints and the client policy used for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Base URLs of the service's replicas, such as `"http://127.0.0.1:8001"`
    /// or `"https://payment.internal"`, or tables `{ url = "...", weight = 3 }`.
    pub endpoints: Vec<EndpointConfig>,
    /// Where the replicas come from: `"static"` (each endpoint URL is one
    /// replica) or `"dns"` (each endpoint URL's host is a DNS name, and each
    /// of its A/AAAA records is a replica, re-resolved every `dns_refresh`).
    pub discovery: Discovery,
    /// With `discovery = "dns"`: the longest time between two resolutions;
    /// a record's shorter TTL brings the next one forward (never below a
    /// second, unless this is shorter).
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// With `discovery = "dns"`: the DNS server asked, such as
    /// `"10.96.0.10:53"`; without it, the servers of `/etc/resolv.conf`.
    pub dns_server: Option<SocketAddr>,
    /// How a request picks a replica.
    pub load_balancing: LoadBalancing,
    /// Time allowed to open a TCP connection to a replica.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a replica to start answering, and the longest pause
    /// allowed between two pieces of its answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per replica.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Active health checks.
    pub health_check: HealthCheckConfig,
    /// Ejection of replicas that keep failing real traffic.
    pub passive_health: PassiveHealthConfig,
    /// Retries of failed requests on another replica.
    pub retry: RetryConfig,
    /// How the certificates of `https://` endpoints are verified.
    pub tls: UpstreamTlsConfig,
    /// Header rules for every call to the service (read by the doors, not
    /// by this module).
    pub headers: crate::headers::HeaderRulesConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            discovery: Discovery::default(),
            dns_refresh: Duration::from_secs(30),
            dns_server: None,
            load_balancing: LoadBalancing::default(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            max_idle_per_host: 64,
            idle_timeout: Duration::from_secs(90),
            health_check: HealthCheckConfig::default(),
            passive_health: PassiveHealthConfig::default(),
            retry: RetryConfig::default(),
            tls: UpstreamTlsConfig::default(),
            headers: crate::headers::HeaderRulesConfig::default(),
        }
    }
}

/// `[services.<name>.tls]`: trust for `https://` endpoints. Certificates are
/// always verified (chain and host name); this only chooses whom to trust.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file with the CA certificate(s) that issue the service's
    /// certificates, typically a private CA. When set, only these CAs are
    /// trusted for this service; without it, the public web CAs (Mozilla's
    /// list, built in) are. Relative paths are resolved against the
    /// configuration file's folder.
    pub ca_file: Option<PathBuf>,
    /// The CA file as read during validation.
    #[serde(skip)]
    pub(crate) ca_roots: Option<Arc<RootCertStore>>,
}

/// A replica's base URL, optionally weighted.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "an endpoint URL string such as \"http://127.0.0.1:8001\", or a table { url = \"...\", weight = 2 }"
)]
pub enum EndpointConfig {
    /// Just the URL, weight 1.
    Url(String),
    /// URL and weight (used by `load_balancing = "weighted"`).
    Weighted {
        /// Base URL.
        url: String,
        /// Relative share of traffic, at least 1.
        weight: u32,
    },
}

impl EndpointConfig {
    /// The configured URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Url(url) | Self::Weighted { url, .. } => url,
        }
    }

    /// The configured weight (1 when not given).
    pub fn weight(&self) -> u32 {
        match self {
            Self::Url(_) => 1,
            Self::Weighted { weight, .. } => *weight,
        }
    }

    /// The scheme and authority requests are sent to.
    pub fn target(&self) -> Result<(Scheme, Authority), String> {
        const EXAMPLE: &str = "write it like \"http://127.0.0.1:8001\" or \"https://api.internal\"";
        let url = self.url();
        let uri: Uri =
            url.parse().map_err(|_| format!("{url:?} is not a URL; write it like \"http://127.0.0.1:8001\""))?;
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => Scheme::HTTP,
            Some(scheme) if *scheme == Scheme::HTTPS => Scheme::HTTPS,
            _ => return Err(format!("{url:?}: only http:// and https:// endpoints are supported; {EXAMPLE}")),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("{url:?} has no host; write it like \"http://127.0.0.1:8001\""));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{url:?}: an endpoint is a base URL without path or query; put path prefixes in routes"
            ));
        }
        Ok((scheme, authority))
    }
}

/// Where a service's replicas come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Each endpoint URL is one replica.
    #[default]
    Static,
    /// Each address an endpoint URL's host name resolves to is a replica.
    Dns,
}

/// The replica selection strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Each replica in turn.
    #[default]
    RoundRobin,
    /// In turn, in proportion to the endpoints' weights.
    Weighted,
    /// The less busy of two random replicas (power of two choices).
    LeastRequests,
}

/// Active health checks: a `GET` to each replica at an interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Whether checks run at all.
    pub enabled: bool,
    /// Path requested; a 2xx answer counts as healthy.
    pub path: String,
    /// Time between two checks of one replica.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time between two checks of a replica out of rotation (failing checks
    /// or ejected), so that one coming back is noticed within about this
    /// long. The shorter of this and `interval` applies.
    #[serde(with = "humantime_serde")]
    pub unhealthy_interval: Duration,
    /// Time a check may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks that mark a replica down.
    pub unhealthy_threshold: u32,
    /// Consecutive successful checks that mark a down replica up again.
    pub healthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/health/".to_owned(),
            interval: Duration::from_secs(5),
            unhealthy_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// Passive health: replicas failing real requests are taken out of rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Whether failing replicas are ejected.
    pub enabled: bool,
    /// Consecutive connect errors, timeouts or 5xx answers that eject a replica.
    pub consecutive_failures: u32,
    /// Length of the first ejection; each further ejection doubles it. The
    /// first successful answer or passed health check ends an ejection early.
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Upper bound of the growing ejection time.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

/// Retries on another replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most retries of one request (0 turns retries off).
    pub attempts: u32,
    /// Retries may add at most this share of the service's requests, in percent.
    pub budget_percent: f32,
    /// Retries always allowed per second regardless of the share, so that a
    /// quiet service can still fail over.
    pub min_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { attempts: 2, budget_percent: 20.0, min_per_second: 10 }
    }
}

impl ServiceConfig {
    /// Reads `tls.ca_file` (relative to `base_dir`) so that `portico check`
    /// reports an unusable file and the client is built from what was read.
    pub(crate) fn load_tls_files(&mut self, base_dir: &Path, key: &str, problems: &mut Problems) {
        let Some(ca_file) = &self.tls.ca_file else { return };
        match load_ca_file(&base_dir.join(ca_file)) {
            Ok(roots) => self.tls.ca_roots = Some(Arc::new(roots)),
            Err(error) => problems.push(format!("{key}.tls.ca_file"), error.to_string()),
        }
    }

    pub(crate) fn validate(&self, key: &str, problems: &mut Problems) {
        if self.endpoints.is_empty() {
            problems.push(
                format!("{key}.endpoints"),
                "a service needs at least one endpoint, e.g. endpoints = [\"http://127.0.0.1:8001\"]",
            );
        }
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if let Err(message) = endpoint.target() {
                problems.push(format!("{key}.endpoints[{index}]"), message);
            }
            let literal = endpoint.target().ok().is_some_and(|(_, authority)| {
                let host = authority.host();
                host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
            });
            if self.discovery == Discovery::Dns && literal {
                problems.push(
                    format!("{key}.endpoints[{index}]"),
                    "with discovery = \"dns\" the host must be a DNS name such as \"http://users.internal:8001\"; \
                     an IP address has nothing to resolve (use discovery = \"static\")",
                );
            }
            if endpoint.weight() == 0 {
                problems.push(format!("{key}.endpoints[{index}].weight"), "must be at least 1");
            }
        }
        for (name, duration) in [
            ("connect_timeout", self.connect_timeout),
            ("dns_refresh", self.dns_refresh),
            ("request_timeout", self.request_timeout),
            ("health_check.interval", self.health_check.interval),
            ("health_check.unhealthy_interval", self.health_check.unhealthy_interval),
            ("health_check.timeout", self.health_check.timeout),
            ("passive_health.base_ejection", self.passive_health.base_ejection),
        ] {
            if duration.is_zero() {
                problems.push(format!("{key}.{name}"), "must be greater than zero, e.g. \"5s\"");
            }
        }
        if !self.health_check.path.starts_with('/') {
            problems.push(format!("{key}.health_check.path"), "must start with '/', e.g. \"/health/\"");
        }
        if self.health_check.unhealthy_threshold == 0 || self.health_check.healthy_threshold == 0 {
            problems.push(format!("{key}.health_check"), "thresholds must be at least 1");
        }
        if self.passive_health.consecutive_failures == 0 {
            problems.push(format!("{key}.passive_health.consecutive_failures"), "must be at least 1");
        }
        if self.passive_health.max_ejection < self.passive_health.base_ejection {
            problems.push(format!("{key}.passive_health.max_ejection"), "must not be shorter than base_ejection");
        }
        if !(0.0..=1000.0).contains(&self.retry.budget_percent) {
            problems.push(format!("{key}.retry.budget_percent"), "must be between 0 and 1000");
        }
        if self.retry.min_per_second > 1_000_000 {
            problems.push(format!("{key}.retry.min_per_second"), "must be at most 1000000");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_discovery_needs_a_name_to_resolve() {
        let problems = |text: &str| {
            let config: ServiceConfig = toml::from_str(text).expect("parses");
            let mut problems = Problems::default();
            config.validate("services.api", &mut problems);
            problems.iter().map(|problem| problem.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(
            problems("discovery = \"dns\"\nendpoints = [\"http://127.0.0.1:8001\", \"http://api.internal:8001\"]"),
            ["services.api.endpoints[0]"]
        );
        assert_eq!(problems("discovery = \"dns\"\nendpoints = [\"http://[::1]:8001\"]"), ["services.api.endpoints[0]"]);
        assert!(problems("endpoints = [\"http://127.0.0.1:8001\"]").is_empty());
        assert_eq!(
            problems("discovery = \"dns\"\ndns_refresh = \"0s\"\nendpoints = [\"http://api.internal\"]"),
            ["services.api.dns_refresh"]
        );
        let config: ServiceConfig = toml::from_str("endpoints = [\"http://api.internal\"]").expect("parses");
        assert_eq!((config.discovery, config.dns_refresh), (Discovery::Static, Duration::from_secs(30)));
    }

    #[test]
    fn out_of_rotation_replicas_are_checked_every_second_unless_configured() {
        let parsed: HealthCheckConfig = toml::from_str("interval = \"5s\"").expect("parses");
        assert_eq!(parsed.unhealthy_interval, Duration::from_secs(1));
        let parsed: HealthCheckConfig = toml::from_str("unhealthy_interval = \"250ms\"").expect("parses");
        assert_eq!(parsed.unhealthy_interval, Duration::from_millis(250));
        assert!(toml::from_str::<HealthCheckConfig>("unhealthy_intervall = \"1s\"").is_err());

        let mut config: ServiceConfig = toml::from_str("endpoints = [\"http://127.0.0.1:8001\"]").expect("parses");
        config.health_check.unhealthy_interval = Duration::ZERO;
        let mut problems = Problems::default();
        config.validate("services.api", &mut problems);
        assert_eq!(
            problems.first().map(|problem| problem.key.as_str()),
            Some("services.api.health_check.unhealthy_interval")
        );
    }
}

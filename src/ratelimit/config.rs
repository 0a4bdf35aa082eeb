//! The `[rate_limiting]` settings and the named `[rate_limits.<name>]`
//! policies.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::client::PeerNetwork;
use crate::problems::Problems;

/// Where limits are kept and whom to believe about client addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// `memory` (per replica) or `redis` (one budget shared by all replicas).
    pub backend: Backend,
    /// Redis URL for the `redis` backend, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: Option<String>,
    /// Time allowed for one Redis decision before the local limiter decides.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// When Redis is unreachable: refuse requests (503) instead of falling
    /// back to the local limiter.
    pub fail_closed: bool,
    /// Peers (load balancers, CDNs) whose `X-Forwarded-For` / `Forwarded`
    /// headers are believed; everyone else is keyed by the socket address.
    /// The gateway-wide client-address rule: the address found this way is
    /// also what backends get as `X-Real-IP` and what the access log names.
    pub trusted_proxies: Vec<PeerNetwork>,
    /// Clients tracked per policy in memory; beyond it, idle clients are
    /// dropped first (each tracked client costs about 100 bytes).
    pub max_tracked_clients: usize,
}

impl Default for RateLimitingConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            redis_url: None,
            redis_timeout: Duration::from_millis(50),
            fail_closed: false,
            trusted_proxies: Vec::new(),
            max_tracked_clients: 100_000,
        }
    }
}

/// Where limiter state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In this process (GCRA via governor).
    #[default]
    Memory,
    /// In Redis, shared by every replica (the same GCRA in a Lua script).
    Redis,
}

/// A named policy. `rate_limits.default`, when present, applies to every
/// request that no route or endpoint attaches another policy to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Sustained requests per second (may be fractional, e.g. 0.5).
    pub per_second: Option<f64>,
    /// Requests allowed at once above the sustained rate.
    pub burst: Option<u32>,
    /// GraphQL cost units per second (see `@cost`): one large operation
    /// costs more than one small one.
    pub cost_per_second: Option<f64>,
    /// Cost units allowed at once.
    pub cost_burst: Option<u32>,
    /// What identifies a client.
    #[serde(default)]
    pub key: ClientKey,
    /// Different limits per client tier, read from a claim.
    pub tiers: Option<TiersConfig>,
}

/// How clients are told apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKey {
    /// The verified JWT `sub`, else the API key's name, else the client IP.
    #[default]
    Client,
    /// Always the client IP.
    Ip,
}

/// Per-tier limits: `tiers = { claim = "plan", limits = { pro = { per_second = 50, burst = 100 } } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    /// The claim naming the tier.
    pub claim: String,
    /// Limits by tier value; other values use the policy's own limits.
    pub limits: BTreeMap<String, TierLimits>,
}

/// One tier's limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Burst.
    pub burst: u32,
}

impl RateLimitingConfig {
    pub(crate) fn validate(&self, policies: &BTreeMap<String, PolicyConfig>, problems: &mut Problems) {
        if self.backend == Backend::Redis {
            match &self.redis_url {
                None => problems.push(
                    "rate_limiting.redis_url",
                    "the redis backend needs redis_url, e.g. \"redis://127.0.0.1:6379\"",
                ),
                Some(url) if redis::Client::open(url.as_str()).is_err() => {
                    problems.push(
                        "rate_limiting.redis_url",
                        format!("{url:?} is not a Redis URL; write it like \"redis://127.0.0.1:6379\""),
                    );
                }
                Some(_) => {}
            }
        }
        if self.max_tracked_clients == 0 {
            problems.push("rate_limiting.max_tracked_clients", "must be at least 1");
        }
        for (name, policy) in policies {
            policy.validate(&format!("rate_limits.{name}"), problems);
        }
    }
}

impl PolicyConfig {
    fn validate(&self, key: &str, problems: &mut Problems) {
        let request_limit = matches!((self.per_second, self.burst), (Some(_), Some(_)));
        let cost_limit = matches!((self.cost_per_second, self.cost_burst), (Some(_), Some(_)));
        if self.per_second.is_some() != self.burst.is_some() {
            problems.push(key, "per_second and burst go together, e.g. per_second = 5, burst = 10");
        }
        if self.cost_per_second.is_some() != self.cost_burst.is_some() {
            problems.push(key, "cost_per_second and cost_burst go together");
        }
        if !request_limit && !cost_limit {
            problems.push(key, "set per_second and burst (and/or cost_per_second and cost_burst)");
        }
        for (name, rate) in [("per_second", self.per_second), ("cost_per_second", self.cost_per_second)] {
            if rate.is_some_and(|rate| !(rate > 0.0 && rate <= 1_000_000.0)) {
                problems.push(format!("{key}.{name}"), "must be greater than 0 and at most 1000000");
            }
        }
        for (name, burst) in [("burst", self.burst), ("cost_burst", self.cost_burst)] {
            if burst == Some(0) {
                problems.push(format!("{key}.{name}"), "must be at least 1");
            }
        }
        if let Some(tiers) = &self.tiers {
            for (tier, limits) in &tiers.limits {
                if !(limits.per_second > 0.0 && limits.per_second <= 1_000_000.0) || limits.burst == 0 {
                    problems.push(format!("{key}.tiers.limits.{tier}"), "needs per_second > 0 and burst >= 1");
                }
            }
        }
    }
}

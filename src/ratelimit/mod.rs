//! Rate limiting per client, so that one abusive client cannot take the
//! backends down.
//!
//! Named policies (`[rate_limits.<name>]`) are attached to routes and to the
//! GraphQL endpoint; `rate_limits.default` covers everything else. The
//! [`limit`] layer runs after authentication, because the client is the
//! verified JWT `sub`, else the API key's name, else the client IP (taken
//! from `X-Forwarded-For` only when the peer is a trusted proxy). Decisions
//! are GCRA, in memory (governor) or in Redis so that every replica shares
//! one budget; when Redis is unreachable the local limiter decides
//! (fail-open) unless `fail_closed` is set, and after a failure Redis is
//! not asked again until a background probe reaches it
//! ([`crate::redis_health`]), so an outage costs no request any waiting. Answers carry the IETF
//! `RateLimit-Policy` / `RateLimit` headers; refusals are 429 with
//! `Retry-After`. GraphQL operations can also be charged their cost through
//! the [`CostBudget`] the layer leaves in request extensions.

mod config;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub use config::{Backend, ClientKey, PolicyConfig, RateLimitingConfig, TierLimits, TiersConfig};
pub use store::{Decision, LocalLimiter, Rate, RedisStore};

use crate::error::GatewayError;
use crate::identity::Identity;
use crate::redis_health::RedisCircuit;
use crate::request::REQUEST_ID;
use crate::routing::{PrefixMatch, PrefixTable};
use crate::telemetry::metrics::{Metrics, RateLimitDecision};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// A refused request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RateLimitError {
    /// The client used up its budget.
    #[error("rate limit exceeded; retry in {} s", retry_after_seconds(*.retry_after))]
    Exceeded {
        /// Time until a request would pass.
        retry_after: Duration,
    },
    /// The shared store is down and the gateway is configured to refuse.
    #[error("the rate limiter is unavailable")]
    Unavailable,
}

/// Whole seconds for `Retry-After`, rounded up.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// One limit of a policy (requests or cost), in memory and, optionally,
/// in Redis.
#[derive(Debug)]
struct Limit {
    local: LocalLimiter,
}

/// A policy, ready to decide.
#[derive(Debug)]
pub struct Policy {
    name: Arc<str>,
    key: ClientKey,
    requests: Option<Limit>,
    cost: Option<Limit>,
    tiers: Option<(String, HashMap<String, Limit>)>,
}

/// Every policy, where each applies, and the stores.
pub struct RateLimiter {
    policies: PrefixTable<Option<Arc<Policy>>>,
    default: Option<Arc<Policy>>,
    all: Vec<Arc<Policy>>,
    redis: Option<RedisStore>,
    fail_closed: bool,
    trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("policies", &self.all.len()).finish_non_exhaustive()
    }
}

/// Why the limiter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitSetupError {
    /// The Redis URL was refused.
    #[error("rate_limiting.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
}

impl RateLimiter {
    /// Builds the limiter. `attachments` are (prefix, policy name) pairs;
    /// the name `"none"` turns limiting off for that prefix.
    pub fn new(
        config: &RateLimitingConfig,
        policies: &BTreeMap<String, PolicyConfig>,
        attachments: impl IntoIterator<Item = (Arc<str>, String)>,
    ) -> Result<Self, RateLimitSetupError> {
        let limit = |rate: Rate| Limit { local: LocalLimiter::new(rate, config.max_tracked_clients) };
        let built: HashMap<&str, Arc<Policy>> = policies
            .iter()
            .map(|(name, policy)| {
                let rate =
                    |per_second: Option<f64>, burst: Option<u32>| Some(Rate { per_second: per_second?, burst: burst? });
                let tiers = policy.tiers.as_ref().map(|tiers| {
                    let limits = tiers
                        .limits
                        .iter()
                        .map(|(tier, limits)| {
                            (tier.clone(), limit(Rate { per_second: limits.per_second, burst: limits.burst }))
                        })
                        .collect();
                    (tiers.claim.clone(), limits)
                });
                let built = Policy {
                    name: Arc::from(name.as_str()),
                    key: policy.key,
                    requests: rate(policy.per_second, policy.burst).map(limit),
                    cost: rate(policy.cost_per_second, policy.cost_burst).map(limit),
                    tiers,
                };
                (name.as_str(), Arc::new(built))
            })
            .collect();
        let table = attachments
            .into_iter()
            .map(|(prefix, name)| (prefix, built.get(name.as_str()).cloned()))
            .collect::<Vec<_>>();
        let redis = match (config.backend, &config.redis_url) {
            (Backend::Redis, Some(url)) => Some(RedisStore::new(url, config.redis_timeout)?),
            _ => None,
        };
        Ok(Self {
            policies: PrefixTable::new(table),
            default: built.get("default").cloned(),
            all: built.values().cloned().collect(),
            redis,
            fail_closed: config.fail_closed,
            trusted_proxies: config.trusted_proxies.clone(),
        })
    }

    /// The circuit breaker in front of Redis, with the `redis` backend.
    pub fn redis_circuit(&self) -> Option<&Arc<RedisCircuit>> {
        self.redis.as_ref().map(RedisStore::circuit)
    }

    /// Starts the housekeeping that forgets idle clients; stops when dropped.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> Housekeeping {
        let limiter = Arc::downgrade(self);
        Housekeeping(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(10));
            loop {
                interval.tick().await;
                let Some(limiter) = limiter.upgrade() else { return };
                for policy in &limiter.all {
                    let tiers = policy.tiers.iter().flat_map(|(_, tiers)| tiers.values());
                    for limit in policy.requests.iter().chain(&policy.cost).chain(tiers) {
                        limit.local.retain_recent();
                    }
                }
            }
        }))
    }

    fn policy_for(&self, path: &str) -> Option<Arc<Policy>> {
        match self.policies.lookup(path) {
            PrefixMatch::Found(policy) => policy.clone(),
            _ => self.default.clone(),
        }
    }

    /// The client's address: the socket peer, or, when the peer is a
    /// trusted proxy, the last address in `X-Forwarded-For` / `Forwarded`
    /// that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
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
        chain.into_iter().rev().find(|address| !self.is_trusted(*address)).unwrap_or(peer)
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|network| network.contains(&address))
    }

    /// Charges `cost` units of `limit` to `key`, in Redis when configured;
    /// also says whether the local limiter stood in for an unreachable Redis.
    async fn decide(
        &self,
        policy: &Policy,
        limit: &Limit,
        kind: &str,
        key: &str,
        cost: u32,
    ) -> Result<(Decision, bool), RateLimitError> {
        if let Some(redis) = &self.redis {
            let redis_key = format!("portico:rl:{}:{kind}:{key}", policy.name);
            match redis.check(&redis_key, limit.local.rate(), cost).await {
                Ok(decision) => return Ok((decision, false)),
                Err(_) if self.fail_closed => return Err(RateLimitError::Unavailable),
                Err(_) => return Ok((limit.local.check(key, cost), true)),
            }
        }
        Ok((limit.local.check(key, cost), false))
    }
}

/// Stops the housekeeping task when dropped.
#[derive(Debug)]
pub struct Housekeeping(tokio::task::JoinHandle<()>);

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.0.abort();
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

/// What identifies the caller for `policy`, and the tier's limit if any.
fn client_of<'p>(limiter: &RateLimiter, policy: &'p Policy, request: &Request) -> (String, Option<&'p Limit>) {
    let identity = request.extensions().get::<Arc<Identity>>();
    let tier = policy.tiers.as_ref().and_then(|(claim, tiers)| {
        let value = identity?.claims.get(claim)?.as_str()?;
        tiers.get(value)
    });
    let identified = match policy.key {
        ClientKey::Client => identity.and_then(|identity| {
            identity
                .subject
                .as_ref()
                .map(|subject| format!("sub:{subject}"))
                .or_else(|| identity.client.as_ref().map(|client| format!("key:{client}")))
        }),
        ClientKey::Ip => None,
    };
    let key = identified.unwrap_or_else(|| {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(peer)| peer.ip());
        format!("ip:{}", limiter.client_ip(peer, request.headers()))
    });
    (key, tier)
}

/// A GraphQL operation's cost budget for the calling client, left in
/// request extensions by the [`limit`] layer.
#[derive(Clone)]
pub struct CostBudget {
    limiter: Arc<RateLimiter>,
    policy: Arc<Policy>,
    key: String,
}

impl std::fmt::Debug for CostBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostBudget").field("policy", &self.policy.name).finish_non_exhaustive()
    }
}

impl CostBudget {
    /// Charges an operation's cost; refused when the budget is spent.
    pub async fn charge(&self, cost: u64) -> Result<(), RateLimitError> {
        let Some(limit) = &self.policy.cost else { return Ok(()) };
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let (decision, _) = self.limiter.decide(&self.policy, limit, "cost", &self.key, cost).await?;
        if decision.allowed {
            Ok(())
        } else {
            Err(RateLimitError::Exceeded { retry_after: decision.retry_after })
        }
    }
}

/// What the [`limit`] layer needs: the limiter and where to count decisions.
#[derive(Debug, Clone)]
pub struct LimitState {
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
}

impl LimitState {
    /// The layer's state.
    pub fn new(limiter: Arc<RateLimiter>, metrics: Arc<Metrics>) -> Self {
        Self { limiter, metrics }
    }
}

/// The rate-limiting layer (see the module docs).
pub async fn limit(
    State(LimitState { limiter, metrics }): State<LimitState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(policy) = limiter.policy_for(request.uri().path()) else {
        return next.run(request).await;
    };
    let (key, tier) = client_of(&limiter, &policy, &request);
    if policy.cost.is_some() {
        let budget = CostBudget { limiter: Arc::clone(&limiter), policy: Arc::clone(&policy), key: key.clone() };
        request.extensions_mut().insert(budget);
    }
    let Some(limit) = tier.or(policy.requests.as_ref()) else {
        return next.run(request).await;
    };
    let outcome = limiter.decide(&policy, limit, "req", &key, 1).await;
    let counted = match &outcome {
        Ok((decision, _)) if !decision.allowed => RateLimitDecision::Limited,
        Ok((_, true)) => RateLimitDecision::FailedOpen,
        Ok((_, false)) => RateLimitDecision::Allowed,
        Err(_) => RateLimitDecision::FailedClosed,
    };
    metrics.rate_limit_decision(&policy.name, counted);
    match outcome.map(|(decision, _)| decision) {
        Ok(decision) if decision.allowed => {
            let mut response = next.run(request).await;
            set_headers(response.headers_mut(), &policy.name, limit.local.rate(), &decision);
            response
        }
        outcome => {
            let error = match outcome {
                Ok(decision) => RateLimitError::Exceeded { retry_after: decision.retry_after },
                Err(error) => error,
            };
            tracing::info!(policy = %policy.name, client = %key, "request refused by rate limit");
            let mut response =
                GatewayError::from(error.clone()).into_response_with_id(request.headers().get(REQUEST_ID));
            let decision = Decision {
                allowed: false,
                remaining: 0,
                reset: limit.local.rate().emission_interval() * limit.local.rate().burst,
                retry_after: Duration::ZERO,
            };
            set_headers(response.headers_mut(), &policy.name, limit.local.rate(), &decision);
            response
        }
    }
}

/// `RateLimit-Policy: "name";q=10;w=2` and `RateLimit: "name";r=3;t=1`
/// (draft-ietf-httpapi-ratelimit-headers).
fn set_headers(headers: &mut HeaderMap, name: &str, rate: Rate, decision: &Decision) {
    let policy = format!("\"{name}\";q={};w={}", rate.burst, rate.window_seconds());
    let state = format!("\"{name}\";r={};t={}", decision.remaining, retry_after_seconds(decision.reset));
    if let (Ok(policy), Ok(state)) = (HeaderValue::try_from(policy), HeaderValue::try_from(state)) {
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> RateLimiter {
        let config = RateLimitingConfig {
            trusted_proxies: trusted.iter().map(|net| net.parse().expect("cidr")).collect(),
            ..RateLimitingConfig::default()
        };
        RateLimiter::new(&config, &BTreeMap::new(), []).expect("limiter")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let limiter = limiter(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let untrusted_peer: IpAddr = "203.0.113.5".parse().expect("ip");
        assert_eq!(limiter.client_ip(untrusted_peer, &spoofed), untrusted_peer, "a direct client cannot pick its key");

        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.9")]);
        assert_eq!(
            limiter.client_ip(proxy, &chain),
            "198.51.100.7".parse::<IpAddr>().expect("ip"),
            "the last untrusted hop"
        );
        let forwarded = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(limiter.client_ip(proxy, &forwarded), "2001:db8::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(limiter.client_ip(proxy, &HeaderMap::new()), proxy);
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let mut map = HeaderMap::new();
        let decision =
            Decision { allowed: true, remaining: 7, reset: Duration::from_millis(600), retry_after: Duration::ZERO };
        set_headers(&mut map, "default", Rate { per_second: 5.0, burst: 10 }, &decision);
        assert_eq!(map["ratelimit-policy"], "\"default\";q=10;w=2");
        assert_eq!(map["ratelimit"], "\"default\";r=7;t=1");
    }
}

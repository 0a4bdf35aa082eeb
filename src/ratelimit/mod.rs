//! Rate limiting per client, so that one abusive client cannot take the
//! backends down.
//!
//! Named policies (`[rate_limits.<name>]`) are attached to routes and to the
//! GraphQL endpoint; `rate_limits.default` covers everything else. The
//! [`RateLimitLayer`] runs after authentication, because the client is the
//! [`Caller`]: the verified JWT `sub`, else the API key's name, else the
//! client address (taken from `X-Forwarded-For` only when the peer is a
//! trusted proxy, by the rule of [`crate::client`]). Decisions
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
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

pub use config::{Backend, ClientKey, PolicyConfig, RateLimitingConfig, TierLimits, TiersConfig};
pub use store::{Decision, LocalLimiter, Rate, RedisStore};

use crate::client::{Caller, ClientAddress};
use crate::identity::Identity;
use crate::redis_health::RedisCircuit;
use crate::telemetry::metrics::{Metrics, RateLimitDecision};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

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
    named: HashMap<Arc<str>, Arc<Policy>>,
    all: Vec<Arc<Policy>>,
    redis: Option<RedisStore>,
    fail_closed: bool,
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
    /// Builds the limiter and every policy.
    pub fn new(
        config: &RateLimitingConfig,
        policies: &BTreeMap<String, PolicyConfig>,
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
        let redis = match (config.backend, &config.redis_url) {
            (Backend::Redis, Some(url)) => Some(RedisStore::new(url, config.redis_timeout)?),
            _ => None,
        };
        Ok(Self {
            all: built.values().cloned().collect(),
            named: built.into_iter().map(|(name, policy)| (Arc::from(name), policy)).collect(),
            redis,
            fail_closed: config.fail_closed,
        })
    }

    /// The policy a route with `attached` (its `rate_limit` setting) is
    /// charged to: the named one, none for `"none"`, and
    /// `rate_limits.default` (if defined) when nothing is attached.
    pub fn policy_for(&self, attached: Option<&str>) -> Option<Arc<Policy>> {
        match attached {
            Some("none") => None,
            Some(name) => self.named.get(name).cloned(),
            None => self.named.get("default").cloned(),
        }
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

/// What identifies the caller for `policy`, and the tier it is in, if any.
fn client_of(policy: &Policy, request: &Request<Body>) -> (String, Option<Tier>) {
    let identity = request.extensions().get::<Arc<Identity>>().map(Arc::as_ref);
    let tier = policy.tiers.as_ref().and_then(|(claim, tiers)| {
        let value = identity?.claims.get(claim)?.as_str()?;
        tiers.contains_key(value).then(|| Tier::Named(value.to_owned()))
    });
    let address = ClientAddress::of(request.extensions()).client;
    let caller = match policy.key {
        ClientKey::Client => Caller::key(identity, address),
        ClientKey::Ip => Caller::key(None, address),
    };
    (caller, tier)
}

/// A GraphQL operation's cost budget for the calling client, left in
/// request extensions by the [`RateLimitLayer`].
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

/// What the limit layer needs to know about the request's route (the route
/// table resolves every route's policy once, at start).
pub trait LimitedRoute: Send + Sync + 'static {
    /// The policy requests on this route are charged to, if any.
    fn rate_limit(&self) -> Option<&Arc<Policy>>;
}

/// The rate-limiting layer (see the module docs). `R` is the route type the
/// route lookup leaves in request extensions (as `Arc<R>`), `E` the stack's
/// error type.
pub struct RateLimitLayer<R, E> {
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<R, E> RateLimitLayer<R, E> {
    /// The layer; decisions are counted in `metrics`.
    pub fn new(limiter: Arc<RateLimiter>, metrics: Arc<Metrics>) -> Self {
        Self { limiter, metrics, _types: PhantomData }
    }
}

impl<R, E> Clone for RateLimitLayer<R, E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.limiter), Arc::clone(&self.metrics))
    }
}

impl<S, R, E> Layer<S> for RateLimitLayer<R, E> {
    type Service = RateLimit<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, limiter: Arc::clone(&self.limiter), metrics: Arc::clone(&self.metrics), _types: PhantomData }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S, R, E> {
    inner: S,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<S: Clone, R, E> Clone for RateLimit<S, R, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            metrics: Arc::clone(&self.metrics),
            _types: PhantomData,
        }
    }
}

impl<S, R, E> Service<Request<Body>> for RateLimit<S, R, E>
where
    S: Service<Request<Body>, Response = Response, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: LimitedRoute,
    E: From<Refused> + Send + 'static,
{
    type Response = Response;
    type Error = E;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(policy) = request.extensions().get::<Arc<R>>().and_then(|route| route.rate_limit()).cloned() else {
            return Either::Left(self.inner.call(request));
        };
        let (key, tier) = client_of(&policy, &request);
        if policy.cost.is_some() {
            let budget =
                CostBudget { limiter: Arc::clone(&self.limiter), policy: Arc::clone(&policy), key: key.clone() };
            request.extensions_mut().insert(budget);
        }
        let Some(limit_of) = tier.or(policy.requests.as_ref().map(|_| Tier::Requests)) else {
            return Either::Left(self.inner.call(request));
        };
        // The clone is the one that was made ready, the one kept is fresh.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let limiter = Arc::clone(&self.limiter);
        let metrics = Arc::clone(&self.metrics);
        Either::Right(Box::pin(async move {
            let Some(limit) = limit_of.limit(&policy) else { return inner.call(request).await };
            let rate = limit.local.rate();
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
                    let mut response = inner.call(request).await?;
                    response.headers_mut().extend(policy_headers(&policy.name, rate, &decision));
                    Ok(response)
                }
                outcome => {
                    let error = match outcome {
                        Ok(decision) => RateLimitError::Exceeded { retry_after: decision.retry_after },
                        Err(error) => error,
                    };
                    tracing::info!(policy = %policy.name, client = %key, "request refused by rate limit");
                    let spent = Decision {
                        allowed: false,
                        remaining: 0,
                        reset: rate.emission_interval() * rate.burst,
                        retry_after: Duration::ZERO,
                    };
                    Err(Refused { error, headers: policy_headers(&policy.name, rate, &spent) }.into())
                }
            }
        }))
    }
}

/// Which of a policy's limits a request is charged to.
#[derive(Debug, Clone)]
enum Tier {
    /// The policy's request limit.
    Requests,
    /// A tier's limit, by the tier's name.
    Named(String),
}

impl Tier {
    fn limit<'p>(&self, policy: &'p Policy) -> Option<&'p Limit> {
        match self {
            Self::Requests => policy.requests.as_ref(),
            Self::Named(name) => policy.tiers.as_ref().and_then(|(_, tiers)| tiers.get(name)),
        }
    }
}

/// A request the limit layer refused, with the headers that describe the
/// policy it ran into; the error edge renders it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Refused {
    /// Why.
    pub error: RateLimitError,
    /// `RateLimit-Policy` and `RateLimit`, for the refusal.
    pub headers: HeaderMap,
}

/// `RateLimit-Policy: "name";q=10;w=2` and `RateLimit: "name";r=3;t=1`
/// (draft-ietf-httpapi-ratelimit-headers).
fn policy_headers(name: &str, rate: Rate, decision: &Decision) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    let policy = format!("\"{name}\";q={};w={}", rate.burst, rate.window_seconds());
    let state = format!("\"{name}\";r={};t={}", decision.remaining, retry_after_seconds(decision.reset));
    if let (Ok(policy), Ok(state)) = (HeaderValue::try_from(policy), HeaderValue::try_from(state)) {
        headers.insert(RATELIMIT_POLICY, policy);
        headers.insert(RATELIMIT, state);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_ietf_draft() {
        let decision =
            Decision { allowed: true, remaining: 7, reset: Duration::from_millis(600), retry_after: Duration::ZERO };
        let map = policy_headers("default", Rate { per_second: 5.0, burst: 10 }, &decision);
        assert_eq!(map["ratelimit-policy"], "\"default\";q=10;w=2");
        assert_eq!(map["ratelimit"], "\"default\";r=7;t=1");
    }
}

//! Response caching: the gateway answers repeated GETs from memory instead
//! of asking a backend again ("speed up frequent requests").
//!
//! A cache that hands one student's profile to another is worse than none,
//! so correctness comes first:
//! - a route caches only when it says so (`cache = { ttl = "30s" }`), and a
//!   GraphQL field only with `@cacheControl`;
//! - unless a route is `scope = "public"` (a field `PUBLIC`), the verified
//!   caller is part of the key, and anonymous callers have their own entries;
//! - upstream `Cache-Control`, `Expires`, `Vary`, `Set-Cookie` and the status
//!   decide what may be stored and for how long (`rules`); the route's TTL
//!   is only a ceiling;
//! - concurrent misses for one key make one backend request (`flight`);
//! - within `stale_while_revalidate` an expired answer is served while one
//!   background request refreshes it, and within `stale_if_error` when the
//!   backend fails (RFC 5861).
//!
//! The [`CacheLayer`] sits inside authentication (it keys on the identity)
//! and caches REST passthrough answers by the policy of the request's route
//! ([`CachedRoute`]); it never imports a door. [`Cache::admin`] answers the
//! admin endpoint (`DELETE` purges by service, path prefix or all; `GET`
//! shows [`CacheStats`]), a route of its own, and the GraphQL door caches its
//! `@rest` GET calls through [`Cache::field_call`]. Memory is bounded in bytes (moka, with a weigher
//! counting body, headers and key); an optional Redis tier shares public
//! answers between replicas.

mod admin;
mod config;
mod entry;
mod error;
mod flight;
mod layer;
pub(crate) mod rules;
mod shared;

use crate::auth::KeyDigest;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use moka::notification::RemovalCause;
use moka::Expiry;

pub use config::{CacheConfig, CachePolicy, CacheScope, RouteCacheConfig};
pub use error::{CacheError, CacheSetupError};
pub use layer::{CacheLayer, CachedRoute, Caching};

use crate::identity::Identity;
use crate::redis_health::RedisCircuit;
use entry::{variant_key, Answer, CacheKey, Content, Freshness, Origin, Partition, Stored};
use flight::{Filled, Flights, Role};
use rules::Allowance;
use shared::SharedTier;

/// A point-in-time copy of the cache's counters, for metrics and the admin
/// endpoint. Counters only grow; `entries` and `bytes` are gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Answers served from the cache while fresh (memory or Redis).
    pub hits: u64,
    /// Expired answers served (`stale-while-revalidate`, `stale-if-error`).
    pub stale: u64,
    /// Requests the cache could have answered but had to fetch.
    pub misses: u64,
    /// Requests on caching routes the cache stayed out of (methods other
    /// than GET/HEAD, `no-store`, ranges).
    pub bypasses: u64,
    /// Of the hits, those found in the Redis tier.
    pub shared_hits: u64,
    /// Redis commands that failed or timed out (each only cost a hit).
    pub shared_errors: u64,
    /// Whether the Redis tier is used now: connected and not failed since
    /// (`false` without one).
    pub shared_connected: bool,
    /// Entries evicted to stay within `max_size`.
    pub evictions: u64,
    /// Entries held in memory.
    pub entries: u64,
    /// Bytes held in memory, as the weigher counts them.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    stale: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    shared_hits: AtomicU64,
    evictions: AtomicU64,
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Entries live as long as an answer can still be used, stale windows
/// included.
struct UsableLifetime;

impl Expiry<CacheKey, Arc<Stored>> for UsableLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Stored>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.retain_for(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Stored>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.retain_for(SystemTime::now()))
    }
}

/// The response cache, built once from `[cache]` and the route policies.
pub struct Cache {
    store: moka::future::Cache<CacheKey, Arc<Stored>>,
    max_entry_size: usize,
    flights: Flights,
    shared: Option<SharedTier>,
    counters: Arc<Counters>,
    admin_path: String,
    /// SHA-256 of the admin key; no admin endpoint without it.
    admin_key_sha256: Option<KeyDigest>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// Everything.
    All,
    /// Every answer of a service, REST and GraphQL alike.
    Service(String),
    /// REST answers whose gateway path starts with the prefix.
    GatewayPrefix(String),
    /// Answers of a service whose path on the service starts with the
    /// prefix, REST and GraphQL alike (what mutations invalidate).
    ServicePrefix {
        /// The service.
        service: String,
        /// Its path prefix.
        prefix: String,
    },
}

impl Purge {
    fn matches(&self, stored: &Stored) -> bool {
        match self {
            Self::All => true,
            Self::Service(service) => *stored.service == **service,
            Self::GatewayPrefix(prefix) => {
                !stored.gateway_path.is_empty() && stored.gateway_path.starts_with(&**prefix)
            }
            Self::ServicePrefix { service, prefix } => {
                *stored.service == **service && stored.service_path.starts_with(&**prefix)
            }
        }
    }

    /// The Redis key pattern (after the tier's prefix) of the same entries.
    fn key_pattern(&self) -> String {
        let s = '\u{1f}';
        let escape = shared::escape_pattern;
        match self {
            Self::All => "*".to_owned(),
            Self::Service(service) => format!("?{s}{}{s}*", escape(service)),
            Self::GatewayPrefix(prefix) => format!("r{s}*{s}{}*", escape(prefix)),
            Self::ServicePrefix { service, prefix } => format!("?{s}{}{s}{}*", escape(service), escape(prefix)),
        }
    }
}

/// A GraphQL field's backend GET, as [`Cache::field_call`] caches it.
#[derive(Debug)]
pub struct FieldCall<'a> {
    /// The service called.
    pub service: &'a Arc<str>,
    /// Path and query on the service.
    pub target: &'a str,
    /// Request headers the connector adds (they pick the answer too).
    pub headers: &'a [(HeaderName, String)],
    /// The field's `@cacheControl(maxAge:)`: the freshness ceiling.
    pub max_age: Duration,
    /// `PUBLIC`: shared by every caller; otherwise per caller.
    pub public: bool,
    /// The verified caller.
    pub identity: Option<&'a Identity>,
}

impl Cache {
    /// Builds the cache; routes carry their own policies.
    pub fn new(config: &CacheConfig) -> Result<Self, CacheSetupError> {
        let counters = Arc::new(Counters::default());
        let eviction_counters = Arc::clone(&counters);
        let store = moka::future::Cache::builder()
            .max_capacity(config.max_size.as_u64())
            .weigher(|key: &CacheKey, value: &Arc<Stored>| value.weight(key))
            .expire_after(UsableLifetime)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    Counters::count(&eviction_counters.evictions);
                }
            })
            .support_invalidation_closures()
            .build();
        let shared = match &config.redis_url {
            Some(url) => Some(SharedTier::new(url, config.redis_timeout, &config.redis_key_prefix)?),
            None => None,
        };
        if let Some(shared) = &shared {
            shared.start();
        }
        let admin_key_sha256 = config.admin_key_sha256.as_deref().and_then(KeyDigest::from_hex);
        Ok(Self {
            store,
            max_entry_size: usize::try_from(config.max_entry_size.as_u64()).unwrap_or(usize::MAX),
            flights: Flights::default(),
            shared,
            counters,
            admin_path: config.admin_path.clone(),
            admin_key_sha256,
        })
    }

    /// The circuit breaker in front of the Redis tier, if there is one.
    pub fn redis_circuit(&self) -> Option<&Arc<RedisCircuit>> {
        self.shared.as_ref().map(SharedTier::circuit)
    }

    /// The counters now. Cheap: atomic loads, no housekeeping.
    pub fn stats(&self) -> CacheStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        CacheStats {
            hits: load(&counters.hits),
            stale: load(&counters.stale),
            misses: load(&counters.misses),
            bypasses: load(&counters.bypasses),
            shared_hits: load(&counters.shared_hits),
            shared_errors: self.shared.as_ref().map_or(0, SharedTier::errors),
            shared_connected: self.shared.as_ref().is_some_and(SharedTier::is_connected),
            evictions: load(&counters.evictions),
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
        }
    }

    /// Finishes pending evictions and expirations, so that [`Cache::stats`]
    /// is exact.
    pub async fn settle(&self) {
        self.store.run_pending_tasks().await;
    }

    /// Removes the selected entries from memory (counted) and from Redis
    /// (in the background).
    pub async fn purge(&self, purge: &Purge) -> usize {
        let doomed: Vec<Arc<CacheKey>> =
            self.store.iter().filter(|(_, stored)| purge.matches(stored)).map(|(key, _)| key).collect();
        for key in &doomed {
            self.store.invalidate(&**key).await;
        }
        if let Some(shared) = &self.shared {
            shared.purge(purge.key_pattern());
        }
        doomed.len()
    }

    /// Removes the answers of `service` under each path prefix: what a
    /// mutation declared it changes. Entries are dropped lazily by moka, but
    /// are never served again.
    pub fn invalidate_service_paths(&self, service: &str, prefixes: &[String]) {
        for prefix in prefixes {
            let purge = Purge::ServicePrefix { service: service.to_owned(), prefix: prefix.clone() };
            if let Some(shared) = &self.shared {
                shared.purge(purge.key_pattern());
            }
            let result = self.store.invalidate_entries_if(move |_, stored| purge.matches(stored));
            if let Err(error) = result {
                tracing::warn!(%error, "cache invalidation failed");
            }
        }
    }

    /// The stored answer for `base`, following a `Vary` index to the
    /// request's variant. Returns the answer's key with it.
    async fn lookup(&self, base: &CacheKey, request: &HeaderMap) -> Option<(CacheKey, Arc<Stored>)> {
        let stored = self.store.get(base).await?;
        match &stored.content {
            Content::Answer(_) => Some((Arc::clone(base), stored)),
            Content::Variants { names, .. } => {
                let key = variant_key(base, names, request);
                let variant = self.store.get(&key).await?;
                variant.answer().is_some().then_some((key, variant))
            }
        }
    }

    /// A fresh public answer from Redis, copied into memory.
    async fn shared_lookup(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<Stored>> {
        let stored = self.shared.as_ref()?.get(key).await?;
        if stored.answer()?.freshness(now) != Freshness::Fresh {
            return None;
        }
        let stored = Arc::new(stored);
        self.store.insert(Arc::clone(key), Arc::clone(&stored)).await;
        Counters::count(&self.counters.shared_hits);
        Some(stored)
    }

    /// Stores `answer` under `base` (or its variant for `vary`), in memory
    /// and, for public answers without `Vary`, in Redis.
    async fn store_answer(
        &self,
        origin: &Origin,
        base: &CacheKey,
        vary: Vec<HeaderName>,
        request: &HeaderMap,
        answer: Answer,
    ) -> Filled {
        let now = SystemTime::now();
        let retain_for = answer.retain_for(now);
        let key = if vary.is_empty() {
            base.clone()
        } else {
            let index = Stored::new(origin, Content::Variants { names: vary.clone().into(), retain_for });
            self.store.insert(Arc::clone(base), Arc::new(index)).await;
            variant_key(base, &vary, request)
        };
        let stored = Arc::new(Stored::new(origin, Content::Answer(answer)));
        self.store.insert(Arc::clone(&key), Arc::clone(&stored)).await;
        if let (Some(shared), true, true) = (&self.shared, origin.partition.is_public(), vary.is_empty()) {
            shared.put(&key, &stored, retain_for);
        }
        Filled { key, vary: vary.into(), stored }
    }

    /// A GraphQL field's backend GET through the cache: a fresh stored
    /// answer, the answer of a concurrent identical call, or `fetch`'s.
    /// Answers are stored when the backend's headers allow it, for at most
    /// the field's `maxAge`. Returns the status and body.
    pub async fn field_call<F, Fut, E>(&self, call: FieldCall<'_>, fetch: F) -> Result<(StatusCode, Bytes), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(StatusCode, HeaderMap, Bytes), E>>,
    {
        let partition = if call.public { Partition::Public } else { Partition::of(call.identity) };
        let headers: String = call.headers.iter().map(|(name, value)| format!("{name}={value};")).collect();
        let origin = Origin {
            kind: 'g',
            service: Arc::clone(call.service),
            service_target: call.target.to_owned(),
            gateway_target: String::new(),
            host: headers,
            partition,
        };
        let base = origin.key();
        let none = HeaderMap::new();
        let now = SystemTime::now();
        if let Some((_, stored)) = self.lookup(&base, &none).await {
            if let Some(answer) = stored.answer().filter(|answer| answer.freshness(now) == Freshness::Fresh) {
                Counters::count(&self.counters.hits);
                return Ok((answer.status, answer.body.clone()));
            }
        }
        let guard = loop {
            match self.flights.join(&base) {
                Role::Leader(guard) => break Some(guard),
                Role::Follower(pending) => match pending.await {
                    Ok(Some(filled)) => match filled.stored.answer() {
                        Some(answer) => {
                            Counters::count(&self.counters.hits);
                            return Ok((answer.status, answer.body.clone()));
                        }
                        None => break None,
                    },
                    Ok(None) => break None,
                    Err(_leader_gone) => continue,
                },
            }
        };
        let Some(guard) = guard else {
            // The leader's answer was not storable: it is not handed on.
            let (status, _, body) = fetch().await?;
            return Ok((status, body));
        };
        if origin.partition.is_public() {
            if let Some(stored) = self.shared_lookup(&base, now).await {
                if let Some(answer) = stored.answer().map(|answer| (answer.status, answer.body.clone())) {
                    Counters::count(&self.counters.hits);
                    guard.finish(Some(Filled { key: base, vary: Arc::from([]), stored }));
                    return Ok(answer);
                }
            }
        }
        Counters::count(&self.counters.misses);
        let (status, headers, body) = match fetch().await {
            Ok(answer) => answer,
            Err(error) => {
                // Waiters fetch on their own rather than queue behind a failure.
                guard.finish(None);
                return Err(error);
            }
        };
        let allowance = Allowance {
            ttl: call.max_age,
            negative_ttl: None,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            own_key: !call.public,
        };
        let now = SystemTime::now();
        let varies = rules::vary_names(&headers).is_none_or(|names| !names.is_empty());
        let outcome = match rules::storable(status, &headers, &allowance, now) {
            Ok(lifetimes) if !varies && body.len() <= self.max_entry_size => {
                let answer =
                    Answer { status, headers: HeaderMap::new(), body: body.clone(), received_at: now, lifetimes };
                Some(self.store_answer(&origin, &base, Vec::new(), &none, answer).await)
            }
            _ => None,
        };
        guard.finish(outcome);
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(service: &str, service_path: &str, gateway_path: &str) -> Stored {
        let origin = Origin {
            kind: if gateway_path.is_empty() { 'g' } else { 'r' },
            service: Arc::from(service),
            service_target: service_path.to_owned(),
            gateway_target: gateway_path.to_owned(),
            host: String::new(),
            partition: Partition::Public,
        };
        Stored::new(&origin, Content::Variants { names: Box::new([]), retain_for: Duration::ZERO })
    }

    #[test]
    fn purges_select_by_service_and_either_path() {
        let rest = stored("payment", "/payments/1/", "/payment/payments/1/");
        let field = stored("payment", "/payments/1/", "");
        let other = stored("live_reading", "/lesson/1/", "/live-reading/lesson/1/");
        let by_service = Purge::Service("payment".to_owned());
        assert!(by_service.matches(&rest) && by_service.matches(&field) && !by_service.matches(&other));
        let by_gateway = Purge::GatewayPrefix("/payment/".to_owned());
        assert!(by_gateway.matches(&rest) && !by_gateway.matches(&field) && !by_gateway.matches(&other));
        let by_service_path = Purge::ServicePrefix { service: "payment".to_owned(), prefix: "/payments/".to_owned() };
        assert!(by_service_path.matches(&rest) && by_service_path.matches(&field));
        assert!(!by_service_path.matches(&other));
        assert!(Purge::All.matches(&other));
        assert_eq!(by_service_path.key_pattern(), "?\u{1f}payment\u{1f}/payments/*");
    }
}

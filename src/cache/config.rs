//! The `[cache]` section and the per-route `cache = { ... }` table.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::problems::Problems;
use crate::routing::PathRewrite;

/// Largest `max_entry_size`: an entry's weight must fit moka's `u32`.
const LARGEST_ENTRY: ByteSize = ByteSize::gib(1);

/// Response cache settings shared by every route (`[cache]`). Caching itself
/// is turned on per route (`cache = { ttl = "30s" }`) and per GraphQL field
/// (`@cacheControl`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes the in-memory tier may hold, counting each answer's body,
    /// headers and key; the least useful entries are evicted beyond it.
    pub max_size: ByteSize,
    /// Largest answer stored; larger answers stream through uncached.
    pub max_entry_size: ByteSize,
    /// Path of the purge endpoint (`DELETE`, with `service=` and/or
    /// `prefix=`, or neither for everything) and of its statistics (`GET`).
    pub admin_path: String,
    /// Lowercase hex SHA-256 of the admin key sent in `X-Admin-Key`
    /// (`printf %s KEY | sha256sum`); the admin endpoint exists only when set.
    pub admin_key_sha256: Option<String>,
    /// A Redis shared by every replica, as a second tier behind memory for
    /// public answers (`redis://host:6379/0`); a Redis that is down only
    /// costs hits, never requests.
    pub redis_url: Option<String>,
    /// Longest wait for one Redis command before the tier is skipped.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Prefix of every key the cache writes to Redis.
    pub redis_key_prefix: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize::mib(256),
            max_entry_size: ByteSize::mib(1),
            admin_path: "/admin/cache".to_owned(),
            admin_key_sha256: None,
            redis_url: None,
            redis_timeout: Duration::from_millis(100),
            redis_key_prefix: "portico:cache:".to_owned(),
        }
    }
}

/// Who may be served a route's cached answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Each verified caller has their own entries, and anonymous callers
    /// share theirs: no answer crosses from one identity to another.
    #[default]
    Private,
    /// Everyone shares one entry per URL: only for answers that do not
    /// depend on the caller (a public catalogue).
    Public,
}

/// A route's caching (`cache = { ttl = "30s", scope = "public" }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// How long an answer is fresh when the backend says nothing, and the
    /// longest it is fresh whatever the backend says (`max-age`,
    /// `s-maxage`, `Expires` can only shorten it).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// `private` (default): entries per verified caller; `public`: shared.
    #[serde(default)]
    pub scope: CacheScope,
    /// After expiry, how long the old answer is still served at once while
    /// one background request refreshes it (RFC 5861).
    #[serde(default, with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// After expiry, how long the old answer is served when the backend is
    /// down, times out or answers 5xx (RFC 5861).
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// How long 404 and 410 answers are cached; without it they are not.
    #[serde(default, with = "humantime_serde::option")]
    pub negative_ttl: Option<Duration>,
    /// Whether a client's `Cache-Control: no-cache` (or `max-age=0`) makes
    /// the gateway fetch a new answer; `false` serves the cached one anyway.
    #[serde(default = "default_true")]
    pub honor_client_no_cache: bool,
}

fn default_true() -> bool {
    true
}

/// What the cache layer knows about one route: its caching rules and how to
/// name its answers for purges. Built by the composition root from the
/// route configuration, so the layer never imports the proxy.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// The route's prefix, its name in logs.
    pub route: std::sync::Arc<str>,
    /// The service behind the route.
    pub service: std::sync::Arc<str>,
    /// How the route's paths become the service's paths (for purges by
    /// service path, shared with GraphQL field calls).
    pub rewrite: PathRewrite,
    /// The route's settings.
    pub settings: RouteCacheConfig,
}

impl CacheConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.max_size.as_u64() == 0 {
            problems.push("cache.max_size", "must be larger than 0, e.g. \"256MiB\"");
        }
        if self.max_entry_size.as_u64() == 0 || self.max_entry_size > LARGEST_ENTRY {
            problems.push("cache.max_entry_size", format!("must be between 1 byte and {LARGEST_ENTRY}"));
        } else if self.max_entry_size > self.max_size {
            problems.push("cache.max_entry_size", "must not be larger than cache.max_size");
        }
        if !self.admin_path.starts_with('/') || self.admin_path.len() < 2 || self.admin_path.contains(['?', '#', '%']) {
            problems
                .push("cache.admin_path", format!("{:?} must be a plain path like \"/admin/cache\"", self.admin_path));
        }
        if let Some(hash) = &self.admin_key_sha256 {
            if crate::auth::KeyDigest::from_hex(hash).is_none() {
                problems.push(
                    "cache.admin_key_sha256",
                    "must be the 64-character hex SHA-256 of the key; compute it with `printf %s KEY | sha256sum`",
                );
            }
        }
        if let Some(url) = &self.redis_url {
            if let Err(error) = redis::Client::open(url.as_str()) {
                problems
                    .push("cache.redis_url", format!("{url:?} is not a Redis URL ({error}); write redis://host:6379"));
            }
        }
        if self.redis_timeout.is_zero() {
            problems.push("cache.redis_timeout", "must be greater than zero");
        }
    }
}

impl RouteCacheConfig {
    pub(crate) fn validate(&self, key: &str, problems: &mut Problems) {
        if self.ttl.is_zero() {
            problems.push(format!("{key}.ttl"), "must be greater than zero, e.g. \"30s\"");
        }
        if self.negative_ttl.is_some_and(|ttl| ttl.is_zero()) {
            problems.push(format!("{key}.negative_ttl"), "must be greater than zero; leave it out to not cache 404s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_settings_have_safe_defaults() {
        let parsed: RouteCacheConfig = toml::from_str("ttl = \"30s\"").expect("parses");
        assert_eq!(parsed.scope, CacheScope::Private, "private unless a route says otherwise");
        assert!(parsed.honor_client_no_cache);
        assert_eq!(parsed.negative_ttl, None);
        assert!(toml::from_str::<RouteCacheConfig>("ttl = \"30s\"\nsope = \"public\"").is_err());
    }

    #[test]
    fn bad_values_are_reported() {
        let first_problem = |config: CacheConfig| {
            let mut problems = Problems::default();
            config.validate(&mut problems);
            problems.first().map(|problem| problem.key.clone())
        };
        assert_eq!(first_problem(CacheConfig::default()), None);
        let too_large = CacheConfig { max_entry_size: ByteSize::gib(2), ..CacheConfig::default() };
        assert_eq!(first_problem(too_large).as_deref(), Some("cache.max_entry_size"));
        let short_hash = CacheConfig { admin_key_sha256: Some("abc".to_owned()), ..CacheConfig::default() };
        assert_eq!(first_problem(short_hash).as_deref(), Some("cache.admin_key_sha256"));
        let not_redis = CacheConfig { redis_url: Some("http://x".to_owned()), ..CacheConfig::default() };
        assert_eq!(first_problem(not_redis).as_deref(), Some("cache.redis_url"));
    }
}

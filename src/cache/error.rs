//! What can go wrong in the cache's own endpoints and at its setup. Lookups
//! and stores never fail a request: a cache problem is a miss.

/// A refused admin request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// No `X-Admin-Key` header.
    #[error("the cache admin endpoint needs the admin key in X-Admin-Key")]
    AdminKeyMissing,
    /// The key is not the configured one.
    #[error("the admin key is not valid")]
    AdminKeyInvalid,
    /// The purge request cannot be understood.
    #[error("{0}")]
    BadPurge(String),
    /// The method is neither `GET` (statistics) nor `DELETE` (purge).
    #[error("the cache admin endpoint takes GET (statistics) or DELETE (purge)")]
    MethodNotAllowed,
}

/// Why the cache could not be built from a validated configuration.
#[derive(Debug, thiserror::Error)]
pub enum CacheSetupError {
    /// The Redis URL is unusable.
    #[error("cache.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
}

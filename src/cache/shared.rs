//! The optional second tier: public answers shared through Redis by every
//! replica, behind the in-memory tier.
//!
//! Redis is a help, never a dependency: the connection is made in the
//! background (and re-made by redis' connection manager), every command is
//! bounded by `cache.redis_timeout`, and any failure only counts as a miss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::entry::Stored;

/// Longest pause between two attempts to connect.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(30);

/// Keys deleted per `UNLINK` during a purge.
const PURGE_BATCH: usize = 500;

/// The Redis tier.
#[derive(Debug, Clone)]
pub(crate) struct SharedTier {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: OnceLock<ConnectionManager>,
    connecting: AtomicBool,
    timeout: Duration,
    prefix: String,
    errors: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl SharedTier {
    /// The tier for a validated URL.
    pub fn new(url: &str, timeout: Duration, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                connection: OnceLock::new(),
                connecting: AtomicBool::new(false),
                timeout,
                prefix: prefix.to_owned(),
                errors: AtomicU64::new(0),
            }),
        })
    }

    /// Starts connecting in the background (when called inside a runtime).
    pub fn start(&self) {
        let _ = self.connection();
    }

    /// Whether a connection was made (redis' manager keeps it up since).
    pub fn is_connected(&self) -> bool {
        self.inner.connection.get().is_some()
    }

    /// Removes one key, in the background.
    pub fn delete(&self, key: &str) {
        let Some(mut connection) = self.connection() else { return };
        let command = redis::cmd("UNLINK").arg(self.redis_key(key)).to_owned();
        let tier = self.clone();
        tokio::spawn(async move {
            let _: Option<()> = tier.run(command.query_async(&mut connection)).await;
        });
    }

    /// Commands that failed or timed out so far.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// The connection, if one was made; the first call starts connecting
    /// in the background.
    fn connection(&self) -> Option<ConnectionManager> {
        if let Some(connection) = self.inner.connection.get() {
            return Some(connection.clone());
        }
        if !self.inner.connecting.swap(true, Ordering::AcqRel) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(connect(Arc::downgrade(&self.inner)));
            } else {
                self.inner.connecting.store(false, Ordering::Release);
            }
        }
        None
    }

    /// The stored answer under `key`, if Redis has one and answers in time.
    pub async fn get(&self, key: &str) -> Option<Stored> {
        let mut connection = self.connection()?;
        let command = redis::cmd("GET").arg(self.redis_key(key)).to_owned();
        let found: Option<Vec<u8>> = self.run(command.query_async(&mut connection)).await?;
        found.and_then(|bytes| Stored::decode(&bytes))
    }

    /// Stores `stored` under `key` for `retain_for`, in the background.
    pub fn put(&self, key: &str, stored: &Stored, retain_for: Duration) {
        let (Some(mut connection), Some(bytes)) = (self.connection(), stored.encode()) else { return };
        let milliseconds = u64::try_from(retain_for.as_millis()).unwrap_or(u64::MAX).max(1);
        let command = redis::cmd("SET").arg(self.redis_key(key)).arg(bytes).arg("PX").arg(milliseconds).to_owned();
        let tier = self.clone();
        tokio::spawn(async move {
            let _: Option<()> = tier.run(command.query_async(&mut connection)).await;
        });
    }

    /// Deletes the keys matching a pattern of [`super::entry::CacheKey`]
    /// fields (without the tier's prefix), in the background.
    pub fn purge(&self, key_pattern: String) {
        let Some(connection) = self.connection() else { return };
        let tier = self.clone();
        tokio::spawn(async move {
            let pattern = format!("{}{key_pattern}", escape_pattern(&tier.inner.prefix));
            if let Err(error) = tier.purge_matching(connection, &pattern).await {
                tier.inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "cache purge in Redis failed");
            }
        });
    }

    async fn purge_matching(&self, mut connection: ConnectionManager, pattern: &str) -> redis::RedisResult<()> {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(PURGE_BATCH)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn run<T>(&self, command: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.inner.timeout, command).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "cache tier in Redis failed; answering without it");
                None
            }
            Err(_elapsed) => {
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(timeout = ?self.inner.timeout, "cache tier in Redis too slow; answering without it");
                None
            }
        }
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }
}

/// Connects until it succeeds or the tier is dropped.
async fn connect(tier: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let Some(inner) = tier.upgrade() else { return };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(inner.timeout.max(Duration::from_secs(1)))
            .set_response_timeout(inner.timeout)
            .set_number_of_retries(1);
        let attempt = ConnectionManager::new_with_config(inner.client.clone(), config);
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(connection)) => {
                let _ = inner.connection.set(connection);
                tracing::info!("cache tier in Redis connected");
                return;
            }
            Ok(Err(error)) if !warned => {
                warned = true;
                tracing::warn!(%error, "cache tier in Redis unreachable; caching in memory only until it is");
            }
            Err(_elapsed) if !warned => {
                warned = true;
                tracing::warn!("cache tier in Redis did not answer; caching in memory only until it does");
            }
            _ => {}
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
    }
}

/// Escapes Redis glob characters so `text` matches only itself.
pub(crate) fn escape_pattern(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_pattern("/a*b?[c]\\"), "/a\\*b\\?\\[c\\]\\\\");
        assert_eq!(escape_pattern("portico:cache:"), "portico:cache:");
    }
}

//! The optional second tier: public answers shared through Redis by every
//! replica, behind the in-memory tier.
//!
//! Redis is a help, never a dependency: every command is bounded by
//! `cache.redis_timeout`, any failure only counts as a miss (or a skipped
//! write), and a [`RedisCircuit`] keeps a Redis that failed out of the
//! request path entirely until a background probe reaches it again. The
//! circuit starts open: the first probe makes the connection, at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::entry::Stored;
use crate::redis_health::RedisCircuit;

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
    timeout: Duration,
    prefix: String,
    errors: AtomicU64,
    circuit: Arc<RedisCircuit>,
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
                timeout,
                prefix: prefix.to_owned(),
                errors: AtomicU64::new(0),
                circuit: RedisCircuit::new("cache", true),
            }),
        })
    }

    /// Starts connecting in the background (when called inside a runtime).
    pub fn start(&self) {
        self.inner.circuit.probe_now(Arc::downgrade(&self.inner), Inner::probe);
    }

    /// Whether Redis is used now: connected, and not failed since.
    pub fn is_connected(&self) -> bool {
        self.inner.circuit.state().up
    }

    /// The circuit breaker in front of Redis, for metrics.
    pub fn circuit(&self) -> &Arc<RedisCircuit> {
        &self.inner.circuit
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

    /// The connection, unless Redis is down (or not reached yet); then the
    /// caller goes without it at once.
    fn connection(&self) -> Option<ConnectionManager> {
        if !self.inner.circuit.is_closed() {
            // A no-op while the probe runs; starts it if `start` could not.
            self.inner.circuit.probe_now(Arc::downgrade(&self.inner), Inner::probe);
            return None;
        }
        self.inner.connection.get().cloned()
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
                tier.failed(&error);
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
                self.failed(&error);
                tracing::debug!(%error, "cache tier in Redis failed; answering without it");
                None
            }
            Err(_elapsed) => {
                self.failed(&"no answer within cache.redis_timeout");
                tracing::debug!(timeout = ?self.inner.timeout, "cache tier in Redis too slow; answering without it");
                None
            }
        }
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        self.inner.circuit.failed(error, Arc::downgrade(&self.inner), Inner::probe);
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }
}

impl Inner {
    /// One probe: connects if no connection was made yet, then asks for a
    /// PING within the timeout. A connection that broke fails the first
    /// PING and makes the manager reconnect; the second waits for that.
    async fn probe(self: Arc<Self>) -> bool {
        let connection = match self.connection.get() {
            Some(connection) => connection.clone(),
            None => {
                // No retries of its own: the circuit is the back-off.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout.max(Duration::from_secs(1)))
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(0);
                let attempt = ConnectionManager::new_with_config(self.client.clone(), config);
                match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), attempt).await {
                    Ok(Ok(connection)) => self.connection.get_or_init(|| connection).clone(),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "cache tier in Redis: connecting failed");
                        return false;
                    }
                    Err(_elapsed) => return false,
                }
            }
        };
        let ping = async {
            let mut connection = connection;
            if redis::cmd("PING").query_async::<()>(&mut connection).await.is_ok() {
                return Ok(());
            }
            redis::cmd("PING").query_async::<()>(&mut connection).await
        };
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(())))
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

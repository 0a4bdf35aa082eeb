//! The GCRA decision, kept in memory (governor) or in Redis (one Lua
//! script, so that every replica shares one budget per client). Redis sits
//! behind a [`RedisCircuit`]: once it failed, it is not asked until a
//! background probe reaches it again.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::aio::ConnectionManager;

use crate::redis_health::RedisCircuit;

/// A sustained rate and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Units per second.
    pub per_second: f64,
    /// Units allowed at once.
    pub burst: u32,
}

impl Rate {
    /// Time one unit takes to be replenished.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }

    /// Seconds for an empty budget to refill completely (the header `w`).
    pub fn window_seconds(&self) -> u64 {
        (f64::from(self.burst) / self.per_second).ceil().max(1.0) as u64
    }

    fn quota(&self) -> Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(self.emission_interval()).unwrap_or_else(|| Quota::per_second(burst)).allow_burst(burst)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Units left right now.
    pub remaining: u32,
    /// Time until the budget is full again.
    pub reset: Duration,
    /// When refused: time until the request would be allowed.
    pub retry_after: Duration,
}

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

fn keyed(rate: Rate) -> Keyed {
    RateLimiter::keyed(rate.quota()).with_middleware::<StateInformationMiddleware>()
}

/// One rate's in-memory state for every client.
pub struct LocalLimiter {
    rate: Rate,
    limiter: RwLock<Arc<Keyed>>,
    max_clients: usize,
    last_prune: AtomicU64,
    origin: Instant,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter").field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl LocalLimiter {
    /// A limiter tracking at most `max_clients` clients.
    pub fn new(rate: Rate, max_clients: usize) -> Self {
        Self {
            rate,
            limiter: RwLock::new(Arc::new(keyed(rate))),
            max_clients,
            last_prune: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// The rate this limiter enforces.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn current(&self) -> Arc<Keyed> {
        Arc::clone(&self.limiter.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Charges `cost` units to `key`.
    pub fn check(&self, key: &str, cost: u32) -> Decision {
        let limiter = self.current();
        if limiter.len() >= self.max_clients {
            self.prune(&limiter);
        }
        let clock = DefaultClock::default();
        let cost = NonZeroU32::new(cost.max(1)).unwrap_or(NonZeroU32::MIN);
        let key = key.to_owned();
        match limiter.check_key_n(&key, cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    remaining,
                    reset: self.rate.emission_interval() * (self.rate.burst - remaining.min(self.rate.burst)),
                    retry_after: Duration::ZERO,
                }
            }
            Ok(Err(not_until)) => {
                let retry_after = not_until.wait_time_from(clock.now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset: self.rate.emission_interval() * self.rate.burst,
                    retry_after,
                }
            }
            // More than the whole burst at once can never pass.
            Err(_) => Decision {
                allowed: false,
                remaining: 0,
                reset: self.rate.emission_interval() * self.rate.burst,
                retry_after: self.rate.emission_interval() * self.rate.burst,
            },
        }
    }

    /// Drops clients whose budget is full again; when even that leaves too
    /// many (a flood of distinct keys), starts afresh, so memory stays
    /// bounded by `max_clients`. The scan runs at most once a second; in
    /// between, a full limiter is simply replaced.
    fn prune(&self, limiter: &Keyed) {
        let now = self.origin.elapsed().as_secs();
        if self.last_prune.swap(now, Ordering::Relaxed) != now {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if limiter.len() >= self.max_clients {
            tracing::warn!(clients = limiter.len(), "rate limiter full of active clients; resetting its state");
            *self.limiter.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyed(self.rate));
        }
    }

    /// Periodic housekeeping: forget clients whose budget is full.
    pub fn retain_recent(&self) {
        let limiter = self.current();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    /// Clients tracked now.
    pub fn tracked_clients(&self) -> usize {
        self.current().len()
    }
}

/// The same GCRA as governor's, made atomically in Redis with Redis's own
/// clock, so every replica reads and writes one theoretical arrival time.
const GCRA_SCRIPT: &str = r#"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = emission * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * cost
if new_tat - now > tolerance then
  return {0, math.floor(new_tat - tolerance - now), math.floor(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor(new_tat - now)}
"#;

/// The Redis connection and script, behind a circuit breaker.
pub struct RedisStore {
    inner: Arc<RedisConnection>,
}

struct RedisConnection {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    circuit: Arc<RedisCircuit>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisDecisionError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the configured time.
    #[error("redis did not answer in time")]
    Timeout,
    /// Redis failed recently and is not asked until a probe reaches it.
    #[error("redis is down; not asked until a probe reaches it")]
    CircuitOpen,
}

impl RedisStore {
    /// A store for `url` (validated); connects on first use and reconnects
    /// by itself.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            inner: Arc::new(RedisConnection {
                client: redis::Client::open(url)?,
                connection: tokio::sync::OnceCell::new(),
                script: redis::Script::new(GCRA_SCRIPT),
                timeout,
                circuit: RedisCircuit::new("ratelimit", false),
            }),
        })
    }

    /// Charges `cost` units of `rate` to `key`; while Redis is known to be
    /// down, fails at once instead of waiting for it.
    pub async fn check(&self, key: &str, rate: Rate, cost: u32) -> Result<Decision, RedisDecisionError> {
        let inner = &self.inner;
        if !inner.circuit.is_closed() {
            return Err(RedisDecisionError::CircuitOpen);
        }
        let outcome = tokio::time::timeout(inner.timeout, inner.check_now(key, rate, cost)).await;
        let outcome = outcome.unwrap_or(Err(RedisDecisionError::Timeout));
        if let Err(error) = &outcome {
            inner.circuit.failed(error, Arc::downgrade(inner), RedisConnection::probe);
        }
        outcome
    }

    /// The circuit breaker in front of Redis, for metrics.
    pub fn circuit(&self) -> &Arc<RedisCircuit> {
        &self.inner.circuit
    }
}

impl RedisConnection {
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                // No retries of its own: the circuit is the back-off.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout.max(Duration::from_millis(200)))
                    .set_number_of_retries(0);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(connection.clone())
    }

    async fn check_now(&self, key: &str, rate: Rate, cost: u32) -> Result<Decision, RedisDecisionError> {
        let mut connection = self.connection().await?;
        let emission_micros = rate.emission_interval().as_micros() as u64;
        let (allowed, retry_micros, until_empty_micros): (i64, i64, i64) = self
            .script
            .key(key)
            .arg(emission_micros)
            .arg(rate.burst)
            .arg(cost.max(1))
            .invoke_async(&mut connection)
            .await?;
        let emission = rate.emission_interval().as_secs_f64();
        let outstanding = Duration::from_micros(until_empty_micros.max(0) as u64);
        let used = (outstanding.as_secs_f64() / emission).ceil() as u32;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: rate.burst.saturating_sub(used),
            reset: outstanding,
            retry_after: Duration::from_micros(retry_micros.max(0) as u64),
        })
    }

    /// One probe: whether Redis answers a PING within the timeout. A
    /// connection that broke fails the first PING and makes the manager
    /// reconnect; the second waits for that reconnection.
    async fn probe(self: Arc<Self>) -> bool {
        let ping = async {
            let mut connection = self.connection().await?;
            if redis::cmd("PING").query_async::<()>(&mut connection).await.is_ok() {
                return Ok(());
            }
            redis::cmd("PING").query_async::<()>(&mut connection).await
        };
        matches!(tokio::time::timeout(self.timeout, ping).await, Ok(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_with_a_retry_time() {
        let limiter = LocalLimiter::new(Rate { per_second: 1.0, burst: 3 }, 100);
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.check("client", 1)).collect();
        assert_eq!(decisions.iter().filter(|decision| decision.allowed).count(), 3);
        assert_eq!(decisions[0].remaining, 2);
        assert_eq!(decisions[2].remaining, 0);
        let refused = decisions[3];
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_millis(500) && refused.retry_after <= Duration::from_secs(1));
        assert!(limiter.check("another client", 1).allowed, "clients have separate budgets");
    }

    #[test]
    fn a_cost_above_the_burst_never_passes() {
        let limiter = LocalLimiter::new(Rate { per_second: 10.0, burst: 5 }, 100);
        assert!(!limiter.check("client", 6).allowed);
        assert!(limiter.check("client", 5).allowed);
    }

    #[test]
    fn a_flood_of_distinct_clients_keeps_memory_bounded() {
        let limiter = LocalLimiter::new(Rate { per_second: 1.0, burst: 10 }, 2_000);
        for index in 0..50_000_u32 {
            limiter.check(&format!("10.{}.{}.{}", index >> 16, (index >> 8) & 255, index & 255), 1);
            assert!(limiter.tracked_clients() <= 2_000, "{} clients tracked", limiter.tracked_clients());
        }
    }
}

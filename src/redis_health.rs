//! A circuit breaker for Redis, shared by the rate limiter and the cache's
//! Redis tier, so that a Redis that is down costs nothing per request.
//!
//! Without it, every request waited the whole `redis_timeout` for a Redis
//! that could not answer before falling back (one replica went from 28,000
//! to 390 requests/s). Now the first failure opens the circuit: callers ask
//! [`RedisCircuit::is_closed`] (one relaxed atomic load) and, while it is
//! open, decide without Redis at once. One background task probes Redis
//! (PING, which also makes redis' connection manager reconnect) after a
//! back-off window that starts at 100 ms and doubles, with jitter, up to
//! 5 s; its first success closes the circuit. Requests never probe, so an
//! outage costs one PING per window, whatever the traffic.
//!
//! It lives in a leaf module because both `ratelimit` and `cache` use it
//! and neither may import the other.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The first back-off window after a failure.
const FIRST_WINDOW: Duration = Duration::from_millis(100);

/// The longest back-off window.
const LONGEST_WINDOW: Duration = Duration::from_secs(5);

/// Whether Redis is asked, and the one probe that finds it back.
#[derive(Debug)]
pub struct RedisCircuit {
    /// What uses this Redis (`ratelimit`, `cache`), for logs and metrics.
    component: &'static str,
    open: AtomicBool,
    probing: AtomicBool,
    short_circuited: AtomicU64,
}

/// What metrics read of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitState {
    /// Redis is asked (the circuit is closed).
    pub up: bool,
    /// Calls answered without Redis because the circuit was open.
    pub short_circuited: u64,
}

impl RedisCircuit {
    /// A circuit for `component`; `open` until a first probe succeeds
    /// when the connection is made in the background from the start.
    pub fn new(component: &'static str, open: bool) -> Arc<Self> {
        Arc::new(Self {
            component,
            open: AtomicBool::new(open),
            probing: AtomicBool::new(false),
            short_circuited: AtomicU64::new(0),
        })
    }

    /// Whether a call may go to Redis now; a refused call is counted.
    pub fn is_closed(&self) -> bool {
        if self.open.load(Ordering::Relaxed) {
            self.short_circuited.fetch_add(1, Ordering::Relaxed);
            false
        } else {
            true
        }
    }

    /// What uses this Redis (`ratelimit`, `cache`).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The state now, for metrics.
    pub fn state(&self) -> CircuitState {
        CircuitState {
            up: !self.open.load(Ordering::Relaxed),
            short_circuited: self.short_circuited.load(Ordering::Relaxed),
        }
    }

    /// A call to Redis failed: opens the circuit and, unless one runs
    /// already, starts the probe. `probe` is called once per window with
    /// the target it was given; it stops when the target is dropped.
    pub fn failed<T, F, Fut>(self: &Arc<Self>, error: &dyn std::fmt::Display, target: Weak<T>, probe: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        if !self.open.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                component = self.component,
                %error,
                "redis unreachable; answering without it until a probe reaches it again"
            );
        }
        self.start_probing(target, probe, FIRST_WINDOW);
    }

    /// Starts the probe at once (for a connection made in the background
    /// from the start), unless one runs already. Cheap when one runs: a
    /// caller that finds the circuit open may call it every time.
    pub fn probe_now<T, F, Fut>(self: &Arc<Self>, target: Weak<T>, probe: F)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        self.start_probing(target, probe, Duration::ZERO);
    }

    fn start_probing<T, F, Fut>(self: &Arc<Self>, target: Weak<T>, probe: F, first_wait: Duration)
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        // The load keeps callers that find a probe running read-only.
        if self.probing.load(Ordering::Relaxed) || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Release);
            return;
        };
        let circuit = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut wait = first_wait;
            let mut window = FIRST_WINDOW;
            // A failure was logged when the circuit opened; a circuit that
            // starts open logs its first failed probe instead.
            let mut warned = !first_wait.is_zero();
            loop {
                tokio::time::sleep(wait).await;
                let Some(target) = target.upgrade() else { return };
                let reached = probe(target).await;
                let Some(circuit) = circuit.upgrade() else { return };
                if reached {
                    circuit.probing.store(false, Ordering::Release);
                    if circuit.open.swap(false, Ordering::AcqRel) {
                        tracing::info!(component = circuit.component, "redis reachable again");
                    }
                    return;
                }
                if !warned {
                    warned = true;
                    tracing::warn!(
                        component = circuit.component,
                        "redis unreachable; answering without it until a probe reaches it"
                    );
                }
                wait = jittered(window);
                window = (window * 2).min(LONGEST_WINDOW);
            }
        });
    }
}

/// Between half the window and the whole of it, so that replicas that lost
/// Redis together do not all probe it at the same instant.
fn jittered(window: Duration) -> Duration {
    window.mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeRedis {
        up: AtomicBool,
        pings: AtomicU64,
    }

    fn ping(redis: Arc<FakeRedis>) -> impl Future<Output = bool> {
        redis.pings.fetch_add(1, Ordering::Relaxed);
        std::future::ready(redis.up.load(Ordering::Relaxed))
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_per_window_until_redis_is_back() {
        let redis = Arc::new(FakeRedis { up: AtomicBool::new(false), pings: AtomicU64::new(0) });
        let circuit = RedisCircuit::new("test", false);
        assert!(circuit.is_closed());
        for _ in 0..1_000 {
            circuit.failed(&"refused", Arc::downgrade(&redis), ping);
        }
        assert!(!circuit.is_closed(), "the first failure opens the circuit");
        assert_eq!(circuit.state(), CircuitState { up: false, short_circuited: 1 });

        // Windows of 100, 200, 400, 800 ms (jittered down to half): at
        // least four probes in 1.5 s and at most one per half window.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let pings = redis.pings.load(Ordering::Relaxed);
        assert!((4..=6).contains(&pings), "{pings} probes");

        // The windows are capped at 5 s: after a minute, about one probe
        // every 2.5 to 5 s.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let pings = redis.pings.load(Ordering::Relaxed);
        assert!((17..=31).contains(&pings), "{pings} probes");

        redis.up.store(true, Ordering::Relaxed);
        tokio::time::sleep(LONGEST_WINDOW + Duration::from_millis(1)).await;
        assert!(circuit.is_closed(), "the first successful probe closes the circuit");
        let pings = redis.pings.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(redis.pings.load(Ordering::Relaxed), pings, "no probes while closed");
    }

    #[tokio::test(start_paused = true)]
    async fn probing_stops_when_its_target_is_dropped() {
        let redis = Arc::new(FakeRedis { up: AtomicBool::new(false), pings: AtomicU64::new(0) });
        let circuit = RedisCircuit::new("test", true);
        circuit.probe_now(Arc::downgrade(&redis), ping);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(redis.pings.load(Ordering::Relaxed), 1, "the first probe runs at once");
        assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), 1, "the probe waits");
        drop(redis);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), 0, "the probe ended");
    }
}

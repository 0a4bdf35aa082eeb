//! Health state of one replica, and the active checker that probes replicas.
//!
//! Two independent signals decide whether a replica takes traffic: the
//! active checker's verdict (`GET /health/` at an interval) and passive
//! ejection after consecutive failures of real requests. Ejection lasts a
//! back-off that doubles with each ejection; the first success, a real
//! answer or a passed check, ends it and resets the back-off, so a replica
//! that comes back is used again at once. Replicas out of rotation are
//! checked at the shorter `unhealthy_interval` for the same reason.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::config::PassiveHealthConfig;

/// Milliseconds since the service was built; a plain integer so that the
/// health state is a handful of atomics.
#[derive(Debug, Clone, Copy)]
pub struct HealthClock {
    origin: Instant,
}

impl HealthClock {
    /// A clock starting now (tokio's clock, so paused-time tests control it).
    pub fn start() -> Self {
        Self { origin: Instant::now() }
    }

    /// Elapsed milliseconds.
    pub fn now_millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One replica's health.
#[derive(Debug)]
pub struct EndpointHealth {
    actively_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejected_until_millis: AtomicU64,
    ejections: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            // Optimistic until the first check says otherwise, so a gateway
            // starting together with its backends serves at once.
            actively_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_millis: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

impl EndpointHealth {
    /// Whether the replica may take traffic at `now_millis`.
    pub fn is_available(&self, now_millis: u64) -> bool {
        self.actively_healthy.load(Ordering::Relaxed) && !self.is_ejected(now_millis)
    }

    /// The active checker's latest verdict.
    pub fn is_actively_healthy(&self) -> bool {
        self.actively_healthy.load(Ordering::Relaxed)
    }

    /// Whether passive health currently keeps the replica out.
    pub fn is_ejected(&self, now_millis: u64) -> bool {
        now_millis < self.ejected_until_millis.load(Ordering::Relaxed)
    }

    /// Records a request the replica answered properly, or a passed check:
    /// the failure streak and the back-off reset, and an ejection ends.
    /// Returns whether it ended an ejection (the clock is read only then).
    pub fn record_success(&self, clock: &HealthClock) -> bool {
        // Loads first: on the hot path the state is nearly always clean, and
        // a load does not dirty the cache line the other cores read.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let ejected_until = self.ejected_until_millis.load(Ordering::Relaxed);
        if ejected_until == 0 {
            return false;
        }
        self.ejected_until_millis.store(0, Ordering::Relaxed);
        clock.now_millis() < ejected_until
    }

    /// Records a failed request; returns the ejection length when this
    /// failure ejected the replica.
    pub fn record_failure(&self, policy: &PassiveHealthConfig, now_millis: u64) -> Option<Duration> {
        if !policy.enabled {
            return None;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures || self.is_ejected(now_millis) {
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let previous = self.ejections.fetch_add(1, Ordering::Relaxed);
        let factor = 1_u32.checked_shl(previous.min(16)).unwrap_or(u32::MAX);
        let ejection = policy.base_ejection.saturating_mul(factor).min(policy.max_ejection);
        let until = now_millis.saturating_add(u64::try_from(ejection.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_millis.store(until, Ordering::Relaxed);
        Some(ejection)
    }

    /// Sets the active checker's verdict; returns whether it changed.
    pub fn set_actively_healthy(&self, healthy: bool) -> bool {
        self.actively_healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
}

/// Counts consecutive check results for one replica and turns them into
/// verdicts according to the thresholds.
#[derive(Debug, Default)]
pub struct CheckStreak {
    successes: u32,
    failures: u32,
}

impl CheckStreak {
    /// Adds one result; returns the verdict it settles, if any.
    pub fn observe(&mut self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= healthy_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= unhealthy_threshold).then_some(false)
        }
    }
}

/// Keeps a service set's background tasks (health checks, DNS refreshes)
/// alive; dropping it stops them.
#[derive(Debug, Default)]
pub struct BackgroundTasks {
    pub(super) handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PassiveHealthConfig {
        PassiveHealthConfig {
            enabled: true,
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(3),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_with_growing_back_off() {
        let health = EndpointHealth::default();
        let policy = policy();
        assert_eq!(health.record_failure(&policy, 0), None);
        assert_eq!(health.record_failure(&policy, 0), None);
        assert_eq!(health.record_failure(&policy, 0), Some(Duration::from_secs(1)));
        assert!(!health.is_available(999));
        assert!(health.is_available(1000));
        for _ in 0..2 {
            health.record_failure(&policy, 1000);
        }
        assert_eq!(health.record_failure(&policy, 1000), Some(Duration::from_secs(2)));
        for _ in 0..2 {
            health.record_failure(&policy, 3000);
        }
        assert_eq!(health.record_failure(&policy, 3000), Some(Duration::from_secs(3)), "capped at max");
    }

    #[test]
    fn a_success_resets_the_streak_and_the_back_off() {
        let health = EndpointHealth::default();
        let policy = policy();
        health.record_failure(&policy, 0);
        health.record_failure(&policy, 0);
        let clock = HealthClock::start();
        assert!(!health.record_success(&clock), "nothing was ejected");
        assert_eq!(health.record_failure(&policy, 0), None);
        health.record_failure(&policy, 0);
        assert_eq!(health.record_failure(&policy, clock.now_millis()), Some(Duration::from_secs(1)));
        assert!(health.record_success(&clock), "the success ended the ejection");
        assert!(health.is_available(clock.now_millis()), "back in rotation before the back-off ran out");
        for _ in 0..2 {
            health.record_failure(&policy, 5000);
        }
        assert_eq!(health.record_failure(&policy, 5000), Some(Duration::from_secs(1)));
    }

    #[test]
    fn check_streak_applies_thresholds() {
        let mut streak = CheckStreak::default();
        assert_eq!(streak.observe(false, 2, 2), None);
        assert_eq!(streak.observe(false, 2, 2), Some(false));
        assert_eq!(streak.observe(true, 2, 2), None);
        assert_eq!(streak.observe(true, 2, 2), Some(true));
    }
}

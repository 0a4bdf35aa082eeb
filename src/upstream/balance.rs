//! Replica selection, kept apart from health: a selector only picks among the
//! replicas it is told are eligible, so each strategy is tested on its own
//! and health rules apply equally to all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::config::LoadBalancing;
use super::Endpoint;

/// A load-balancing strategy.
pub trait Selector: Send + Sync {
    /// Picks the index of an endpoint for which `eligible` holds, or `None`
    /// when there is none.
    fn select(&self, endpoints: &[Arc<Endpoint>], eligible: &dyn Fn(usize) -> bool) -> Option<usize>;
}

/// Builds the selector for a configured strategy.
pub fn selector_for(strategy: LoadBalancing, endpoints: &[Arc<Endpoint>]) -> Box<dyn Selector> {
    match strategy {
        LoadBalancing::RoundRobin => Box::new(RoundRobin::default()),
        LoadBalancing::Weighted => Box::new(Weighted::new(endpoints.iter().map(|endpoint| endpoint.weight()))),
        LoadBalancing::LeastRequests => Box::new(LeastRequests),
    }
}

/// Each replica in turn; ineligible ones are skipped.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Selector for RoundRobin {
    fn select(&self, endpoints: &[Arc<Endpoint>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count).map(|offset| (start + offset) % count).find(|&index| eligible(index))
    }
}

/// Smooth weighted round robin (NGINX's algorithm), computed once at start
/// into a schedule so that a pick is one atomic increment.
#[derive(Debug)]
pub struct Weighted {
    schedule: Box<[usize]>,
    next: AtomicUsize,
}

impl Weighted {
    /// Builds the schedule for replicas with the given weights.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(i64::from).collect();
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let weights: Vec<i64> = weights.iter().map(|weight| weight / divisor).collect();
        let total: i64 = weights.iter().sum();
        // A schedule longer than this repeats a shorter pattern closely enough;
        // capping it bounds the memory of absurd weights.
        let length = total.clamp(0, 10_000) as usize;
        let mut current = vec![0_i64; weights.len()];
        let mut schedule = Vec::with_capacity(length);
        for _ in 0..length {
            for (running, weight) in current.iter_mut().zip(&weights) {
                *running += weight;
            }
            let Some((best, _)) =
                current.iter().enumerate().max_by_key(|&(index, running)| (*running, -(index as i64)))
            else {
                break;
            };
            current[best] -= total;
            schedule.push(best);
        }
        Self { schedule: schedule.into_boxed_slice(), next: AtomicUsize::new(0) }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Selector for Weighted {
    fn select(&self, endpoints: &[Arc<Endpoint>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        // Consuming schedule slots until an eligible one comes up hands an
        // ineligible replica's share to the others in proportion to theirs.
        let from_schedule = (0..self.schedule.len())
            .map(|_| self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len()])
            .find(|&index| eligible(index));
        from_schedule.or_else(|| (0..endpoints.len()).find(|&index| eligible(index)))
    }
}

/// Power of two choices over in-flight request counts: two random eligible
/// replicas are compared and the less busy one wins, which avoids the herd
/// behaviour of always picking the global minimum.
#[derive(Debug, Default)]
pub struct LeastRequests;

impl Selector for LeastRequests {
    fn select(&self, endpoints: &[Arc<Endpoint>], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = endpoints.len();
        if count == 0 {
            return None;
        }
        let first = fastrand::usize(..count);
        let second = (first + 1 + fastrand::usize(..count.max(2) - 1)) % count;
        match (eligible(first), eligible(second)) {
            (true, true) => {
                Some(if endpoints[second].in_flight() < endpoints[first].in_flight() { second } else { first })
            }
            (true, false) => Some(first),
            (false, true) => Some(second),
            (false, false) => {
                (0..count).filter(|&index| eligible(index)).min_by_key(|&index| endpoints[index].in_flight())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::config::EndpointConfig;

    fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| {
                let config = EndpointConfig::Weighted { url: format!("http://127.0.0.1:{}", 9000 + index), weight };
                Arc::new(Endpoint::new(&config).expect("valid endpoint"))
            })
            .collect()
    }

    fn counts(
        selector: &dyn Selector,
        endpoints: &[Arc<Endpoint>],
        picks: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut counts = vec![0; endpoints.len()];
        for _ in 0..picks {
            counts[selector.select(endpoints, eligible).expect("an eligible endpoint")] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_ineligible() {
        let endpoints = endpoints(&[1, 1, 1]);
        let selector = RoundRobin::default();
        assert_eq!(counts(&selector, &endpoints, 300, &|_| true), vec![100, 100, 100]);
        let only_two = counts(&selector, &endpoints, 300, &|index| index != 1);
        assert_eq!(only_two[1], 0);
        assert_eq!(only_two[0] + only_two[2], 300);
        assert_eq!(selector.select(&endpoints, &|_| false), None);
    }

    #[test]
    fn weighted_follows_weights_and_interleaves() {
        let endpoints = endpoints(&[5, 1, 1]);
        let selector = Weighted::new([5, 1, 1]);
        assert_eq!(counts(&selector, &endpoints, 700, &|_| true), vec![500, 100, 100]);
        // Smooth: the heavy replica never gets all of a window of seven picks in a row.
        let window: Vec<usize> = (0..7).filter_map(|_| selector.select(&endpoints, &|_| true)).collect();
        assert!(window.windows(2).any(|pair| pair[0] != pair[1]), "{window:?}");
        let without_heavy = counts(&selector, &endpoints, 100, &|index| index != 0);
        assert_eq!(without_heavy, vec![0, 50, 50]);
    }

    #[test]
    fn least_requests_prefers_the_idle_replica() {
        let endpoints = endpoints(&[1, 1]);
        let _busy: Vec<_> = (0..5).map(|_| endpoints[0].start_request()).collect();
        let picks = counts(&LeastRequests, &endpoints, 200, &|_| true);
        assert_eq!(picks, vec![0, 200]);
        assert_eq!(counts(&LeastRequests, &endpoints, 50, &|index| index == 0), vec![50, 0]);
    }
}

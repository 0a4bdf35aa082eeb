//! Request coalescing: concurrent misses for one key make one backend
//! request, and the others wait for its answer.
//!
//! moka's `get_with` coalesces only while a key is absent, but an expired
//! answer must stay in the cache for `stale-if-error` while its successor
//! is fetched, and an answer that turns out not to be storable must not be
//! handed to the waiters at all (it may be private, or a stream). So the
//! flights are tracked here: a map from key to the leader's pending outcome,
//! behind a `std` mutex that is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::{FutureExt, Shared};
use http::HeaderName;
use tokio::sync::oneshot;

use super::entry::{CacheKey, Stored};

/// What a leader's fetch produced for its waiters.
#[derive(Debug, Clone)]
pub(crate) struct Filled {
    /// The key the answer was stored under (a variant key with `Vary`).
    pub key: CacheKey,
    /// The request headers the answer varies on.
    pub vary: Arc<[HeaderName]>,
    pub stored: Arc<Stored>,
}

/// `None`: nothing usable was stored; each waiter fetches on its own.
pub(crate) type Outcome = Option<Filled>;

type Pending = Shared<oneshot::Receiver<Outcome>>;

/// The flights in progress.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    pending: Mutex<HashMap<CacheKey, Pending>>,
}

/// The caller's part in a flight.
pub(crate) enum Role<'a> {
    /// Fetch, then report through the guard.
    Leader(LeaderGuard<'a>),
    /// Wait for the leader; an `Err` means the leader went away.
    Follower(Pending),
}

impl Flights {
    /// Leads the flight for `key`, or joins the one in progress.
    pub fn join(&self, key: &CacheKey) -> Role<'_> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = pending.get(key) {
            return Role::Follower(flight.clone());
        }
        let (sender, receiver) = oneshot::channel();
        pending.insert(Arc::clone(key), receiver.shared());
        Role::Leader(LeaderGuard { flights: self, key: Arc::clone(key), sender: Some(sender) })
    }

    fn end(&self, key: &CacheKey) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// Ends the flight when the leader reports, or when it is dropped (its
/// client went away): the waiters then see the channel closed and try again.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: CacheKey,
    sender: Option<oneshot::Sender<Outcome>>,
}

impl LeaderGuard<'_> {
    /// Hands the outcome to every waiter.
    pub fn finish(mut self, outcome: Outcome) {
        self.flights.end(&self.key);
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(outcome);
        }
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.flights.end(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_a_dropped_leader_frees_the_key() {
        let flights = Flights::default();
        let key: CacheKey = Arc::from("k");
        let Role::Leader(leader) = flights.join(&key) else { panic!("the first caller leads") };
        let Role::Follower(follower) = flights.join(&key) else { panic!("the second follows") };
        leader.finish(None);
        assert!(matches!(follower.await, Ok(None)));

        let Role::Leader(leader) = flights.join(&key) else { panic!("the key is free again") };
        let Role::Follower(follower) = flights.join(&key) else { panic!("follows") };
        drop(leader);
        assert!(follower.await.is_err(), "the follower learns the leader went away");
        assert!(matches!(flights.join(&key), Role::Leader(_)));
    }
}

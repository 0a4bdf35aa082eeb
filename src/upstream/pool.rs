//! Keep-alive HTTP/1 connections to one replica, on hyper's low-level
//! client: a connection is checked out for one request and checked back in
//! by the answer's body once it has ended.
//!
//! hyper-util's pooled client costs, for every request, a pool lookup by
//! scheme and authority under a shared lock, a race between checkout and a
//! speculative connect, connection extras copied into the answer, and a
//! task spawned only to wait until the connection is idle again (measured:
//! a few per cent of the gateway's CPU under the REST benchmark). Here a
//! replica owns its idle list, and the answer's body hands its connection
//! back itself, so a request spawns nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::body::AttemptBody;
use super::error::AttemptError;
use super::tls::Connector;

/// How often the idle list is swept at most, however short the idle timeout.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The idle connections of one replica and how to open more.
pub(super) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    target: Uri,
    sweeping: AtomicBool,
}

struct Idle {
    sender: SendRequest<AttemptBody>,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("target", &self.target).finish_non_exhaustive()
    }
}

/// A connection lent to one request, given back by [`Lent::check_in`].
pub(super) struct Lent {
    pool: Arc<Pool>,
    sender: SendRequest<AttemptBody>,
}

impl Lent {
    /// Returns the connection for the next request; its answer has been
    /// read whole.
    pub(super) fn check_in(self) {
        self.pool.check_in(self.sender);
    }
}

impl Pool {
    pub(super) fn new(connector: Connector, target: Uri, max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connector,
            target,
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its URI in origin form) on an idle connection, or on
    /// a new one. A request that an idle connection refused before taking it
    /// (the replica had closed it meanwhile) goes out again on another one,
    /// as nothing of it was sent.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<AttemptBody>,
    ) -> Result<(Response<Incoming>, Lent), AttemptError> {
        loop {
            let (mut sender, reused) = match self.check_out() {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, maybe TLS) is a large future that
                // a request on a pooled connection would otherwise carry
                // inline, and the whole request future is moved into its
                // box on every request.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lent { pool: Arc::clone(self), sender })),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(AttemptError::Http(error.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that can take a request now.
    fn check_out(self: &Arc<Self>) -> Option<SendRequest<AttemptBody>> {
        let mut unsettled = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            loop {
                let Some(entry) = idle.pop() else { break None };
                if entry.sender.is_closed() || now.duration_since(entry.since) >= self.idle_timeout {
                    continue;
                }
                if entry.sender.is_ready() {
                    break Some(entry.sender);
                }
                unsettled.push(entry.sender);
            }
        };
        // Checked in before its connection noticed that the answer ended
        // (another worker thread was still on it): it comes back once it has.
        for mut sender in unsettled {
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.check_in(sender);
                }
            });
        }
        found
    }

    fn check_in(self: &Arc<Self>, sender: SendRequest<AttemptBody>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle { sender, since: Instant::now() });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            self.start_sweeping();
        }
    }

    async fn connect(&self) -> Result<SendRequest<AttemptBody>, AttemptError> {
        let io = self.connector.clone().oneshot(self.target.clone()).await.map_err(AttemptError::Connect)?;
        let (sender, connection) = http1::Builder::new().handshake(io).await.map_err(AttemptError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %crate::telemetry::ErrorChain(&error), "backend connection failed");
            }
        });
        Ok(sender)
    }

    /// Closes connections idle for longer than the idle timeout, until the
    /// pool is dropped.
    fn start_sweeping(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let pool: Weak<Self> = Arc::downgrade(self);
        let interval = self.idle_timeout.max(MIN_SWEEP_INTERVAL);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                // Dropped outside the lock: closing is the connections' tasks' work.
                let expired: Vec<Idle> = {
                    let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                    let (keep, expired) = std::mem::take(&mut *idle).into_iter().partition(|entry: &Idle| {
                        !entry.sender.is_closed() && now.duration_since(entry.since) < pool.idle_timeout
                    });
                    *idle = keep;
                    expired
                };
                drop(expired);
            }
        });
    }
}

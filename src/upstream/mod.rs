//! The client library for backend services: pooled connections (plain or
//! verified TLS), replica selection, health, retries and timeouts.
//!
//! Architecture invariant: this module knows nothing of routes, GraphQL,
//! identities or caches. Callers hand it a request whose URI is a path and
//! query; it decides which replica answers and whether a failure may be
//! retried.

mod balance;
mod body;
mod config;
mod discovery;
mod error;
mod health;
mod pool;
mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tokio_rustls::rustls::RootCertStore;
use tower::retry::budget::{Budget, TpsBudget};

use crate::telemetry::metrics::{EndpointState, EndpointStates, Metrics, ServiceMetrics, UpstreamOutcome};

pub use balance::{selector_for, LeastRequests, RoundRobin, Selector, Weighted};
pub use body::{UpstreamRequestBody, UpstreamResponseBody};
pub use config::{
    Discovery, EndpointConfig, HealthCheckConfig, LoadBalancing, PassiveHealthConfig, RetryConfig, ServiceConfig,
    UpstreamTlsConfig,
};
pub use discovery::DiscoveryError;
pub use error::{AttemptError, UpstreamError};
pub use health::BackgroundTasks;
pub use tls::{public_connector, CaFileError, Connector};

use body::AttemptBody;
use health::{CheckStreak, EndpointHealth, HealthClock};
use pool::Pool;

/// Every configured backend service, by name.
#[derive(Clone, Debug, Default)]
pub struct Upstreams {
    services: Arc<HashMap<String, Arc<UpstreamService>>>,
}

impl Upstreams {
    /// Builds clients and health state for every service. The configuration
    /// has been validated, so endpoints parse and CA files were read.
    /// Metrics go to a registry of their own, which nothing scrapes.
    pub fn new(configs: &BTreeMap<String, ServiceConfig>) -> Result<Self, UpstreamBuildError> {
        Self::with_metrics(configs, &Metrics::default())
    }

    /// Like [`Upstreams::new`], reporting calls, retries and ejections into `metrics`.
    pub fn with_metrics(
        configs: &BTreeMap<String, ServiceConfig>,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamBuildError> {
        Self::reusing(&Self { services: Arc::default() }, |_| false, configs, metrics)
    }

    /// Like [`Upstreams::with_metrics`] for a reloaded configuration: the
    /// services `unchanged` names are taken from `previous` as they are
    /// (their pools keep their connections, their replicas their health),
    /// the others are built anew.
    pub fn reusing(
        previous: &Upstreams,
        unchanged: impl Fn(&str) -> bool,
        configs: &BTreeMap<String, ServiceConfig>,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamBuildError> {
        let public_roots = Arc::new(tls::public_roots());
        let services = configs
            .iter()
            .map(|(name, config)| match previous.services.get(name).filter(|_| unchanged(name)) {
                Some(service) => Ok((name.clone(), Arc::clone(service))),
                None => Ok((name.clone(), Arc::new(UpstreamService::new(name, config, &public_roots, metrics)?))),
            })
            .collect::<Result<_, UpstreamBuildError>>()?;
        Ok(Self { services: Arc::new(services) })
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<UpstreamService>> {
        self.services.get(name)
    }

    /// Names of services without any replica able to take traffic.
    pub fn unready_services(&self) -> Vec<&str> {
        let mut unready: Vec<&str> = self
            .services
            .iter()
            .filter(|(_, service)| !service.has_available_endpoint())
            .map(|(name, _)| name.as_str())
            .collect();
        unready.sort_unstable();
        unready
    }

    /// Starts the active health checkers and the DNS refreshes; they run
    /// until the returned value is dropped. A service kept by a reload gets
    /// new tasks over the replicas it has, so its set stays the last good one.
    pub fn spawn_background(&self) -> BackgroundTasks {
        let checks = self
            .services
            .values()
            .filter(|service| service.health_check.enabled)
            .map(|service| tokio::spawn(Arc::clone(service).run_health_checks()));
        let refreshes = self
            .services
            .values()
            .filter(|service| service.dns.is_some())
            .map(|service| tokio::spawn(Arc::clone(service).run_discovery()));
        BackgroundTasks { handles: checks.chain(refreshes).collect() }
    }
}

impl EndpointStates for Upstreams {
    fn visit(&self, report: &mut dyn FnMut(&str, &str, EndpointState)) {
        for (name, service) in self.services.iter() {
            let now = service.clock.now_millis();
            for endpoint in service.set.load().endpoints.iter() {
                let state = EndpointState {
                    healthy: endpoint.health.is_actively_healthy(),
                    ejected: endpoint.health.is_ejected(now),
                };
                report(name, &endpoint.label, state);
            }
        }
    }
}

/// A service whose client could not be built: an endpoint URL that is not
/// a client target, or an unusable CA file.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct UpstreamBuildError {
    key: String,
    message: String,
}

/// One replica of a service.
#[derive(Debug)]
pub struct Endpoint {
    scheme: Scheme,
    authority: Authority,
    /// The `Host` a request gets when its caller set none, written once:
    /// the value hyper-util's client would otherwise format per request.
    host: Option<HeaderValue>,
    label: Arc<str>,
    weight: u32,
    in_flight: Arc<AtomicUsize>,
    health: EndpointHealth,
    /// Idle connections, once the service has given the replica its pool.
    pool: Option<Arc<Pool>>,
}

impl Endpoint {
    /// Builds a replica from its configuration.
    pub fn new(config: &EndpointConfig) -> Result<Self, String> {
        let (scheme, authority) = config.target()?;
        Ok(Self {
            host: host_header(&scheme, &authority),
            label: Arc::from(authority.as_str()),
            scheme,
            authority,
            weight: config.weight(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            health: EndpointHealth::default(),
            pool: None,
        })
    }

    /// A replica found by DNS: `address` is dialled, while `Host` and (for
    /// `https://`) the certificate's name stay those of the configured URL.
    fn resolved(config: &EndpointConfig, address: IpAddr) -> Result<Self, String> {
        let (scheme, named) = config.target()?;
        let port = named.port_u16().unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        let dialled =
            Authority::try_from(SocketAddr::new(address, port).to_string()).map_err(|error| error.to_string())?;
        Ok(Self {
            host: host_header(&scheme, &named),
            label: Arc::from(dialled.as_str()),
            scheme,
            authority: dialled,
            weight: config.weight(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            health: EndpointHealth::default(),
            pool: None,
        })
    }

    /// `host:port`, for logs and metrics (never for client answers).
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests currently in flight, counted until their answer body ends.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request until the returned guard is dropped.
    pub fn start_request(&self) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(&self.in_flight))
    }

    /// What the connector dials: `scheme://authority/`.
    fn target(&self) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static("/"))
            .build()
    }

    /// Sends one attempt (its URI in origin form) on a pooled connection.
    async fn send(&self, request: Request<AttemptBody>) -> Result<(Response<Incoming>, pool::Lent), AttemptError> {
        match &self.pool {
            Some(pool) => pool.send(request).await,
            // Every endpoint of a service gets its pool when it is built.
            None => Err(AttemptError::Connect("the endpoint has no connection pool".into())),
        }
    }
}

/// `host[:port]`, without the scheme's default port, as hyper-util's client
/// writes `Host` for an absolute URI.
fn host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::try_from(value).ok()
}

/// Decrements a replica's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why [`UpstreamService::send_before`] gave up.
#[derive(Debug)]
pub enum SendError {
    /// The call failed.
    Upstream(UpstreamError),
    /// The caller's deadline passed before an answer's head.
    DeadlinePassed,
}

impl From<UpstreamError> for SendError {
    fn from(error: UpstreamError) -> Self {
        Self::Upstream(error)
    }
}

/// A backend's answer and how it was obtained.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The answer, its body still streaming.
    pub response: Response<UpstreamResponseBody>,
    /// The replica that answered (`host:port`).
    pub endpoint: Arc<str>,
    /// Retries made before this answer.
    pub retries: u32,
}

/// The replicas a service picks from, swapped whole when DNS changes them.
/// A request works on the set it started with, so a removed replica keeps
/// its in-flight requests (and its pool, until their bodies end) while no
/// new request picks it.
struct EndpointSet {
    endpoints: Box<[Arc<Endpoint>]>,
    selector: Box<dyn Selector>,
    metrics: ServiceMetrics,
}

impl EndpointSet {
    fn new(endpoints: Box<[Arc<Endpoint>]>, load_balancing: LoadBalancing, metrics: &ServiceMetrics) -> Self {
        let labels: Vec<Arc<str>> = endpoints.iter().map(|endpoint| Arc::clone(&endpoint.label)).collect();
        Self { selector: selector_for(load_balancing, &endpoints), metrics: metrics.for_endpoints(&labels), endpoints }
    }
}

/// What a DNS-discovered service needs to build replicas for new addresses.
struct DnsDiscovery {
    endpoints: Vec<EndpointConfig>,
    refresh: Duration,
    server: Option<SocketAddr>,
    load_balancing: LoadBalancing,
    roots: Arc<RootCertStore>,
    connect_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
}

/// A service: its replicas, its pooled client and its policies.
pub struct UpstreamService {
    name: Arc<str>,
    set: ArcSwap<EndpointSet>,
    dns: Option<DnsDiscovery>,
    clock: HealthClock,
    request_timeout: Duration,
    health_check: HealthCheckConfig,
    passive_health: PassiveHealthConfig,
    max_retries: u32,
    retry_budget: TpsBudget,
    metrics: ServiceMetrics,
}

impl std::fmt::Debug for UpstreamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamService")
            .field("name", &self.name)
            .field("endpoints", &self.set.load().endpoints)
            .finish_non_exhaustive()
    }
}

/// Methods that may be repeated without changing the outcome (RFC 9110 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

impl UpstreamService {
    fn new(
        name: &str,
        config: &ServiceConfig,
        public_roots: &Arc<RootCertStore>,
        metrics: &Metrics,
    ) -> Result<Self, UpstreamBuildError> {
        let tls_error = |message: String| UpstreamBuildError { key: format!("services.{name}.tls"), message };
        let roots = match (&config.tls.ca_roots, &config.tls.ca_file) {
            (Some(roots), _) => Arc::clone(roots),
            // Read during validation, unless the configuration was built
            // without it; then relative paths are taken from the working
            // directory, as `Config::parse` does.
            (None, Some(ca_file)) => {
                Arc::new(tls::load_ca_file(ca_file).map_err(|error| tls_error(error.to_string()))?)
            }
            (None, None) => Arc::clone(public_roots),
        };
        let endpoint_error = |index: usize, message: String| UpstreamBuildError {
            key: format!("services.{name}.endpoints[{index}]"),
            message,
        };
        let (endpoints, dns) = match config.discovery {
            Discovery::Static => {
                let connector =
                    tls::connector(Arc::clone(&roots), config.connect_timeout, Duration::from_secs(60), None)
                        .map_err(|error| tls_error(error.to_string()))?;
                let endpoints = config
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(index, endpoint)| {
                        let mut endpoint = Endpoint::new(endpoint).map_err(|message| endpoint_error(index, message))?;
                        let target = endpoint.target().map_err(|error| endpoint_error(index, error.to_string()))?;
                        endpoint.pool =
                            Some(Pool::new(connector.clone(), target, config.max_idle_per_host, config.idle_timeout));
                        Ok(Arc::new(endpoint))
                    })
                    .collect::<Result<Box<[Arc<Endpoint>]>, UpstreamBuildError>>()?;
                (endpoints, None)
            }
            Discovery::Dns => {
                for (index, endpoint) in config.endpoints.iter().enumerate() {
                    endpoint.target().map_err(|message| endpoint_error(index, message))?;
                }
                // No replica until the first answer: the refresh task asks at once.
                let dns = DnsDiscovery {
                    endpoints: config.endpoints.clone(),
                    refresh: config.dns_refresh,
                    server: config.dns_server,
                    load_balancing: config.load_balancing,
                    roots: Arc::clone(&roots),
                    connect_timeout: config.connect_timeout,
                    max_idle: config.max_idle_per_host,
                    idle_timeout: config.idle_timeout,
                };
                (Box::default(), Some(dns))
            }
        };

        let retry = &config.retry;
        let metrics = metrics.service(name, &[]);
        Ok(Self {
            set: ArcSwap::from_pointee(EndpointSet::new(endpoints, config.load_balancing, &metrics)),
            dns,
            name: Arc::from(name),
            clock: HealthClock::start(),
            request_timeout: config.request_timeout,
            health_check: config.health_check.clone(),
            passive_health: config.passive_health.clone(),
            max_retries: retry.attempts,
            retry_budget: TpsBudget::new(Duration::from_secs(10), retry.min_per_second, retry.budget_percent / 100.0),
            metrics,
        })
    }

    /// The service's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Labels (`host:port`) of the replicas the service picks from now.
    pub fn endpoint_labels(&self) -> Vec<Arc<str>> {
        self.set.load().endpoints.iter().map(|endpoint| Arc::clone(&endpoint.label)).collect()
    }

    fn has_available_endpoint(&self) -> bool {
        let now = self.clock.now_millis();
        self.set.load().endpoints.iter().any(|endpoint| endpoint.health.is_available(now))
    }

    /// The replica for the next attempt: one in rotation that this request
    /// has not tried yet. When every replica is out of rotation, trying one
    /// anyway beats refusing unasked (Envoy's panic threshold, NGINX with
    /// all servers down): a replica that came back answers at once, and one
    /// still down fails with its own error.
    fn pick(&self, set: &EndpointSet, tried: u64) -> Option<usize> {
        let now = self.clock.now_millis();
        let endpoints = &set.endpoints;
        let untried = |index: usize| index >= 64 || tried & (1 << index) == 0;
        let in_rotation = |index: usize| untried(index) && endpoints[index].health.is_available(now);
        set.selector.select(endpoints, &in_rotation).or_else(|| {
            let panic = !endpoints.iter().any(|endpoint| endpoint.health.is_available(now));
            if panic {
                set.selector.select(endpoints, &untried)
            } else {
                None
            }
        })
    }

    /// The replica for a retry: an untried one, or with `again` (the failure
    /// was the connection's, not the replica's answer) any, so that a lone
    /// replica gets a second attempt on a new connection.
    fn pick_retry(&self, set: &EndpointSet, tried: u64, again: bool) -> Option<usize> {
        self.pick(set, tried).or_else(|| if again { self.pick(set, 0) } else { None })
    }

    /// Sends `request` (its URI a path and query) to a replica, failing over
    /// to others where that is safe and the retry budget allows.
    pub async fn send(&self, request: Request<UpstreamRequestBody>) -> Result<UpstreamResponse, UpstreamError> {
        match self.send_within(request, None).await {
            Ok(answer) => Ok(answer),
            Err(SendError::Upstream(error)) => Err(error),
            // Cannot happen: without a caller's deadline only attempts time
            // out, and they fail with `UpstreamError::Timeout`.
            Err(SendError::DeadlinePassed) => Err(UpstreamError::NoHealthyEndpoint { service: Arc::clone(&self.name) }),
        }
    }

    /// Like [`UpstreamService::send`], giving up when `deadline` passes
    /// before an answer's head (retries included). The attempts' timer
    /// doubles as the deadline's, so a request arms one timer, not two.
    pub async fn send_before(
        &self,
        request: Request<UpstreamRequestBody>,
        deadline: tokio::time::Instant,
    ) -> Result<UpstreamResponse, SendError> {
        self.send_within(request, Some(deadline)).await
    }

    async fn send_within(
        &self,
        request: Request<UpstreamRequestBody>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<UpstreamResponse, SendError> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let idempotent = is_idempotent(&parts.method);
        self.retry_budget.deposit();

        // One set for the whole request: indices stay valid across retries.
        let set = self.set.load_full();
        let mut tried: u64 = 0;
        let mut retries = 0;
        let Some(mut index) = self.pick(&set, tried) else {
            return Err(UpstreamError::NoHealthyEndpoint { service: Arc::clone(&self.name) }.into());
        };
        loop {
            if index < 64 {
                tried |= 1 << index;
            }
            let endpoint = &set.endpoints[index];
            let may_retry_later = retries < self.max_retries;

            let mut attempt = Request::new(body.for_attempt());
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = Uri::from(path_and_query.clone());
            *attempt.version_mut() = http::Version::HTTP_11;
            // Only an attempt that may be followed by another needs the
            // headers kept; the last one takes them.
            let mut headers = if may_retry_later { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
            if let Some(host) = &endpoint.host {
                headers.entry(HOST).or_insert_with(|| host.clone());
            }
            *attempt.headers_mut() = headers;

            let in_flight = endpoint.start_request();
            let started = tokio::time::Instant::now();
            let attempt_deadline = started + self.request_timeout;
            let (limit, callers) = match deadline {
                Some(deadline) if deadline < attempt_deadline => (deadline, true),
                _ => (attempt_deadline, false),
            };
            let outcome = tokio::time::timeout_at(limit, endpoint.send(attempt)).await;
            if callers && outcome.is_err() {
                // As if the caller had dropped the call: nothing is recorded.
                return Err(SendError::DeadlinePassed);
            }
            if let Some(metrics) = set.metrics.endpoint(index) {
                let observed = match &outcome {
                    Ok(Ok((response, _))) => UpstreamOutcome::Status(response.status()),
                    Ok(Err(error)) if error.is_connect() => UpstreamOutcome::ConnectError,
                    Ok(Err(_)) => UpstreamOutcome::ProtocolError,
                    Err(_elapsed) => UpstreamOutcome::Timeout,
                };
                metrics.attempt(observed, started.elapsed());
            }
            let error = match outcome {
                Ok(Ok((response, connection))) => {
                    let status = response.status();
                    if status.is_server_error() {
                        self.record_failure(&set, index);
                    } else {
                        self.record_success(&set, index);
                    }
                    let retry_to =
                        if is_retryable_status(status) && idempotent && may_retry_later && body.is_replayable() {
                            self.pick_retry(&set, tried, false)
                        } else {
                            None
                        };
                    if let Some(next) = retry_to.filter(|_| self.retry_budget.withdraw()) {
                        tracing::debug!(service = %self.name, endpoint = %endpoint.label, %status, "retrying on another endpoint");
                        self.metrics.retried();
                        retries += 1;
                        index = next;
                        continue;
                    }
                    let response = response.map(|incoming| {
                        UpstreamResponseBody::new(incoming, self.request_timeout, in_flight, connection)
                    });
                    return Ok(UpstreamResponse { response, endpoint: Arc::clone(&endpoint.label), retries });
                }
                Ok(Err(error)) => error,
                Err(_elapsed) => {
                    self.record_failure(&set, index);
                    return Err(UpstreamError::Timeout {
                        service: Arc::clone(&self.name),
                        endpoint: Arc::clone(&endpoint.label),
                        retries,
                        after: self.request_timeout,
                    }
                    .into());
                }
            };
            drop(in_flight);

            if let Some(source) = body.take_failure() {
                return Err(UpstreamError::RequestBody {
                    service: Arc::clone(&self.name),
                    endpoint: Arc::clone(&endpoint.label),
                    retries,
                    source,
                }
                .into());
            }
            self.record_failure(&set, index);
            let connect_failed = error.is_connect();
            // After a connect error nothing reached the replica, so even a
            // POST may go elsewhere (but not to the replica that refused).
            // Any other error here came before an answer's head: the
            // request may have been acted on, so only an idempotent one is
            // sent again, and a new connection to the same replica may do.
            let retry_to = if !may_retry_later || !body.is_replayable() {
                None
            } else if connect_failed {
                self.pick_retry(&set, tried, false)
            } else if idempotent {
                self.pick_retry(&set, tried, true)
            } else {
                None
            };
            if let Some(next) = retry_to.filter(|_| self.retry_budget.withdraw()) {
                tracing::debug!(service = %self.name, endpoint = %endpoint.label, error = %crate::telemetry::ErrorChain(&error), "failed without an answer; retrying");
                self.metrics.retried();
                retries += 1;
                index = next;
                continue;
            }
            let (service, endpoint) = (Arc::clone(&self.name), Arc::clone(&endpoint.label));
            return Err(SendError::Upstream(if connect_failed {
                UpstreamError::Connect { service, endpoint, retries, source: error }
            } else {
                UpstreamError::Protocol { service, endpoint, retries, source: error }
            }));
        }
    }

    fn record_success(&self, set: &EndpointSet, index: usize) {
        let endpoint = &set.endpoints[index];
        if endpoint.health.record_success(&self.clock) {
            tracing::info!(service = %self.name, endpoint = %endpoint.label, "ejected endpoint answered; back in rotation");
        }
    }

    fn record_failure(&self, set: &EndpointSet, index: usize) {
        let endpoint = &set.endpoints[index];
        if let Some(ejection) = endpoint.health.record_failure(&self.passive_health, self.clock.now_millis()) {
            if let Some(metrics) = set.metrics.endpoint(index) {
                metrics.ejected();
            }
            tracing::warn!(service = %self.name, endpoint = %endpoint.label, ejection = ?ejection, "endpoint ejected after consecutive failures");
        }
    }

    /// Checks each replica every `interval`, and those out of rotation every
    /// `unhealthy_interval`, so that one coming back is noticed soon. It
    /// wakes at least every `unhealthy_interval`, because passive health
    /// may take a replica out between two checks, and DNS may add one.
    async fn run_health_checks(self: Arc<Self>) {
        struct Checked {
            endpoint: Arc<Endpoint>,
            streak: CheckStreak,
            last: Option<tokio::time::Instant>,
        }
        let config = &self.health_check;
        let recheck = config.unhealthy_interval.min(config.interval);
        let mut checked: Vec<Checked> = Vec::new();
        let next_check = |entry: &Checked, now_millis: u64| {
            let in_rotation = entry.endpoint.health.is_available(now_millis);
            entry.last.map(|at| at + if in_rotation { config.interval } else { recheck })
        };
        loop {
            // Follow the current set: new replicas are checked at once,
            // removed ones no longer.
            let set = self.set.load_full();
            let mut previous = std::mem::take(&mut checked);
            checked = set
                .endpoints
                .iter()
                .map(|endpoint| match previous.iter().position(|entry| Arc::ptr_eq(&entry.endpoint, endpoint)) {
                    Some(position) => previous.swap_remove(position),
                    None => Checked { endpoint: Arc::clone(endpoint), streak: CheckStreak::default(), last: None },
                })
                .collect();
            drop(previous);
            let now = tokio::time::Instant::now();
            let now_millis = self.clock.now_millis();
            let due: Vec<usize> = (0..checked.len())
                .filter(|&index| next_check(&checked[index], now_millis).is_none_or(|next| next <= now))
                .collect();
            let checks = due.iter().map(|&index| self.check(&checked[index].endpoint));
            let results = futures_util::future::join_all(checks).await;
            for (&index, passed) in due.iter().zip(results) {
                let entry = &mut checked[index];
                entry.last = Some(now);
                let endpoint = &entry.endpoint;
                if passed {
                    // A passed check ends an ejection, as Envoy does by default.
                    if endpoint.health.record_success(&self.clock) {
                        tracing::info!(service = %self.name, endpoint = %endpoint.label, "ejected endpoint passed a health check; back in rotation");
                    }
                }
                let verdict = entry.streak.observe(passed, config.healthy_threshold, config.unhealthy_threshold);
                if let Some(healthy) = verdict {
                    if endpoint.health.set_actively_healthy(healthy) {
                        if healthy {
                            tracing::info!(service = %self.name, endpoint = %endpoint.label, "endpoint healthy again");
                        } else {
                            tracing::warn!(service = %self.name, endpoint = %endpoint.label, "endpoint failed health checks; taken out of rotation");
                        }
                    }
                }
            }
            let now_millis = self.clock.now_millis();
            let latest_wake = tokio::time::Instant::now() + recheck;
            let wake =
                checked.iter().filter_map(|entry| next_check(entry, now_millis)).fold(latest_wake, std::cmp::Ord::min);
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Resolves the endpoint URLs' names until dropped, at once and then
    /// every `dns_refresh` (sooner when the records' TTL says so), and swaps
    /// in the replicas found. A name whose lookup fails or finds nothing
    /// keeps the replicas it had.
    async fn run_discovery(self: Arc<Self>) {
        let Some(dns) = &self.dns else { return };
        let resolver = match discovery::resolver(dns.server) {
            Ok(resolver) => resolver,
            Err(error) => {
                tracing::error!(service = %self.name, %error, "DNS discovery cannot start; the service keeps its replicas");
                self.metrics.dns_failed();
                return;
            }
        };
        let connector = |name: &str| {
            let server_name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_owned()).ok();
            tls::connector(Arc::clone(&dns.roots), dns.connect_timeout, Duration::from_secs(60), server_name)
        };
        // The last good addresses of each endpoint URL.
        let mut known: Vec<Vec<IpAddr>> = vec![Vec::new(); dns.endpoints.len()];
        loop {
            let mut shortest_ttl: Option<Duration> = None;
            for (index, endpoint) in dns.endpoints.iter().enumerate() {
                let Ok((_, authority)) = endpoint.target() else { continue };
                let name = authority.host();
                match discovery::resolve(&resolver, name).await {
                    Ok(resolved) => {
                        shortest_ttl = Some(shortest_ttl.map_or(resolved.ttl, |ttl| ttl.min(resolved.ttl)));
                        known[index] = resolved.addresses;
                    }
                    Err(error) => {
                        self.metrics.dns_failed();
                        tracing::warn!(service = %self.name, %error, kept = known[index].len(), "DNS refresh failed; keeping the last good addresses");
                    }
                }
            }
            self.apply_addresses(dns, &known, &connector);
            tokio::time::sleep(discovery::next_refresh(dns.refresh, shortest_ttl)).await;
        }
    }

    /// Swaps in the replicas of `known` (addresses per endpoint URL),
    /// keeping the replica (pool, health) of every address that stays.
    fn apply_addresses<E: std::fmt::Display>(
        &self,
        dns: &DnsDiscovery,
        known: &[Vec<IpAddr>],
        connector: &dyn Fn(&str) -> Result<Connector, E>,
    ) {
        let current = self.set.load_full();
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        for (config, addresses) in dns.endpoints.iter().zip(known) {
            let Ok((_, named)) = config.target() else { continue };
            for &address in addresses {
                let candidate = match Endpoint::resolved(config, address) {
                    Ok(candidate) => candidate,
                    Err(error) => {
                        tracing::warn!(service = %self.name, %address, %error, "cannot use a resolved address");
                        continue;
                    }
                };
                if endpoints.iter().any(|kept| kept.label == candidate.label) {
                    continue;
                }
                let same = |endpoint: &&Arc<Endpoint>| {
                    endpoint.label == candidate.label
                        && endpoint.host == candidate.host
                        && endpoint.scheme == candidate.scheme
                };
                if let Some(existing) = current.endpoints.iter().find(same) {
                    endpoints.push(Arc::clone(existing));
                    continue;
                }
                let mut endpoint = candidate;
                let pool = connector(named.host())
                    .map_err(|error| error.to_string())
                    .and_then(|connector| Ok((connector, endpoint.target().map_err(|error| error.to_string())?)));
                match pool {
                    Ok((connector, target)) => {
                        endpoint.pool = Some(Pool::new(connector, target, dns.max_idle, dns.idle_timeout));
                        endpoints.push(Arc::new(endpoint));
                    }
                    Err(error) => {
                        tracing::warn!(service = %self.name, %address, %error, "cannot connect to a resolved address")
                    }
                }
            }
        }
        let unchanged = endpoints.len() == current.endpoints.len()
            && endpoints.iter().zip(current.endpoints.iter()).all(|(new, old)| Arc::ptr_eq(new, old));
        if unchanged {
            return;
        }
        let added: Vec<&str> = endpoints
            .iter()
            .filter(|new| !current.endpoints.iter().any(|old| Arc::ptr_eq(old, new)))
            .map(|endpoint| &*endpoint.label)
            .collect();
        let removed: Vec<&str> = current
            .endpoints
            .iter()
            .filter(|old| !endpoints.iter().any(|new| Arc::ptr_eq(old, new)))
            .map(|endpoint| &*endpoint.label)
            .collect();
        tracing::info!(service = %self.name, ?added, ?removed, "DNS changed the service's replicas; removed ones drain");
        self.set.store(Arc::new(EndpointSet::new(endpoints.into_boxed_slice(), dns.load_balancing, &self.metrics)));
    }

    async fn check(&self, endpoint: &Endpoint) -> bool {
        let Ok(path) = PathAndQuery::try_from(self.health_check.path.as_str()) else {
            return false;
        };
        let mut request = Request::new(AttemptBody::Empty);
        *request.uri_mut() = Uri::from(path);
        if let Some(host) = &endpoint.host {
            request.headers_mut().insert(HOST, host.clone());
        }
        match tokio::time::timeout(self.health_check.timeout, endpoint.send(request)).await {
            Ok(Ok((response, _))) => response.status().is_success(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(endpoints: usize) -> UpstreamService {
        let config = ServiceConfig {
            endpoints: (0..endpoints)
                .map(|index| EndpointConfig::Url(format!("http://127.0.0.1:{}", 9000 + index)))
                .collect(),
            passive_health: PassiveHealthConfig { consecutive_failures: 1, ..PassiveHealthConfig::default() },
            ..ServiceConfig::default()
        };
        UpstreamService::new("api", &config, &Arc::new(RootCertStore::empty()), &Metrics::default()).expect("service")
    }

    #[test]
    fn the_host_header_omits_only_the_default_port() {
        let host = |url: &str| {
            let endpoint = Endpoint::new(&EndpointConfig::Url(url.to_owned())).expect("endpoint");
            endpoint.host.expect("a host").to_str().expect("ascii").to_owned()
        };
        assert_eq!(host("http://10.0.0.1:8001"), "10.0.0.1:8001");
        assert_eq!(host("http://users.internal:80"), "users.internal");
        assert_eq!(host("http://users.internal"), "users.internal");
        assert_eq!(host("https://users.internal:443"), "users.internal");
        assert_eq!(host("https://users.internal:80"), "users.internal:80");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn with_every_replica_out_of_rotation_one_is_tried_anyway() {
        let service = service(2);
        let set = service.set.load_full();
        service.record_failure(&set, 0);
        set.endpoints[1].health.set_actively_healthy(false);
        assert!(!service.has_available_endpoint());
        let first = service.pick(&set, 0).expect("panic mode picks a replica");
        let second = service.pick(&set, 1 << first).expect("and another one for a retry");
        assert_ne!(first, second);
        assert_eq!(service.pick(&set, 0b11), None, "each replica at most once");
        assert_eq!(
            service.pick_retry(&set, 0b11, true).map(|index| index < 2),
            Some(true),
            "unless the connection failed"
        );
    }

    #[test]
    fn while_a_replica_is_in_rotation_the_others_are_left_alone() {
        let service = service(2);
        let set = service.set.load_full();
        service.record_failure(&set, 0);
        for _ in 0..10 {
            assert_eq!(service.pick(&set, 0), Some(1));
        }
        assert_eq!(service.pick(&set, 0b10), None, "the ejected replica is not a retry target");
        assert_eq!(service.pick_retry(&set, 0b10, true), Some(1), "a retry on a new connection stays in rotation");
    }

    #[test]
    fn a_success_puts_an_ejected_replica_back_at_once() {
        let service = service(2);
        let set = service.set.load_full();
        service.record_failure(&set, 0);
        assert_eq!(service.pick(&set, 0b10), None);
        service.record_success(&set, 0);
        assert_eq!(service.pick(&set, 0b10), Some(0));
    }
}

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
mod error;
mod health;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_rustls::rustls::RootCertStore;
use tower::retry::budget::{Budget, TpsBudget};

use crate::telemetry::metrics::{EndpointState, EndpointStates, Metrics, ServiceMetrics, UpstreamOutcome};

pub use balance::{selector_for, LeastRequests, RoundRobin, Selector, Weighted};
pub use body::{UpstreamRequestBody, UpstreamResponseBody};
pub use config::{
    EndpointConfig, HealthCheckConfig, LoadBalancing, PassiveHealthConfig, RetryConfig, ServiceConfig,
    UpstreamTlsConfig,
};
pub use error::UpstreamError;
pub use health::HealthCheckTasks;
pub use tls::{public_connector, CaFileError, Connector};

use body::AttemptBody;
use health::{CheckStreak, EndpointHealth, HealthClock};

type HttpClient = Client<tls::Connector, AttemptBody>;

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
        let public_roots = Arc::new(tls::public_roots());
        let services = configs
            .iter()
            .map(|(name, config)| {
                Ok((name.clone(), Arc::new(UpstreamService::new(name, config, &public_roots, metrics)?)))
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

    /// Starts the active health checkers; they run until the returned value
    /// is dropped.
    pub fn spawn_health_checks(&self) -> HealthCheckTasks {
        let handles = self
            .services
            .values()
            .filter(|service| service.health_check.enabled)
            .map(|service| tokio::spawn(Arc::clone(service).run_health_checks()))
            .collect();
        HealthCheckTasks { handles }
    }
}

impl EndpointStates for Upstreams {
    fn visit(&self, report: &mut dyn FnMut(&str, &str, EndpointState)) {
        for (name, service) in self.services.iter() {
            let now = service.clock.now_millis();
            for endpoint in service.endpoints.iter() {
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
    label: Arc<str>,
    weight: u32,
    in_flight: Arc<AtomicUsize>,
    health: EndpointHealth,
}

impl Endpoint {
    /// Builds a replica from its configuration.
    pub fn new(config: &EndpointConfig) -> Result<Self, String> {
        let (scheme, authority) = config.target()?;
        Ok(Self {
            label: Arc::from(authority.as_str()),
            scheme,
            authority,
            weight: config.weight(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            health: EndpointHealth::default(),
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

    fn uri(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// Decrements a replica's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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

/// A service: its replicas, its pooled client and its policies.
pub struct UpstreamService {
    name: Arc<str>,
    endpoints: Box<[Endpoint]>,
    selector: Box<dyn Selector>,
    client: HttpClient,
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
            .field("endpoints", &self.endpoints)
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
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                Endpoint::new(endpoint).map_err(|message| UpstreamBuildError {
                    key: format!("services.{name}.endpoints[{index}]"),
                    message,
                })
            })
            .collect::<Result<Box<[Endpoint]>, _>>()?;

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
        let connector = tls::connector(roots, config.connect_timeout, Duration::from_secs(60))
            .map_err(|error| tls_error(error.to_string()))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);

        let retry = &config.retry;
        let labels: Vec<Arc<str>> = endpoints.iter().map(|endpoint| Arc::clone(&endpoint.label)).collect();
        Ok(Self {
            metrics: metrics.service(name, &labels),
            name: Arc::from(name),
            selector: selector_for(config.load_balancing, &endpoints),
            endpoints,
            client,
            clock: HealthClock::start(),
            request_timeout: config.request_timeout,
            health_check: config.health_check.clone(),
            passive_health: config.passive_health.clone(),
            max_retries: retry.attempts,
            retry_budget: TpsBudget::new(Duration::from_secs(10), retry.min_per_second, retry.budget_percent / 100.0),
        })
    }

    /// The service's configured name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The service's replicas.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn has_available_endpoint(&self) -> bool {
        let now = self.clock.now_millis();
        self.endpoints.iter().any(|endpoint| endpoint.health.is_available(now))
    }

    /// Sends `request` (its URI a path and query) to a replica, failing over
    /// to others where that is safe and the retry budget allows.
    pub async fn send(&self, request: Request<UpstreamRequestBody>) -> Result<UpstreamResponse, UpstreamError> {
        let (parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let idempotent = is_idempotent(&parts.method);
        self.retry_budget.deposit();

        let mut tried: u64 = 0;
        let mut retries = 0;
        loop {
            let now = self.clock.now_millis();
            let eligible = |index: usize| {
                let untried = index >= 64 || tried & (1 << index) == 0;
                untried && self.endpoints[index].health.is_available(now)
            };
            let Some(index) = self.selector.select(&self.endpoints, &eligible) else {
                return Err(UpstreamError::NoHealthyEndpoint { service: Arc::clone(&self.name) });
            };
            if index < 64 {
                tried |= 1 << index;
            }
            let endpoint = &self.endpoints[index];
            let may_retry_later = retries < self.max_retries;

            let uri = endpoint
                .uri(path_and_query.clone())
                .map_err(|_| UpstreamError::NoHealthyEndpoint { service: Arc::clone(&self.name) })?;
            let mut attempt = Request::new(body.for_attempt());
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = uri;
            *attempt.version_mut() = http::Version::HTTP_11;
            *attempt.headers_mut() = parts.headers.clone();

            let in_flight = endpoint.start_request();
            let started = tokio::time::Instant::now();
            let outcome = tokio::time::timeout(self.request_timeout, self.client.request(attempt)).await;
            if let Some(metrics) = self.metrics.endpoint(index) {
                let observed = match &outcome {
                    Ok(Ok(response)) => UpstreamOutcome::Status(response.status()),
                    Ok(Err(error)) if error.is_connect() => UpstreamOutcome::ConnectError,
                    Ok(Err(_)) => UpstreamOutcome::ProtocolError,
                    Err(_elapsed) => UpstreamOutcome::Timeout,
                };
                metrics.attempt(observed, started.elapsed());
            }
            let error = match outcome {
                Ok(Ok(response)) => {
                    let status = response.status();
                    if status.is_server_error() {
                        self.record_failure(index);
                    } else {
                        endpoint.health.record_success();
                    }
                    let retry = is_retryable_status(status)
                        && idempotent
                        && may_retry_later
                        && body.is_replayable()
                        && self.retry_budget.withdraw();
                    if retry {
                        tracing::debug!(service = %self.name, endpoint = %endpoint.label, %status, "retrying on another endpoint");
                        self.metrics.retried();
                        retries += 1;
                        continue;
                    }
                    let response =
                        response.map(|incoming| UpstreamResponseBody::new(incoming, self.request_timeout, in_flight));
                    return Ok(UpstreamResponse { response, endpoint: Arc::clone(&endpoint.label), retries });
                }
                Ok(Err(error)) => error,
                Err(_elapsed) => {
                    self.record_failure(index);
                    return Err(UpstreamError::Timeout {
                        service: Arc::clone(&self.name),
                        after: self.request_timeout,
                    });
                }
            };
            drop(in_flight);

            if let Some(source) = body.take_failure() {
                return Err(UpstreamError::RequestBody { service: Arc::clone(&self.name), source });
            }
            self.record_failure(index);
            if error.is_connect() {
                // Nothing reached the replica, so even a POST may go elsewhere.
                if may_retry_later && body.is_replayable() && self.retry_budget.withdraw() {
                    tracing::debug!(service = %self.name, endpoint = %endpoint.label, "connect failed; retrying on another endpoint");
                    self.metrics.retried();
                    retries += 1;
                    continue;
                }
                return Err(UpstreamError::Connect { service: Arc::clone(&self.name), source: error });
            }
            return Err(UpstreamError::Protocol { service: Arc::clone(&self.name), source: error });
        }
    }

    fn record_failure(&self, index: usize) {
        let endpoint = &self.endpoints[index];
        if let Some(ejection) = endpoint.health.record_failure(&self.passive_health, self.clock.now_millis()) {
            if let Some(metrics) = self.metrics.endpoint(index) {
                metrics.ejected();
            }
            tracing::warn!(service = %self.name, endpoint = %endpoint.label, ejection = ?ejection, "endpoint ejected after consecutive failures");
        }
    }

    async fn run_health_checks(self: Arc<Self>) {
        let mut streaks: Vec<CheckStreak> = self.endpoints.iter().map(|_| CheckStreak::default()).collect();
        let mut interval = tokio::time::interval(self.health_check.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let checks = self.endpoints.iter().map(|endpoint| self.check(endpoint));
            let results = futures_util::future::join_all(checks).await;
            for ((endpoint, streak), passed) in self.endpoints.iter().zip(&mut streaks).zip(results) {
                let verdict =
                    streak.observe(passed, self.health_check.healthy_threshold, self.health_check.unhealthy_threshold);
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
        }
    }

    async fn check(&self, endpoint: &Endpoint) -> bool {
        let Ok(path) = PathAndQuery::try_from(self.health_check.path.as_str()) else {
            return false;
        };
        let Ok(uri) = endpoint.uri(path) else {
            return false;
        };
        let mut request = Request::new(AttemptBody::Empty);
        *request.uri_mut() = uri;
        match tokio::time::timeout(self.health_check.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response.status().is_success(),
            _ => false,
        }
    }
}

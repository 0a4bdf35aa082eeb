//! Prometheus metrics: one registry per gateway, carried in state.
//!
//! `prometheus-client` was chosen over the `metrics` facade because its
//! registry is a value, not a process-wide recorder: every gateway (and
//! every test gateway in one process) has its own, as STYLE.md's rule on
//! hidden global state asks.
//!
//! Hot-path rules: label values are `&'static str` or shared `Arc<str>`, so
//! a lookup never allocates; upstream handles are resolved once per endpoint
//! when the service is built; a finished request finds its counter and
//! histogram in one foldhash lookup by borrowed labels (`RequestSeries`),
//! not in the families' SipHash maps; histograms are lock-free (atomic
//! buckets, summed at scrape time) instead of the crate's mutex-guarded one.
//!
//! Cardinality is bounded by construction: routes are configured prefixes
//! (never raw paths), endpoints are configured replicas, GraphQL operation
//! names and error codes go through a [`BoundedLabels`] set that turns
//! anything past its cap into `"other"`, and no label ever carries a user id.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hashbrown::{Equivalent, HashMap, HashSet};
use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::redis_health::{CircuitState, RedisCircuit};

/// The label value that stands for every value past a label's cap.
pub const OTHER: &str = "other";

/// The `Content-Type` of a scrape answer (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets in seconds, from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

/// A histogram whose observations are a few relaxed atomic additions.
/// Buckets are kept non-cumulative and summed when scraped, so a scrape
/// racing an observation is off by at most that one observation.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug, Default)]
struct HistogramInner {
    /// One counter per bucket plus the `+Inf` overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let index = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BUCKETS.len());
        self.inner.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The encoder sums the buckets itself: hand them over as counted.
        let mut count = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (index, bucket) in self.inner.buckets.iter().enumerate() {
            let observed = bucket.load(Ordering::Relaxed);
            count += observed;
            buckets.push((LATENCY_BUCKETS.get(index).copied().unwrap_or(f64::INFINITY), observed));
        }
        let sum = Duration::from_nanos(self.inner.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A set of label values that grows up to a cap; past it every new value is
/// reported as [`OTHER`]. Values must also look like GraphQL names (letters,
/// digits, `_`, at most 64 bytes), so no client can put arbitrary text into
/// a label.
#[derive(Debug)]
pub struct BoundedLabels {
    cap: usize,
    seen: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl BoundedLabels {
    /// A set that keeps at most `cap` distinct values.
    pub fn new(cap: usize) -> Self {
        Self { cap, seen: RwLock::new(HashSet::default()), other: Arc::from(OTHER) }
    }

    /// The label for `value`: the value itself while the cap allows, else `other`.
    pub fn label(&self, value: &str) -> Arc<str> {
        let well_formed = !value.is_empty()
            && value.len() <= 64
            && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
        if !well_formed {
            return Arc::clone(&self.other);
        }
        if let Some(known) = self.seen.read().unwrap_or_else(PoisonError::into_inner).get(value) {
            return Arc::clone(known);
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(value) {
            return Arc::clone(known);
        }
        if seen.len() >= self.cap {
            return Arc::clone(&self.other);
        }
        let label: Arc<str> = Arc::from(value);
        seen.insert(Arc::clone(&label));
        label
    }
}

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    operation: Arc<str>,
    status: u16,
}

/// [`RequestLabels`] borrowed, to look a finished request's series up
/// without cloning its labels. The derived `Hash` feeds the same values in
/// the same order as `RequestLabels`' (a `str` hashes alike behind `&` and
/// `Arc`), which `Equivalent` requires.
#[derive(Debug, Hash)]
struct RequestKey<'a> {
    route: &'a str,
    method: &'static str,
    operation: &'a str,
    status: u16,
}

impl Equivalent<RequestLabels> for RequestKey<'_> {
    fn equivalent(&self, labels: &RequestLabels) -> bool {
        *self.route == *labels.route
            && self.method == labels.method
            && *self.operation == *labels.operation
            && self.status == labels.status
    }
}

/// The request counter and latency histogram of each label set seen, so a
/// finished request costs one lookup under a read lock; the families stay
/// the registry's source of truth (the handles share their series).
#[derive(Debug, Default)]
struct RequestSeries {
    handles: RwLock<HashMap<RequestLabels, (Counter, Histogram)>>,
}

/// Labels of the request latency histogram: the status class keeps the
/// number of histogram series small.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: Arc<str>,
    method: &'static str,
    operation: Arc<str>,
    status_class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    service: Arc<str>,
    endpoint: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    service: Arc<str>,
    endpoint: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    policy: Arc<str>,
    decision: &'static str,
}

/// How one attempt at a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The backend answered with this status.
    Status(StatusCode),
    /// No connection could be made.
    ConnectError,
    /// No answer within the request timeout.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    ProtocolError,
}

impl UpstreamOutcome {
    const LABELS: [&'static str; 8] = ["1xx", "2xx", "3xx", "4xx", "5xx", "connect_error", "timeout", "protocol_error"];

    fn index(self) -> usize {
        match self {
            Self::Status(status) => match status.as_u16() {
                100..=199 => 0,
                200..=299 => 1,
                300..=399 => 2,
                400..=499 => 3,
                _ => 4,
            },
            Self::ConnectError => 5,
            Self::Timeout => 6,
            Self::ProtocolError => 7,
        }
    }
}

/// A rate limiter's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitDecision {
    /// The request was let through.
    Allowed,
    /// The request was refused (429).
    Limited,
    /// The shared store failed and the local limiter decided instead.
    FailedOpen,
    /// The shared store failed and the request was refused (503).
    FailedClosed,
}

impl RateLimitDecision {
    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::FailedOpen => "failed_open",
            Self::FailedClosed => "failed_closed",
        }
    }
}

/// A cache's counters, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSnapshot {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the backend.
    pub misses: u64,
    /// Entries removed to make room (or expired).
    pub evictions: u64,
    /// Bytes currently held.
    pub bytes: u64,
    /// Entries currently held.
    pub entries: u64,
}

/// One replica's health, as the upstream module sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointState {
    /// The active checker's verdict.
    pub healthy: bool,
    /// Kept out by passive ejection right now.
    pub ejected: bool,
}

/// Something that can list every replica's health at scrape time.
pub trait EndpointStates: Send + Sync + fmt::Debug + 'static {
    /// Calls `report(service, endpoint, state)` once per replica.
    fn visit(&self, report: &mut dyn FnMut(&str, &str, EndpointState));
}

type CacheSource = Arc<dyn Fn() -> CacheSnapshot + Send + Sync>;

/// A series read at scrape time: name, help, and how to read its value.
type Series<Input, Value> = (&'static str, &'static str, fn(Input) -> Value);

/// Sources read at scrape time; filled in after the registry is built,
/// because the upstreams and caches need the metrics to be built first.
#[derive(Default)]
struct ScrapeSources {
    endpoints: Mutex<Option<Arc<dyn EndpointStates>>>,
    caches: Mutex<Vec<(Arc<str>, CacheSource)>>,
    redis: Mutex<Vec<Arc<RedisCircuit>>>,
}

impl fmt::Debug for ScrapeSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeSources").finish_non_exhaustive()
    }
}

impl Collector for ScrapeSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let endpoints = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(endpoints) = endpoints {
            let mut states = Vec::new();
            endpoints.visit(&mut |service, endpoint, state| {
                states.push((EndpointLabels { service: Arc::from(service), endpoint: Arc::from(endpoint) }, state));
            });
            let gauges: [Series<EndpointState, bool>; 3] = [
                (
                    "portico_upstream_endpoint_up",
                    "1 when the replica takes traffic: actively healthy and not ejected.",
                    |state| state.healthy && !state.ejected,
                ),
                ("portico_upstream_endpoint_healthy", "The active health check's verdict (1 healthy).", |state| {
                    state.healthy
                }),
                ("portico_upstream_endpoint_ejected", "1 while passive health keeps the replica out.", |state| {
                    state.ejected
                }),
            ];
            for (name, help, value) in gauges {
                let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, state) in &states {
                    ConstGauge::new(i64::from(value(*state))).encode(metric.encode_family(labels)?)?;
                }
            }
        }

        let caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !caches.is_empty() {
            #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct CacheLabels {
                cache: Arc<str>,
            }
            let snapshots: Vec<(CacheLabels, CacheSnapshot)> =
                caches.iter().map(|(name, source)| (CacheLabels { cache: Arc::clone(name) }, source())).collect();
            let counters: [Series<&CacheSnapshot, u64>; 3] = [
                ("portico_cache_hits", "Lookups answered from the cache.", |s| s.hits),
                ("portico_cache_misses", "Lookups that went to the backend.", |s| s.misses),
                ("portico_cache_evictions", "Entries evicted or expired.", |s| s.evictions),
            ];
            for (name, help, value) in counters {
                let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for (labels, snapshot) in &snapshots {
                    ConstCounter::new(value(snapshot)).encode(metric.encode_family(labels)?)?;
                }
            }
            let gauges: [Series<&CacheSnapshot, u64>; 2] = [
                ("portico_cache_bytes", "Bytes held by the cache.", |s| s.bytes),
                ("portico_cache_entries", "Entries held by the cache.", |s| s.entries),
            ];
            for (name, help, value) in gauges {
                let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for (labels, snapshot) in &snapshots {
                    ConstGauge::new(value(snapshot)).encode(metric.encode_family(labels)?)?;
                }
            }
        }

        let circuits = self.redis.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !circuits.is_empty() {
            #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
            struct ComponentLabels {
                component: &'static str,
            }
            let states: Vec<(ComponentLabels, CircuitState)> = circuits
                .iter()
                .map(|circuit| (ComponentLabels { component: circuit.component() }, circuit.state()))
                .collect();
            let help = "1 while Redis is used, 0 while it is skipped after a failure until a probe reaches it.";
            let mut metric = encoder.encode_descriptor("portico_redis_up", help, None, MetricType::Gauge)?;
            for (labels, state) in &states {
                ConstGauge::new(i64::from(state.up)).encode(metric.encode_family(labels)?)?;
            }
            let help = "Calls answered without Redis because it was down (local limiter, cache miss, skipped write).";
            let mut metric =
                encoder.encode_descriptor("portico_redis_short_circuited", help, None, MetricType::Counter)?;
            for (labels, state) in &states {
                ConstCounter::new(state.short_circuited).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Every metric the gateway exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<LatencyLabels, Histogram>,
    request_series: RequestSeries,
    in_flight: Gauge,
    upstream_requests: Family<OutcomeLabels, Counter>,
    upstream_duration: Family<EndpointLabels, Histogram>,
    upstream_retries: Family<ServiceLabels, Counter>,
    upstream_dns_failures: Family<ServiceLabels, Counter>,
    upstream_ejections: Family<EndpointLabels, Counter>,
    graphql_errors: Family<CodeLabels, Counter>,
    graphql_plans: Family<PlanLabels, Counter>,
    rate_limit_decisions: Family<RateLimitLabels, Counter>,
    config_reloads: Family<ReloadLabels, Counter>,
    operations: BoundedLabels,
    error_codes: BoundedLabels,
    sources: Arc<ScrapeSources>,
    /// Shared empty label value (REST requests have no operation).
    empty: Arc<str>,
    unmatched: Arc<str>,
    anonymous: Arc<str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(100)
    }
}

impl Metrics {
    /// A registry with every metric registered; at most `max_operation_names`
    /// GraphQL operation names become label values.
    pub fn new(max_operation_names: usize) -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "portico_http_requests",
            "Requests answered, by route prefix, method, GraphQL operation and status.",
            requests.clone(),
        );
        let request_duration = Family::default();
        registry.register_with_unit(
            "portico_http_request_duration",
            "Time from the request's arrival to the end of its answer's body.",
            Unit::Seconds,
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("portico_http_requests_in_flight", "Requests being handled now.", in_flight.clone());
        let upstream_requests = Family::default();
        registry.register(
            "portico_upstream_requests",
            "Attempts sent to a backend replica (retries included), by outcome.",
            upstream_requests.clone(),
        );
        let upstream_duration = Family::default();
        registry.register_with_unit(
            "portico_upstream_request_duration",
            "Time until a backend replica's answer head arrived (or the attempt failed).",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let upstream_retries = Family::default();
        registry.register("portico_upstream_retries", "Attempts retried on another replica.", upstream_retries.clone());
        let upstream_dns_failures = Family::default();
        registry.register(
            "portico_upstream_dns_failures",
            "DNS refreshes of a service that failed or found no address; the last good set stays in use.",
            upstream_dns_failures.clone(),
        );
        let upstream_ejections = Family::default();
        registry.register(
            "portico_upstream_ejections",
            "Replicas taken out of rotation by passive health.",
            upstream_ejections.clone(),
        );
        let graphql_errors = Family::default();
        registry.register(
            "portico_graphql_errors",
            "GraphQL errors sent to clients, by extensions.code.",
            graphql_errors.clone(),
        );
        let graphql_plans = Family::default();
        registry.register(
            "portico_graphql_plans",
            "GraphQL operations by how their plan was found: compiled (parsed, validated, planned), reused \
             from the plan cache, or invalid (a cached validation failure).",
            graphql_plans.clone(),
        );
        let rate_limit_decisions = Family::default();
        registry.register(
            "portico_rate_limit_decisions",
            "Rate-limit verdicts, by policy and decision.",
            rate_limit_decisions.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "portico_config_reloads",
            "Configuration reloads, by result (ok: swapped in; invalid: the old one kept).",
            config_reloads.clone(),
        );
        let sources = Arc::new(ScrapeSources::default());
        registry.register_collector(Box::new(Arc::clone(&sources)));
        Self {
            registry,
            requests,
            request_duration,
            request_series: RequestSeries::default(),
            in_flight,
            upstream_requests,
            upstream_duration,
            upstream_retries,
            upstream_dns_failures,
            upstream_ejections,
            graphql_errors,
            graphql_plans,
            rate_limit_decisions,
            config_reloads,
            operations: BoundedLabels::new(max_operation_names),
            error_codes: BoundedLabels::new(64),
            sources,
            empty: Arc::from(""),
            unmatched: Arc::from("unmatched"),
            anonymous: Arc::from("anonymous"),
        }
    }

    /// The scrape answer's body.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The label for a GraphQL operation name (bounded).
    pub fn operation_label(&self, name: Option<&str>) -> Arc<str> {
        match name {
            Some(name) => self.operations.label(name),
            None => Arc::clone(&self.anonymous),
        }
    }

    /// Counts an operation by how its plan was found: `compiled`, `reused`
    /// or `invalid`.
    pub fn graphql_plan(&self, result: &'static str) {
        self.graphql_plans.get_or_create(&PlanLabels { result }).inc();
    }

    /// Counts a GraphQL error sent to a client.
    pub fn graphql_error(&self, code: &str) {
        self.graphql_errors.get_or_create(&CodeLabels { code: self.error_codes.label(code) }).inc();
    }

    /// Counts one rate-limit verdict. `policy` is a configured policy name.
    pub fn rate_limit_decision(&self, policy: &Arc<str>, decision: RateLimitDecision) {
        self.rate_limit_decisions
            .get_or_create(&RateLimitLabels { policy: Arc::clone(policy), decision: decision.label() })
            .inc();
    }

    /// Counts one configuration reload: `ok` when it was swapped in.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&ReloadLabels { result: if ok { "ok" } else { "invalid" } }).inc();
    }

    /// Reads a cache's counters at every scrape, labelled `cache="<name>"`;
    /// a cache rebuilt by a reload replaces the one of the same name.
    pub fn watch_cache(&self, name: &str, snapshot: impl Fn() -> CacheSnapshot + Send + Sync + 'static) {
        let mut caches = self.sources.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|(watched, _)| &**watched != name);
        caches.push((Arc::from(name), Arc::new(snapshot)));
    }

    /// Reads `component`'s Redis circuit breaker (`ratelimit`, `cache`) at
    /// every scrape, in place of the one it had before a reload (`None`:
    /// the component no longer uses Redis).
    pub fn watch_redis(&self, component: &'static str, circuit: Option<Arc<RedisCircuit>>) {
        let mut circuits = self.sources.redis.lock().unwrap_or_else(PoisonError::into_inner);
        circuits.retain(|watched| watched.component() != component);
        circuits.extend(circuit);
    }

    /// Reads every replica's health at every scrape.
    pub fn watch_endpoints(&self, source: Arc<dyn EndpointStates>) {
        *self.sources.endpoints.lock().unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Handles for one service's metrics, resolved once.
    pub fn service(&self, service: &str, endpoints: &[Arc<str>]) -> ServiceMetrics {
        let service: Arc<str> = Arc::from(service);
        let families = EndpointFamilies {
            service: Arc::clone(&service),
            requests: self.upstream_requests.clone(),
            duration: self.upstream_duration.clone(),
            ejections: self.upstream_ejections.clone(),
        };
        ServiceMetrics {
            retries: self.upstream_retries.get_or_create_owned(&ServiceLabels { service: Arc::clone(&service) }),
            dns_failures: self.upstream_dns_failures.get_or_create_owned(&ServiceLabels { service }),
            endpoints: families.endpoints(endpoints),
            families: Arc::new(families),
        }
    }

    /// Counts a request as started; the guard counts it as finished.
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }

    /// Records a finished request. `route` is the configured prefix or
    /// router path that matched, never the request's own path.
    pub(crate) fn request_finished(
        &self,
        route: Option<&str>,
        method: &Method,
        operation: Option<&Arc<str>>,
        status: StatusCode,
        duration: Duration,
    ) {
        let key = RequestKey {
            route: route.unwrap_or(&self.unmatched),
            method: method_label(method),
            operation: operation.unwrap_or(&self.empty),
            status: status.as_u16(),
        };
        let series = self.request_series.handles.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((count, latency)) = series.get(&key) {
            count.inc();
            latency.observe(duration);
            return;
        }
        drop(series);
        let (count, latency) = self.request_handles(&key);
        count.inc();
        latency.observe(duration);
    }

    /// Resolves (once per label set) the series of [`Metrics::request_finished`].
    fn request_handles(&self, key: &RequestKey<'_>) -> (Counter, Histogram) {
        let mut series = self.request_series.handles.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(handles) = series.get(key) {
            return handles.clone();
        }
        // Labels are the shared values where there are some, so a series
        // costs its strings once, not once per route seen with it.
        let route = if key.route == &*self.unmatched { Arc::clone(&self.unmatched) } else { Arc::from(key.route) };
        let operation = match key.operation {
            "" => Arc::clone(&self.empty),
            operation => Arc::from(operation),
        };
        let labels = RequestLabels {
            route: Arc::clone(&route),
            method: key.method,
            operation: Arc::clone(&operation),
            status: key.status,
        };
        let status_class = status_class(key.status);
        let handles = (
            self.requests.get_or_create_owned(&labels),
            self.request_duration.get_or_create_owned(&LatencyLabels {
                route,
                method: key.method,
                operation,
                status_class,
            }),
        );
        series.insert(labels, handles.clone());
        handles
    }
}

/// Keeps the in-flight gauge raised until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// One service's metric handles.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    retries: Counter,
    dns_failures: Counter,
    endpoints: Arc<[EndpointMetrics]>,
    families: Arc<EndpointFamilies>,
}

/// The per-replica families, kept to give replicas found later their handles.
#[derive(Debug)]
struct EndpointFamilies {
    service: Arc<str>,
    requests: Family<OutcomeLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    ejections: Family<EndpointLabels, Counter>,
}

impl EndpointFamilies {
    fn endpoints(&self, endpoints: &[Arc<str>]) -> Arc<[EndpointMetrics]> {
        let service = &self.service;
        endpoints
            .iter()
            .map(|endpoint| {
                let labels = EndpointLabels { service: Arc::clone(service), endpoint: Arc::clone(endpoint) };
                EndpointMetrics {
                    outcomes: UpstreamOutcome::LABELS.map(|outcome| {
                        self.requests.get_or_create_owned(&OutcomeLabels {
                            service: Arc::clone(service),
                            endpoint: Arc::clone(endpoint),
                            outcome,
                        })
                    }),
                    duration: self.duration.get_or_create_owned(&labels),
                    ejections: self.ejections.get_or_create_owned(&labels),
                }
            })
            .collect::<Vec<_>>()
            .into()
    }
}

impl ServiceMetrics {
    /// Counts one retry.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// Counts one DNS refresh that failed or found no address.
    pub fn dns_failed(&self) {
        self.dns_failures.inc();
    }

    /// The same service's handles for another set of replicas (found by DNS).
    pub fn for_endpoints(&self, endpoints: &[Arc<str>]) -> ServiceMetrics {
        ServiceMetrics { endpoints: self.families.endpoints(endpoints), ..self.clone() }
    }

    /// The handles of the replica at `index` (in configuration order).
    pub fn endpoint(&self, index: usize) -> Option<&EndpointMetrics> {
        self.endpoints.get(index)
    }
}

/// One replica's metric handles.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    outcomes: [Counter; 8],
    duration: Histogram,
    ejections: Counter,
}

impl EndpointMetrics {
    /// Records one attempt.
    pub fn attempt(&self, outcome: UpstreamOutcome, duration: Duration) {
        self.outcomes[outcome.index()].inc();
        self.duration.observe(duration);
    }

    /// Counts one ejection.
    pub fn ejected(&self) {
        self.ejections.inc();
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_labels_stop_growing_at_the_cap_and_refuse_odd_text() {
        let labels = BoundedLabels::new(2);
        assert_eq!(&*labels.label("Dashboard"), "Dashboard");
        assert_eq!(&*labels.label("Profile"), "Profile");
        assert_eq!(&*labels.label("Third"), OTHER);
        assert_eq!(&*labels.label("Dashboard"), "Dashboard", "known names stay");
        assert_eq!(&*BoundedLabels::new(9).label("a b"), OTHER);
        assert_eq!(&*BoundedLabels::new(9).label(&"x".repeat(65)), OTHER);
    }

    #[test]
    fn a_rebuilt_redis_circuit_replaces_the_one_it_follows() {
        let metrics = Metrics::new(10);
        metrics.watch_redis("ratelimit", Some(RedisCircuit::new("ratelimit", false)));
        metrics.watch_redis("cache", Some(RedisCircuit::new("cache", false)));
        // A reload with a new [rate_limiting] section builds a new circuit.
        metrics.watch_redis("ratelimit", Some(RedisCircuit::new("ratelimit", true)));
        let text = metrics.encode();
        let series: Vec<&str> = text.lines().filter(|line| line.starts_with("portico_redis_up{")).collect();
        assert_eq!(series.len(), 2, "one series per component: {series:?}");
        assert!(series.contains(&"portico_redis_up{component=\"ratelimit\"} 0"), "the new circuit's: {series:?}");
        metrics.watch_redis("cache", None);
        assert!(!metrics.encode().contains("component=\"cache\""), "a component without Redis has no series");
    }

    #[test]
    fn histograms_are_cumulative_in_the_text_format() {
        let metrics = Arc::new(Metrics::new(10));
        for millis in [1, 3, 3000] {
            metrics.request_finished(
                Some("/users/"),
                &Method::GET,
                None,
                StatusCode::OK,
                Duration::from_millis(millis),
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"portico_http_requests_total{route="/users/",method="GET",operation="",status="200"} 3"#),
            "{text}"
        );
        let bucket = |le: &str| {
            format!(
                r#"portico_http_request_duration_seconds_bucket{{route="/users/",method="GET",operation="",status_class="2xx",le="{le}"}}"#
            )
        };
        assert!(text.contains(&format!("{} 1\n", bucket("0.001"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("0.005"))), "{text}");
        assert!(text.contains(&format!("{} 3\n", bucket("+Inf"))), "{text}");
    }

    #[test]
    fn a_borrowed_request_key_finds_its_series() {
        use std::hash::BuildHasher as _;
        let hasher = hashbrown::DefaultHashBuilder::default();
        let labels = RequestLabels {
            route: Arc::from("/users/"),
            method: "GET",
            operation: Arc::from("Dashboard"),
            status: 200,
        };
        let key = RequestKey { route: "/users/", method: "GET", operation: "Dashboard", status: 200 };
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&labels), "Equivalent needs equal hashes");
        assert!(key.equivalent(&labels));
        assert!(!RequestKey { status: 404, ..key }.equivalent(&labels));

        let metrics = Metrics::new(10);
        let dashboard: Arc<str> = Arc::from("Dashboard");
        for (route, status) in [(Some("/users/"), 200), (Some("/users/"), 404), (Some("/users/"), 200), (None, 200)] {
            let status = StatusCode::from_u16(status).expect("status");
            metrics.request_finished(route, &Method::POST, Some(&dashboard), status, Duration::from_millis(1));
        }
        let text = metrics.encode();
        for expected in [
            r#"portico_http_requests_total{route="/users/",method="POST",operation="Dashboard",status="200"} 2"#,
            r#"portico_http_requests_total{route="/users/",method="POST",operation="Dashboard",status="404"} 1"#,
            r#"portico_http_requests_total{route="unmatched",method="POST",operation="Dashboard",status="200"} 1"#,
            r#"portico_http_request_duration_seconds_count{route="/users/",method="POST",operation="Dashboard",status_class="2xx"} 2"#,
            r#"portico_http_request_duration_seconds_count{route="/users/",method="POST",operation="Dashboard",status_class="4xx"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    /// Every series the shipped Grafana dashboard queries exists.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_series() {
        #[derive(Debug)]
        struct OneEndpoint;
        impl EndpointStates for OneEndpoint {
            fn visit(&self, report: &mut dyn FnMut(&str, &str, EndpointState)) {
                report("users", "10.0.0.1:80", EndpointState { healthy: true, ejected: false });
            }
        }
        let metrics = Arc::new(Metrics::new(10));
        metrics.request_finished(Some("/users/"), &Method::GET, None, StatusCode::OK, Duration::from_millis(1));
        let service = metrics.service("users", &[Arc::from("10.0.0.1:80")]);
        service.retried();
        metrics.graphql_error("UPSTREAM_ERROR");
        metrics.rate_limit_decision(&Arc::from("default"), RateLimitDecision::Limited);
        metrics.watch_cache("responses", CacheSnapshot::default);
        metrics.watch_endpoints(Arc::new(OneEndpoint));
        let exported = metrics.encode();

        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/grafana/portico-dashboard.json");
        let dashboard = std::fs::read_to_string(&path).expect("the dashboard exists");
        let mut checked = 0;
        for (start, _) in dashboard.match_indices("portico_") {
            let name: String = dashboard[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name == "portico_" {
                continue;
            }
            let found = exported.contains(&format!("\n{name}{{")) || exported.contains(&format!("\n{name} "));
            assert!(found, "the dashboard uses {name}, which is not exported:\n{exported}");
            checked += 1;
        }
        assert!(checked > 10, "only {checked} series found in the dashboard");
    }

    #[test]
    fn upstream_handles_count_by_outcome() {
        let metrics = Metrics::new(10);
        let service = metrics.service("users", &[Arc::from("10.0.0.1:80")]);
        let endpoint = service.endpoint(0).expect("one endpoint");
        endpoint.attempt(UpstreamOutcome::Status(StatusCode::BAD_GATEWAY), Duration::from_millis(2));
        endpoint.attempt(UpstreamOutcome::ConnectError, Duration::from_millis(1));
        service.retried();
        let text = metrics.encode();
        for expected in [
            r#"portico_upstream_requests_total{service="users",endpoint="10.0.0.1:80",outcome="5xx"} 1"#,
            r#"portico_upstream_requests_total{service="users",endpoint="10.0.0.1:80",outcome="connect_error"} 1"#,
            r#"portico_upstream_retries_total{service="users"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}

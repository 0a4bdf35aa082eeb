//! Observability: logs, metrics and traces.
//!
//! - the log subscriber set up at start ([`TelemetryConfig::init`]), with
//!   optional OTLP span export ([`otlp`]);
//! - the access log layer ([`AccessLogLayer`]): one event and one set of
//!   metrics per request, inside a `request` span that carries the trace id;
//! - [`metrics`]: the Prometheus registry, carried in state, scraped at
//!   `GET /metrics` on the main listener or on an admin listener;
//! - [`trace`]: W3C Trace Context in from trusted peers, out to backends.
//!
//! Architecture invariant: telemetry observes; it never changes a request's
//! outcome. The front doors report what they chose (route, service,
//! endpoint, retries, GraphQL operation) through the [`RequestLog`] in
//! request extensions.

mod access_log;
mod error_chain;
pub mod metrics;
pub mod otlp;
pub mod request_id;
pub mod trace;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use access_log::{AccessLog, AccessLogLayer, RequestLog};
pub use error_chain::ErrorChain;
pub use metrics::Metrics;
pub use otlp::OtlpConfig;
pub use request_id::{drop_unfit_request_id, RandomRequestId, RequestIdLayer};

use crate::client::{peer_in, PeerNetwork};
use crate::problems::Problems;

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format.
    pub log_format: LogFormat,
    /// Default log filter, in `RUST_LOG` syntax (`RUST_LOG` overrides it).
    pub log_level: String,
    /// Peers (CIDRs or addresses) whose `traceparent` / `tracestate` the
    /// gateway joins. Empty by default: the gateway usually is the edge, so
    /// a client's trace context is replaced by a new trace rather than
    /// letting anyone choose trace ids; list front proxies or internal
    /// callers here.
    pub trusted_trace_peers: Vec<PeerNetwork>,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// OTLP span export; off unless the section is present.
    pub otlp: Option<OtlpConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            trusted_trace_peers: Vec::new(),
            metrics: MetricsConfig::default(),
            otlp: None,
        }
    }
}

/// The `[telemetry.metrics]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether metrics are served.
    pub enabled: bool,
    /// The scrape path.
    pub path: String,
    /// A separate admin listener for the scrape path (e.g.
    /// `"127.0.0.1:9090"`); without it, the main listener serves it.
    pub listen: Option<SocketAddr>,
    /// On the main listener, the peers allowed to scrape (others get 404):
    /// metrics name internal endpoints, which clients must never see.
    /// Loopback only by default.
    pub allowed_peers: Vec<PeerNetwork>,
    /// Distinct GraphQL operation names used as label values; later names
    /// are counted as "other".
    pub max_operation_names: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/metrics".to_owned(),
            listen: None,
            allowed_peers: ["127.0.0.0/8", "::1"].iter().filter_map(|network| network.parse().ok()).collect(),
            max_operation_names: 100,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable when standard output is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, coloured.
    Pretty,
}

impl TelemetryConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Err(error) = EnvFilter::try_new(&self.log_level) {
            problems.push(
                "telemetry.log_level",
                format!(
                    "{:?} is not a log filter ({error}); write e.g. \"info\" or \"portico=debug,info\"",
                    self.log_level
                ),
            );
        }
        if !self.metrics.path.starts_with('/') || self.metrics.path.len() < 2 {
            problems
                .push("telemetry.metrics.path", format!("{:?} must be a path such as \"/metrics\"", self.metrics.path));
        }
        if let Some(otlp) = &self.otlp {
            if let Err(message) = otlp.traces_url() {
                problems.push("telemetry.otlp.endpoint", message);
            }
            if !(0.0..=1.0).contains(&otlp.sample_ratio) {
                problems.push("telemetry.otlp.sample_ratio", "must be between 0.0 and 1.0");
            }
            if otlp.max_queue_size == 0 {
                problems.push("telemetry.otlp.max_queue_size", "must be at least 1");
            }
        }
    }

    /// Installs the global log subscriber and, with `[telemetry.otlp]`, the
    /// span exporter; must run inside the tokio runtime. Does nothing when
    /// a subscriber is already installed (as in tests that start several
    /// gateways). Keep the guard until the end: dropping it flushes spans.
    #[must_use = "dropping the guard stops span export"]
    pub fn init(&self) -> TelemetryGuard {
        use std::io::IsTerminal;
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&self.log_level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let json = match self.log_format {
            LogFormat::Json => true,
            LogFormat::Pretty => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        };
        let logs = if json {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter)
                .boxed()
        } else {
            tracing_subscriber::fmt::layer().with_filter(filter).boxed()
        };

        let mut problem = None;
        let (provider, spans) = match self.otlp.as_ref().map(OtlpConfig::tracer_provider) {
            Some(Ok((provider, tracer))) => {
                // The exporter sees only the gateway's own spans, whatever
                // the log level: requests, GraphQL fields, backend calls.
                let spans = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(Targets::new().with_target("portico", tracing::Level::INFO));
                (Some(provider), Some(spans))
            }
            Some(Err(error)) => {
                problem = Some(error);
                (None, None)
            }
            None => (None, None),
        };
        let installed = tracing_subscriber::registry().with(logs).with(spans).try_init().is_ok();
        if let Some(error) = problem {
            tracing::error!(%error, "OTLP export is off: the exporter could not be built");
        }
        TelemetryGuard { provider: provider.filter(|_| installed) }
    }
}

/// Flushes and stops span export when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Bounded: a collector that is down cannot hold up the exit.
            let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// What the layers and doors share: the metrics registry and the trace
/// settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    metrics: Arc<Metrics>,
    trusted_trace_peers: Arc<[PeerNetwork]>,
    scrape_peers: Arc<[PeerNetwork]>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new(&TelemetryConfig::default())
    }
}

impl Telemetry {
    /// Builds the registry and settings from the validated section.
    pub fn new(config: &TelemetryConfig) -> Self {
        Self {
            metrics: Arc::new(Metrics::new(config.metrics.max_operation_names)),
            trusted_trace_peers: Arc::from(config.trusted_trace_peers.as_slice()),
            scrape_peers: Arc::from(config.metrics.allowed_peers.as_slice()),
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether a caller at `peer` may set the trace context.
    pub fn trusts_trace_context_from(&self, peer: IpAddr) -> bool {
        peer_in(&self.trusted_trace_peers, peer)
    }
}

/// `GET /metrics` on the main listener: only for the allowed peers, as the
/// answer names internal endpoints.
pub async fn scrape(State(telemetry): State<Telemetry>, request: axum::extract::Request) -> Response {
    let allowed = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer_in(&telemetry.scrape_peers, peer.ip()));
    if !allowed {
        return http::StatusCode::NOT_FOUND.into_response();
    }
    scrape_answer(&telemetry.metrics)
}

/// `GET /metrics` on the admin listener, which the operator binds to a
/// private address.
pub async fn scrape_admin(State(metrics): State<Arc<Metrics>>) -> Response {
    scrape_answer(&metrics)
}

fn scrape_answer(metrics: &Metrics) -> Response {
    ([(http::header::CONTENT_TYPE, http::HeaderValue::from_static(metrics::CONTENT_TYPE))], metrics.encode())
        .into_response()
}

/// The admin listener's router: only the scrape path.
pub fn admin_router(config: &MetricsConfig, metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(&config.path, axum::routing::get(scrape_admin)).with_state(metrics)
}

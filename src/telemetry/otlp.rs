//! Optional export of the gateway's spans to an OpenTelemetry collector
//! over OTLP/HTTP (protobuf).
//!
//! Spans are handed to a batch processor on the tokio runtime through a
//! bounded queue (`try_send`): when the collector is slow or down the queue
//! fills and spans are dropped, so a request never waits for export and
//! never fails because of it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;

/// The `[telemetry.otlp]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP address, e.g. `http://127.0.0.1:4318`;
    /// `/v1/traces` is added when no path is given. Plain HTTP only: run
    /// the collector (or an agent) next to the gateway.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Longest wait for one export call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Spans waiting for export at most; further spans are dropped.
    pub max_queue_size: usize,
    /// Fraction of new traces recorded (0.0 to 1.0); a caller's sampling
    /// decision is kept.
    pub sample_ratio: f64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "portico".to_owned(),
            timeout: Duration::from_secs(3),
            max_queue_size: 2048,
            sample_ratio: 1.0,
        }
    }
}

impl OtlpConfig {
    /// The traces URL: the endpoint, with `/v1/traces` when it has no path.
    pub fn traces_url(&self) -> Result<http::Uri, String> {
        let uri: http::Uri = self.endpoint.parse().map_err(|_| format!("{:?} is not a URL", self.endpoint))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "{:?} must be an http:// URL with a host, e.g. \"http://127.0.0.1:4318\"",
                self.endpoint
            ));
        }
        if uri.path().is_empty() || uri.path() == "/" {
            return format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
                .parse()
                .map_err(|_| format!("{:?} is not a URL", self.endpoint));
        }
        Ok(uri)
    }

    /// Builds the provider; must run inside the tokio runtime, whose tasks
    /// carry the batches.
    pub(crate) fn tracer_provider(&self) -> Result<(SdkTracerProvider, SdkTracer), String> {
        let url = self.traces_url()?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.to_string())
            .with_timeout(self.timeout)
            .build()
            .map_err(|error| error.to_string())?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(self.max_queue_size)
            .with_max_export_batch_size(512.min(self.max_queue_size))
            .with_scheduled_delay(Duration::from_secs(1))
            .with_max_export_timeout(self.timeout)
            .build();
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).with_batch_config(batch).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.sample_ratio))))
            .with_resource(Resource::builder().with_service_name(self.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("portico");
        Ok((provider, tracer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_only_when_missing() {
        let config = |endpoint: &str| OtlpConfig { endpoint: endpoint.to_owned(), ..OtlpConfig::default() };
        assert_eq!(config("http://127.0.0.1:4318").traces_url().expect("valid"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(config("http://collector:4318/").traces_url().expect("valid"), "http://collector:4318/v1/traces");
        assert_eq!(config("http://c:4318/custom/traces").traces_url().expect("valid"), "http://c:4318/custom/traces");
        assert!(config("https://c:4318").traces_url().is_err());
        assert!(config("localhost:4318").traces_url().is_err());
    }
}

//! Logs: the subscriber set up at start, and the access log written for
//! every request.
//!
//! Architecture invariant: telemetry observes; it never changes a request's
//! outcome. The front doors report what they chose (route, service,
//! endpoint, retries) through the [`RequestLog`] in request extensions.

mod access_log;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

pub use access_log::{AccessLog, AccessLogLayer, RequestLog};

use crate::config::Problems;

/// The request id header, kept from the client or generated.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format.
    pub log_format: LogFormat,
    /// Default log filter, in `RUST_LOG` syntax (`RUST_LOG` overrides it).
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_format: LogFormat::Auto, log_level: "info".to_owned() }
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
    }

    /// Installs the global log subscriber. Does nothing when one is already
    /// installed (as in tests that start several gateways).
    pub fn init(&self) {
        use std::io::IsTerminal;
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&self.log_level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let json = match self.log_format {
            LogFormat::Json => true,
            LogFormat::Pretty => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        };
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        let installed = if json {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        } else {
            builder.try_init()
        };
        drop(installed);
    }
}

//! The one place where GraphQL-side failures become GraphQL errors with an
//! `extensions.code` clients can match on. Internal causes go to the log;
//! clients get the code, the service name and the backend status.

use std::sync::Arc;

use async_graphql::{ErrorExtensions, Value};
use http::StatusCode;

use super::connector::RenderError;
use crate::upstream::UpstreamError;

/// Why a field's backend call produced no value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The service could not be reached (no healthy replica, connection refused).
    #[error("service {service} is unavailable")]
    Unavailable {
        /// The service.
        service: Arc<str>,
    },
    /// The service did not answer in time.
    #[error("service {service} did not answer in time")]
    Timeout {
        /// The service.
        service: Arc<str>,
    },
    /// The object does not exist (404).
    #[error("service {service} has no such object")]
    NotFound {
        /// The service.
        service: Arc<str>,
    },
    /// The service refused the input (400), with its field errors.
    #[error("service {service} refused the input")]
    BadInput {
        /// The service.
        service: Arc<str>,
        /// The service's error body (DRF field errors).
        details: Arc<serde_json::Value>,
    },
    /// The service wants a caller identity (401).
    #[error("service {service} requires an authenticated caller")]
    Unauthenticated {
        /// The service.
        service: Arc<str>,
    },
    /// The caller may not do this (403).
    #[error("service {service} refused the caller")]
    Forbidden {
        /// The service.
        service: Arc<str>,
    },
    /// Any other failure status, or an answer that is not JSON.
    #[error("service {service} answered with an error")]
    Status {
        /// The service.
        service: Arc<str>,
        /// The backend status.
        status: StatusCode,
    },
    /// The answer did not have the shape the schema declares.
    #[error("service {service} answered with an unexpected shape: {detail}")]
    Shape {
        /// The service.
        service: Arc<str>,
        /// What was wrong.
        detail: String,
    },
    /// A value could not be placed into the request.
    #[error(transparent)]
    Input(#[from] RenderError),
}

impl FetchError {
    /// Classifies a failed upstream call.
    pub fn from_upstream(error: &UpstreamError) -> Self {
        let service: Arc<str> = Arc::from(error.service());
        match error {
            UpstreamError::Timeout { .. } => Self::Timeout { service },
            UpstreamError::NoHealthyEndpoint { .. } | UpstreamError::Connect { .. } => Self::Unavailable { service },
            UpstreamError::Protocol { .. } | UpstreamError::RequestBody { .. } => {
                Self::Status { service, status: StatusCode::BAD_GATEWAY }
            }
        }
    }

    /// Classifies a backend answer with a failure status.
    pub fn from_status(service: Arc<str>, status: StatusCode, body: Option<serde_json::Value>) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound { service },
            StatusCode::BAD_REQUEST => {
                Self::BadInput { service, details: Arc::new(body.unwrap_or(serde_json::Value::Null)) }
            }
            StatusCode::UNAUTHORIZED => Self::Unauthenticated { service },
            StatusCode::FORBIDDEN => Self::Forbidden { service },
            status => Self::Status { service, status },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "UPSTREAM_UNAVAILABLE",
            Self::Timeout { .. } => "UPSTREAM_TIMEOUT",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::BadInput { .. } | Self::Input(_) => "BAD_USER_INPUT",
            Self::Unauthenticated { .. } => "UNAUTHENTICATED",
            Self::Forbidden { .. } => "FORBIDDEN",
            Self::Status { .. } | Self::Shape { .. } => "UPSTREAM_ERROR",
        }
    }

    fn service(&self) -> Option<&str> {
        match self {
            Self::Unavailable { service }
            | Self::Timeout { service }
            | Self::NotFound { service }
            | Self::BadInput { service, .. }
            | Self::Unauthenticated { service }
            | Self::Forbidden { service }
            | Self::Status { service, .. }
            | Self::Shape { service, .. } => Some(service),
            Self::Input(_) => None,
        }
    }

    /// The GraphQL error for this failure.
    pub fn to_graphql(&self) -> async_graphql::Error {
        if let Self::Shape { .. } = self {
            tracing::warn!(error = %self, "backend answer did not match the schema");
        }
        let message = match self {
            // The shape detail is for operators, not for clients.
            Self::Shape { service, .. } => format!("service {service} answered with an unexpected shape"),
            other => other.to_string(),
        };
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            extensions.set("code", self.code());
            if let Some(service) = self.service() {
                extensions.set("service", service);
            }
            match self {
                Self::Status { status, .. } => extensions.set("status", status.as_u16()),
                Self::NotFound { .. } => extensions.set("status", 404),
                Self::BadInput { details, .. } => {
                    extensions.set("status", 400);
                    if let Ok(value) = Value::from_json((**details).clone()) {
                        extensions.set("fieldErrors", value);
                    }
                }
                _ => {}
            }
        })
    }
}

/// An error raised by the gateway itself, with a code.
pub fn gateway_error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, extensions| extensions.set("code", code))
}

/// Codes of requests the gateway refuses or cuts short itself, before or
/// around execution (a field's own failures are [`FetchError`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCode {
    /// The operation ran past `graphql.operation_timeout`; its backend
    /// calls were dropped.
    OperationTimeout,
    /// A `POST` whose body is not declared `application/json` (a form,
    /// `text/plain` or no type: what a cross-site page can send unasked).
    UnsupportedMediaType,
    /// A trusted document's hash sent with a different query text.
    TrustedDocumentMismatch,
}

impl RequestCode {
    /// The `extensions.code` clients match on.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OperationTimeout => "OPERATION_TIMEOUT",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::TrustedDocumentMismatch => "TRUSTED_DOCUMENT_MISMATCH",
        }
    }
}

//! The one place where GraphQL-side failures become GraphQL errors with an
//! `extensions.code` clients can match on. Internal causes go to the log;
//! clients get the code, the service name and the backend status.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{ErrorExtensions, ParseRequestError};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value as Json};

use super::connector::RenderError;
use super::limits::{DocumentError, LimitError};
use super::upload::UploadError;
use crate::ratelimit::{retry_after_seconds, RateLimitError};
use crate::upstream::UpstreamError;

/// Every `extensions.code` the gateway puts on a GraphQL error. Clients
/// match on these strings, so a variant's string never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GraphqlCode {
    /// The HTTP request is unusable: no query, an unreadable body, a GET
    /// for a mutation, a persisted-query hash that does not match.
    BadRequest,
    /// The request body is larger than `graphql.max_body_size`.
    PayloadTooLarge,
    /// A `POST` whose body is not declared `application/json` (a form,
    /// `text/plain` or no type: what a cross-site page can send unasked).
    UnsupportedMediaType,
    /// The text is not a GraphQL document.
    GraphqlParseFailed,
    /// The document does not validate against the schema, or names no
    /// runnable operation.
    GraphqlValidationFailed,
    /// A size, depth, alias, root-field or field-count limit is exceeded.
    QueryLimitExceeded,
    /// The operation costs more than `graphql.limits.max_cost`.
    CostLimitExceeded,
    /// In trusted-documents mode, a document that is not on the list.
    QueryNotInSafelist,
    /// A trusted document's hash sent with a different query text.
    TrustedDocumentMismatch,
    /// A persisted-query hash while persisted queries are off.
    PersistedQueryNotSupported,
    /// A persisted-query hash the gateway has not seen (the client then
    /// sends the text).
    PersistedQueryNotFound,
    /// The operation's cost is over the caller's rate-limit budget (or the
    /// budget could not be charged).
    RateLimited,
    /// The operation ran past `graphql.operation_timeout`; its backend
    /// calls were dropped.
    OperationTimeout,
    /// A fault of the gateway itself.
    InternalServerError,
    /// The field (or its backend) wants an authenticated caller.
    Unauthenticated,
    /// The caller lacks the scopes (or the backend refused it).
    Forbidden,
    /// The backend has no such object (404).
    NotFound,
    /// The backend refused the input (400), or a value could not be placed
    /// into its request.
    BadUserInput,
    /// The service could not be reached.
    UpstreamUnavailable,
    /// The service did not answer in time.
    UpstreamTimeout,
    /// The service failed, or answered with a shape the schema does not
    /// declare.
    UpstreamError,
}

impl GraphqlCode {
    /// The `extensions.code` clients match on.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::QueryLimitExceeded => "QUERY_LIMIT_EXCEEDED",
            Self::CostLimitExceeded => "COST_LIMIT_EXCEEDED",
            Self::QueryNotInSafelist => "QUERY_NOT_IN_SAFELIST",
            Self::TrustedDocumentMismatch => "TRUSTED_DOCUMENT_MISMATCH",
            Self::PersistedQueryNotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
            Self::OperationTimeout => "OPERATION_TIMEOUT",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::UpstreamError => "UPSTREAM_ERROR",
        }
    }
}

impl std::fmt::Display for GraphqlCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

    /// The error's `extensions.code`.
    pub fn code(&self) -> GraphqlCode {
        match self {
            Self::Unavailable { .. } => GraphqlCode::UpstreamUnavailable,
            Self::Timeout { .. } => GraphqlCode::UpstreamTimeout,
            Self::NotFound { .. } => GraphqlCode::NotFound,
            Self::BadInput { .. } | Self::Input(_) => GraphqlCode::BadUserInput,
            Self::Unauthenticated { .. } => GraphqlCode::Unauthenticated,
            Self::Forbidden { .. } => GraphqlCode::Forbidden,
            Self::Status { .. } | Self::Shape { .. } => GraphqlCode::UpstreamError,
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

    /// What the client reads: the shape detail is for operators only.
    pub fn client_message(&self) -> String {
        match self {
            Self::Shape { service, .. } => {
                tracing::warn!(error = %self, "backend answer did not match the schema");
                format!("service {service} answered with an unexpected shape")
            }
            other => other.to_string(),
        }
    }

    /// The error's `extensions`: its code, the service and the backend's
    /// status (and a 400's field errors).
    pub fn extensions(&self) -> Json {
        let mut extensions = serde_json::Map::new();
        extensions.insert("code".to_owned(), Json::from(self.code().as_str()));
        if let Some(service) = self.service() {
            extensions.insert("service".to_owned(), Json::from(service));
        }
        match self {
            Self::Status { status, .. } => {
                extensions.insert("status".to_owned(), Json::from(status.as_u16()));
            }
            Self::NotFound { .. } => {
                extensions.insert("status".to_owned(), Json::from(404));
            }
            Self::BadInput { details, .. } => {
                extensions.insert("status".to_owned(), Json::from(400));
                extensions.insert("fieldErrors".to_owned(), (**details).clone());
            }
            _ => {}
        }
        Json::Object(extensions)
    }
}

/// An error raised by the gateway itself during execution, with a code.
pub fn gateway_error(code: GraphqlCode, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, extensions| extensions.set("code", code.as_str()))
}

/// A request the gateway refuses or cuts short itself, before or around
/// execution (a field's own failures are [`FetchError`]s). The message is
/// what the client reads.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A `GET` with neither a query nor extensions (and no playground).
    #[error("a GET needs a `query` parameter")]
    QueryParameterMissing,
    /// A `POST` not declared `application/json`.
    #[error("a POST must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is over `graphql.max_body_size`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body (or query string) is not a GraphQL request.
    #[error("{}", unreadable_message(.0))]
    Unreadable(#[source] ParseRequestError),
    /// Neither a query nor a persisted-query hash.
    #[error("the request has no query")]
    NoQuery,
    /// A persisted-query hash while persisted queries are off.
    #[error("PersistedQueryNotSupported")]
    PersistedQueryNotSupported,
    /// A persisted-query hash not (or no longer) cached.
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound,
    /// A persisted-query hash that is not the hash of the text sent with it.
    #[error("provided sha does not match query")]
    PersistedQueryHashMismatch,
    /// In trusted-documents mode, a document that is not on the list.
    #[error("this document is not on the list of trusted documents")]
    NotInSafelist,
    /// A trusted document's hash sent with a different text.
    #[error("the query text is not the trusted document of the hash sent with it")]
    TrustedDocumentMismatch,
    /// The document failed a check before execution (parse, operation
    /// choice, limits).
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The variables do not fit the operation's declarations.
    #[error("{0}")]
    InvalidVariables(String),
    /// A mutation or subscription sent with `GET`.
    #[error("only queries may be sent with GET; use POST")]
    OperationNeedsPost,
    /// The operation's cost could not be charged to the caller's budget.
    #[error("operation cost {cost}: {source}")]
    OverBudget {
        /// The operation's cost.
        cost: u64,
        /// Why the charge failed.
        source: RateLimitError,
    },
    /// The operation ran past `graphql.operation_timeout`.
    #[error("the operation did not finish within {}", humantime::format_duration(*.timeout))]
    OperationTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// A multipart request (file upload) is refused.
    #[error(transparent)]
    Upload(#[from] UploadError),
}

impl From<LimitError> for RequestError {
    fn from(error: LimitError) -> Self {
        Self::Document(DocumentError::Limit(error))
    }
}

/// How a [`RequestError`] is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status under `application/graphql-response+json`.
    pub status: StatusCode,
    /// The `extensions.code`.
    pub code: GraphqlCode,
    /// Whether the HTTP request itself was fine (only the GraphQL document
    /// was refused): `application/json` answers those with 200.
    pub well_formed: bool,
}

impl RequestError {
    /// The one decision of status and code for a refused request.
    pub fn refusal(&self) -> Refusal {
        let (status, code, well_formed) = match self {
            Self::QueryParameterMissing | Self::NoQuery | Self::PersistedQueryHashMismatch | Self::Unreadable(_) => {
                (StatusCode::BAD_REQUEST, GraphqlCode::BadRequest, false)
            }
            Self::OperationNeedsPost => (StatusCode::METHOD_NOT_ALLOWED, GraphqlCode::BadRequest, false),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, GraphqlCode::UnsupportedMediaType, false)
            }
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, GraphqlCode::PayloadTooLarge, false),
            Self::TrustedDocumentMismatch => (StatusCode::BAD_REQUEST, GraphqlCode::TrustedDocumentMismatch, false),
            // Apollo clients expect the persisted-query protocol's answers
            // with 200, whatever the media type.
            Self::PersistedQueryNotSupported => (StatusCode::OK, GraphqlCode::PersistedQueryNotSupported, true),
            Self::PersistedQueryNotFound => (StatusCode::OK, GraphqlCode::PersistedQueryNotFound, true),
            Self::NotInSafelist => (StatusCode::BAD_REQUEST, GraphqlCode::QueryNotInSafelist, true),
            Self::Document(error) => (StatusCode::BAD_REQUEST, error.code(), true),
            Self::InvalidVariables(_) => (StatusCode::BAD_REQUEST, GraphqlCode::BadUserInput, true),
            Self::OverBudget { source: RateLimitError::Exceeded { .. }, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, GraphqlCode::RateLimited, false)
            }
            Self::OverBudget { source: RateLimitError::Unavailable, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, GraphqlCode::RateLimited, false)
            }
            Self::OperationTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, GraphqlCode::OperationTimeout, false),
            // As before uploads existed: the media type is refused, now
            // with a message that says why.
            Self::Upload(UploadError::Disabled) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, GraphqlCode::UnsupportedMediaType, false)
            }
            Self::Upload(error) if error.is_too_large() => {
                (StatusCode::PAYLOAD_TOO_LARGE, GraphqlCode::PayloadTooLarge, false)
            }
            Self::Upload(UploadError::Spool(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, GraphqlCode::InternalServerError, false)
            }
            Self::Upload(_) => (StatusCode::BAD_REQUEST, GraphqlCode::BadRequest, false),
        };
        Refusal { status, code, well_formed }
    }

    /// The answer: under `application/json` (`graphql_response_type`
    /// false) a well-formed request's refusal is a 200, as the
    /// GraphQL-over-HTTP spec asks of that media type.
    pub fn to_response(&self, graphql_response_type: bool) -> Response {
        let Refusal { status, code, well_formed } = self.refusal();
        let status = if graphql_response_type || !well_formed { status } else { StatusCode::OK };
        let mut response = errors_response(status, graphql_response_type, &[error_json(&self.to_string(), code)]);
        if let Self::OverBudget { source: RateLimitError::Exceeded { retry_after }, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*retry_after)));
        }
        response
    }
}

fn unreadable_message(error: &ParseRequestError) -> String {
    match error {
        ParseRequestError::InvalidRequest(_) => "the body is not a valid GraphQL request".to_owned(),
        ParseRequestError::InvalidFilesMap(_) | ParseRequestError::InvalidMultipart(_) => {
            "the multipart body is not valid".to_owned()
        }
        ParseRequestError::PayloadTooLarge => "the request body is too large".to_owned(),
        ParseRequestError::UnsupportedBatch => "batched operations are not supported".to_owned(),
        other => format!("the request could not be read: {}", other.to_string().split(':').next().unwrap_or("")),
    }
}

/// The media type of GraphQL answers that may use 4xx statuses.
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// One GraphQL error object made by the gateway: `message` and
/// `extensions.code`.
pub fn error_json(message: &str, code: GraphqlCode) -> Json {
    json!({ "message": message, "extensions": { "code": code.as_str() } })
}

/// The one renderer of an `{"errors": [...]}` answer.
pub fn errors_response(status: StatusCode, graphql_response_type: bool, errors: &[Json]) -> Response {
    json_response(status, graphql_response_type, &json!({ "errors": errors }))
}

/// A JSON answer under the negotiated media type.
pub fn json_response(status: StatusCode, graphql_response_type: bool, body: &Json) -> Response {
    let content_type = if graphql_response_type { GRAPHQL_RESPONSE } else { "application/json" };
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_request_refused_under_application_json_is_a_200_and_keeps_its_code() {
        let error = RequestError::NotInSafelist;
        assert_eq!(error.refusal().status, StatusCode::BAD_REQUEST);
        assert_eq!(error.to_response(true).status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.to_response(false).status(), StatusCode::OK);
        let timeout = RequestError::OperationTimeout { timeout: Duration::from_millis(1500) };
        assert_eq!(timeout.to_response(false).status(), StatusCode::GATEWAY_TIMEOUT, "not well formed: no 200");
        assert_eq!(timeout.to_string(), "the operation did not finish within 1s 500ms");
    }

    #[test]
    fn a_cost_over_the_budget_is_a_429_with_retry_after_and_an_unavailable_budget_a_503() {
        let over = RequestError::OverBudget {
            cost: 7,
            source: RateLimitError::Exceeded { retry_after: Duration::from_millis(1200) },
        };
        let response = over.to_response(false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(over.refusal().code.as_str(), "RATE_LIMITED");
        let down = RequestError::OverBudget { cost: 7, source: RateLimitError::Unavailable };
        assert_eq!(down.to_response(true).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.to_response(true).headers().get(header::RETRY_AFTER).is_none());
    }
}

//! REST endpoints backed by stored GraphQL operations (`[[operations]]`),
//! for clients that speak REST, and their OpenAPI document.
//!
//! Each operation is compiled once at load ([`config`]): validated against
//! the schema and planned like any operation of the GraphQL endpoint. Per
//! request, the path's parameters, the query string, a JSON body (not for
//! `GET`) and an idempotency header become the operation's variables, typed
//! by its variable definitions; the plan runs through the GraphQL endpoint
//! ([`crate::graphql::GraphqlEndpoint::run`]) for the caller the layers
//! verified; the answer is the operation's `data`. Errors map to statuses by
//! their GraphQL code (rendered by the error edge); an answer with data and
//! errors is a `200` with an `errors` member, or a failure, as configured.
//! The endpoints are routes like any other: auth, rate limits, CORS, the
//! response cache (GET answers, as the operation's `@cacheControl` says)
//! and the access log apply.
//!
//! Architecture invariant: this module reaches GraphQL execution only
//! through `GraphqlEndpoint::run`; `graphql` does not import it.

mod config;
pub mod openapi;
mod template;

use std::sync::Arc;

use async_graphql::{Name, Variables};
use async_graphql_parser::types::{BaseType, Type};
use async_graphql_value::ConstValue;
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, StatusCode};
use percent_encoding::percent_decode_str;

pub use config::{
    compile_all, CompiledOperation, IdempotencyKeyConfig, OpenapiConfig, OperationConfig, OperationMethod,
    PartialAnswers,
};
pub use template::{PathTemplate, Segment};

use crate::graphql::error::{GraphqlCode, RequestError};
use crate::graphql::http::Caller;
use crate::graphql::model::SchemaModel;
use crate::graphql::plan::VariableSpec;
use crate::graphql::{variables, GraphqlEndpoint};
use crate::telemetry::RequestLog;

/// Why an operation endpoint refused or failed a request. The message is
/// what the client reads.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The endpoint does not answer this method.
    #[error("this endpoint answers {}", .allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", "))]
    MethodNotAllowed {
        /// The methods it answers.
        allowed: &'static [Method],
    },
    /// A query parameter or body member that is no variable of the operation.
    #[error("unknown parameter `{name}`: the operation has no such variable")]
    UnknownParameter {
        /// The parameter.
        name: String,
    },
    /// A required variable that no parameter, body member or header gave.
    #[error("missing required parameter `{name}` ({location})")]
    MissingParameter {
        /// The variable.
        name: String,
        /// Where it is expected: the path, the query or a body member, or a header.
        location: String,
    },
    /// A parameter given twice, or in two places.
    #[error("parameter `{name}` is given more than once")]
    RepeatedParameter {
        /// The parameter.
        name: String,
    },
    /// A value that does not fit the variable's type.
    #[error("invalid {location} parameter `{name}`: {message}")]
    InvalidParameter {
        /// The parameter.
        name: String,
        /// `path`, `query`, `body` or `header`.
        location: &'static str,
        /// Why.
        message: String,
    },
    /// A body not declared `application/json`.
    #[error("a request body must be sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is over the limit.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is no JSON object.
    #[error("the request body must be a JSON object whose members are the operation's variables")]
    InvalidBody,
    /// The GraphQL endpoint refused to run the operation (cost, budget, timeout).
    #[error(transparent)]
    Refused(RequestError),
    /// The operation's answer has errors (and no data, or partial answers
    /// are configured to fail).
    #[error("the operation failed ({})", .codes.iter().map(|code| code.as_str()).collect::<Vec<_>>().join(", "))]
    Failed {
        /// Each error's code, in answer order.
        codes: Vec<GraphqlCode>,
        /// The GraphQL errors, with their paths and extensions.
        errors: serde_json::Value,
    },
}

/// One operation endpoint, ready to serve.
#[derive(Debug)]
pub struct OperationEndpoint {
    /// The route's label: method and path template, e.g. `GET /bff/dashboard/{id}`.
    pub label: Arc<str>,
    method: OperationMethod,
    partial: PartialAnswers,
    operation: Arc<CompiledOperation>,
    max_body_size: usize,
}

impl OperationEndpoint {
    /// The endpoint of a compiled operation; `max_body_size` bounds JSON bodies.
    pub fn new(config: &OperationConfig, max_body_size: usize) -> Option<Self> {
        let operation = Arc::clone(config.compiled.as_ref()?);
        Some(Self {
            label: Arc::from(format!("{} {}", config.method.allowed()[0], config.path)),
            method: config.method,
            partial: config.partial,
            operation,
            max_body_size,
        })
    }

    /// The path template the endpoint answers.
    pub fn template(&self) -> &PathTemplate {
        &self.operation.template
    }

    /// Whether the endpoint answers `method`.
    pub fn answers(&self, method: &Method) -> bool {
        self.method.allowed().contains(method)
    }

    /// Answers one request (routed here by its path).
    pub async fn answer(&self, graphql: &GraphqlEndpoint, request: Request<Body>) -> Result<Response, OperationError> {
        if !self.answers(request.method()) {
            return Err(OperationError::MethodNotAllowed { allowed: self.method.allowed() });
        }
        let request_log = request.extensions().get::<Arc<RequestLog>>().cloned();
        if let Some(log) = &request_log {
            log.set_graphql_operation(self.operation.label.as_deref());
        }
        let caller = Caller::of(graphql, &request, request_log);
        let variables = self.variables(graphql.model(), request).await?;
        let operation = &self.operation;
        let timeout = graphql.operation_timeout();
        let run =
            graphql.run(&operation.document, operation.operation_name.as_deref(), &operation.plan, variables, caller);
        let answer = match tokio::time::timeout(timeout, run).await {
            Ok(answer) => answer.map_err(OperationError::Refused)?,
            Err(_) => {
                tracing::warn!(timeout = ?timeout, "operation ran past graphql.operation_timeout");
                return Err(OperationError::Refused(RequestError::OperationTimeout { timeout }));
            }
        };
        let written = answer.written;
        let body = Bytes::from(written.body);
        let data = body.slice(written.data.clone());
        let body = match written.errors {
            None => data,
            Some(errors) => {
                let errors = body.slice(errors);
                if self.partial == PartialAnswers::Fail || !any_root_value(&data) {
                    let errors = serde_json::from_slice(&errors).unwrap_or_default();
                    return Err(OperationError::Failed { codes: written.codes, errors });
                }
                with_errors(&data, &errors)
            }
        };
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        if let Some(answer_headers) = answer.headers {
            headers.extend(answer_headers);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, answer.cache_control);
        Ok(response)
    }

    /// The request's variables: path parameters, the query string, a JSON
    /// body and the idempotency header, each checked against its variable.
    async fn variables(&self, model: &SchemaModel, request: Request<Body>) -> Result<Variables, OperationError> {
        let specs = &self.operation.plan.variables;
        let mut given = Variables::default();
        let path = request.uri().path();
        for (name, raw) in self.operation.template.capture(path).unwrap_or_default() {
            let text = percent_decode_str(raw).decode_utf8_lossy();
            let spec =
                spec_of(specs, name).ok_or_else(|| OperationError::UnknownParameter { name: name.to_owned() })?;
            let value = typed(model, &spec.ty, vec![text.into_owned()]);
            given.insert(spec.name.clone(), checked(model, spec, value, "path")?);
        }
        let mut query: Vec<(String, Vec<String>)> = Vec::new();
        for pair in request.uri().query().unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (name, value) = (form_decode(name), form_decode(value));
            match query.iter_mut().find(|(known, _)| *known == name) {
                Some((_, values)) => values.push(value),
                None => query.push((name, vec![value])),
            }
        }
        for (name, values) in query {
            let spec = spec_of(specs, &name).ok_or_else(|| OperationError::UnknownParameter { name: name.clone() })?;
            if given.contains_key(&spec.name) || (values.len() > 1 && !matches!(spec.ty.base, BaseType::List(_))) {
                return Err(OperationError::RepeatedParameter { name });
            }
            let value = typed(model, &spec.ty, values);
            given.insert(spec.name.clone(), checked(model, spec, value, "query")?);
        }
        if let Some((header, variable)) = &self.operation.idempotency_key {
            if let Some(value) = request.headers().get(header) {
                let value = value.to_str().ok().filter(|text| !text.trim().is_empty()).ok_or_else(|| {
                    OperationError::InvalidParameter {
                        name: header.to_string(),
                        location: "header",
                        message: "must be visible ASCII text".to_owned(),
                    }
                })?;
                given.insert(variable.clone(), ConstValue::String(value.to_owned()));
            }
        }
        if self.method.takes_body() {
            self.body_variables(model, request, &mut given).await?;
        }
        for spec in specs {
            if !given.contains_key(&spec.name) && !spec.ty.nullable && spec.default.is_none() {
                let location = match &self.operation.idempotency_key {
                    Some((header, variable)) if *variable == spec.name => format!("header {header}"),
                    _ if self.method.takes_body() => "a query parameter or a member of the JSON body".to_owned(),
                    _ => "a query parameter".to_owned(),
                };
                return Err(OperationError::MissingParameter { name: spec.name.to_string(), location });
            }
        }
        variables::coerce(model, specs, &given, 0).map_err(|message| OperationError::InvalidParameter {
            name: first_variable(&message),
            location: "body",
            message,
        })
    }

    /// A JSON object body's members, as variables.
    async fn body_variables(
        &self,
        model: &SchemaModel,
        request: Request<Body>,
        given: &mut Variables,
    ) -> Result<(), OperationError> {
        let declares_json =
            request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(|value| {
                value.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
            });
        let limit = self.max_body_size;
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| OperationError::BodyTooLarge { limit })?;
        if bytes.is_empty() {
            return Ok(());
        }
        // A cross-site form cannot send JSON without a preflight.
        if declares_json != Some(true) {
            return Err(OperationError::UnsupportedMediaType);
        }
        let serde_json::Value::Object(members) =
            serde_json::from_slice(&bytes).map_err(|_| OperationError::InvalidBody)?
        else {
            return Err(OperationError::InvalidBody);
        };
        for (name, value) in members {
            let spec =
                spec_of(&self.operation.plan.variables, &name).ok_or(OperationError::UnknownParameter { name })?;
            if given.contains_key(&spec.name) {
                return Err(OperationError::RepeatedParameter { name: spec.name.to_string() });
            }
            let value = ConstValue::from_json(value).map_err(|_| OperationError::InvalidBody)?;
            given.insert(spec.name.clone(), checked(model, spec, value, "body")?);
        }
        Ok(())
    }
}

fn spec_of<'s>(specs: &'s [VariableSpec], name: &str) -> Option<&'s VariableSpec> {
    specs.iter().find(|spec| spec.name.as_str() == name)
}

/// A parameter's value, checked against its variable alone, so the error
/// names it.
fn checked(
    model: &SchemaModel,
    spec: &VariableSpec,
    value: ConstValue,
    location: &'static str,
) -> Result<ConstValue, OperationError> {
    let mut one = Variables::default();
    one.insert(spec.name.clone(), value);
    let coerced = variables::coerce(model, std::slice::from_ref(spec), &one, 0)
        .map_err(|message| OperationError::InvalidParameter { name: spec.name.to_string(), location, message })?;
    Ok(coerced.get(&spec.name).cloned().unwrap_or(ConstValue::Null))
}

/// Text from a path or query string as a value of `ty`: numbers and
/// booleans parsed (text that does not parse stays text, for coercion to
/// refuse with the type's name), everything else a string.
fn typed(model: &SchemaModel, ty: &Type, mut values: Vec<String>) -> ConstValue {
    match &ty.base {
        BaseType::List(inner) => {
            ConstValue::List(values.into_iter().map(|value| typed(model, inner, vec![value])).collect())
        }
        BaseType::Named(name) => {
            let text = values.pop().unwrap_or_default();
            let number = |parsed: Option<serde_json::Number>| {
                parsed.map_or_else(|| ConstValue::String(text.clone()), ConstValue::Number)
            };
            match name.as_str() {
                "Int" => number(text.parse::<i64>().ok().map(serde_json::Number::from)),
                "Float" => number(text.parse::<f64>().ok().and_then(serde_json::Number::from_f64)),
                "Boolean" => match text.as_str() {
                    "true" => ConstValue::Boolean(true),
                    "false" => ConstValue::Boolean(false),
                    _ => ConstValue::String(text),
                },
                other if model.enums.contains_key(other) => ConstValue::Enum(Name::new(text)),
                _ => ConstValue::String(text),
            }
        }
    }
}

/// `application/x-www-form-urlencoded` decoding of one query-string part.
fn form_decode(part: &str) -> String {
    percent_decode_str(&part.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The variable a coercion message names (`variable $id ...`).
fn first_variable(message: &str) -> String {
    message
        .split_once('$')
        .map(|(_, rest)| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
        .unwrap_or("")
        .to_owned()
}

/// Whether some root field of the data has a value: if none has, the
/// operation failed as a whole. Skims the JSON without building it.
fn any_root_value(data: &[u8]) -> bool {
    serde_json::from_slice::<Option<std::collections::HashMap<String, Option<serde::de::IgnoredAny>>>>(data)
        .ok()
        .flatten()
        .is_some_and(|fields| fields.values().any(Option::is_some))
}

/// The data object with an `errors` member added: `{...,"errors":[...]}`.
fn with_errors(data: &[u8], errors: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(data.len() + errors.len() + 12);
    let open = &data[..data.len().saturating_sub(1)];
    body.extend_from_slice(open);
    if open != b"{" {
        body.extend_from_slice(b",");
    }
    body.extend_from_slice(b"\"errors\":");
    body.extend_from_slice(errors);
    body.extend_from_slice(b"}");
    body.freeze()
}

/// The status an operation's failure is answered with: the most telling of
/// its errors' codes (the caller's credentials first, then its input, then
/// the backends).
pub fn failure_status(codes: &[GraphqlCode]) -> StatusCode {
    const PRECEDENCE: [StatusCode; 11] = [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::BAD_REQUEST,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::NOT_FOUND,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::GATEWAY_TIMEOUT,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::BAD_GATEWAY,
        StatusCode::INTERNAL_SERVER_ERROR,
    ];
    codes
        .iter()
        .map(|code| code_status(*code))
        .min_by_key(|status| PRECEDENCE.iter().position(|known| known == status).unwrap_or(PRECEDENCE.len()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The HTTP status of one GraphQL code on a REST endpoint.
pub fn code_status(code: GraphqlCode) -> StatusCode {
    match code {
        GraphqlCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        GraphqlCode::Forbidden => StatusCode::FORBIDDEN,
        GraphqlCode::BadRequest
        | GraphqlCode::BadUserInput
        | GraphqlCode::GraphqlParseFailed
        | GraphqlCode::GraphqlValidationFailed
        | GraphqlCode::QueryLimitExceeded
        | GraphqlCode::CostLimitExceeded
        | GraphqlCode::QueryNotInSafelist
        | GraphqlCode::TrustedDocumentMismatch
        | GraphqlCode::PersistedQueryNotSupported
        | GraphqlCode::PersistedQueryNotFound => StatusCode::BAD_REQUEST,
        GraphqlCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        GraphqlCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        GraphqlCode::NotFound => StatusCode::NOT_FOUND,
        GraphqlCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        GraphqlCode::UpstreamTimeout | GraphqlCode::OperationTimeout => StatusCode::GATEWAY_TIMEOUT,
        GraphqlCode::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        GraphqlCode::UpstreamError => StatusCode::BAD_GATEWAY,
        GraphqlCode::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_answered_with_its_most_telling_code() {
        use GraphqlCode::*;
        assert_eq!(failure_status(&[UpstreamError, Unauthenticated]), StatusCode::UNAUTHORIZED);
        assert_eq!(failure_status(&[UpstreamError, UpstreamTimeout]), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(failure_status(&[UpstreamUnavailable]), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(failure_status(&[Forbidden, BadUserInput]), StatusCode::FORBIDDEN);
        assert_eq!(failure_status(&[]), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn data_whose_root_fields_are_all_null_is_no_answer() {
        assert!(any_root_value(br#"{"a":null,"b":{"c":null}}"#));
        assert!(!any_root_value(br#"{"a":null,"b":null}"#));
        assert!(!any_root_value(b"null"));
    }

    #[test]
    fn partial_data_gains_an_errors_member() {
        assert_eq!(&with_errors(b"{\"a\":1}", b"[{}]")[..], b"{\"a\":1,\"errors\":[{}]}");
        assert_eq!(&with_errors(b"{}", b"[]")[..], b"{\"errors\":[]}");
    }

    #[test]
    fn query_parts_are_form_decoded() {
        assert_eq!(form_decode("a+b%20c%2F"), "a b c/");
        assert_eq!(first_variable("variable $id got an invalid value"), "id");
    }
}

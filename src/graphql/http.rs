//! GraphQL over HTTP: the `/graphql` endpoint, persisted queries, trusted
//! documents, the document cache, and the GraphiQL playground.
//!
//! Follows the GraphQL-over-HTTP spec: `POST` (JSON) and `GET` (query
//! string, queries only); `application/graphql-response+json` answers use
//! 4xx for request errors, `application/json` answers are 200 for every
//! well-formed request. A `POST` must declare `Content-Type:
//! application/json`: the bodies a browser sends cross-site without a
//! preflight (forms, `text/plain`) are refused with 415 before anything
//! runs, which keeps the endpoint CSRF-safe. Each operation runs within
//! `graphql.operation_timeout`; past it the answer is a coded 504 and the
//! operation's backend calls are aborted. With `[graphql.uploads]` on, a
//! `POST` may instead be a `multipart/form-data` request with files (see
//! [`super::upload`]), which must carry a header a cross-site form cannot.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use async_graphql::dynamic::Schema;
use async_graphql::{ParseRequestError, ServerError};
use async_graphql_parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use axum::body::Body;
use axum::extract::{FromRequest, Path as AxumPath, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use super::cache_control;
use super::config::TrustedDocuments;
use super::error::{json_response, GraphqlCode, RequestError, GRAPHQL_RESPONSE};
use super::execute::{Execution, OperationContext, Runtime};
use super::limits::{self, check_operation, check_text, DocumentError, Limits};
use super::model::SchemaModel;
use super::plan::{self, Plan};
use super::upload::{self, UploadError, UploadLimits, UploadedFile};
use super::{schema, variables, write};
use crate::cache::Cache;
use crate::identity::Identity;
use crate::ratelimit::CostBudget;
use crate::request::REQUEST_ID;
use crate::telemetry::RequestLog;

/// The assets the playground page loads, served from memory.
const PLAYGROUND_ASSETS: [(&str, &str); 4] = [
    ("graphiql.min.css", "text/css; charset=utf-8"),
    ("graphiql.min.js", "text/javascript; charset=utf-8"),
    ("react.production.min.js", "text/javascript; charset=utf-8"),
    ("react-dom.production.min.js", "text/javascript; charset=utf-8"),
];

/// Everything the endpoint needs, built once at start.
pub struct GraphqlEndpoint {
    schema: Schema,
    runtime: Arc<Runtime>,
    limits: Limits,
    path: String,
    max_body_size: usize,
    uploads: Option<UploadLimits>,
    documents: moka::sync::Cache<Arc<str>, Arc<CompiledDocument>>,
    persisted: Option<moka::sync::Cache<String, Arc<str>>>,
    trusted: Option<Arc<TrustedDocuments>>,
    operation_timeout: Duration,
    playground: Option<HashMap<&'static str, Bytes>>,
    playground_signer: Option<Arc<super::PlaygroundSigner>>,
}

impl std::fmt::Debug for GraphqlEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphqlEndpoint").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Settings for [`GraphqlEndpoint::new`], taken from the validated config.
pub struct EndpointSettings<'a> {
    /// The endpoint path.
    pub path: &'a str,
    /// Document limits.
    pub limits: Limits,
    /// Largest request body.
    pub max_body_size: usize,
    /// Limits of multipart requests with files, when uploads are on.
    pub uploads: Option<UploadLimits>,
    /// Whether APQ is on.
    pub persisted_queries: bool,
    /// The trusted-documents allow list, if in that mode.
    pub trusted: Option<Arc<TrustedDocuments>>,
    /// Total time allowed for one operation.
    pub operation_timeout: Duration,
    /// Where the playground's assets are, if the playground is on.
    pub playground_assets: Option<&'a Path>,
    /// Signs the token the playground opens with (development only).
    pub playground_signer: Option<Arc<super::PlaygroundSigner>>,
}

impl GraphqlEndpoint {
    /// Builds the endpoint. Missing playground assets are logged, not fatal:
    /// the API works without them.
    pub fn new(schema: Schema, runtime: Arc<Runtime>, settings: EndpointSettings<'_>) -> Self {
        let playground = settings.playground_assets.map(|folder| {
            let mut assets = HashMap::new();
            for (name, _) in PLAYGROUND_ASSETS {
                match std::fs::read(folder.join(name)) {
                    Ok(bytes) => {
                        assets.insert(name, Bytes::from(bytes));
                    }
                    Err(error) => tracing::warn!(
                        asset = name, folder = %folder.display(), %error,
                        "GraphiQL asset missing; run `cargo xtask setup` to install the playground"
                    ),
                }
            }
            assets
        });
        Self {
            schema,
            runtime,
            limits: settings.limits,
            path: settings.path.to_owned(),
            max_body_size: settings.max_body_size,
            uploads: settings.uploads,
            documents: moka::sync::Cache::builder()
                .max_capacity(16 * 1024 * 1024)
                // A plan is a few times its text: fields with their types,
                // shapes and calls.
                .weigher(|query: &Arc<str>, _| u32::try_from(query.len() * 8).unwrap_or(u32::MAX))
                .build(),
            persisted: settings.persisted_queries.then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(8 * 1024 * 1024)
                    .weigher(|_: &String, query: &Arc<str>| u32::try_from(query.len() + 64).unwrap_or(u32::MAX))
                    .build()
            }),
            trusted: settings.trusted,
            operation_timeout: settings.operation_timeout,
            playground,
            playground_signer: settings.playground_signer,
        }
    }

    /// The client-facing SDL.
    pub fn sdl(&self) -> String {
        self.schema.sdl()
    }
}

/// Who sent the operation, as the layers recorded it.
pub struct Caller {
    identity: Option<Arc<Identity>>,
    cost_budget: Option<CostBudget>,
    request_id: Option<HeaderValue>,
    request_log: Option<Arc<RequestLog>>,
    cache: Option<Arc<Cache>>,
    /// Kept when some service's header rules forward client headers.
    client_headers: Option<HeaderMap>,
    /// A multipart request's files.
    files: Vec<Arc<UploadedFile>>,
}

impl Caller {
    /// The caller of `request`, as the layers recorded it in its extensions.
    pub fn of<B>(endpoint: &GraphqlEndpoint, request: &http::Request<B>, request_log: Option<Arc<RequestLog>>) -> Self {
        Self {
            identity: request.extensions().get::<Arc<Identity>>().cloned(),
            cost_budget: request.extensions().get::<CostBudget>().cloned(),
            request_id: request.headers().get(REQUEST_ID).cloned(),
            request_log,
            cache: request.extensions().get::<Arc<Cache>>().cloned(),
            client_headers: endpoint.runtime.passes_client_headers.then(|| request.headers().clone()),
            files: Vec::new(),
        }
    }
}

/// A compiled operation's answer, written.
pub struct Answer {
    /// The GraphQL response and each error's code.
    pub written: write::Written,
    /// `Cache-Control`: the operation's `@cacheControl` for an answer
    /// without errors to a query, else `no-store`.
    pub cache_control: HeaderValue,
    /// Headers the backends' answers pass on (service header rules).
    pub headers: Option<HeaderMap>,
}

/// Parse failures of the HTTP request itself.
pub struct Rejection(ParseRequestError);

impl From<ParseRequestError> for Rejection {
    fn from(error: ParseRequestError) -> Self {
        Self(error)
    }
}

/// Only for the extractor's bound: [`handle`] answers the error itself,
/// in the client's media type.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        RequestError::Unreadable(self.0).to_response(false)
    }
}

/// `GET` and `POST` on the endpoint.
pub async fn handle(State(endpoint): State<Arc<GraphqlEndpoint>>, request: Request) -> Response {
    let graphql_response_type = accepts(request.headers(), GRAPHQL_RESPONSE);
    let method = request.method().clone();

    if method == Method::GET
        && request.uri().query().is_none_or(|query| !query.contains("query=") && !query.contains("extensions="))
    {
        return match (&endpoint.playground, accepts(request.headers(), "text/html")) {
            (Some(_), true) => playground_page(&endpoint.path, endpoint.playground_signer.as_deref()),
            _ => RequestError::QueryParameterMissing.to_response(graphql_response_type),
        };
    }
    let request_log = request.extensions().get::<Arc<RequestLog>>().cloned();
    match answer(&endpoint, request, method, request_log.clone(), graphql_response_type).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(log) = &request_log {
                log.graphql_error(error.refusal().code.as_str());
            }
            error.to_response(graphql_response_type)
        }
    }
}

/// Reads the request and runs its operation within `operation_timeout`.
async fn answer(
    endpoint: &GraphqlEndpoint,
    request: Request,
    method: Method,
    request_log: Option<Arc<RequestLog>>,
    graphql_response_type: bool,
) -> Result<Response, RequestError> {
    let mut caller = Caller::of(endpoint, &request, request_log);
    let graphql_request = if method != Method::GET && !declares_json(request.headers()) {
        if !upload::declares_multipart(request.headers()) {
            return Err(RequestError::UnsupportedMediaType);
        }
        let Some(limits) = endpoint.uploads else { return Err(UploadError::Disabled.into()) };
        if !upload::preflighted(request.headers()) {
            return Err(UploadError::PreflightHeaderMissing.into());
        }
        let multipart = upload::read(request, limits).await.inspect_err(|error| {
            if let UploadError::Spool(cause) = error {
                tracing::error!(error = %cause, "an uploaded file could not be spooled to a temporary file");
            }
        })?;
        caller.files = multipart.files;
        multipart.request
    } else {
        let request = limit_body(request, endpoint.max_body_size).await?;
        async_graphql_axum::GraphQLRequest::<Rejection>::from_request(request, &())
            .await
            .map_err(|Rejection(error)| RequestError::Unreadable(error))?
            .into_inner()
    };
    let timeout = endpoint.operation_timeout;
    tokio::time::timeout(timeout, execute(endpoint, graphql_request, &method, caller, graphql_response_type))
        .await
        .unwrap_or_else(|_| {
            // The operation's future, and with it every backend call it
            // started, has been dropped.
            tracing::warn!(timeout = ?timeout, "GraphQL operation ran past graphql.operation_timeout");
            Err(RequestError::OperationTimeout { timeout })
        })
}

async fn limit_body(request: Request, limit: usize) -> Result<Request, RequestError> {
    if request.method() == Method::GET {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Err(_) => Err(RequestError::BodyTooLarge { limit }),
    }
}

/// A parsed document and the plans of its operations, compiled on first
/// use: the document is parsed, measured and validated once, however often
/// it runs.
struct CompiledDocument {
    document: ExecutableDocument,
    /// By operation name; a document has few operations, each compiled
    /// once, so a short list under a lock never held across `.await`.
    plans: Mutex<Vec<(Option<Box<str>>, Compiled)>>,
}

/// An operation's compiled form: its plan, or why it does not validate.
#[derive(Clone)]
enum Compiled {
    Plan(Arc<Plan>),
    Invalid(Arc<[ServerError]>),
}

impl CompiledDocument {
    fn get(&self, operation_name: Option<&str>) -> Option<Compiled> {
        let plans = self.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        plans.iter().find(|(name, _)| name.as_deref() == operation_name).map(|(_, compiled)| compiled.clone())
    }
}

async fn execute(
    endpoint: &GraphqlEndpoint,
    request: async_graphql::Request,
    method: &Method,
    caller: Caller,
    graphql_response_type: bool,
) -> Result<Response, RequestError> {
    let query = resolve_document(endpoint, &request)?;
    check_text(&query, &endpoint.limits)?;
    let compiled = compiled_document(endpoint, &query)?;
    let operation_name = request.operation_name.as_deref();
    if let Some(log) = &caller.request_log {
        log.set_graphql_operation(self::operation_name(&compiled.document, operation_name));
    }
    let (plan, how) = match compiled.get(operation_name) {
        Some(found) => (found, "reused"),
        None => (compile(endpoint, &compiled, operation_name, method, &request.variables).await?, "compiled"),
    };
    let plan = match plan {
        Compiled::Plan(plan) => {
            if let Some(log) = &caller.request_log {
                log.graphql_plan(how);
            }
            plan
        }
        Compiled::Invalid(errors) => {
            if let Some(log) = &caller.request_log {
                log.graphql_plan("invalid");
            }
            return Ok(validation_failure(&errors, &caller, graphql_response_type));
        }
    };
    if *method == Method::GET && plan.kind != OperationType::Query {
        return Err(RequestError::OperationNeedsPost);
    }
    let variables = variables::coerce(&endpoint.runtime.model, &plan.variables, &request.variables, caller.files.len())
        .map_err(RequestError::InvalidVariables)?;
    let answer = endpoint.run(&compiled.document, operation_name, &plan, variables, caller).await?;
    let content_type = if graphql_response_type { GRAPHQL_RESPONSE } else { "application/json" };
    let mut response = Response::new(Body::from(answer.written.body));
    let headers = response.headers_mut();
    if let Some(answer_headers) = answer.headers {
        headers.extend(answer_headers);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, answer.cache_control);
    Ok(response)
}

impl GraphqlEndpoint {
    /// Runs a compiled operation of `document` with coerced `variables` for
    /// `caller`: charges its cost, executes its plan and writes its answer.
    /// Both the GraphQL endpoint and the REST endpoints of stored
    /// operations answer through this.
    pub async fn run(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        plan: &Plan,
        variables: async_graphql::Variables,
        caller: Caller,
    ) -> Result<Answer, RequestError> {
        let endpoint = self;
        let cost = match plan.cost {
            Some(cost) => cost,
            // A slicing argument comes from a variable: measure with them.
            None => {
                let operation = limits::select_operation(document, operation_name).map_err(DocumentError::Operation)?;
                let root_type = limits::root_type(&endpoint.runtime.model, operation.ty).unwrap_or_default();
                check_operation(&endpoint.runtime.model, document, operation, root_type, &variables, &endpoint.limits)?
                    .cost
            }
        };
        if let Some(budget) = &caller.cost_budget {
            budget.charge(cost).await.map_err(|source| RequestError::OverBudget { cost, source })?;
        }

        let introspection = if plan.introspects {
            let response = schema::introspect(&endpoint.schema, document, operation_name, variables.clone()).await;
            Some((response.data.into_json().unwrap_or_default(), response.errors))
        } else {
            None
        };
        let context = Arc::new(OperationContext {
            claims: caller.identity.as_ref().map(|identity| Arc::clone(&identity.claims)),
            identity: caller.identity,
            request_id: caller.request_id,
            request_log: caller.request_log.clone(),
            cache: caller.cache,
            client_headers: caller.client_headers,
            files: caller.files,
        });
        let mut execution = Execution::new(plan, &endpoint.runtime, context, variables);
        execution.run().await;
        let written =
            write::write(plan, &execution, introspection.as_ref().map(|(data, errors)| (data, errors.as_slice())));
        if let Some(log) = &caller.request_log {
            for code in &written.codes {
                log.graphql_error(code.as_str());
            }
        }
        let cache_control = if !written.codes.is_empty() || plan.kind != OperationType::Query {
            // Answers with errors and answers to mutations are never cached.
            HeaderValue::from_static("no-store")
        } else {
            plan.cache_control.clone()
        };
        Ok(Answer { written, cache_control, headers: execution.response_headers() })
    }

    /// The longest an operation may run, backend calls included.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The schema's model.
    pub fn model(&self) -> &Arc<SchemaModel> {
        &self.runtime.model
    }
}

/// Measures, validates and plans an operation seen for the first time.
async fn compile(
    endpoint: &GraphqlEndpoint,
    compiled: &CompiledDocument,
    operation_name: Option<&str>,
    method: &Method,
    variables: &async_graphql::Variables,
) -> Result<Compiled, RequestError> {
    let document = &compiled.document;
    let model = &endpoint.runtime.model;
    let operation = limits::select_operation(document, operation_name).map_err(DocumentError::Operation)?;
    if *method == Method::GET && operation.ty != OperationType::Query {
        return Err(RequestError::OperationNeedsPost);
    }
    let root_type = limits::root_type(model, operation.ty)
        .ok_or_else(|| DocumentError::Operation("this schema has no root type for the operation".to_owned()))?;
    // Limits first: they are linear whatever the fragments do, and they
    // bound the plan's size (`max_fields` counts fields once expanded).
    let shape = check_operation(model, document, operation, root_type, variables, &endpoint.limits)?;
    let result = match schema::validate(&endpoint.schema, document, operation_name).await {
        Err(errors) => Compiled::Invalid(errors.into()),
        Ok(()) => {
            let cache_control = cache_control::header_value(model, document, operation, root_type);
            match plan::compile(
                model,
                document,
                operation,
                root_type,
                cache_control,
                shape.cost,
                &endpoint.runtime.headers,
            ) {
                Ok(plan) => Compiled::Plan(Arc::new(plan)),
                Err(error) => {
                    tracing::error!(%error, "a validated operation has no plan: the schema model and the executable schema disagree");
                    Compiled::Invalid(vec![ServerError::new(error.to_string(), None)].into())
                }
            }
        }
    };
    let mut plans = compiled.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !plans.iter().any(|(name, _)| name.as_deref() == operation_name) {
        plans.push((operation_name.map(Into::into), result.clone()));
    }
    Ok(result)
}

/// Errors without data: the document failed validation.
fn validation_failure(errors: &[ServerError], caller: &Caller, graphql_response_type: bool) -> Response {
    if let Some(log) = &caller.request_log {
        for error in errors {
            log.graphql_error(error_code(error));
        }
    }
    let status = if graphql_response_type { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let errors: Vec<Json> = errors.iter().map(server_error_json).collect();
    let mut response = json_response(status, graphql_response_type, &json!({ "errors": errors }));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The query text, from the request, the persisted-query cache or the
/// trusted-documents list.
fn resolve_document(endpoint: &GraphqlEndpoint, request: &async_graphql::Request) -> Result<Arc<str>, RequestError> {
    let hash = request.extensions.get("persistedQuery").and_then(|value| value.clone().into_json().ok()).and_then(
        |persisted| {
            (persisted.get("version").and_then(Json::as_u64) == Some(1))
                .then(|| persisted.get("sha256Hash").and_then(Json::as_str).map(str::to_ascii_lowercase))
                .flatten()
        },
    );

    if let Some(trusted) = &endpoint.trusted {
        let hash_given = hash.is_some();
        let key = hash.unwrap_or_else(|| sha256_hex(&request.query));
        let listed = trusted.get(&key).cloned().ok_or(RequestError::NotInSafelist)?;
        // A hash with another text must not run the listed document in
        // the text's place: the client meant something else.
        if hash_given && !request.query.is_empty() && request.query.as_str() != &*listed {
            return Err(RequestError::TrustedDocumentMismatch);
        }
        return Ok(listed);
    }

    match (hash, request.query.is_empty()) {
        (None, true) => Err(RequestError::NoQuery),
        (None, false) => Ok(Arc::from(request.query.as_str())),
        (Some(hash), query_missing) => {
            let Some(persisted) = &endpoint.persisted else {
                return Err(RequestError::PersistedQueryNotSupported);
            };
            if query_missing {
                return persisted.get(&hash).ok_or(RequestError::PersistedQueryNotFound);
            }
            if sha256_hex(&request.query) != hash {
                return Err(RequestError::PersistedQueryHashMismatch);
            }
            let query: Arc<str> = Arc::from(request.query.as_str());
            persisted.insert(hash, Arc::clone(&query));
            Ok(query)
        }
    }
}

/// Parses the document once per distinct text; later requests reuse it
/// and its plans.
fn compiled_document(endpoint: &GraphqlEndpoint, query: &Arc<str>) -> Result<Arc<CompiledDocument>, RequestError> {
    if let Some(compiled) = endpoint.documents.get(query) {
        return Ok(compiled);
    }
    let document = limits::parse(query)?;
    let compiled = Arc::new(CompiledDocument { document, plans: Mutex::new(Vec::new()) });
    endpoint.documents.insert(Arc::clone(query), Arc::clone(&compiled));
    Ok(compiled)
}

/// The selected operation's name; `None` for an anonymous operation.
fn operation_name<'a>(document: &'a ExecutableDocument, requested: Option<&'a str>) -> Option<&'a str> {
    match (&document.operations, requested) {
        (DocumentOperations::Single(_), _) => None,
        (DocumentOperations::Multiple(_), Some(name)) => Some(name),
        (DocumentOperations::Multiple(operations), None) => operations.keys().next().map(|name| name.as_str()),
    }
}

/// An error's `extensions.code`, as clients see it (see `server_error_json`).
fn error_code(error: &ServerError) -> &str {
    match error.extensions.as_ref().and_then(|extensions| extensions.get("code")) {
        Some(async_graphql::Value::String(code)) => code,
        _ if error.path.is_empty() => GraphqlCode::GraphqlValidationFailed.as_str(),
        _ => GraphqlCode::InternalServerError.as_str(),
    }
}

fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether the request declares one JSON body: `application/json`, any
/// parameters (a charset) allowed, case-insensitive.
fn declares_json(headers: &HeaderMap) -> bool {
    declares_media_type(headers, "application/json")
}

/// Whether the request has one `Content-Type`, of `media_type` (parameters
/// allowed, case-insensitive).
pub(super) fn declares_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|value| value.split(';').next())
            .is_some_and(|declared| declared.trim().eq_ignore_ascii_case(media_type)),
        _ => false,
    }
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.split(';').next().is_some_and(|item| item.trim().eq_ignore_ascii_case(media_type)))
}

fn server_error_json(error: &ServerError) -> Json {
    let mut value = serde_json::to_value(error).unwrap_or_else(|_| json!({ "message": error.message }));
    if let Some(object) = value.as_object_mut() {
        let extensions = object.entry("extensions").or_insert_with(|| json!({}));
        if let Some(extensions) = extensions.as_object_mut() {
            extensions.entry("code").or_insert_with(|| json!(GraphqlCode::GraphqlValidationFailed.as_str()));
        }
    }
    value
}

/// Serves one of the playground's assets.
pub async fn asset(State(endpoint): State<Arc<GraphqlEndpoint>>, AxumPath(name): AxumPath<String>) -> Response {
    let found = PLAYGROUND_ASSETS.iter().find(|(asset, _)| *asset == name).and_then(|(asset, content_type)| {
        endpoint.playground.as_ref()?.get(asset).map(|bytes| (bytes.clone(), *content_type))
    });
    match found {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn playground_page(path: &str, signer: Option<&super::PlaygroundSigner>) -> Response {
    // The default headers, as a JS string (JSON text is a JS literal; `<`
    // escaped so nothing can close the script element).
    let headers = signer
        .and_then(super::PlaygroundSigner::token)
        .map(|token| json!({ "Authorization": format!("Bearer {token}") }).to_string())
        .map_or_else(|| "undefined".to_owned(), |headers| Json::from(headers).to_string().replace('<', "\\u003c"));
    let page = PLAYGROUND_HTML.replace("{{PATH}}", path).replace("{{HEADERS}}", &headers);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], page).into_response()
}

const PLAYGROUND_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>portico · GraphiQL</title>
  <link rel="stylesheet" href="{{PATH}}/assets/graphiql.min.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql"><p style="font-family: sans-serif; padding: 2em">Loading GraphiQL… If this stays, the playground's
  assets are not installed: run <code>cargo xtask setup</code>.</p></div>
  <script src="{{PATH}}/assets/react.production.min.js"></script>
  <script src="{{PATH}}/assets/react-dom.production.min.js"></script>
  <script src="{{PATH}}/assets/graphiql.min.js"></script>
  <script>
    // A link such as /graphql#query=...&variables=...&headers=... opens with
    // that operation (headers as a JSON object, e.g. an Authorization token);
    // without headers in the link, those of graphql.playground_caller.
    const shared = new URLSearchParams(window.location.hash.slice(1));
    const fetcher = GraphiQL.createFetcher({ url: window.location.origin + "{{PATH}}" });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {
        fetcher,
        defaultEditorToolsVisibility: true,
        query: shared.get("query") || undefined,
        variables: shared.get("variables") || undefined,
        headers: shared.get("headers") || {{HEADERS}},
      })
    );
  </script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apq_hashes_are_lowercase_hex_sha256() {
        assert_eq!(sha256_hex("{ a }").len(), 64);
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn only_a_single_json_content_type_is_a_json_body() {
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::CONTENT_TYPE, HeaderValue::from_static(value));
            }
            declares_json(&headers)
        };
        assert!(with(&["application/json"]));
        assert!(with(&["Application/JSON; charset=utf-8"]));
        assert!(with(&[" application/json ;charset=UTF-8"]));
        assert!(!with(&[]));
        assert!(!with(&["text/plain"]));
        assert!(!with(&["application/x-www-form-urlencoded"]));
        assert!(!with(&["multipart/form-data; boundary=x"]));
        assert!(!with(&["application/jsonp"]));
        assert!(!with(&["application/graphql"]));
        assert!(!with(&["application/json", "text/plain"]), "two types are no declaration");
    }

    #[test]
    fn accept_matching_ignores_parameters_and_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html;q=0.9, Application/GraphQL-Response+JSON; charset=utf-8"),
        );
        assert!(accepts(&headers, GRAPHQL_RESPONSE));
        assert!(accepts(&headers, "text/html"));
        assert!(!accepts(&headers, "application/json"));
    }
}

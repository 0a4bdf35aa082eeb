//! The executable schema: async-graphql's dynamic schema built from the
//! model, with resolvers that call backends through `upstream`.
//!
//! Three things make an operation cheap:
//! - deduplication: identical GET calls within one operation share one
//!   in-flight request;
//! - early start: when an object arrives, the calls of its selected `@rest`
//!   children that depend only on it are started at once, because the
//!   dynamic executor resolves an object's fields one after another;
//! - batching: `batch` fields of list items are gathered by a per-operation
//!   batcher into one `?ids=` call per chunk, without a timer: sibling list
//!   items reach the field in the same executor pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, ResolverContext, Scalar, Schema,
    SchemaBuilder, TypeRef,
};
use async_graphql::{Name, Value};
use async_graphql_parser::types::{BaseType, Type};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tracing::Instrument as _;

use super::connector::{RestConnector, Scope};
use super::error::{gateway_error, FetchError, GraphqlCode};
use super::model::{FieldModel, FieldSource, ObjectModel, SchemaModel};
use crate::cache::{Cache, FieldCall};
use crate::identity::Identity;
use crate::telemetry::RequestLog;
use crate::upstream::{UpstreamRequestBody, UpstreamService, Upstreams};

/// Limits and clients shared by every operation.
#[derive(Debug)]
pub struct Runtime {
    /// The backend services.
    pub upstreams: Upstreams,
    /// The checked schema.
    pub model: Arc<SchemaModel>,
    /// Longest value placed into a URL.
    pub max_url_value_length: usize,
    /// Most keys in one batched call.
    pub max_batch_size: usize,
    /// Largest backend answer read.
    pub max_response_size: usize,
}

/// What one operation carries: the caller, its request id, and the calls
/// made so far.
#[derive(Default)]
pub struct OperationState {
    /// The verified caller, if any.
    pub identity: Option<Arc<Identity>>,
    /// The caller's claims (for `$claims.x`).
    pub claims: Option<Arc<Json>>,
    /// The request id, forwarded to every backend call.
    pub request_id: Option<HeaderValue>,
    /// The request's log, trace and span: backend calls join its trace.
    pub request_log: Option<Arc<RequestLog>>,
    /// The response cache, for `@rest` GET calls with `@cacheControl`.
    pub cache: Option<Arc<Cache>>,
    fetches: Mutex<HashMap<String, SharedFetch>>,
    loaders: Mutex<HashMap<String, Arc<Batcher>>>,
    /// The operation's spawned backend calls, aborted when it ends.
    calls: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for OperationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationState").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl OperationState {
    /// State for one operation.
    pub fn new(identity: Option<Arc<Identity>>, request_id: Option<HeaderValue>) -> Self {
        let claims = identity.as_ref().map(|identity| Arc::clone(&identity.claims));
        Self { identity, claims, request_id, ..Self::default() }
    }

    /// Aborts every backend call the operation spawned that is still
    /// running: once the operation is over (answered, timed out or dropped
    /// with its client) nobody reads their answers.
    pub fn abort_calls(&self) {
        for call in self.calls.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            call.abort();
        }
    }
}

/// Aborts the operation's backend calls when dropped; held by whoever runs
/// the operation, so that a deadline or a vanished client ends them too.
pub struct AbortCallsOnDrop(pub Arc<OperationState>);

impl Drop for AbortCallsOnDrop {
    fn drop(&mut self) {
        self.0.abort_calls();
    }
}

type FetchResult = Result<Arc<Json>, FetchError>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// An object on its way through the executor: its JSON and the calls its
/// children already started.
struct ParentObject {
    json: Json,
    prefetched: HashMap<String, SharedFetch>,
}

/// Builds the executable schema for `runtime.model`.
pub fn build_schema(runtime: Arc<Runtime>, introspection: bool) -> Result<Schema, async_graphql::dynamic::SchemaError> {
    let model = Arc::clone(&runtime.model);
    let mut builder: SchemaBuilder = Schema::build(&model.query, model.mutation.as_deref(), None);
    if model.uses_type("JSON") {
        builder = builder.register(Scalar::new("JSON").description("Any JSON value."));
    }
    for (name, description) in &model.scalars {
        let mut scalar = Scalar::new(name);
        if let Some(description) = description {
            scalar = scalar.description(description);
        }
        builder = builder.register(scalar);
    }
    for enumeration in model.enums.values() {
        let mut built = Enum::new(&enumeration.name).items(enumeration.values.iter().map(EnumItem::new));
        if let Some(description) = &enumeration.description {
            built = built.description(description);
        }
        builder = builder.register(built);
    }
    for input in model.inputs.values() {
        let mut built = InputObject::new(&input.name);
        if let Some(description) = &input.description {
            built = built.description(description);
        }
        for field in &input.fields {
            built = built.field(input_value(field));
        }
        builder = builder.register(built);
    }
    for object in model.objects.values() {
        let mut built = Object::new(&object.name);
        if let Some(description) = &object.description {
            built = built.description(description);
        }
        for field in &object.fields {
            built = built.field(field_resolver(&runtime, object, field));
        }
        builder = builder.register(built);
    }
    if !introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

fn input_value(arg: &super::model::ArgModel) -> InputValue {
    let mut value = InputValue::new(&arg.name, type_ref(&arg.ty));
    if let Some(default) = &arg.default {
        value = value.default_value(default.clone());
    }
    if let Some(description) = &arg.description {
        value = value.description(description);
    }
    value
}

/// The dynamic schema's form of a declared type.
pub fn type_ref(ty: &Type) -> TypeRef {
    let base = match &ty.base {
        BaseType::Named(name) => TypeRef::Named(name.to_string().into()),
        BaseType::List(inner) => TypeRef::List(Box::new(type_ref(inner))),
    };
    if ty.nullable {
        base
    } else {
        TypeRef::NonNull(Box::new(base))
    }
}

fn field_resolver(runtime: &Arc<Runtime>, object: &ObjectModel, field: &FieldModel) -> Field {
    let runtime_for_field = Arc::clone(runtime);
    let field_name = field.name.clone();
    let type_name = object.name.clone();
    let mut built = Field::new(&field.name, type_ref(&field.ty), move |ctx| {
        let runtime = Arc::clone(&runtime_for_field);
        let field_name = field_name.clone();
        let type_name = type_name.clone();
        FieldFuture::new(async move {
            let field = runtime.model.objects.get(&type_name).and_then(|object| object.field(&field_name)).ok_or_else(
                || gateway_error(GraphqlCode::InternalServerError, "field missing from the schema model"),
            )?;
            match resolve_field(&runtime, &ctx, field).await {
                Ok(value) => Ok(value),
                // The dynamic executor drops a failed field from the answer
                // and leaves its error without a path. For a nullable field
                // the error is recorded here, with its path, and the field
                // is null, as the spec requires.
                Err(error) if field.ty.nullable => {
                    ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
                    Ok(None)
                }
                Err(error) => Err(error),
            }
        })
    });
    for arg in &field.args {
        built = built.argument(input_value(arg));
    }
    if let Some(description) = &field.description {
        built = built.description(description);
    }
    if let Some(reason) = &field.deprecation {
        built = built.deprecation(reason.as_deref());
    }
    built
}

async fn resolve_field<'a>(
    runtime: &Runtime,
    ctx: &ResolverContext<'a>,
    field: &FieldModel,
) -> async_graphql::Result<Option<FieldValue<'a>>> {
    let parent = ctx.parent_value.downcast_ref::<ParentObject>();
    if !field.access.is_open() {
        let state = ctx.data::<Arc<OperationState>>()?;
        field.access.check(state.identity.as_deref())?;
    }
    let json = match &field.source {
        FieldSource::Json { key } => parent.and_then(|parent| parent.json.get(key)).cloned().unwrap_or(Json::Null),
        FieldSource::Rest(connector) => {
            let state = ctx.data::<Arc<OperationState>>()?;
            // Open from here until the field's value is in hand.
            let _field_span = state.request_log.as_ref().map(|log| log.field_span(&field.name, &connector.service));
            let args =
                Json::Object(field.arguments_with_defaults(
                    ctx.args.as_index_map().iter().map(|(name, value)| (name.as_str(), value)),
                ));
            let scope =
                Scope { args: Some(&args), parent: parent.map(|parent| &parent.json), claims: state.claims.as_deref() };
            let fetched = if let Some(batch) = &connector.batch {
                let Some(key) = batch.key.evaluate(&scope).and_then(|key| scalar_key(&key)) else {
                    return Ok(None);
                };
                let loader = batch_loader(runtime, state, connector, &scope).map_err(|error| error.to_graphql())?;
                loader.load(key).await.map(|found| found.map(Arc::new))
            } else {
                let response_key = ctx.ctx.field().alias().unwrap_or(&field.name).to_owned();
                let started = parent.and_then(|parent| parent.prefetched.get(&response_key)).cloned();
                let fetch = match started {
                    Some(fetch) => fetch,
                    None => start_call(runtime, state, connector, &scope).map_err(|error| error.to_graphql())?,
                };
                match fetch.await {
                    Ok(answer) => {
                        select(&answer, &connector.selection).map(|value| Arc::new(value.clone())).map_or_else(
                            || {
                                Err(FetchError::Shape {
                                    service: Arc::from(connector.service.as_str()),
                                    detail: format!("no value at selection {:?}", connector.selection.join(".")),
                                })
                            },
                            |value| Ok(Some(value)),
                        )
                    }
                    Err(error) => Err(error),
                }
            };
            match fetched {
                Ok(Some(value)) => Arc::unwrap_or_clone(value),
                Ok(None) => Json::Null,
                // A missing object on a nullable field is simply absent.
                Err(FetchError::NotFound { .. }) if field.ty.nullable => return Ok(None),
                Err(error) => return Err(error.to_graphql()),
            }
        }
    };
    output_value(runtime, ctx, &field.ty, json, field)
}

/// Converts backend JSON to the declared output type.
fn output_value<'a>(
    runtime: &Runtime,
    ctx: &ResolverContext<'a>,
    ty: &Type,
    json: Json,
    field: &FieldModel,
) -> async_graphql::Result<Option<FieldValue<'a>>> {
    if json.is_null() {
        return if ty.nullable {
            Ok(None)
        } else {
            Err(gateway_error(
                GraphqlCode::UpstreamError,
                format!("the backend returned no value for non-null field {}", field.name),
            ))
        };
    }
    match &ty.base {
        BaseType::List(inner) => {
            let Json::Array(items) = json else {
                return Err(gateway_error(
                    GraphqlCode::UpstreamError,
                    format!("the backend returned a non-list for list field {}", field.name),
                ));
            };
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(output_value(runtime, ctx, inner, item, field)?.unwrap_or(FieldValue::NULL));
            }
            Ok(Some(FieldValue::list(values)))
        }
        BaseType::Named(name) => {
            if let Some(object) = runtime.model.objects.get(name.as_str()) {
                if !json.is_object() {
                    return Err(gateway_error(
                        GraphqlCode::UpstreamError,
                        format!("the backend returned a non-object for {}", field.name),
                    ));
                }
                let prefetched = prefetch_children(runtime, ctx, object, &json);
                return Ok(Some(FieldValue::owned_any(ParentObject { json, prefetched })));
            }
            if let Some(enumeration) = runtime.model.enums.get(name.as_str()) {
                let text = json.as_str().unwrap_or_default();
                let item = enumeration.values.iter().find(|value| value.eq_ignore_ascii_case(text));
                return match item {
                    Some(item) => Ok(Some(FieldValue::value(Value::Enum(Name::new(item))))),
                    None => Err(gateway_error(
                        GraphqlCode::UpstreamError,
                        format!("{text:?} is not a value of enum {name}"),
                    )),
                };
            }
            scalar_value(name.as_str(), json).map(|value| Some(FieldValue::value(value))).ok_or_else(|| {
                gateway_error(
                    GraphqlCode::UpstreamError,
                    format!("the backend value for {} is not a valid {name}", field.name),
                )
            })
        }
    }
}

/// Coerces a JSON value to a built-in scalar; custom scalars pass through.
fn scalar_value(scalar: &str, json: Json) -> Option<Value> {
    match (scalar, json) {
        ("ID" | "String", Json::String(text)) => Some(Value::String(text)),
        ("ID" | "String", Json::Number(number)) => Some(Value::String(number.to_string())),
        ("String", Json::Bool(flag)) => Some(Value::String(flag.to_string())),
        ("Int", Json::Number(number)) => number.as_i64().filter(|value| i32::try_from(*value).is_ok()).map(Value::from),
        ("Float", Json::Number(number)) => number.as_f64().map(Value::from),
        ("Boolean", Json::Bool(flag)) => Some(Value::Boolean(flag)),
        ("ID" | "String" | "Int" | "Float" | "Boolean", _) => None,
        (_, json) => Value::from_json(json).ok(),
    }
}

fn scalar_key(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn select<'a>(answer: &'a Json, selection: &[String]) -> Option<&'a Json> {
    selection.iter().try_fold(answer, |current, key| match current {
        Json::Array(items) => key.parse::<usize>().ok().and_then(|index| items.get(index)),
        other => other.get(key),
    })
}

/// Starts the GET calls of the object's selected `@rest` children now, so
/// that siblings run concurrently although the executor visits them in turn.
fn prefetch_children(
    runtime: &Runtime,
    ctx: &ResolverContext<'_>,
    object: &ObjectModel,
    json: &Json,
) -> HashMap<String, SharedFetch> {
    let mut started = HashMap::new();
    let Ok(state) = ctx.data::<Arc<OperationState>>() else { return started };
    for child in ctx.ctx.field().selection_set() {
        if is_skipped(&child) {
            continue;
        }
        let Some(field) = object.field(child.name()) else { continue };
        let FieldSource::Rest(connector) = &field.source else { continue };
        if connector.batch.is_some() || connector.method != Method::GET {
            continue;
        }
        let Ok(given) = child.arguments() else { continue };
        let args =
            Json::Object(field.arguments_with_defaults(given.iter().map(|(name, value)| (name.as_str(), value))));
        let scope = Scope { args: Some(&args), parent: Some(json), claims: state.claims.as_deref() };
        if let Ok(fetch) = start_call(runtime, state, connector, &scope) {
            started.insert(child.alias().unwrap_or(child.name()).to_owned(), fetch);
        }
    }
    started
}

/// Whether `@skip` / `@include` leave the field out, so that no call is
/// started for it.
fn is_skipped(field: &async_graphql::SelectionField<'_>) -> bool {
    let Ok(directives) = field.directives() else { return false };
    directives.iter().any(|directive| {
        let condition = directive.arguments.iter().find(|(name, _)| name.node == "if").and_then(|(_, value)| {
            if let Value::Boolean(flag) = value.node {
                Some(flag)
            } else {
                None
            }
        });
        match directive.name.node.as_str() {
            "skip" => condition == Some(true),
            "include" => condition == Some(false),
            _ => false,
        }
    })
}

/// Starts (or joins) the call for `connector` in `scope`. GET calls are
/// shared within the operation; others always run on their own.
fn start_call(
    runtime: &Runtime,
    state: &Arc<OperationState>,
    connector: &Arc<RestConnector>,
    scope: &Scope<'_>,
) -> Result<SharedFetch, FetchError> {
    let url = connector.render_url(scope, runtime.max_url_value_length)?;
    let service = upstream_service(runtime, connector)?;
    let call = BackendCall {
        service,
        method: connector.method.clone(),
        url,
        headers: connector.render_headers(scope),
        body: connector.render_body(scope),
        state: Arc::clone(state),
        max_response_size: runtime.max_response_size,
        connector: Arc::clone(connector),
    };
    if connector.method != Method::GET {
        return Ok(spawn_call(call));
    }
    let key = format!("{} {}", connector.service, call.url);
    let mut fetches = state.fetches.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(fetches.entry(key).or_insert_with(|| spawn_call(call)).clone())
}

fn upstream_service(runtime: &Runtime, connector: &RestConnector) -> Result<Arc<UpstreamService>, FetchError> {
    runtime
        .upstreams
        .get(&connector.service)
        .cloned()
        .ok_or_else(|| FetchError::Unavailable { service: Arc::from(connector.service.as_str()) })
}

/// Runs the call on its own task, so it progresses whether or not anyone is
/// polling yet.
fn spawn_call(call: BackendCall) -> SharedFetch {
    let service_name = Arc::clone(call.service.name());
    let state = Arc::clone(&call.state);
    let task = tokio::spawn(call.run());
    state.calls.lock().unwrap_or_else(PoisonError::into_inner).push(task.abort_handle());
    async move {
        task.await
            .unwrap_or(Err(FetchError::Status { service: service_name, status: StatusCode::BAD_GATEWAY }))
    }
    .boxed()
    .shared()
}

/// One backend request, ready to send.
struct BackendCall {
    service: Arc<UpstreamService>,
    method: Method,
    url: String,
    headers: Vec<(http::HeaderName, String)>,
    body: Option<Json>,
    state: Arc<OperationState>,
    max_response_size: usize,
    /// The field's connector: how the answer is cached, what it invalidates.
    connector: Arc<RestConnector>,
}

impl BackendCall {
    /// Runs the call inside its `backend.call` span, whose id the backend
    /// receives as its parent in `traceparent`.
    async fn run(self) -> FetchResult {
        let span = match &self.state.request_log {
            Some(log) => log.backend_span(self.service.name(), &self.method, self.url.split('?').next().unwrap_or("")),
            None => tracing::Span::none(),
        };
        self.send(span.clone()).instrument(span).await
    }

    /// Sends the call, through the response cache for GETs whose field has
    /// a `@cacheControl` maxAge; a successful mutation then drops the cached
    /// answers it declares stale.
    async fn send(self, span: tracing::Span) -> FetchResult {
        let service_name = Arc::clone(self.service.name());
        let cache = self.state.cache.as_ref();
        let caching = self.connector.cache.filter(|_| self.method == Method::GET);
        let (status, bytes) = match (cache, caching) {
            (Some(cache), Some(caching)) => {
                let call = FieldCall {
                    service: &service_name,
                    target: &self.url,
                    headers: &self.headers,
                    max_age: caching.max_age,
                    public: caching.public,
                    identity: self.state.identity.as_deref(),
                };
                cache.field_call(call, || self.exchange(&span)).await?
            }
            _ => {
                let (status, _, bytes) = self.exchange(&span).await?;
                (status, bytes)
            }
        };
        if let (Some(cache), true) = (cache, status.is_success() && !self.connector.invalidates.is_empty()) {
            cache.invalidate_service_paths(&service_name, &self.connector.invalidates);
        }
        interpret(service_name, status, &bytes)
    }

    /// One request to the backend; the answer's status, headers and body.
    async fn exchange(&self, span: &tracing::Span) -> Result<(StatusCode, http::HeaderMap, Bytes), FetchError> {
        let service_name = Arc::clone(self.service.name());
        let body = match &self.body {
            Some(body) => UpstreamRequestBody::Full(Bytes::from(serde_json::to_vec(body).unwrap_or_default())),
            None => UpstreamRequestBody::Empty,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self
            .url
            .parse()
            .map_err(|_| FetchError::Status { service: Arc::clone(&service_name), status: StatusCode::BAD_REQUEST })?;
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        if self.body.is_some() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(request_id) = &self.state.request_id {
            headers.insert(crate::request::REQUEST_ID, request_id.clone());
        }
        if let Some(log) = &self.state.request_log {
            log.inject_trace(headers, span);
        }
        if let Some(identity) = &self.state.identity {
            for (name, value) in &identity.forwarded_headers {
                headers.insert(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), value);
            }
        }

        let answer = self.service.send(request).await.map_err(|error| {
            tracing::warn!(service = %service_name, error = %crate::telemetry::ErrorChain(&error), "backend call failed");
            FetchError::from_upstream(&error)
        })?;
        let (parts, body) = answer.response.into_parts();
        let limited = http_body_util::Limited::new(body, self.max_response_size);
        let bytes = limited
            .collect()
            .await
            .map_err(|_| FetchError::Status { service: Arc::clone(&service_name), status: StatusCode::BAD_GATEWAY })?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// The field's JSON from a backend answer, or the failure it reports.
fn interpret(service_name: Arc<str>, status: StatusCode, bytes: &[u8]) -> FetchResult {
    let json: Option<Json> = if bytes.is_empty() { None } else { serde_json::from_slice(bytes).ok() };
    if !status.is_success() {
        return Err(FetchError::from_status(service_name, status, json));
    }
    match json {
        Some(json) => Ok(Arc::new(json)),
        None if bytes.is_empty() => Ok(Arc::new(Json::Null)),
        None => Err(FetchError::Shape { service: service_name, detail: "the answer is not JSON".to_owned() }),
    }
}

/// Makes the calls of one batched field.
struct BatchLoader {
    service: Arc<UpstreamService>,
    connector: Arc<RestConnector>,
    base_scope_args: Json,
    claims: Option<Arc<Json>>,
    /// Weak: the operation's state owns this loader, and a strong
    /// reference back would keep every operation's state (and all its
    /// fetched answers) alive forever.
    state: Weak<OperationState>,
    max_url_value_length: usize,
    max_batch_size: usize,
    max_response_size: usize,
}

impl std::fmt::Debug for BatchLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLoader").field("service", self.service.name()).finish_non_exhaustive()
    }
}

fn batch_loader(
    runtime: &Runtime,
    state: &Arc<OperationState>,
    connector: &Arc<RestConnector>,
    scope: &Scope<'_>,
) -> Result<Arc<Batcher>, FetchError> {
    // Items selecting the field with different arguments need separate calls.
    let args = scope.args.cloned().unwrap_or(Json::Null);
    let identity = format!("{:p} {args}", Arc::as_ptr(connector));
    let mut loaders = state.loaders.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loader) = loaders.get(&identity) {
        return Ok(Arc::clone(loader));
    }
    let loader = BatchLoader {
        service: upstream_service(runtime, connector)?,
        connector: Arc::clone(connector),
        base_scope_args: args,
        claims: state.claims.clone(),
        state: Arc::downgrade(state),
        max_url_value_length: runtime.max_url_value_length,
        max_batch_size: runtime.max_batch_size,
        max_response_size: runtime.max_response_size,
    };
    let batcher = Arc::new(Batcher { loader, pending: Mutex::new(Pending::default()) });
    loaders.insert(identity, Arc::clone(&batcher));
    Ok(batcher)
}

/// Most executor passes a batch waits for more keys before its call goes out.
const MAX_GATHER_PASSES: usize = 8;

type BatchAnswer = Result<Arc<HashMap<String, Json>>, FetchError>;

/// Keys of one batched field waiting for their call.
#[derive(Default)]
struct Pending {
    keys: Vec<String>,
    waiters: Vec<tokio::sync::oneshot::Sender<BatchAnswer>>,
    gathering: bool,
}

/// Collects the keys of one batched field in an operation: the first caller
/// leads, lets the executor finish its pass (sibling list items reach the
/// same field in it) and then makes the calls for everyone.
pub struct Batcher {
    loader: BatchLoader,
    pending: Mutex<Pending>,
}

impl Batcher {
    /// The object whose match key is `key`, if the backend has one.
    async fn load(&self, key: String) -> Result<Option<Json>, FetchError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let leads = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.keys.push(key.clone());
            pending.waiters.push(sender);
            !std::mem::replace(&mut pending.gathering, true)
        };
        if leads {
            let mut seen = 0;
            for _ in 0..MAX_GATHER_PASSES {
                tokio::task::yield_now().await;
                let now = self.pending.lock().unwrap_or_else(PoisonError::into_inner).keys.len();
                if now == seen {
                    break;
                }
                seen = now;
            }
            let (keys, waiters) = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.gathering = false;
                (std::mem::take(&mut pending.keys), std::mem::take(&mut pending.waiters))
            };
            let answer = self.loader.load(keys).await.map(Arc::new);
            for waiter in waiters {
                let _ = waiter.send(answer.clone());
            }
        }
        let service = || Arc::clone(self.loader.service.name());
        let found = receiver.await.map_err(|_| FetchError::Unavailable { service: service() })??;
        Ok(found.get(&key).cloned())
    }
}

impl BatchLoader {
    async fn load(&self, mut keys: Vec<String>) -> Result<HashMap<String, Json>, FetchError> {
        // Sorted, distinct keys give stable, cacheable URLs.
        keys.sort_by(|a, b| match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.cmp(b),
        });
        keys.dedup();
        let Some(state) = self.state.upgrade() else {
            // The operation is over; nobody waits for these keys any more.
            return Ok(HashMap::new());
        };
        let scope = Scope { args: Some(&self.base_scope_args), parent: None, claims: self.claims.as_deref() };
        let calls = keys.chunks(self.max_batch_size.max(1)).map(|chunk| {
            let url = self.connector.render_batch_url(&scope, chunk, self.max_url_value_length.max(chunk.len() * 24));
            let state = &state;
            async move {
                let call = BackendCall {
                    service: Arc::clone(&self.service),
                    method: Method::GET,
                    url: url?,
                    headers: self.connector.render_headers(&scope),
                    body: None,
                    state: Arc::clone(state),
                    max_response_size: self.max_response_size,
                    connector: Arc::clone(&self.connector),
                };
                call.run().await
            }
        });
        let answers = futures_util::future::try_join_all(calls).await?;
        let Some(batch) = &self.connector.batch else { return Ok(HashMap::new()) };
        let mut found = HashMap::new();
        for answer in answers {
            let Some(Json::Array(items)) = select(&answer, &self.connector.selection) else {
                return Err(FetchError::Shape {
                    service: Arc::clone(self.service.name()),
                    detail: format!("no list at selection {:?}", self.connector.selection.join(".")),
                });
            };
            for item in items {
                if let Some(key) = item.get(&batch.match_key).and_then(scalar_key) {
                    found.insert(key, item.clone());
                }
            }
        }
        Ok(found)
    }
}

//! `[[operations]]` and `[openapi]`: what each REST endpoint runs, and
//! where the OpenAPI document is served. Each operation is read, validated
//! against the schema and compiled into its plan once, while the
//! configuration is checked, so a document that does not fit the schema is
//! a configuration problem `portico check` reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_graphql_parser::types::{BaseType, ExecutableDocument, OperationType, Type};
use futures_util::FutureExt as _;
use http::{HeaderName, Method};
use serde::Deserialize;

use super::template::{PathTemplate, Segment};
use crate::auth::AuthMode;
use crate::cache::RouteCacheConfig;
use crate::graphql::model::SchemaModel;
use crate::graphql::plan::{self, HeaderRuleTable, Plan};
use crate::graphql::{cache_control, limits, schema, GraphqlConfig};
use crate::problems::Problems;

/// One REST endpoint backed by a stored GraphQL operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationConfig {
    /// `GET` (queries only, answers cacheable), `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: OperationMethod,
    /// The path, with `{name}` segments that become the variables of the
    /// same name, e.g. `/bff/dashboard/{id}`.
    pub path: String,
    /// The file holding the GraphQL document, relative to the configuration file.
    pub document: PathBuf,
    /// Which operation of the document runs, when it holds several.
    #[serde(default)]
    pub operation_name: Option<String>,
    /// How an answer with data and errors is sent.
    #[serde(default)]
    pub partial: PartialAnswers,
    /// A request header whose value becomes a variable: the idempotency key
    /// of a mutation (the `@rest` connector sends it on to the service).
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKeyConfig>,
    /// What callers must prove: `required`, `optional` (default) or `none`.
    #[serde(default)]
    pub auth: AuthMode,
    /// Scopes a caller must hold (all of them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `[rate_limits.<name>]` policy charged; without it, `default`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Caches `GET` answers, fresh for at most `ttl` and as the operation's
    /// `@cacheControl` allows (answers with errors are never stored).
    #[serde(default)]
    pub cache: Option<RouteCacheConfig>,
    /// The `[cors.policies.<name>]` for browsers on other origins.
    #[serde(default)]
    pub cors: Option<String>,
    /// The compiled operation, filled in by [`compile_all`].
    #[serde(skip)]
    pub compiled: Option<Arc<CompiledOperation>>,
}

/// The methods an operation endpoint may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OperationMethod {
    /// Queries only; the answer can be cached.
    Get,
    /// Variables from the path, the query and a JSON body.
    Post,
    /// As `POST`.
    Put,
    /// As `POST`.
    Patch,
    /// As `POST`.
    Delete,
}

const GET: [Method; 2] = [Method::GET, Method::HEAD];
const POST: [Method; 1] = [Method::POST];
const PUT: [Method; 1] = [Method::PUT];
const PATCH: [Method; 1] = [Method::PATCH];
const DELETE: [Method; 1] = [Method::DELETE];

impl OperationMethod {
    /// The HTTP methods the endpoint answers (`GET` answers `HEAD` too).
    pub fn allowed(self) -> &'static [Method] {
        match self {
            Self::Get => &GET,
            Self::Post => &POST,
            Self::Put => &PUT,
            Self::Patch => &PATCH,
            Self::Delete => &DELETE,
        }
    }

    /// The method's name, lower case (OpenAPI's path item keys).
    pub fn lowercase(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }

    /// Whether a JSON body may carry variables.
    pub fn takes_body(self) -> bool {
        self != Self::Get
    }
}

/// What an answer with both data and errors becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialAnswers {
    /// `200` with the data and an `errors` member (default); when every
    /// root field is null the operation failed, and the errors' status is
    /// the answer.
    #[default]
    AnswerWithErrors,
    /// The status of the errors (502 for a failed backend, 401, ...), as if
    /// there were no data.
    Fail,
}

/// A header that becomes a variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyKeyConfig {
    /// The request header, e.g. `Idempotency-Key`.
    pub header: String,
    /// The operation's variable it fills, e.g. `idempotencyKey`.
    pub variable: String,
}

/// The OpenAPI document of the operation endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenapiConfig {
    /// Where the gateway serves the document (e.g. `/openapi.json`);
    /// without it, only `portico openapi` prints it.
    pub path: Option<String>,
    /// The document's `info.title`; default "portico".
    pub title: Option<String>,
    /// The document's `info.version`; default the gateway's version.
    pub version: Option<String>,
}

impl OpenapiConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.contains(['?', '#', '{', '}']) {
                problems
                    .push("openapi.path", format!("{path:?} must be a plain absolute path, e.g. \"/openapi.json\""));
            }
        }
    }
}

/// An operation compiled at load: its document and plan, and the path
/// template its variables are taken from.
pub struct CompiledOperation {
    /// The parsed document (its operation is measured again per request
    /// when a slicing argument is a variable).
    pub document: ExecutableDocument,
    /// The selected operation's name, if the document names it.
    pub operation_name: Option<String>,
    /// The name the operation is logged and counted by.
    pub label: Option<String>,
    /// The plan.
    pub plan: Arc<Plan>,
    /// The path, parsed.
    pub template: PathTemplate,
    /// The idempotency header and the variable it fills.
    pub idempotency_key: Option<(HeaderName, async_graphql::Name)>,
}

impl std::fmt::Debug for CompiledOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledOperation").field("operation_name", &self.operation_name).finish_non_exhaustive()
    }
}

/// Reads, validates and compiles every operation; what does not fit is
/// reported under `operations[i]`, with the fix.
pub fn compile_all(
    operations: &mut [OperationConfig],
    base: &Path,
    model: &SchemaModel,
    graphql: &GraphqlConfig,
    header_rules: &HeaderRuleTable,
    problems: &mut Problems,
) {
    if operations.is_empty() {
        return;
    }
    // Stored operations are plain data operations: no introspection.
    let schema = match schema::build_schema(model, false) {
        Ok(schema) => schema,
        Err(error) => {
            problems.push("operations", format!("the schema could not be built: {error}"));
            return;
        }
    };
    let mut seen: Vec<(OperationMethod, String)> = Vec::new();
    for (index, operation) in operations.iter_mut().enumerate() {
        let key = format!("operations[{index}]");
        let shape = PathTemplate::parse(&operation.path).map(|template| template.shape());
        if let Ok(shape) = &shape {
            if let Some(first) = seen.iter().position(|seen| *seen == (operation.method, shape.clone())) {
                problems.push(
                    format!("{key}.path"),
                    format!(
                        "{} {} is already served by operations[{first}]",
                        operation.method.allowed()[0],
                        operation.path
                    ),
                );
            }
            seen.push((operation.method, shape.clone()));
        }
        match compile(operation, base, model, &schema, graphql, header_rules) {
            Ok(compiled) => operation.compiled = Some(Arc::new(compiled)),
            Err((field, message)) => problems.push(format!("{key}{field}"), message),
        }
    }
}

/// One operation; an error names the key below `operations[i]` and the fix.
fn compile(
    operation: &OperationConfig,
    base: &Path,
    model: &SchemaModel,
    schema: &async_graphql::dynamic::Schema,
    graphql: &GraphqlConfig,
    header_rules: &HeaderRuleTable,
) -> Result<CompiledOperation, (&'static str, String)> {
    let template = PathTemplate::parse(&operation.path).map_err(|problem| (".path", problem))?;
    let file = base.join(&operation.document);
    let text = std::fs::read_to_string(&file).map_err(|error| {
        (
            ".document",
            format!("cannot read {}: {error} (the path is relative to the configuration file)", file.display()),
        )
    })?;
    let document = limits::parse(&text).map_err(|error| (".document", format!("{}: {error}", file.display())))?;
    let selected = limits::select_operation(&document, operation.operation_name.as_deref())
        .map_err(|problem| (".operation_name", format!("{problem}; name one of the document's operations")))?;
    if selected.ty == OperationType::Subscription {
        return Err((".document", "subscriptions cannot be served as REST endpoints".to_owned()));
    }
    if operation.method == OperationMethod::Get && selected.ty != OperationType::Query {
        return Err((".method", "a mutation changes data: serve it with POST (or PUT, PATCH, DELETE)".to_owned()));
    }
    let root_type = limits::root_type(model, selected.ty)
        .ok_or_else(|| (".document", "the schema has no root type for this operation".to_owned()))?;
    let shape = limits::check_operation(
        model,
        &document,
        selected,
        root_type,
        &async_graphql::Variables::default(),
        &graphql.limits(),
    )
    .map_err(|error| (".document", format!("{}: {error}", file.display())))?;
    // Validation makes no call and never waits: it is ready at first poll.
    let validated = schema::validate(schema, &document, operation.operation_name.as_deref())
        .now_or_never()
        .unwrap_or_else(|| Err(Vec::new()));
    if let Err(errors) = validated {
        let messages: Vec<String> = errors.iter().map(|error| error.message.clone()).collect();
        return Err((
            ".document",
            format!("{} does not validate against the schema: {}", file.display(), messages.join("; ")),
        ));
    }
    let cache_control = cache_control::header_value(model, &document, selected, root_type);
    let plan = plan::compile(model, &document, selected, root_type, cache_control, shape.cost, header_rules)
        .map_err(|error| (".document", error.to_string()))?;
    if plan.root.fields.iter().any(|field| &*field.key == "errors") {
        return Err((
            ".document",
            "a root field answers as `errors`, the member partial answers carry their errors in: alias it".to_owned(),
        ));
    }
    let variable_names = || {
        let names: Vec<String> = plan.variables.iter().map(|spec| format!("${}", spec.name)).collect();
        if names.is_empty() {
            "it declares none".to_owned()
        } else {
            format!("it declares {}", names.join(", "))
        }
    };
    if let Some(spec) = plan.variables.iter().find(|spec| takes_files(model, &spec.ty)) {
        return Err((
            ".document",
            format!(
                "${} of type {} takes files: a REST endpoint has no multipart request to take them from; \
                 upload with a multipart request to the GraphQL endpoint instead",
                spec.name, spec.ty
            ),
        ));
    }
    for segment in &template.segments {
        let Segment::Parameter(name) = segment else { continue };
        let Some(spec) = plan.variables.iter().find(|spec| spec.name.as_str() == name) else {
            return Err((
                ".path",
                format!(
                    "path parameter {{{name}}} is no variable of the operation ({}): rename the parameter or declare ${name}",
                    variable_names()
                ),
            ));
        };
        if !is_scalar_like(model, &spec.ty) {
            return Err((
                ".path",
                format!(
                    "path parameter {{{name}}} is ${name} of type {}: only scalars and enums fit in a path",
                    spec.ty
                ),
            ));
        }
    }
    if !operation.method.takes_body() {
        if let Some(spec) = plan.variables.iter().find(|spec| !query_representable(model, &spec.ty)) {
            return Err((
                ".method",
                format!(
                    "${} of type {} cannot be sent in a query string: serve the operation with POST to take it from a JSON body",
                    spec.name, spec.ty
                ),
            ));
        }
    }
    let idempotency_key = match &operation.idempotency_key {
        None => None,
        Some(idempotency) => {
            let header = HeaderName::from_bytes(idempotency.header.as_bytes())
                .map_err(|_| (".idempotency_key.header", format!("{:?} is not a header name", idempotency.header)))?;
            let spec =
                plan.variables.iter().find(|spec| spec.name.as_str() == idempotency.variable).ok_or_else(|| {
                    (
                        ".idempotency_key.variable",
                        format!("${} is no variable of the operation ({})", idempotency.variable, variable_names()),
                    )
                })?;
            if !matches!(&spec.ty.base, BaseType::Named(name) if name == "String" || name == "ID") {
                return Err((".idempotency_key.variable", format!("${} must be a String or ID", spec.name)));
            }
            Some((header, spec.name.clone()))
        }
    };
    Ok(CompiledOperation {
        label: operation.operation_name.clone().or_else(|| selected_name(&document)),
        operation_name: operation.operation_name.clone(),
        plan: Arc::new(plan),
        template,
        idempotency_key,
        document,
    })
}

fn selected_name(document: &ExecutableDocument) -> Option<String> {
    match &document.operations {
        async_graphql_parser::types::DocumentOperations::Single(_) => None,
        async_graphql_parser::types::DocumentOperations::Multiple(operations) => {
            operations.keys().next().map(ToString::to_string)
        }
    }
}

/// Whether a value of `ty` is or holds an `Upload` (through lists and input
/// objects).
fn takes_files(model: &SchemaModel, ty: &Type) -> bool {
    fn of_type(model: &SchemaModel, ty: &Type, seen: &mut Vec<String>) -> bool {
        let name = crate::graphql::model::named_type(ty);
        if name == crate::graphql::sdl::UPLOAD {
            return true;
        }
        let Some(input) = model.inputs.get(name) else { return false };
        if seen.iter().any(|done| done == name) {
            return false;
        }
        seen.push(name.to_owned());
        input.fields.iter().any(|field| of_type(model, &field.ty, seen))
    }
    of_type(model, ty, &mut Vec::new())
}

/// A named scalar or enum (not an input object, not a list).
pub(crate) fn is_scalar_like(model: &SchemaModel, ty: &Type) -> bool {
    match &ty.base {
        BaseType::Named(name) => !model.inputs.contains_key(name.as_str()),
        BaseType::List(_) => false,
    }
}

/// A scalar, an enum or a list of them: query parameters (repeated for lists).
fn query_representable(model: &SchemaModel, ty: &Type) -> bool {
    match &ty.base {
        BaseType::List(inner) => is_scalar_like(model, inner),
        BaseType::Named(_) => is_scalar_like(model, ty),
    }
}

//! Reading the gateway schema: SDL files with `@rest` connectors, checked in
//! full before anything is served.
//!
//! `async_graphql_parser` only checks syntax, so every semantic rule lives
//! here: unknown types and directives, misspelt directive arguments,
//! duplicate fields, connector references to services and arguments that do
//! not exist. Every problem is reported at once, with file, line and column.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use async_graphql::{Name, Value};
use async_graphql_parser::types::{
    BaseType, ConstDirective, FieldDefinition, InputValueDefinition, ServiceDocument, Type, TypeDefinition, TypeKind,
    TypeSystemDefinition,
};
use async_graphql_parser::{Pos, Positioned};
use http::{HeaderName, Method};

use super::connector::CallCache;
use super::connector::{parse_path, snake_case, BatchSpec, BodyTemplate, Expr, RestConnector};
use super::model::{
    named_type, Access, ArgModel, CacheHint, CacheHintScope, EnumModel, FieldModel, FieldSource, InputModel, ListSize,
    ObjectModel, SchemaModel,
};

/// The directives the gateway understands, as SDL; `portico schema print`
/// leaves them out of the client-facing schema.
pub const GATEWAY_DIRECTIVES: &str = r#"
"Fetches the field from a backend service."
directive @rest(service: String!, path: String!, method: String = "GET", query: JSON, headers: [RestHeader!], headerRules: String, body: JSON, multipart: JSON, selection: String, batch: RestBatch, invalidates: [String!]) on FIELD_DEFINITION
"Reads the field from a differently named JSON key."
directive @map(from: String!) on FIELD_DEFINITION | INPUT_FIELD_DEFINITION
"Only verified callers may read the field, or any field returning the type."
directive @authenticated on FIELD_DEFINITION | OBJECT
"Only callers granted all scopes of one of the groups may read it."
directive @requiresScopes(scopes: [[String!]!]!) on FIELD_DEFINITION | OBJECT
"The cost of resolving a field or an object of a type (IBM GraphQL cost spec)."
directive @cost(weight: Int!) on FIELD_DEFINITION | OBJECT
"How long a list field is, for cost analysis (IBM GraphQL cost spec)."
directive @listSize(assumedSize: Int, slicingArguments: [String!]) on FIELD_DEFINITION
"Who may share a cached value."
enum CacheControlScope { PUBLIC PRIVATE }
"How long answers with the field (or any field returning the type) may be cached, and by whom (Apollo Server's convention); @rest GET calls are cached by it too."
directive @cacheControl(maxAge: Int, scope: CacheControlScope, inheritMaxAge: Boolean) on FIELD_DEFINITION | OBJECT
"#;

const BUILT_IN_SCALARS: [&str; 5] = ["ID", "String", "Int", "Float", "Boolean"];

/// The scalar of files sent with the GraphQL multipart request spec; built
/// in, and declaring it (`scalar Upload`, as Apollo schemas do) is allowed.
pub const UPLOAD: &str = "Upload";

/// One problem in a schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The file.
    pub file: String,
    /// 1-based line and column.
    pub position: Pos,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.position.line, self.position.column, self.message)
    }
}

/// A schema source: its name for messages and its text.
#[derive(Debug, Clone)]
pub struct SchemaSource {
    /// File name shown in messages.
    pub file: String,
    /// SDL text.
    pub text: String,
}

struct Checker<'a> {
    problems: Vec<SchemaProblem>,
    file: String,
    services: &'a BTreeSet<String>,
    header_rules: &'a BTreeSet<String>,
}

impl Checker<'_> {
    fn problem(&mut self, position: Pos, message: impl Into<String>) {
        self.problems.push(SchemaProblem { file: self.file.clone(), position, message: message.into() });
    }
}

/// A definition together with the file it came from.
struct Located<T> {
    file: String,
    node: T,
}

/// Parses and checks every source; `services` are the configured service names.
pub fn load(sources: &[SchemaSource], services: &BTreeSet<String>) -> Result<SchemaModel, Vec<SchemaProblem>> {
    load_with_header_rules(sources, services, &BTreeSet::new())
}

/// [`load`], where `header_rules` are the names of `[graphql.header_rules]`
/// that `@rest(headerRules: ...)` may name.
pub fn load_with_header_rules(
    sources: &[SchemaSource],
    services: &BTreeSet<String>,
    header_rules: &BTreeSet<String>,
) -> Result<SchemaModel, Vec<SchemaProblem>> {
    let mut problems = Vec::new();
    let mut definitions: Vec<Located<Positioned<TypeDefinition>>> = Vec::new();
    let mut roots: (Option<String>, Option<String>) = (None, None);
    for source in sources {
        match async_graphql_parser::parse_schema(&source.text) {
            Ok(ServiceDocument { definitions: parsed }) => {
                for definition in parsed {
                    match definition {
                        TypeSystemDefinition::Type(ty) => {
                            definitions.push(Located { file: source.file.clone(), node: ty })
                        }
                        TypeSystemDefinition::Schema(schema) => {
                            roots.0 = schema.node.query.map(|name| name.node.to_string()).or(roots.0);
                            roots.1 = schema.node.mutation.map(|name| name.node.to_string()).or(roots.1);
                        }
                        TypeSystemDefinition::Directive(directive) => problems.push(SchemaProblem {
                            file: source.file.clone(),
                            position: directive.pos,
                            message: format!(
                                "directive @{} cannot be declared here: the gateway's directives are built in",
                                directive.node.name.node
                            ),
                        }),
                    }
                }
            }
            Err(error) => {
                let position = error.positions().next().unwrap_or(Pos { line: 1, column: 1 });
                problems.push(SchemaProblem { file: source.file.clone(), position, message: error.to_string() });
            }
        }
    }

    let syntax_failed = !problems.is_empty();
    let mut model = SchemaModel {
        query: roots.0.unwrap_or_else(|| "Query".to_owned()),
        mutation: roots.1,
        ..SchemaModel::default()
    };
    let mut checker = Checker { problems, file: String::new(), services, header_rules };

    // First pass: names, so that types may be used before they are declared.
    let mut declared: HashSet<String> = BUILT_IN_SCALARS.iter().map(|name| (*name).to_owned()).collect();
    declared.insert("JSON".to_owned());
    declared.insert(UPLOAD.to_owned());
    for definition in &definitions {
        let ty = &definition.node.node;
        let declares_upload = ty.name.node == UPLOAD && matches!(ty.kind, TypeKind::Scalar);
        if !ty.extend && !declares_upload && !declared.insert(ty.name.node.to_string()) {
            checker.file = definition.file.clone();
            checker.problem(
                ty.name.pos,
                format!("type {} is declared twice; use `extend type` to add fields", ty.name.node),
            );
        }
    }
    if model.mutation.is_none() && declared.contains("Mutation") {
        model.mutation = Some("Mutation".to_owned());
    }

    for definition in definitions.iter().filter(|definition| !definition.node.node.extend) {
        checker.file = definition.file.clone();
        add_definition(&mut checker, &mut model, &definition.node, &declared);
    }
    for definition in definitions.iter().filter(|definition| definition.node.node.extend) {
        checker.file = definition.file.clone();
        extend_definition(&mut checker, &mut model, &definition.node, &declared);
    }

    if !syntax_failed {
        check_roots(&mut checker, &model, sources);
    }
    inherit_type_access(&mut model);
    connector_caching(&mut model);
    if checker.problems.is_empty() {
        Ok(model)
    } else {
        Err(checker.problems)
    }
}

/// Root types must exist, and their fields must call a backend.
fn check_roots(checker: &mut Checker<'_>, model: &SchemaModel, sources: &[SchemaSource]) {
    checker.file = sources.first().map(|source| source.file.clone()).unwrap_or_default();
    let Some(query) = model.objects.get(&model.query) else {
        let name = &model.query;
        checker.problem(
            Pos { line: 1, column: 1 },
            format!("the schema has no {name} type; declare `type {name} {{ ... }}`"),
        );
        return;
    };
    let mutation = model.mutation.as_ref().and_then(|name| model.objects.get(name));
    for root in std::iter::once(query).chain(mutation) {
        for field in &root.fields {
            if matches!(field.source, FieldSource::Json { .. }) {
                checker.file = field.declared_at.0.to_string();
                checker.problem(
                    field.declared_at.1,
                    format!("{}.{} is a root field and needs @rest", root.name, field.name),
                );
            }
        }
    }
}

fn add_definition(
    checker: &mut Checker<'_>,
    model: &mut SchemaModel,
    definition: &Positioned<TypeDefinition>,
    declared: &HashSet<String>,
) {
    let ty = &definition.node;
    let name = ty.name.node.to_string();
    let description = ty.description.as_ref().map(|text| text.node.clone());
    match &ty.kind {
        TypeKind::Object(object) => {
            let is_root = name == model.query || model.mutation.as_deref() == Some(name.as_str());
            let cost = type_cost(checker, &ty.directives);
            let mut access = Access::default();
            let mut cache_control = None;
            for directive in &ty.directives {
                access_directive(checker, directive, &mut access);
                if directive.node.name.node == "cacheControl" {
                    cache_control = cache_hint(checker, directive);
                }
            }
            let mut fields = Vec::new();
            for field in &object.fields {
                if fields.iter().any(|existing: &FieldModel| existing.name == field.node.name.node.as_str()) {
                    checker.problem(field.pos, format!("{name}.{} is declared twice", field.node.name.node));
                    continue;
                }
                if let Some(field) = field_model(checker, &name, field, declared, is_root) {
                    fields.push(field);
                }
            }
            model.objects.insert(name.clone(), ObjectModel { name, description, fields, cost, access, cache_control });
        }
        TypeKind::InputObject(input) => {
            let mut fields = Vec::new();
            for field in &input.fields {
                check_type(checker, &field.node.ty, declared);
                fields.push(arg_model(checker, field));
            }
            model.inputs.insert(name.clone(), InputModel { name, description, fields });
        }
        TypeKind::Enum(enumeration) => {
            let values = enumeration.values.iter().map(|value| value.node.value.node.to_string()).collect();
            model.enums.insert(name.clone(), EnumModel { name, description, values });
        }
        TypeKind::Scalar if name == UPLOAD => {}
        TypeKind::Scalar => {
            model.scalars.insert(name, description);
        }
        TypeKind::Interface(_) | TypeKind::Union(_) => {
            checker.problem(
                ty.name.pos,
                format!("{name}: interfaces and unions are not supported by @rest connectors yet; use object types"),
            );
        }
    }
    for directive in &ty.directives {
        let allowed_on_objects = ["cost", "authenticated", "requiresScopes", "cacheControl"];
        let on_object = matches!(ty.kind, TypeKind::Object(_));
        if !(on_object && allowed_on_objects.contains(&directive.node.name.node.as_str())) {
            checker.problem(
                directive.pos,
                format!("directive @{} is not allowed on type {}", directive.node.name.node, ty.name.node),
            );
        }
    }
}

fn extend_definition(
    checker: &mut Checker<'_>,
    model: &mut SchemaModel,
    definition: &Positioned<TypeDefinition>,
    declared: &HashSet<String>,
) {
    let ty = &definition.node;
    let name = ty.name.node.to_string();
    let TypeKind::Object(object) = &ty.kind else {
        checker.problem(ty.name.pos, format!("only object types can be extended ({name})"));
        return;
    };
    let is_root = name == model.query || model.mutation.as_deref() == Some(name.as_str());
    let mut added = Vec::new();
    for field in &object.fields {
        if let Some(field) = field_model(checker, &name, field, declared, is_root) {
            added.push((definition.pos, field));
        }
    }
    let Some(existing) = model.objects.get_mut(&name) else {
        checker.problem(ty.name.pos, format!("`extend type {name}` needs a `type {name}` declaration"));
        return;
    };
    for (position, field) in added {
        if existing.field(&field.name).is_some() {
            checker.problem(position, format!("{name}.{} is declared twice", field.name));
        } else {
            existing.fields.push(field);
        }
    }
}

fn check_type(checker: &mut Checker<'_>, ty: &Positioned<Type>, declared: &HashSet<String>) {
    let mut base = &ty.node.base;
    while let BaseType::List(inner) = base {
        base = &inner.base;
    }
    if let BaseType::Named(name) = base {
        if !declared.contains(name.as_str()) {
            checker.problem(ty.pos, format!("unknown type {name}"));
        }
    }
}

fn is_list(ty: &Type) -> bool {
    matches!(ty.base, BaseType::List(_))
}

fn arg_model(checker: &mut Checker<'_>, input: &Positioned<InputValueDefinition>) -> ArgModel {
    for directive in &input.node.directives {
        if directive.node.name.node != "map" {
            checker.problem(
                directive.pos,
                format!("directive @{} is not allowed on an argument or input field", directive.node.name.node),
            );
        }
    }
    ArgModel {
        name: input.node.name.node.to_string(),
        description: input.node.description.as_ref().map(|text| text.node.clone()),
        ty: input.node.ty.node.clone(),
        default: input.node.default_value.as_ref().map(|value| value.node.clone()),
    }
}

fn field_model(
    checker: &mut Checker<'_>,
    type_name: &str,
    field: &Positioned<FieldDefinition>,
    declared: &HashSet<String>,
    is_root: bool,
) -> Option<FieldModel> {
    let definition = &field.node;
    let name = definition.name.node.to_string();
    check_type(checker, &definition.ty, declared);
    if named_type(&definition.ty.node) == UPLOAD {
        checker.problem(
            definition.ty.pos,
            format!("{type_name}.{name}: Upload is a file clients send; it can be an argument, not a field's type"),
        );
    }
    let mut args = Vec::new();
    for arg in &definition.arguments {
        check_type(checker, &arg.node.ty, declared);
        if args.iter().any(|existing: &ArgModel| existing.name == arg.node.name.node.as_str()) {
            checker.problem(arg.pos, format!("{type_name}.{name}: argument {} is declared twice", arg.node.name.node));
            continue;
        }
        args.push(arg_model(checker, arg));
    }

    let mut source = FieldSource::Json { key: snake_case(&name) };
    let mut cost = None;
    let mut list_size = None;
    let mut deprecation = None;
    let mut access = Access::default();
    let mut cache_control = None;
    for directive in &definition.directives {
        let arguments = DirectiveArguments::new(checker, directive);
        match directive.node.name.node.as_str() {
            "rest" => {
                if let Some(connector) = rest_connector(checker, type_name, &name, definition, &args, &arguments, is_root) {
                    source = FieldSource::Rest(Arc::new(connector));
                }
            }
            "map" => {
                arguments.only(checker, &["from"]);
                if let Some(key) = arguments.string(checker, "from", true) {
                    source = FieldSource::Json { key };
                }
            }
            "cost" => {
                arguments.only(checker, &["weight"]);
                cost = arguments.unsigned(checker, "weight", true);
            }
            "listSize" => {
                arguments.only(checker, &["assumedSize", "slicingArguments"]);
                let slicing_arguments = arguments.string_list(checker, "slicingArguments");
                for argument in &slicing_arguments {
                    if !args.iter().any(|arg| &arg.name == argument) {
                        checker.problem(directive.pos, format!("@listSize: {type_name}.{name} has no argument {argument:?}"));
                    }
                }
                if !is_list(&definition.ty.node) {
                    checker.problem(directive.pos, format!("@listSize on {type_name}.{name}, which is not a list"));
                }
                list_size = Some(ListSize { assumed_size: arguments.unsigned(checker, "assumedSize", false), slicing_arguments });
            }
            "authenticated" | "requiresScopes" => access_directive(checker, directive, &mut access),
            "cacheControl" => cache_control = cache_hint(checker, directive),
            "deprecated" => {
                arguments.only(checker, &["reason"]);
                deprecation = Some(arguments.string(checker, "reason", false));
            }
            other => checker.problem(
                directive.node.name.pos,
                format!("unknown directive @{other} on {type_name}.{name} (known: @rest, @map, @authenticated, @requiresScopes, @cost, @listSize, @cacheControl, @deprecated)"),
            ),
        }
    }
    Some(FieldModel {
        name,
        description: definition.description.as_ref().map(|text| text.node.clone()),
        ty: definition.ty.node.clone(),
        args,
        source,
        cost,
        list_size,
        deprecation,
        declared_at: (Arc::from(checker.file.as_str()), field.pos),
        access,
        cache_control,
    })
}

/// Reads `@authenticated` or `@requiresScopes(scopes: [["a", "b"], ["c"]])`.
fn access_directive(checker: &mut Checker<'_>, directive: &Positioned<ConstDirective>, access: &mut Access) {
    let arguments = DirectiveArguments::new(checker, directive);
    match directive.node.name.node.as_str() {
        "authenticated" => {
            arguments.only(checker, &[]);
            access.authenticated = true;
        }
        "requiresScopes" => {
            arguments.only(checker, &["scopes"]);
            let groups = match arguments.get("scopes").map(|value| &value.node) {
                Some(Value::List(groups)) => groups
                    .iter()
                    .map(|group| match group {
                        Value::List(scopes) => scopes
                            .iter()
                            .map(|scope| if let Value::String(text) = scope { Some(text.clone()) } else { None })
                            .collect::<Option<Vec<_>>>(),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>(),
                _ => None,
            };
            match groups {
                Some(groups) if !groups.is_empty() && groups.iter().all(|group| !group.is_empty()) => {
                    access.authenticated = true;
                    access.scopes = groups;
                }
                _ => checker.problem(
                    directive.pos,
                    "@requiresScopes takes scopes: [[\"scope\", ...], ...] (any group, all scopes of it)",
                ),
            }
        }
        _ => {}
    }
}

/// Reads `@cacheControl(maxAge: 60, scope: PUBLIC, inheritMaxAge: false)`.
fn cache_hint(checker: &mut Checker<'_>, directive: &Positioned<ConstDirective>) -> Option<CacheHint> {
    let arguments = DirectiveArguments::new(checker, directive);
    arguments.only(checker, &["maxAge", "scope", "inheritMaxAge"]);
    let max_age = arguments.unsigned(checker, "maxAge", false);
    let scope = match arguments.get("scope") {
        None => None,
        Some(value) => match &value.node {
            Value::Enum(name) if name.as_str() == "PUBLIC" => Some(CacheHintScope::Public),
            Value::Enum(name) if name.as_str() == "PRIVATE" => Some(CacheHintScope::Private),
            _ => {
                checker.problem(value.pos, "@cacheControl: scope is PUBLIC or PRIVATE");
                None
            }
        },
    };
    let inherit_max_age = match arguments.get("inheritMaxAge").map(|value| (&value.node, value.pos)) {
        None => false,
        Some((Value::Boolean(flag), _)) => *flag,
        Some((_, pos)) => {
            checker.problem(pos, "@cacheControl: inheritMaxAge is true or false");
            false
        }
    };
    if inherit_max_age && max_age.is_some() {
        checker.problem(directive.pos, "@cacheControl: give maxAge or inheritMaxAge: true, not both");
    }
    Some(CacheHint { max_age, scope, inherit_max_age })
}

/// Sets how each `@rest` GET is cached: by the field's own `maxAge`, else
/// its return type's; one answer per caller unless the field (or type) is
/// `PUBLIC`. Fields without a `maxAge` are not cached.
fn connector_caching(model: &mut SchemaModel) {
    let type_hints: std::collections::HashMap<String, CacheHint> = model
        .objects
        .iter()
        .filter_map(|(name, object)| object.cache_control.map(|hint| (name.clone(), hint)))
        .collect();
    for object in model.objects.values_mut() {
        for field in &mut object.fields {
            let FieldSource::Rest(connector) = &mut field.source else { continue };
            if connector.method != Method::GET {
                continue;
            }
            let mut base = &field.ty.base;
            while let BaseType::List(inner) = base {
                base = &inner.base;
            }
            let type_hint = match base {
                BaseType::Named(name) => type_hints.get(name.as_str()).copied(),
                BaseType::List(_) => None,
            };
            let own = field.cache_control.unwrap_or_default();
            let type_hint = type_hint.unwrap_or_default();
            let max_age = own.max_age.or(type_hint.max_age).filter(|seconds| *seconds > 0);
            let public = own.scope.or(type_hint.scope) == Some(CacheHintScope::Public);
            Arc::make_mut(connector).cache =
                max_age.map(|seconds| CallCache { max_age: std::time::Duration::from_secs(seconds), public });
        }
    }
}

/// A field returning a protected type is protected too.
fn inherit_type_access(model: &mut SchemaModel) {
    let type_access: std::collections::HashMap<String, Access> = model
        .objects
        .iter()
        .filter(|(_, object)| !object.access.is_open())
        .map(|(name, object)| (name.clone(), object.access.clone()))
        .collect();
    if type_access.is_empty() {
        return;
    }
    for object in model.objects.values_mut() {
        for field in &mut object.fields {
            let mut base = &field.ty.base;
            while let BaseType::List(inner) = base {
                base = &inner.base;
            }
            if let BaseType::Named(name) = base {
                if let Some(access) = type_access.get(name.as_str()) {
                    field.access = field.access.and(access);
                }
            }
        }
    }
}

/// Typed access to a directive's arguments, reporting misuse.
struct DirectiveArguments<'a> {
    directive: &'a Positioned<ConstDirective>,
}

impl<'a> DirectiveArguments<'a> {
    fn new(checker: &mut Checker<'_>, directive: &'a Positioned<ConstDirective>) -> Self {
        let mut seen = HashSet::new();
        for (name, _) in &directive.node.arguments {
            if !seen.insert(name.node.as_str()) {
                checker
                    .problem(name.pos, format!("@{}: argument {} is given twice", directive.node.name.node, name.node));
            }
        }
        Self { directive }
    }

    fn get(&self, name: &str) -> Option<&'a Positioned<Value>> {
        self.directive.node.arguments.iter().find(|(key, _)| key.node == name).map(|(_, value)| value)
    }

    fn only(&self, checker: &mut Checker<'_>, allowed: &[&str]) {
        for (name, _) in &self.directive.node.arguments {
            if !allowed.contains(&name.node.as_str()) {
                checker.problem(
                    name.pos,
                    format!(
                        "@{} has no argument {} (it takes: {})",
                        self.directive.node.name.node,
                        name.node,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn missing(&self, checker: &mut Checker<'_>, name: &str) {
        checker.problem(self.directive.pos, format!("@{} needs the argument {name}", self.directive.node.name.node));
    }

    /// An argument that was not given: a problem only if it is required.
    fn absent<T>(&self, checker: &mut Checker<'_>, name: &str, required: bool) -> Option<T> {
        if required {
            self.missing(checker, name);
        }
        None
    }

    fn string(&self, checker: &mut Checker<'_>, name: &str, required: bool) -> Option<String> {
        match self.get(name) {
            Some(Positioned { node: Value::String(text), .. }) => Some(text.clone()),
            Some(Positioned { node: Value::Enum(text), .. }) if name == "method" => Some(text.to_string()),
            Some(other) => {
                checker.problem(other.pos, format!("@{}: {name} must be a string", self.directive.node.name.node));
                None
            }
            None => self.absent(checker, name, required),
        }
    }

    fn unsigned(&self, checker: &mut Checker<'_>, name: &str, required: bool) -> Option<u64> {
        match self.get(name) {
            Some(Positioned { node: Value::Number(number), pos }) => {
                let value = number.as_u64();
                if value.is_none() {
                    checker.problem(
                        *pos,
                        format!("@{}: {name} must be a non-negative integer", self.directive.node.name.node),
                    );
                }
                value
            }
            Some(other) => {
                checker.problem(other.pos, format!("@{}: {name} must be an integer", self.directive.node.name.node));
                None
            }
            None => self.absent(checker, name, required),
        }
    }

    fn string_list(&self, checker: &mut Checker<'_>, name: &str) -> Vec<String> {
        match self.get(name).map(|value| &value.node) {
            None => Vec::new(),
            Some(Value::List(items)) if items.iter().all(|item| matches!(item, Value::String(_))) => items
                .iter()
                .filter_map(|item| if let Value::String(text) = item { Some(text.clone()) } else { None })
                .collect(),
            Some(Value::String(text)) => vec![text.clone()],
            Some(_) => {
                self.missing(checker, &format!("{name} as a list of strings"));
                Vec::new()
            }
        }
    }
}

fn rest_connector(
    checker: &mut Checker<'_>,
    type_name: &str,
    field_name: &str,
    definition: &FieldDefinition,
    args: &[ArgModel],
    arguments: &DirectiveArguments<'_>,
    is_root: bool,
) -> Option<RestConnector> {
    let directive_pos = arguments.directive.pos;
    arguments.only(
        checker,
        &[
            "service",
            "path",
            "method",
            "query",
            "headers",
            "headerRules",
            "body",
            "multipart",
            "selection",
            "batch",
            "invalidates",
        ],
    );
    let service = arguments.string(checker, "service", true);
    if let Some(service) = &service {
        if !checker.services.contains(service) {
            let known: Vec<&str> = checker.services.iter().map(String::as_str).collect();
            let position = arguments.get("service").map_or(directive_pos, |value| value.pos);
            let known =
                if known.is_empty() { "none; add a [services.<name>] table".to_owned() } else { known.join(", ") };
            checker.problem(position, format!("unknown service {service:?} (known: {known})"));
        }
    }
    let method = match arguments.string(checker, "method", false) {
        None => Method::GET,
        Some(text) => match text.to_ascii_uppercase().as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            _ => {
                checker
                    .problem(directive_pos, format!("@rest: method {text:?} must be GET, POST, PUT, PATCH or DELETE"));
                Method::GET
            }
        },
    };
    let mut references = Vec::new();
    let path = match arguments.string(checker, "path", true).map(|template| parse_path(&template)) {
        Some(Ok(path)) => {
            for part in &path {
                if let super::connector::PathPart::Value(expr) = part {
                    references.push(expr.clone());
                }
            }
            path
        }
        Some(Err(message)) => {
            checker
                .problem(arguments.get("path").map_or(directive_pos, |value| value.pos), format!("@rest: {message}"));
            Vec::new()
        }
        None => Vec::new(),
    };

    let mut query = Vec::new();
    match arguments.get("query").map(|value| (&value.node, value.pos)) {
        None => {}
        Some((Value::Object(entries), pos)) => {
            for (param, value) in entries {
                match expression(value) {
                    Ok(expr) => {
                        references.push(expr.clone());
                        query.push((param.to_string(), expr));
                    }
                    Err(message) => checker.problem(pos, format!("@rest query {param}: {message}")),
                }
            }
        }
        Some((_, pos)) => checker.problem(pos, "@rest: query must be an object such as {level: \"$args.level\"}"),
    }

    let mut headers = Vec::new();
    match arguments.get("headers").map(|value| (&value.node, value.pos)) {
        None => {}
        Some((Value::List(items), pos)) => {
            for item in items {
                let entry = match item {
                    Value::Object(entry) => entry,
                    _ => {
                        checker.problem(pos, "@rest: each header is {name: \"Header-Name\", value: \"$args.x\"}");
                        continue;
                    }
                };
                let name =
                    entry
                        .get("name")
                        .and_then(|name| if let Value::String(text) = name { Some(text.as_str()) } else { None });
                let value = entry.get("value").map(expression);
                match (name.map(HeaderName::try_from), value) {
                    (Some(Ok(name)), Some(Ok(expr))) => {
                        references.push(expr.clone());
                        headers.push((name, expr));
                    }
                    _ => checker.problem(
                        pos,
                        "@rest: each header is {name: \"Header-Name\", value: \"$args.x\"} with a valid header name",
                    ),
                }
            }
        }
        Some((_, pos)) => checker.problem(pos, "@rest: headers must be a list of {name: ..., value: ...}"),
    }

    let header_rules = arguments.string(checker, "headerRules", false);
    if let Some(name) = &header_rules {
        if !checker.header_rules.contains(name) {
            let known: Vec<&str> = checker.header_rules.iter().map(String::as_str).collect();
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            let position = arguments.get("headerRules").map_or(directive_pos, |value| value.pos);
            checker.problem(
                position,
                format!(
                    "@rest on {type_name}.{field_name}: unknown header rules {name:?} (known: {known}); \
                     define them as [graphql.header_rules.{name}] in the configuration"
                ),
            );
        }
    }

    let body = match arguments.get("body") {
        None => None,
        Some(value) => match body_template(&value.node, &mut references) {
            Ok(template) => Some(template),
            Err(message) => {
                checker.problem(value.pos, format!("@rest body: {message}"));
                None
            }
        },
    };
    if body.is_some() && method == Method::GET {
        checker.problem(directive_pos, "@rest: a GET has no body; set method: \"POST\" (or PUT/PATCH)");
    }
    let mut form_references = Vec::new();
    let multipart = match arguments.get("multipart").map(|value| (&value.node, value.pos)) {
        None => None,
        Some((Value::Object(entries), pos)) => {
            let mut fields = Vec::new();
            for (name, value) in entries {
                match expression(value) {
                    Ok(expr) => {
                        form_references.push(expr.clone());
                        fields.push((name.to_string(), expr));
                    }
                    Err(message) => checker.problem(pos, format!("@rest multipart {name}: {message}")),
                }
            }
            Some(fields)
        }
        Some((_, pos)) => {
            checker.problem(pos, "@rest: multipart must be an object of form fields such as {avatar: \"$args.file\"}");
            None
        }
    };
    if let Some(position) = arguments.get("multipart").map(|value| value.pos) {
        if method == Method::GET {
            checker.problem(position, "@rest multipart: a GET has no body; set method: \"POST\" (or PUT/PATCH)");
        }
        if body.is_some() {
            checker.problem(position, "@rest: a call has one body; use either body (JSON) or multipart (a form)");
        }
    }

    let selection: Vec<String> = arguments
        .string(checker, "selection", false)
        .map(|path| path.split('.').filter(|key| !key.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();

    let batch = match arguments.get("batch") {
        None => None,
        Some(value) => {
            let spec = batch_spec(&value.node);
            match spec {
                Ok(spec) => {
                    references.push(spec.key.clone());
                    if method != Method::GET {
                        checker.problem(value.pos, "@rest batch: only GET calls can be batched");
                    }
                    if is_root {
                        checker.problem(value.pos, "@rest batch: root fields have no parent to batch over");
                    }
                    if !matches!(spec.key, Expr::Parent(_)) {
                        checker.problem(
                            value.pos,
                            "@rest batch: key must come from the parent, e.g. \"$parent.lesson_id\"",
                        );
                    }
                    Some(spec)
                }
                Err(message) => {
                    checker.problem(value.pos, format!("@rest batch: {message}"));
                    None
                }
            }
        }
    };
    if batch.is_some() && is_list(&definition.ty.node) {
        checker.problem(
            directive_pos,
            format!("@rest batch on {type_name}.{field_name}: a batched field resolves to one object, not a list"),
        );
    }
    if batch.is_some() && selection.is_empty() {
        checker.problem(directive_pos, "@rest batch: a batched call answers a list; add selection: \"results\"");
    }

    for reference in &references {
        if let Expr::Args(path) = reference {
            if args.iter().any(|arg| arg.name == path[0] && named_type(&arg.ty) == UPLOAD) {
                checker.problem(
                    directive_pos,
                    format!(
                        "@rest on {type_name}.{field_name}: $args.{} is a file (Upload); send it as a form field with \
                         multipart: {{file: \"$args.{}\"}}",
                        path[0], path[0]
                    ),
                );
            }
        }
    }
    references.extend(form_references);
    for reference in &references {
        match reference {
            Expr::Args(path) if !args.iter().any(|arg| arg.name == path[0]) => {
                let known: Vec<&str> = args.iter().map(|arg| arg.name.as_str()).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                let message = format!(
                    "@rest on {type_name}.{field_name} uses $args.{} but the field has no such argument (arguments: {known})",
                    path[0]
                );
                checker.problem(directive_pos, message);
            }
            Expr::Parent(_) if is_root => checker.problem(
                directive_pos,
                format!("@rest on root field {type_name}.{field_name} uses $parent, but root fields have no parent"),
            ),
            _ => {}
        }
    }
    if is_list(&definition.ty.node)
        && batch.is_none()
        && selection.last().is_some_and(|key| key.parse::<usize>().is_ok())
    {
        checker
            .problem(directive_pos, format!("{type_name}.{field_name} is a list, but its selection picks one element"));
    }
    let invalidates = arguments.string_list(checker, "invalidates");
    if let Some(position) = arguments.get("invalidates").map(|value| value.pos) {
        if method == Method::GET {
            checker.problem(position, "@rest invalidates: a GET changes nothing; use it on mutations");
        }
        if invalidates.iter().any(|prefix| !prefix.starts_with('/')) {
            checker.problem(
                position,
                "@rest invalidates: each entry is a path prefix on the service, like \"/payments/\"",
            );
        }
    }
    Some(RestConnector {
        service: service?,
        method,
        path,
        query,
        headers,
        header_rules,
        body,
        multipart,
        selection,
        batch,
        cache: None,
        invalidates,
    })
}

fn expression(value: &Value) -> Result<Expr, String> {
    match value {
        Value::String(text) => Expr::parse(text),
        Value::Number(number) => Ok(Expr::Literal(number.to_string())),
        Value::Boolean(flag) => Ok(Expr::Literal(flag.to_string())),
        _ => Err("values are strings: a reference such as \"$args.id\" or a constant".to_owned()),
    }
}

fn body_template(value: &Value, references: &mut Vec<Expr>) -> Result<BodyTemplate, String> {
    match value {
        Value::Object(entries) => {
            let mut fields = Vec::new();
            for (key, value) in entries {
                fields.push((key.to_string(), body_template(value, references)?));
            }
            Ok(BodyTemplate::Object(fields))
        }
        other => {
            let expr = expression(other)?;
            references.push(expr.clone());
            Ok(BodyTemplate::Value(expr))
        }
    }
}

fn batch_spec(value: &Value) -> Result<BatchSpec, String> {
    let Value::Object(entries) = value else {
        return Err("batch is {key: \"$parent.lesson_id\", param: \"ids\", match: \"id\"}".to_owned());
    };
    let text = |name: &str| -> Result<String, String> {
        match entries.get(&Name::new(name)) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(_) => Err(format!("{name} must be a non-empty string")),
            None => Err(format!(
                "{name} is missing; batch is {{key: \"$parent.lesson_id\", param: \"ids\", match: \"id\"}}"
            )),
        }
    };
    for key in entries.keys() {
        if !["key", "param", "match"].contains(&key.as_str()) {
            return Err(format!("unknown batch setting {key} (known: key, param, match)"));
        }
    }
    Ok(BatchSpec { key: Expr::parse(&text("key")?)?, param: text("param")?, match_key: text("match")? })
}

fn type_cost(checker: &mut Checker<'_>, directives: &[Positioned<ConstDirective>]) -> Option<u64> {
    let directive = directives.iter().find(|directive| directive.node.name.node == "cost")?;
    let arguments = DirectiveArguments::new(checker, directive);
    arguments.only(checker, &["weight"]);
    arguments.unsigned(checker, "weight", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> BTreeSet<String> {
        ["live_reading", "payment", "student_api"].into_iter().map(str::to_owned).collect()
    }

    fn problems(sdl: &str) -> Vec<String> {
        match load(&[SchemaSource { file: "schema.graphql".to_owned(), text: sdl.to_owned() }], &services()) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    /// Every expected message is reported, and nothing else.
    fn assert_reports_exactly(sdl: &str, expect: &[&str]) {
        let found = problems(sdl);
        for expected in expect {
            assert!(found.iter().any(|problem| problem.contains(expected)), "missing {expected:?} in {found:#?}");
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn a_valid_schema_loads() {
        let sdl = r#"
            type Query {
              student(id: ID!): Student @rest(service: "student_api", path: "/users/{$args.id}/")
            }
            type Student {
              id: ID!
              fullName: String!
              name: String @map(from: "full_name")
              readingSessions(first: Int = 50): [ReadingSession!]!
                @rest(service: "live_reading", path: "/sessions/", query: {student_id: "$parent.id", page_size: "$args.first"}, selection: "results")
                @listSize(slicingArguments: ["first"])
            }
            type ReadingSession {
              lesson: Lesson @rest(service: "live_reading", path: "/lesson/", batch: {key: "$parent.lesson_id", param: "ids", match: "id"}, selection: "results")
            }
            type Lesson @cost(weight: 2) { title: String }
        "#;
        assert_eq!(problems(sdl), Vec::<String>::new());
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_position() {
        let sdl = r#"type Query {
  a(id: ID!): Thing @rest(service: "paymnt", path: "/x/{$args.idd}/")
  b: Thing @rest(service: "payment", path: "/y/", batch: {param: "ids", match: "id"})
  c: Thing @rest(service: "payment", path: "/z/", selction: "results")
  d: Thing @unknown
  e: Missing @rest(service: "payment", path: "/e/")
  f: Thing
}
type Thing { x: Int x: Int }
"#;
        assert_reports_exactly(
            sdl,
            &[
                "schema.graphql:2:36: unknown service \"paymnt\" (known: live_reading, payment, student_api)",
                "uses $args.idd but the field has no such argument (arguments: id)",
                "schema.graphql:3:58: @rest batch: key is missing",
                "@rest has no argument selction",
                "schema.graphql:5:13: unknown directive @unknown",
                "schema.graphql:6:6: unknown type Missing",
                "schema.graphql:5:3: Query.d is a root field and needs @rest",
                "schema.graphql:7:3: Query.f is a root field and needs @rest",
                "Thing.x is declared twice",
            ],
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let found = problems("type Query {\n  a: Int @rest(service: \"payment\", path: \"/a/\"\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("schema.graphql:3:1:"), "{found:?}");
    }

    #[test]
    fn list_fields_must_select_a_list() {
        let found =
            problems(r#"type Query { a: [Int] @rest(service: "payment", path: "/a/", selection: "results.0") }"#);
        assert!(
            found.iter().any(|problem| problem.contains("is a list, but its selection picks one element")),
            "{found:?}"
        );
    }

    #[test]
    fn cache_hints_and_invalidations_are_checked() {
        let sdl = r#"type Query {
  a: Int @cacheControl(maxAge: 5, scope: SOMETIMES) @rest(service: "payment", path: "/a/")
  b: Int @cacheControl(maxAge: 5, inheritMaxAge: true) @rest(service: "payment", path: "/b/")
  c: Int @rest(service: "payment", path: "/c/", invalidates: ["/c/"])
}
type Mutation { d: Int @rest(service: "payment", method: "POST", path: "/d/", invalidates: ["d/"]) }
"#;
        assert_reports_exactly(
            sdl,
            &[
                "@cacheControl: scope is PUBLIC or PRIVATE",
                "give maxAge or inheritMaxAge: true, not both",
                "a GET changes nothing",
                "each entry is a path prefix on the service",
            ],
        );
    }

    #[test]
    fn get_calls_are_cached_by_their_field_or_their_type_hint() {
        let sdl = r#"
            type Query {
              lesson: Lesson @rest(service: "live_reading", path: "/lesson/1/")
              short: Lesson @cacheControl(maxAge: 5, scope: PRIVATE) @rest(service: "live_reading", path: "/lesson/1/")
              mine: Int @cacheControl(maxAge: 30) @rest(service: "payment", path: "/m/")
              never: Int @rest(service: "payment", path: "/n/")
            }
            type Mutation { pay: Int @rest(service: "payment", method: "POST", path: "/p/", invalidates: ["/m/"]) }
            type Lesson @cacheControl(maxAge: 60, scope: PUBLIC) { id: ID }
        "#;
        let model = load(&[SchemaSource { file: "s".to_owned(), text: sdl.to_owned() }], &services()).expect("valid");
        let caching = |type_name: &str, field: &str| {
            let field = model.objects[type_name].field(field).expect("field");
            match &field.source {
                FieldSource::Rest(connector) => (connector.cache, connector.invalidates.clone()),
                FieldSource::Json { .. } => panic!("a connector"),
            }
        };
        let seconds = std::time::Duration::from_secs;
        assert_eq!(caching("Query", "lesson").0, Some(CallCache { max_age: seconds(60), public: true }));
        assert_eq!(caching("Query", "short").0, Some(CallCache { max_age: seconds(5), public: false }));
        assert_eq!(caching("Query", "mine").0, Some(CallCache { max_age: seconds(30), public: false }));
        assert_eq!(caching("Query", "never").0, None);
        assert_eq!(caching("Mutation", "pay"), (None, vec!["/m/".to_owned()]));
    }

    #[test]
    fn files_go_only_into_multipart_bodies_of_calls_that_have_a_body() {
        assert_reports_exactly(
            r#"
            scalar Upload
            type Query { q: Int @rest(service: "payment", path: "/q/") }
            type Mutation {
              ok(file: Upload!, note: String): Int @rest(service: "payment", method: "POST", path: "/f/", multipart: {file: "$args.file", note: "$args.note"})
              inPath(file: Upload!): Int @rest(service: "payment", method: "POST", path: "/f/{$args.file}/", multipart: {file: "$args.file"})
              inJson(file: Upload!): Int @rest(service: "payment", method: "POST", path: "/f/", body: {file: "$args.file"})
              both(file: Upload!): Int @rest(service: "payment", method: "POST", path: "/f/", body: {a: "1"}, multipart: {file: "$args.file"})
              get(file: Upload!): Int @rest(service: "payment", path: "/f/", multipart: {file: "$args.file"})
              unknown: Int @rest(service: "payment", method: "POST", path: "/f/", multipart: {file: "$args.nope"})
              returned: Upload @rest(service: "payment", method: "POST", path: "/f/")
            }
            "#,
            &[
                "$args.file is a file (Upload); send it as a form field with multipart",
                "$args.file is a file (Upload); send it as a form field with multipart",
                "use either body (JSON) or multipart (a form)",
                "@rest multipart: a GET has no body",
                "uses $args.nope but the field has no such argument",
                "Mutation.returned: Upload is a file clients send",
            ],
        );
    }
}

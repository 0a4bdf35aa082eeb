//! The OpenAPI 3.1 document of the gateway's REST surface: each operation
//! endpoint with its parameters and request body (from the operation's
//! variable definitions) and its answer's schema (from the compiled plan's
//! selection: response keys, aliases, `__typename`, nullability), and each
//! passthrough route as an opaque operation on any path under its prefix.
//! Built once, when the configuration is loaded (or printed by `portico
//! openapi`), never per request.

use async_graphql_parser::types::{BaseType, Type};
use serde_json::{json, Map, Value as Json};

use super::config::{OpenapiConfig, OperationConfig, OperationMethod};
use super::template::Segment;
use crate::auth::AuthMode;
use crate::graphql::model::SchemaModel;
use crate::graphql::plan::{FieldPlan, OutputKind, OutputType, ScalarKind, Selection, ValueSource};
use crate::proxy::RouteConfig;

const ERROR_REF: &str = "#/components/responses/Error";
const PASSTHROUGH_METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// The document for these operations (compiled) and passthrough routes.
pub fn document(
    info: &OpenapiConfig,
    operations: &[OperationConfig],
    routes: &[RouteConfig],
    model: &SchemaModel,
) -> Json {
    let mut components = Map::new();
    let mut paths = Map::new();
    let names: Vec<Option<&str>> = operations
        .iter()
        .map(|operation| operation.compiled.as_ref().and_then(|compiled| compiled.label.as_deref()))
        .collect();
    for (index, operation) in operations.iter().enumerate() {
        let Some(compiled) = &operation.compiled else { continue };
        let unique = names[index].filter(|name| names.iter().filter(|other| **other == Some(name)).count() == 1);
        let operation_id = unique.map_or_else(|| id_from(operation.method, &operation.path), str::to_owned);
        let plan = &compiled.plan;
        let in_path: Vec<&str> = compiled
            .template
            .segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Parameter(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        let header_variable = compiled.idempotency_key.as_ref().map(|(header, variable)| (header, variable.as_str()));
        let mut parameters = Vec::new();
        let mut body_properties = Map::new();
        let mut body_required = Vec::new();
        for spec in &plan.variables {
            let name = spec.name.as_str();
            let required = !spec.ty.nullable && spec.default.is_none();
            let mut schema = input_schema(model, &spec.ty, &mut components);
            if let (Some(default), Some(object)) = (&spec.default, schema.as_object_mut()) {
                object.insert("default".to_owned(), default.clone().into_json().unwrap_or_default());
            }
            if in_path.contains(&name) {
                let schema = input_schema(model, &non_null(&spec.ty), &mut components);
                parameters.push(json!({ "name": name, "in": "path", "required": true, "schema": schema }));
            } else if let Some((header, _)) = header_variable.filter(|(_, variable)| *variable == name) {
                parameters.push(json!({
                    "name": header.as_str(), "in": "header", "required": required, "schema": schema,
                    "description": format!("Becomes the variable ${name}: retrying with the same key repeats nothing."),
                }));
            } else if operation.method.takes_body() {
                body_properties.insert(name.to_owned(), schema);
                if required {
                    body_required.push(name.to_owned());
                }
            } else {
                parameters.push(json!({ "name": name, "in": "query", "required": required, "schema": schema }));
            }
        }
        let mut data = selection_schema(&plan.root);
        if let Some(properties) = data.get_mut("properties").and_then(Json::as_object_mut) {
            properties.insert(
                "errors".to_owned(),
                json!({
                    "description": "Present only when the data is partial: the errors of the fields that are null.",
                    "type": "array",
                    "items": { "$ref": "#/components/schemas/GraphqlError" },
                }),
            );
        }
        let mut responses = Map::new();
        responses.insert(
            "200".to_owned(),
            json!({
                "description": "The operation's data.",
                "content": { "application/json": { "schema": data } },
            }),
        );
        let mut statuses = vec!["400", "401", "403", "404", "429", "502", "503", "504"];
        if operation.method.takes_body() {
            statuses.extend(["413", "415"]);
            statuses.sort_unstable();
        }
        for status in statuses {
            responses.insert(status.to_owned(), json!({ "$ref": ERROR_REF }));
        }
        let mut entry = json!({
            "operationId": operation_id,
            "summary": match &compiled.label {
                Some(name) => format!("GraphQL operation {name}"),
                None => "A stored GraphQL operation".to_owned(),
            },
            "description": format!("Runs the stored GraphQL operation of `{}`.", operation.document.display()),
            "parameters": parameters,
            "responses": responses,
            "security": security(operation.auth),
        });
        if operation.method.takes_body() && !body_properties.is_empty() {
            entry["requestBody"] = json!({
                "required": !body_required.is_empty(),
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": body_properties,
                    "required": body_required,
                    "additionalProperties": false,
                } } },
            });
        }
        let item = paths.entry(operation.path.clone()).or_insert_with(|| json!({}));
        item[operation.method.lowercase()] = entry;
    }
    for route in routes {
        let path = format!("{}{{path}}", route.prefix.trim_end_matches('/').to_owned() + "/");
        let methods: Vec<String> = if route.methods.is_empty() {
            PASSTHROUGH_METHODS.iter().map(|method| (*method).to_owned()).collect()
        } else {
            route.methods.iter().map(|method| method.to_ascii_lowercase()).collect()
        };
        let mut item = Map::new();
        item.insert("summary".to_owned(), Json::from(format!("Proxied to the {} service", route.service)));
        item.insert(
            "description".to_owned(),
            Json::from(format!(
                "Any path under {} is passed through to the {} service as it is; its requests and answers are the service's.",
                route.prefix, route.service
            )),
        );
        item.insert(
            "parameters".to_owned(),
            json!([{
                "name": "path", "in": "path", "required": true,
                "description": "The rest of the path, slashes included.",
                "schema": { "type": "string" },
            }]),
        );
        for method in methods {
            let id = format!("{method}_{}", sanitize(&route.prefix));
            item.insert(
                method,
                json!({
                    "operationId": id,
                    "responses": { "default": { "description": "The service's answer." } },
                    "security": security(route.auth),
                }),
            );
        }
        paths.entry(path).or_insert(Json::Object(item));
    }
    components.insert("GraphqlError".to_owned(), graphql_error_schema());
    components.insert("Error".to_owned(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": info.title.as_deref().unwrap_or("portico"),
            "version": info.version.as_deref().unwrap_or(env!("CARGO_PKG_VERSION")),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": { "Error": {
                "description": "Refused or failed; `error.errors` holds the operation's GraphQL errors when it ran.",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
            } },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
        },
    })
}

fn security(mode: AuthMode) -> Json {
    match mode {
        AuthMode::Required => json!([{ "bearer": [] }]),
        AuthMode::Optional => json!([{}, { "bearer": [] }]),
        AuthMode::None => json!([]),
    }
}

fn id_from(method: OperationMethod, path: &str) -> String {
    format!("{}_{}", method.lowercase(), sanitize(path))
}

fn sanitize(path: &str) -> String {
    let id: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    id.trim_matches('_').to_owned()
}

fn non_null(ty: &Type) -> Type {
    Type { base: ty.base.clone(), nullable: false }
}

/// A variable's (or input field's) type as JSON Schema; input objects are
/// components, referenced.
fn input_schema(model: &SchemaModel, ty: &Type, components: &mut Map<String, Json>) -> Json {
    let schema = match &ty.base {
        BaseType::List(inner) => json!({ "type": "array", "items": input_schema(model, inner, components) }),
        BaseType::Named(name) => match name.as_str() {
            "Int" => json!({ "type": "integer", "format": "int32" }),
            "Float" => json!({ "type": "number" }),
            "String" | "ID" => json!({ "type": "string" }),
            "Boolean" => json!({ "type": "boolean" }),
            other => {
                if let Some(enumeration) = model.enums.get(other) {
                    json!({ "type": "string", "enum": enumeration.values })
                } else if let Some(input) = model.inputs.get(other) {
                    if !components.contains_key(other) {
                        // Placed first, so a recursive input refers to itself.
                        components.insert(other.to_owned(), json!({}));
                        let mut properties = Map::new();
                        let mut required = Vec::new();
                        for field in &input.fields {
                            let mut schema = input_schema(model, &field.ty, components);
                            if let Some(description) = &field.description {
                                schema = with_description(schema, description);
                            }
                            properties.insert(field.name.clone(), schema);
                            if !field.ty.nullable && field.default.is_none() {
                                required.push(field.name.clone());
                            }
                        }
                        let mut object = json!({
                            "type": "object",
                            "properties": properties,
                            "required": required,
                            "additionalProperties": false,
                        });
                        if let Some(description) = &input.description {
                            object = with_description(object, description);
                        }
                        components.insert(other.to_owned(), object);
                    }
                    json!({ "$ref": format!("#/components/schemas/{other}") })
                } else {
                    // A custom scalar: any JSON value.
                    json!({})
                }
            }
        },
    };
    if ty.nullable {
        nullable(schema)
    } else {
        schema
    }
}

fn with_description(mut schema: Json, description: &str) -> Json {
    if let Some(object) = schema.as_object_mut() {
        if !object.contains_key("$ref") {
            object.insert("description".to_owned(), Json::from(description));
        }
    }
    schema
}

/// The schema, also allowing `null` (3.1: `null` is a JSON Schema type).
fn nullable(schema: Json) -> Json {
    let Json::Object(mut object) = schema else { return schema };
    if object.contains_key("$ref") {
        return json!({ "oneOf": [Json::Object(object), { "type": "null" }] });
    }
    let Some(ty) = object.get("type").cloned() else {
        // No type: any value already, null included.
        return Json::Object(object);
    };
    object.insert("type".to_owned(), json!([ty, "null"]));
    if let Some(Json::Array(values)) = object.get_mut("enum") {
        values.push(Json::Null);
    }
    Json::Object(object)
}

/// An object selection's schema: its response keys, each required unless
/// a variable's `@skip`/`@include` may leave it out.
fn selection_schema(selection: &Selection) -> Json {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in &selection.fields {
        properties.insert(field.key.to_string(), field_schema(field));
        if field.guard.occurrences.iter().any(|(_, conditions)| conditions.is_empty()) {
            required.push(field.key.to_string());
        }
    }
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

fn field_schema(field: &FieldPlan) -> Json {
    if let ValueSource::Typename(name) = &field.source {
        return json!({ "type": "string", "const": &**name });
    }
    output_schema(&field.ty, field.selection.as_ref())
}

fn output_schema(ty: &OutputType, selection: Option<&Selection>) -> Json {
    let schema = match &ty.kind {
        OutputKind::List(inner) => json!({ "type": "array", "items": output_schema(inner, selection) }),
        OutputKind::Object => match selection {
            Some(selection) => selection_schema(selection),
            None => json!({ "type": "object" }),
        },
        OutputKind::Enum(values) => {
            json!({ "type": "string", "enum": values.iter().map(|v| &**v).collect::<Vec<_>>() })
        }
        OutputKind::Scalar(ScalarKind::Id | ScalarKind::String) => json!({ "type": "string" }),
        OutputKind::Scalar(ScalarKind::Int) => json!({ "type": "integer", "format": "int32" }),
        OutputKind::Scalar(ScalarKind::Float) => json!({ "type": "number" }),
        OutputKind::Scalar(ScalarKind::Boolean) => json!({ "type": "boolean" }),
        OutputKind::Scalar(ScalarKind::Custom) => json!({}),
    };
    if ty.nullable {
        nullable(schema)
    } else {
        schema
    }
}

fn graphql_error_schema() -> Json {
    json!({
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": { "type": "string" },
            "path": { "type": "array", "items": { "type": ["string", "integer"] } },
            "locations": { "type": "array", "items": {
                "type": "object",
                "properties": { "line": { "type": "integer" }, "column": { "type": "integer" } },
            } },
            "extensions": {
                "type": "object",
                "properties": { "code": { "type": "string", "description": "The gateway's error code." } },
            },
        },
    })
}

fn error_schema() -> Json {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": { "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": { "type": "string" },
                "message": { "type": "string" },
                "request_id": { "type": ["string", "null"] },
                "errors": { "type": "array", "items": { "$ref": "#/components/schemas/GraphqlError" } },
            },
        } },
    })
}

//! async-graphql's dynamic schema, built from the model: it prints the
//! client-facing SDL, validates each document once (when its plan is
//! compiled), and answers introspection. It never resolves data: plans do
//! (see `plan` and `execute`). Its data fields resolve to placeholders, so
//! that an operation mixing `__schema` with data fields can run here for
//! its introspection part alone.

use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, Scalar, Schema, SchemaBuilder,
    TypeRef,
};
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
use async_graphql::{Name, ServerError, Value};
use async_graphql_parser::types::{BaseType, ExecutableDocument, Type};

use super::model::{FieldModel, SchemaModel};

/// Builds the schema for `model`.
pub fn build_schema(model: &SchemaModel, introspection: bool) -> Result<Schema, async_graphql::dynamic::SchemaError> {
    let mut builder: SchemaBuilder =
        Schema::build(&model.query, model.mutation.as_deref(), None).extension(StopAfterValidation);
    if model.uses_type("JSON") {
        builder = builder.register(Scalar::new("JSON").description("Any JSON value."));
    }
    if model.uses_type(super::sdl::UPLOAD) {
        // Files come only from a multipart request's variables (see
        // `upload`): no literal in a document is one.
        let upload = Scalar::new(super::sdl::UPLOAD)
            .description(
                "A file, sent as a variable of a multipart request \
                 (https://github.com/jaydenseric/graphql-multipart-request-spec).",
            )
            .validator(|value| match value {
                Value::Object(map) => map.len() == 1 && map.contains_key(super::upload::MARKER),
                _ => false,
            });
        builder = builder.register(upload);
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
            built = built.field(placeholder_field(model, field));
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

fn placeholder_field(model: &SchemaModel, field: &FieldModel) -> Field {
    let ty = field.ty.clone();
    let named = super::model::named_type(&field.ty);
    let enum_default: Option<Name> =
        model.enums.get(named).and_then(|enumeration| enumeration.values.first()).map(Name::new);
    let is_object = model.objects.contains_key(named);
    let mut built = Field::new(&field.name, type_ref(&field.ty), move |_| {
        let value = placeholder(&ty, is_object, enum_default.as_ref());
        FieldFuture::new(async move { Ok(value) })
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

/// A value of type `ty` that introspection's run ignores: null where
/// allowed, else the smallest valid value.
fn placeholder(ty: &Type, is_object: bool, enum_default: Option<&Name>) -> Option<FieldValue<'static>> {
    if ty.nullable {
        return None;
    }
    Some(match &ty.base {
        BaseType::List(_) => FieldValue::list(Vec::<FieldValue<'static>>::new()),
        BaseType::Named(_) if is_object => FieldValue::owned_any(()),
        BaseType::Named(name) => FieldValue::value(match (name.as_str(), enum_default) {
            (_, Some(item)) => Value::Enum(item.clone()),
            ("Int", _) => Value::from(0),
            ("Float", _) => Value::from(0.0),
            ("Boolean", _) => Value::Boolean(false),
            _ => Value::String(String::new()),
        }),
    })
}

/// Marks a run that only validates.
struct ValidateOnly;

/// Ends a validating run once validation passed, before anything executes.
struct StopAfterValidation;

impl ExtensionFactory for StopAfterValidation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(StopAfterValidation)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for StopAfterValidation {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if ctx.data_opt::<ValidateOnly>().is_some() {
            return async_graphql::Response::new(Value::Null);
        }
        next.run(ctx, operation_name).await
    }
}

/// Validates `document` against the schema (every rule of the spec, as
/// async-graphql implements them), without variables: their values are
/// coerced per request (see `variables`).
pub async fn validate(
    schema: &Schema,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Result<(), Vec<ServerError>> {
    let mut request = async_graphql::Request::new(String::new()).data(ValidateOnly);
    request.operation_name = operation_name.map(str::to_owned);
    request.set_parsed_query(document.clone());
    let response = schema.execute(request).await;
    if response.errors.is_empty() {
        Ok(())
    } else {
        Err(response.errors)
    }
}

/// Runs the operation on async-graphql for its `__schema`/`__type` fields.
pub async fn introspect(
    schema: &Schema,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: async_graphql::Variables,
) -> async_graphql::Response {
    let mut request = async_graphql::Request::new(String::new()).variables(variables);
    request.operation_name = operation_name.map(str::to_owned);
    request.set_parsed_query(document.clone());
    schema.execute(request).await
}

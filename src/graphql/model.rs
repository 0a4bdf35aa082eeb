//! The checked, typed form of the gateway schema: what each type and field
//! is, and where each field's value comes from. Built once from SDL by
//! [`super::sdl`]; the executable schema and the limits read it.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql_parser::types::Type;
use indexmap::IndexMap;

use super::connector::RestConnector;
use super::error::GraphqlCode;

/// The whole schema.
#[derive(Debug, Clone, Default)]
pub struct SchemaModel {
    /// Object types by name, in declaration order.
    pub objects: IndexMap<String, ObjectModel>,
    /// Input object types by name.
    pub inputs: IndexMap<String, InputModel>,
    /// Enum types by name, with their values.
    pub enums: IndexMap<String, EnumModel>,
    /// Custom scalars (values pass through as JSON).
    pub scalars: IndexMap<String, Option<String>>,
    /// Name of the query root type.
    pub query: String,
    /// Name of the mutation root type, if any.
    pub mutation: Option<String>,
}

impl SchemaModel {
    /// Whether any field, argument or input field has the named type.
    pub fn uses_type(&self, name: &str) -> bool {
        let named = named_type;
        let fields = self.objects.values().flat_map(|object| &object.fields);
        fields.clone().any(|field| named(&field.ty) == name)
            || fields.flat_map(|field| &field.args).any(|arg| named(&arg.ty) == name)
            || self.inputs.values().flat_map(|input| &input.fields).any(|field| named(&field.ty) == name)
    }
}

/// The named type inside any list wrappers (`Int` of `[[Int!]]!`).
pub fn named_type(ty: &Type) -> &str {
    match &ty.base {
        async_graphql_parser::types::BaseType::Named(name) => name.as_str(),
        async_graphql_parser::types::BaseType::List(inner) => named_type(inner),
    }
}

/// An object type.
#[derive(Debug, Clone)]
pub struct ObjectModel {
    /// Type name.
    pub name: String,
    /// Description from the SDL.
    pub description: Option<String>,
    /// Fields in declaration order.
    pub fields: Vec<FieldModel>,
    /// `@cost(weight:)` on the type: the cost of each object of this type.
    pub cost: Option<u64>,
    /// `@authenticated` / `@requiresScopes` on the type: needed to read any
    /// field that returns it.
    pub access: Access,
    /// `@cacheControl` on the type: applies to every field returning it.
    pub cache_control: Option<CacheHint>,
}

impl ObjectModel {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldModel> {
        self.fields.iter().find(|field| field.name == name)
    }
}

/// An object field.
#[derive(Debug, Clone)]
pub struct FieldModel {
    /// Field name.
    pub name: String,
    /// Description from the SDL.
    pub description: Option<String>,
    /// Declared type.
    pub ty: Type,
    /// Arguments.
    pub args: Vec<ArgModel>,
    /// Where the value comes from.
    pub source: FieldSource,
    /// `@cost(weight:)`.
    pub cost: Option<u64>,
    /// `@listSize`.
    pub list_size: Option<ListSize>,
    /// `@deprecated(reason:)`.
    pub deprecation: Option<Option<String>>,
    /// Where the field is declared, for messages.
    pub declared_at: (Arc<str>, async_graphql_parser::Pos),
    /// Who may read the field (its own directives and its type's).
    pub access: Access,
    /// `@cacheControl` on the field.
    pub cache_control: Option<CacheHint>,
}

/// `@cacheControl(maxAge:, scope:, inheritMaxAge:)`, Apollo Server's
/// convention: how long an answer with this field may be cached, and by whom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheHint {
    /// Seconds the value stays fresh.
    pub max_age: Option<u64>,
    /// `PUBLIC` or `PRIVATE`; unset leaves the scope to others.
    pub scope: Option<CacheHintScope>,
    /// Take the parent field's maxAge instead of the default of 0.
    pub inherit_max_age: bool,
}

/// Who may share a cached value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHintScope {
    /// Anyone.
    Public,
    /// Only the caller it was made for.
    Private,
}

/// `@authenticated` and `@requiresScopes` on a field or type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// A verified caller is needed.
    pub authenticated: bool,
    /// Any one of these groups must be granted in full.
    pub scopes: Vec<Vec<String>>,
}

impl Access {
    /// Whether anyone may read.
    pub fn is_open(&self) -> bool {
        !self.authenticated && self.scopes.is_empty()
    }

    /// Both sets of requirements: authentication if either asks, and every
    /// scope requirement of both.
    pub fn and(&self, other: &Access) -> Access {
        let scopes = match (self.scopes.is_empty(), other.scopes.is_empty()) {
            (true, _) => other.scopes.clone(),
            (_, true) => self.scopes.clone(),
            (false, false) => self
                .scopes
                .iter()
                .flat_map(|mine| other.scopes.iter().map(move |theirs| mine.iter().chain(theirs).cloned().collect()))
                .collect(),
        };
        Access { authenticated: self.authenticated || other.authenticated, scopes }
    }

    /// Why `identity` may not read, if it may not: the code and message.
    pub fn refusal(&self, identity: Option<&crate::identity::Identity>) -> Option<(GraphqlCode, String)> {
        let Some(identity) = identity else {
            return Some((GraphqlCode::Unauthenticated, "this field requires an authenticated caller".to_owned()));
        };
        if self.scopes.is_empty() || self.scopes.iter().any(|group| identity.has_scopes(group)) {
            return None;
        }
        let wanted: Vec<String> = self.scopes.iter().map(|group| group.join(" ")).collect();
        Some((GraphqlCode::Forbidden, format!("this field requires the scopes: {}", wanted.join(" or "))))
    }
}

impl FieldModel {
    /// Argument values with the declared defaults filled in, as JSON.
    pub fn arguments_with_defaults<'a>(
        &self,
        given: impl IntoIterator<Item = (&'a str, &'a Value)>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut args = serde_json::Map::new();
        for arg in &self.args {
            if let Some(default) = &arg.default {
                args.insert(arg.name.clone(), default.clone().into_json().unwrap_or_default());
            }
        }
        for (name, value) in given {
            args.insert(name.to_owned(), value.clone().into_json().unwrap_or_default());
        }
        args
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone)]
pub enum FieldSource {
    /// A key of the parent object's JSON.
    Json {
        /// The JSON key (snake_case of the field name unless `@map` says otherwise).
        key: String,
    },
    /// A backend call.
    Rest(Arc<RestConnector>),
}

/// An argument or input field.
#[derive(Debug, Clone)]
pub struct ArgModel {
    /// Name.
    pub name: String,
    /// Description from the SDL.
    pub description: Option<String>,
    /// Declared type.
    pub ty: Type,
    /// Default value.
    pub default: Option<Value>,
}

/// An input object type.
#[derive(Debug, Clone)]
pub struct InputModel {
    /// Type name.
    pub name: String,
    /// Description from the SDL.
    pub description: Option<String>,
    /// Fields.
    pub fields: Vec<ArgModel>,
}

/// An enum type.
#[derive(Debug, Clone)]
pub struct EnumModel {
    /// Type name.
    pub name: String,
    /// Description from the SDL.
    pub description: Option<String>,
    /// Values.
    pub values: Vec<String>,
}

/// `@listSize(assumedSize:, slicingArguments:)` from the cost spec.
#[derive(Debug, Clone, Default)]
pub struct ListSize {
    /// Size assumed when no slicing argument is given.
    pub assumed_size: Option<u64>,
    /// Arguments whose value bounds the list's length.
    pub slicing_arguments: Vec<String>,
}

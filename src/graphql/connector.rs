//! `@rest` connectors: how a field's backend call is described in SDL, and
//! how a description becomes a concrete request.
//!
//! Values come from three places only: the field's arguments (`$args.x`),
//! the parent object's JSON (`$parent.key`) and the verified caller's claims
//! (`$claims.sub`). Everything placed into a URL is percent-encoded, so no
//! argument can add a path segment or a query parameter.

use std::fmt::Write as _;

use http::{HeaderName, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value as Json;

/// Everything except RFC 3986 unreserved characters is encoded, in path
/// segments and query values alike.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A field argument and a path into it.
    Args(Vec<String>),
    /// A key path into the parent object's JSON.
    Parent(Vec<String>),
    /// A claim of the verified caller.
    Claims(Vec<String>),
    /// A constant.
    Literal(String),
}

impl Expr {
    /// Parses `$args.id`, `$parent.lesson_id`, `$claims.sub`, or a literal
    /// (anything not starting with `$`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(reference) = text.strip_prefix('$') else {
            return Ok(Self::Literal(text.to_owned()));
        };
        let mut parts = reference.split('.');
        let root = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.map(str::to_owned).collect();
        if path.is_empty()
            || path.iter().any(|key| key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "{text:?} is not a value reference; write `$args.name`, `$parent.key` or `$claims.sub`"
            ));
        }
        match root {
            "args" => Ok(Self::Args(path)),
            "parent" => Ok(Self::Parent(path)),
            "claims" => Ok(Self::Claims(path)),
            other => Err(format!("unknown value source `${other}` in {text:?}; use $args, $parent or $claims")),
        }
    }

    /// Evaluates the expression; `None` when the value is absent or null.
    pub fn evaluate(&self, scope: &Scope<'_>) -> Option<Json> {
        let (root, path) = match self {
            Self::Literal(text) => return Some(Json::String(text.clone())),
            Self::Args(path) => (scope.args, path),
            Self::Parent(path) => (scope.parent, path),
            Self::Claims(path) => (scope.claims, path),
        };
        let mut current = root?;
        for key in path {
            current = current.get(key)?;
        }
        (!current.is_null()).then(|| current.clone())
    }
}

/// The values a connector may read while a field resolves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// Field arguments as a JSON object (defaults applied).
    pub args: Option<&'a Json>,
    /// The parent object's JSON.
    pub parent: Option<&'a Json>,
    /// The verified caller's claims.
    pub claims: Option<&'a Json>,
}

/// A piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    /// Written as is.
    Literal(String),
    /// Replaced by the value, percent-encoded as one segment.
    Value(Expr),
}

/// The body sent with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    /// One value, typically a whole input object (`"$args.input"`); input
    /// objects' camelCase field names become snake_case keys.
    Value(Expr),
    /// A JSON object built key by key.
    Object(Vec<(String, BodyTemplate)>),
}

/// How to fetch one field for many parents in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpec {
    /// The parent's key for this field (`$parent.lesson_id`).
    pub key: Expr,
    /// Query parameter carrying the comma-separated keys (`ids`).
    pub param: String,
    /// Key of each returned object that matches a parent's key (`id`).
    pub match_key: String,
}

/// A field's backend call.
#[derive(Debug, Clone, PartialEq)]
pub struct RestConnector {
    /// The `[services.<name>]` to call.
    pub service: String,
    /// HTTP method.
    pub method: Method,
    /// Path template.
    pub path: Vec<PathPart>,
    /// Query parameters; absent values are left out.
    pub query: Vec<(String, Expr)>,
    /// Extra request headers; absent values are left out.
    pub headers: Vec<(HeaderName, Expr)>,
    /// The `[graphql.header_rules.<name>]` applied after the service's.
    pub header_rules: Option<String>,
    /// Request body.
    pub body: Option<BodyTemplate>,
    /// A `multipart/form-data` body instead, field by field: uploaded files
    /// (`Upload` arguments) become file parts, other values text parts.
    pub multipart: Option<Vec<(String, Expr)>>,
    /// Key path into the answer where the field's value is.
    pub selection: Vec<String>,
    /// Batching, for fields of list items.
    pub batch: Option<BatchSpec>,
    /// How a GET's answer may be cached, from the field's (or its type's)
    /// `@cacheControl`; `None`: not cached.
    pub cache: Option<CallCache>,
    /// Service path prefixes whose cached GET answers a successful call
    /// (a mutation) makes stale: `@rest(invalidates: ["/payments/"])`.
    pub invalidates: Vec<String>,
}

/// How one field's backend GET is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCache {
    /// The field's `maxAge`: the longest the answer stays fresh.
    pub max_age: std::time::Duration,
    /// `PUBLIC`: one answer for every caller; otherwise one per caller.
    pub public: bool,
}

/// A value that cannot be placed into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A path value is missing.
    #[error("the value for {0} is missing")]
    Missing(String),
    /// An object or nested list where a URL needs text.
    #[error("{0} must be a scalar or a list of scalars to be placed into a URL")]
    NotScalar(String),
    /// A multipart field's value names no file of this request.
    #[error("{0} must be a file sent with the request (an Upload variable of a multipart request)")]
    NoFile(String),
    /// A value longer than the configured limit.
    #[error("{name} is longer than {limit} bytes")]
    TooLong {
        /// Which value.
        name: String,
        /// The limit.
        limit: usize,
    },
}

/// Parses a path template such as `/users/{$args.id}/`.
pub fn parse_path(template: &str) -> Result<Vec<PathPart>, String> {
    if !template.starts_with('/') {
        return Err(format!("path {template:?} must start with '/'"));
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(PathPart::Literal(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("path {template:?} has a '{{' without '}}'"));
        };
        let expression = &rest[open + 1..open + close];
        let expr = Expr::parse(expression)?;
        if matches!(expr, Expr::Literal(_)) {
            return Err(format!("path {template:?}: `{{{expression}}}` must be a reference such as {{$args.id}}"));
        }
        parts.push(PathPart::Value(expr));
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("path {template:?} has a '}}' without '{{'"));
    }
    if !rest.is_empty() {
        parts.push(PathPart::Literal(rest.to_owned()));
    }
    if parts.iter().any(|part| matches!(part, PathPart::Literal(text) if text.contains(['?', '#']))) {
        return Err(format!("path {template:?} must not contain '?' or '#'; put parameters in `query`"));
    }
    Ok(parts)
}

/// Text of a value for a URL: scalars as text, lists comma-separated
/// (the services' `?ids=1,2,3` convention).
fn url_text(name: &str, value: &Json, limit: usize) -> Result<String, RenderError> {
    let text = match value {
        Json::String(text) => text.clone(),
        Json::Number(number) => number.to_string(),
        Json::Bool(flag) => flag.to_string(),
        Json::Array(items) => {
            let mut joined = String::new();
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    joined.push(',');
                }
                match item {
                    Json::Array(_) | Json::Object(_) | Json::Null => {
                        return Err(RenderError::NotScalar(name.to_owned()));
                    }
                    scalar => joined.push_str(&url_text(name, scalar, limit)?),
                }
            }
            joined
        }
        Json::Null | Json::Object(_) => return Err(RenderError::NotScalar(name.to_owned())),
    };
    if text.len() > limit {
        return Err(RenderError::TooLong { name: name.to_owned(), limit });
    }
    Ok(text)
}

impl RestConnector {
    /// The path and query of the call for `scope`.
    pub fn render_url(&self, scope: &Scope<'_>, limit: usize) -> Result<String, RenderError> {
        let mut url = String::with_capacity(64);
        for part in &self.path {
            match part {
                PathPart::Literal(text) => url.push_str(text),
                PathPart::Value(expr) => {
                    let name = describe(expr);
                    let value = expr.evaluate(scope).ok_or_else(|| RenderError::Missing(name.clone()))?;
                    let text = url_text(&name, &value, limit)?;
                    if text.is_empty() {
                        return Err(RenderError::Missing(name));
                    }
                    url.extend(utf8_percent_encode(&text, COMPONENT));
                }
            }
        }
        let mut separator = '?';
        for (param, expr) in &self.query {
            if let Some(value) = expr.evaluate(scope) {
                let text = url_text(param, &value, limit)?;
                let _ = write!(
                    url,
                    "{separator}{}={}",
                    utf8_percent_encode(param, COMPONENT),
                    utf8_percent_encode(&text, COMPONENT)
                );
                separator = '&';
            }
        }
        Ok(url)
    }

    /// The path and query of a batched call for `keys` (already sorted).
    pub fn render_batch_url(&self, scope: &Scope<'_>, keys: &[String], limit: usize) -> Result<String, RenderError> {
        let mut url = self.render_url(scope, limit)?;
        let Some(batch) = &self.batch else { return Ok(url) };
        let separator = if url.contains('?') { '&' } else { '?' };
        let joined = keys.join(",");
        let _ = write!(
            url,
            "{separator}{}={}",
            utf8_percent_encode(&batch.param, COMPONENT),
            utf8_percent_encode(&joined, COMPONENT)
        );
        // Lists are paginated; ask for a page that holds every key.
        if !self.query.iter().any(|(param, _)| param == "page_size") {
            let _ = write!(url, "&page_size={}", keys.len().max(1));
        }
        Ok(url)
    }

    /// The request body for `scope`.
    pub fn render_body(&self, scope: &Scope<'_>) -> Option<Json> {
        self.body.as_ref().map(|template| render_body(template, scope))
    }

    /// Header values for `scope`.
    pub fn render_headers(&self, scope: &Scope<'_>) -> Vec<(HeaderName, String)> {
        self.headers
            .iter()
            .filter_map(|(name, expr)| {
                let text = match expr.evaluate(scope)? {
                    Json::String(text) => text,
                    other => other.to_string(),
                };
                Some((name.clone(), text))
            })
            .collect()
    }
}

fn render_body(template: &BodyTemplate, scope: &Scope<'_>) -> Json {
    match template {
        BodyTemplate::Value(expr) => expr.evaluate(scope).map_or(Json::Null, snake_case_keys),
        BodyTemplate::Object(entries) => {
            Json::Object(entries.iter().map(|(key, value)| (key.clone(), render_body(value, scope))).collect())
        }
    }
}

/// Converts GraphQL input names (`studentId`) to the services' JSON keys
/// (`student_id`), recursively.
fn snake_case_keys(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            Json::Object(map.into_iter().map(|(key, value)| (snake_case(&key), snake_case_keys(value))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(snake_case_keys).collect()),
        other => other,
    }
}

/// `fullName` -> `full_name`.
pub fn snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for (index, character) in name.char_indices() {
        if character.is_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.extend(character.to_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Args(path) => format!("$args.{}", path.join(".")),
        Expr::Parent(path) => format!("$parent.{}", path.join(".")),
        Expr::Claims(path) => format!("$claims.{}", path.join(".")),
        Expr::Literal(text) => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn connector(path: &str, query: &[(&str, &str)]) -> RestConnector {
        RestConnector {
            service: "svc".to_owned(),
            method: Method::GET,
            path: parse_path(path).expect("valid path"),
            query: query.iter().map(|(k, v)| ((*k).to_owned(), Expr::parse(v).expect("valid expr"))).collect(),
            headers: Vec::new(),
            header_rules: None,
            body: None,
            multipart: None,
            selection: Vec::new(),
            batch: None,
            cache: None,
            invalidates: Vec::new(),
        }
    }

    #[test]
    fn hostile_values_are_encoded_and_cannot_add_segments_or_parameters() {
        let args = json!({"id": "1/../../admin?x=1#frag", "level": "A1&page_size=500", "ids": [3, 4]});
        let scope = Scope { args: Some(&args), ..Scope::default() };
        let url = connector(
            "/users/{$args.id}/",
            &[("level", "$args.level"), ("ids", "$args.ids"), ("missing", "$args.nope")],
        )
        .render_url(&scope, 512)
        .expect("renders");
        assert_eq!(url, "/users/1%2F..%2F..%2Fadmin%3Fx%3D1%23frag/?level=A1%26page_size%3D500&ids=3%2C4");
    }

    #[test]
    fn missing_path_values_and_long_values_are_errors() {
        let args = json!({"id": "x".repeat(600)});
        let scope = Scope { args: Some(&args), ..Scope::default() };
        let too_long = connector("/users/{$args.id}/", &[]).render_url(&scope, 512);
        assert!(matches!(too_long, Err(RenderError::TooLong { .. })));
        let empty = json!({});
        let missing =
            connector("/users/{$args.id}/", &[]).render_url(&Scope { args: Some(&empty), ..Scope::default() }, 512);
        assert_eq!(missing, Err(RenderError::Missing("$args.id".to_owned())));
    }

    #[test]
    fn parent_and_claims_values_are_read() {
        let parent = json!({"id": 7, "profile": {"level": "B1"}});
        let claims = json!({"sub": "42"});
        let scope = Scope { parent: Some(&parent), claims: Some(&claims), ..Scope::default() };
        let url = connector(
            "/sessions/",
            &[("student_id", "$parent.id"), ("level", "$parent.profile.level"), ("me", "$claims.sub")],
        )
        .render_url(&scope, 512)
        .expect("renders");
        assert_eq!(url, "/sessions/?student_id=7&level=B1&me=42");
    }

    #[test]
    fn templates_are_checked() {
        assert!(parse_path("users/").is_err());
        assert!(parse_path("/users/{$args.id/").is_err());
        assert!(parse_path("/users/{id}/").is_err());
        assert!(parse_path("/users/?x=1").is_err());
        assert!(Expr::parse("$env.HOME").is_err());
        assert!(Expr::parse("$args").is_err());
        assert_eq!(Expr::parse("50"), Ok(Expr::Literal("50".to_owned())));
    }

    #[test]
    fn input_objects_become_snake_case_bodies() {
        let args = json!({"input": {"studentId": 1, "amount": "49.00"}, "lessonId": "3"});
        let scope = Scope { args: Some(&args), ..Scope::default() };
        let whole = BodyTemplate::Value(Expr::parse("$args.input").expect("expr"));
        assert_eq!(render_body(&whole, &scope), json!({"student_id": 1, "amount": "49.00"}));
        let built = BodyTemplate::Object(vec![(
            "lesson_id".to_owned(),
            BodyTemplate::Value(Expr::parse("$args.lessonId").expect("expr")),
        )]);
        assert_eq!(render_body(&built, &scope), json!({"lesson_id": "3"}));
    }
}

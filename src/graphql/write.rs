//! Writes an executed plan's answer straight to JSON bytes: fields in the
//! order the operation selected them, values checked against their declared
//! types as they are written, and null propagation as the spec has it
//! (§6.4.4): a field that fails or is null while declared non-null makes its
//! nearest nullable ancestor null. Bytes already written for that ancestor
//! are cut back (a mark per nullable position), so no tree of the response
//! is ever built. Every error keeps its `path` and `extensions.code`.

use async_graphql::ServerError;
use serde_json::{json, Value as Json};

use super::error::{FetchError, GraphqlCode};
use super::execute::{CallState, Execution};
use super::plan::{FieldPlan, OutputKind, OutputType, Plan, ScalarKind, Selection, ValueSource};
use super::shape::Node;

/// A written answer.
pub struct Written {
    /// `{"data": ..., "errors": [...]}`.
    pub body: Vec<u8>,
    /// Each error's code, for metrics.
    pub codes: Vec<GraphqlCode>,
    /// Where `data`'s value is in `body`.
    pub data: std::ops::Range<usize>,
    /// Where the `errors` array is in `body`, if there are errors.
    pub errors: Option<std::ops::Range<usize>>,
}

/// Writes the answer of `execution`; `introspection` is async-graphql's
/// answer for the operation's `__schema`/`__type` fields, if it has any.
pub fn write<'e, 'p: 'e>(
    plan: &'e Plan,
    execution: &'e Execution<'p>,
    introspection: Option<(&'e Json, &'e [ServerError])>,
) -> Written {
    let capacity = plan.answer_size.load(std::sync::atomic::Ordering::Relaxed);
    let mut writer = Writer {
        execution,
        out: Vec::with_capacity(capacity + capacity / 8),
        errors: Vec::new(),
        codes: Vec::new(),
        path: Vec::new(),
        introspection: introspection.map(|(data, _)| data),
    };
    if let Some((_, errors)) = introspection {
        for error in errors {
            writer.errors.push(serde_json::to_value(error).unwrap_or_else(|_| json!({ "message": error.message })));
            writer.codes.push(GraphqlCode::InternalServerError);
        }
    }
    writer.out.extend_from_slice(b"{\"data\":");
    let mark = writer.out.len();
    if writer.object(&plan.root, &execution.root).is_err() {
        writer.out.truncate(mark);
        writer.out.extend_from_slice(b"null");
    }
    let data = mark..writer.out.len();
    let mut errors = None;
    if !writer.errors.is_empty() {
        writer.out.extend_from_slice(b",\"errors\":");
        let start = writer.out.len();
        let _ = serde_json::to_writer(&mut writer.out, &writer.errors);
        errors = Some(start..writer.out.len());
    }
    writer.out.push(b'}');
    plan.answer_size.store(writer.out.len(), std::sync::atomic::Ordering::Relaxed);
    Written { body: writer.out, codes: writer.codes, data, errors }
}

/// A non-null position could not be filled: its nearest nullable ancestor
/// becomes null.
struct Bubble;

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

struct Writer<'e, 'p> {
    execution: &'e Execution<'p>,
    out: Vec<u8>,
    errors: Vec<Json>,
    codes: Vec<GraphqlCode>,
    path: Vec<Segment<'e>>,
    introspection: Option<&'e Json>,
}

impl<'e, 'p> Writer<'e, 'p> {
    fn object(&mut self, selection: &'e Selection, node: &Node) -> Result<(), Bubble> {
        self.out.push(b'{');
        if selection.conditional {
            for (index, field) in self.included(selection).into_iter().enumerate() {
                self.member(index, field, node)?;
            }
        } else {
            for (index, field) in selection.fields.iter().enumerate() {
                self.member(index, field, node)?;
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// One `"key":value` of an object.
    fn member(&mut self, index: usize, field: &'e FieldPlan, node: &Node) -> Result<(), Bubble> {
        // The comma comes with the key: one copy instead of a push and a copy.
        let key = &field.key_json;
        if index > 0 {
            append(&mut self.out, &key.window, 0, key.len + 1);
        } else {
            append(&mut self.out, &key.window, 1, key.len);
        }
        if self.plain_scalar(field, node) {
            return Ok(());
        }
        self.path.push(Segment::Key(&field.key));
        let mark = self.out.len();
        let written = self.field(field, node);
        self.path.pop();
        if written.is_err() {
            if !field.ty.nullable {
                return Err(Bubble);
            }
            self.out.truncate(mark);
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }

    /// The fast path of most members of a large answer: a scalar read
    /// from a slot of its parent, open to anyone, whose value fits. It
    /// writes the value and says so, or writes nothing and leaves the
    /// field to [`Writer::field`], which reports what does not fit with
    /// the error path this path never builds. What it writes is what
    /// [`Writer::value`] would write for the same node.
    fn plain_scalar(&mut self, field: &FieldPlan, parent: &Node) -> bool {
        let (None, ValueSource::Key { slot, .. }, OutputKind::Scalar(kind), Node::Object(slots)) =
            (&field.access, &field.source, &field.ty.kind, parent)
        else {
            return false;
        };
        match slots.get(*slot) {
            None | Some(Node::Null) if field.ty.nullable => {
                self.out.extend_from_slice(b"null");
                true
            }
            // Whole values are normalized first, and errors need a path.
            None | Some(Node::Null | Node::Json(_)) => false,
            Some(node) => self.scalar(*kind, node),
        }
    }

    /// The fields of a conditional selection to write, in the order of
    /// their first included occurrence.
    fn included(&self, selection: &'e Selection) -> Vec<&'e FieldPlan> {
        let flags = &self.execution.flags;
        let mut fields: Vec<(u32, &FieldPlan)> = selection
            .fields
            .iter()
            .filter_map(|field| field.guard.first_included(flags).map(|order| (order, field)))
            .collect();
        fields.sort_by_key(|(order, _)| *order);
        fields.into_iter().map(|(_, field)| field).collect()
    }

    fn field(&mut self, field: &'e FieldPlan, parent: &Node) -> Result<(), Bubble> {
        if let Some(access) = &field.access {
            if let Some((code, message)) = access.refusal(self.execution.identity()) {
                self.error(field, code, &message, None);
                return Err(Bubble);
            }
        }
        match &field.source {
            ValueSource::Typename(name) => {
                let _ = serde_json::to_writer(&mut self.out, &**name);
                Ok(())
            }
            ValueSource::Introspection => {
                let value = self.introspection.and_then(|data| data.get(&*field.key)).unwrap_or(&Json::Null);
                let _ = serde_json::to_writer(&mut self.out, value);
                Ok(())
            }
            ValueSource::Key { slot, key } => match parent {
                Node::Object(slots) => self.value(field, &field.ty, slots.get(*slot).unwrap_or(&Node::Null)),
                // An object kept whole: read it by key.
                Node::Json(json) => {
                    let child = json.get(&**key).map(normalize).unwrap_or_default();
                    self.owned_value(field, &field.ty, child)
                }
                _ => self.value(field, &field.ty, &Node::Null),
            },
            ValueSource::Call(call) => {
                let slot = match parent {
                    Node::Object(slots) => {
                        slots.len().checked_sub(1 + call.call_slot).and_then(|index| slots.get(index))
                    }
                    _ => None,
                };
                let execution = self.execution;
                let calls = &execution.calls;
                match slot {
                    Some(Node::Call(id)) => match calls.get(*id as usize) {
                        Some(CallState::Done(node)) => self.value(field, &field.ty, node),
                        Some(CallState::Failed(error)) => self.failure(field, error),
                        _ => self.internal(field),
                    },
                    Some(Node::Keyed { call, key }) => match calls.get(*call as usize) {
                        Some(CallState::Batch(found)) => {
                            self.value(field, &field.ty, found.get(*key as usize).unwrap_or(&Node::Null))
                        }
                        Some(CallState::Failed(error)) => self.failure(field, error),
                        _ => self.internal(field),
                    },
                    // No call was made (no key to ask for): no value.
                    _ => self.value(field, &field.ty, &Node::Null),
                }
            }
        }
    }

    fn failure(&mut self, field: &FieldPlan, error: &FetchError) -> Result<(), Bubble> {
        // A missing object on a nullable field is simply absent.
        if matches!(error, FetchError::NotFound { .. }) && field.ty.nullable {
            self.out.extend_from_slice(b"null");
            return Ok(());
        }
        self.error(field, error.code(), &error.client_message(), Some(error.extensions()));
        Err(Bubble)
    }

    fn internal(&mut self, field: &FieldPlan) -> Result<(), Bubble> {
        self.error(field, GraphqlCode::InternalServerError, "the field's call did not finish", None);
        Err(Bubble)
    }

    fn owned_value(&mut self, field: &'e FieldPlan, ty: &'e OutputType, node: Node) -> Result<(), Bubble> {
        self.value(field, ty, &node)
    }

    fn value(&mut self, field: &'e FieldPlan, ty: &'e OutputType, node: &Node) -> Result<(), Bubble> {
        let node = match node {
            Node::Json(json) if !json.is_object() => return self.owned_value(field, ty, normalize(json)),
            node => node,
        };
        if matches!(node, Node::Null) {
            if ty.nullable {
                self.out.extend_from_slice(b"null");
                return Ok(());
            }
            let message = format!("the backend returned no value for non-null field {}", field.name);
            self.error(field, GraphqlCode::UpstreamError, &message, None);
            return Err(Bubble);
        }
        match &ty.kind {
            OutputKind::List(inner) => {
                let Node::List(items) = node else {
                    let message = format!("the backend returned a non-list for list field {}", field.name);
                    self.error(field, GraphqlCode::UpstreamError, &message, None);
                    return Err(Bubble);
                };
                self.out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        self.out.push(b',');
                    }
                    self.path.push(Segment::Index(index));
                    let mark = self.out.len();
                    let written = self.value(field, inner, item);
                    self.path.pop();
                    if written.is_err() {
                        if !inner.nullable {
                            return Err(Bubble);
                        }
                        self.out.truncate(mark);
                        self.out.extend_from_slice(b"null");
                    }
                }
                self.out.push(b']');
                Ok(())
            }
            OutputKind::Object => match (node, &field.selection) {
                (Node::Object(_) | Node::Json(_), Some(selection)) => self.object(selection, node),
                _ => {
                    let message = format!("the backend returned a non-object for {}", field.name);
                    self.error(field, GraphqlCode::UpstreamError, &message, None);
                    Err(Bubble)
                }
            },
            OutputKind::Enum(values) => {
                let text = match node {
                    Node::Str(raw) => self.execution.bodies.string(*raw),
                    Node::Text(text) => std::borrow::Cow::Borrowed(&**text),
                    _ => std::borrow::Cow::Borrowed(""),
                };
                match values.iter().find(|value| value.eq_ignore_ascii_case(&text)) {
                    Some(value) => {
                        let _ = serde_json::to_writer(&mut self.out, &**value);
                        Ok(())
                    }
                    None => {
                        let message = format!("{text:?} is not a value of the enum of field {}", field.name);
                        self.error(field, GraphqlCode::UpstreamError, &message, None);
                        Err(Bubble)
                    }
                }
            }
            OutputKind::Scalar(kind) => {
                if self.scalar(*kind, node) {
                    Ok(())
                } else {
                    let message = format!("the backend value for {} is not a valid {}", field.name, scalar_name(*kind));
                    self.error(field, GraphqlCode::UpstreamError, &message, None);
                    Err(Bubble)
                }
            }
        }
    }

    /// Writes a scalar; false when the node is not a valid `kind`. Scalars
    /// of an answer are copied as the backend wrote them once they are
    /// known to fit: a string's text is a valid JSON string body (the
    /// reader checked it), an integer's digits are canonical JSON.
    fn scalar(&mut self, kind: ScalarKind, node: &Node) -> bool {
        let bodies = &self.execution.bodies;
        let out = &mut self.out;
        match (kind, node) {
            (ScalarKind::Id | ScalarKind::String | ScalarKind::Custom, Node::Str(raw)) => {
                append_string(out, bodies, *raw);
            }
            (ScalarKind::Id | ScalarKind::String, Node::Number(raw)) if raw.flag => write_quoted_raw(out, bodies, *raw),
            (ScalarKind::String, Node::Number(raw)) => write_quoted(out, bodies.number(*raw).to_string().as_bytes()),
            (ScalarKind::Int, Node::Number(raw)) if raw.flag && fits_i32(bodies.text(*raw)) => {
                append_raw(out, bodies, *raw);
            }
            (ScalarKind::Float | ScalarKind::Custom, Node::Number(raw)) => append_raw(out, bodies, *raw),
            (ScalarKind::Id | ScalarKind::String, Node::Text(text)) => {
                let _ = serde_json::to_writer(out, &**text);
            }
            (ScalarKind::Id | ScalarKind::String, Node::Int(number)) => {
                write_quoted(out, itoa::Buffer::new().format(*number).as_bytes())
            }
            (ScalarKind::Id | ScalarKind::String, Node::UInt(number)) => {
                write_quoted(out, itoa::Buffer::new().format(*number).as_bytes());
            }
            (ScalarKind::String, Node::Float(number)) => write_quoted(out, Json::from(*number).to_string().as_bytes()),
            (ScalarKind::String, Node::Bool(flag)) => write_quoted(out, if *flag { b"true" } else { b"false" }),
            (ScalarKind::Int, Node::Int(number)) if i32::try_from(*number).is_ok() => {
                out.extend_from_slice(itoa::Buffer::new().format(*number).as_bytes());
            }
            (ScalarKind::Int, Node::UInt(number)) if i32::try_from(*number).is_ok() => {
                out.extend_from_slice(itoa::Buffer::new().format(*number).as_bytes());
            }
            (ScalarKind::Float, Node::Float(number)) => {
                let _ = serde_json::to_writer(&mut *out, number);
            }
            #[allow(clippy::cast_precision_loss)]
            (ScalarKind::Float, Node::Int(number)) => {
                let _ = serde_json::to_writer(&mut *out, &(*number as f64));
            }
            #[allow(clippy::cast_precision_loss)]
            (ScalarKind::Float, Node::UInt(number)) => {
                let _ = serde_json::to_writer(&mut *out, &(*number as f64));
            }
            (ScalarKind::Boolean, Node::Bool(flag)) => out.extend_from_slice(if *flag { b"true" } else { b"false" }),
            (ScalarKind::Custom, Node::Json(json)) => {
                let _ = serde_json::to_writer(&mut *out, json);
            }
            (ScalarKind::Custom, node) => {
                let _ = serde_json::to_writer(&mut *out, &node.to_json(bodies));
            }
            _ => return false,
        }
        true
    }

    fn error(&mut self, field: &FieldPlan, code: GraphqlCode, message: &str, extensions: Option<Json>) {
        let path: Vec<Json> = self
            .path
            .iter()
            .map(|segment| match segment {
                Segment::Key(key) => Json::from(*key),
                Segment::Index(index) => Json::from(*index),
            })
            .collect();
        let extensions = extensions.unwrap_or_else(|| json!({ "code": code.as_str() }));
        self.errors.push(json!({
            "message": message,
            "locations": [{ "line": field.pos.line, "column": field.pos.column }],
            "path": path,
            "extensions": extensions,
        }));
        self.codes.push(code);
    }
}

fn scalar_name(kind: ScalarKind) -> &'static str {
    match kind {
        ScalarKind::Id => "ID",
        ScalarKind::String => "String",
        ScalarKind::Int => "Int",
        ScalarKind::Float => "Float",
        ScalarKind::Boolean => "Boolean",
        ScalarKind::Custom => "value",
    }
}

/// A whole JSON value as a node: scalars and lists become nodes, objects
/// stay whole (their selection reads them by key).
fn normalize(json: &Json) -> Node {
    match json {
        Json::Array(items) => Node::List(items.iter().map(normalize).collect()),
        Json::Object(_) => Node::Json(Box::new(json.clone())),
        scalar => Node::from_json(scalar.clone(), &super::shape::Shape::Scalar),
    }
}

/// Width of the writer's fixed-size copies: most keys and scalars of an
/// answer are shorter.
pub(super) const WINDOW: usize = 32;

/// Appends `source[start..start + len]`. A text of at most [`WINDOW`]
/// bytes with that many bytes of `source` from its start is copied as one
/// block of [`WINDOW`] bytes and the excess cut off again: a copy of known
/// size compiles to a few moves, while one of unknown size is a call to
/// `memcpy`, which costs more instructions than most keys and scalars are
/// long.
fn append(out: &mut Vec<u8>, source: &[u8], start: usize, len: usize) {
    let window = source.get(start..start + WINDOW).and_then(|window| <&[u8; WINDOW]>::try_from(window).ok());
    match window {
        Some(window) if len <= WINDOW => {
            let end = out.len() + len;
            out.extend_from_slice(window);
            out.truncate(end);
        }
        _ => out.extend_from_slice(source.get(start..start + len).unwrap_or_default()),
    }
}

/// Appends the text of `raw` (see [`Bodies::text`]).
fn append_raw(out: &mut Vec<u8>, bodies: &super::shape::Bodies, raw: super::shape::Raw) {
    append(out, bodies.body(raw.body), raw.start as usize, raw.len as usize);
}

/// Appends the string `raw` of an answer with the quotes around it in the
/// answer (a [`Node::Str`] is the text between a string's quotes): one
/// copy instead of two pushes and a copy.
fn append_string(out: &mut Vec<u8>, bodies: &super::shape::Bodies, raw: super::shape::Raw) {
    match (raw.start as usize).checked_sub(1) {
        Some(quote) => append(out, bodies.body(raw.body), quote, raw.len as usize + 2),
        None => write_quoted_raw(out, bodies, raw),
    }
}

/// Appends the text of `raw` between quotes.
fn write_quoted_raw(out: &mut Vec<u8>, bodies: &super::shape::Bodies, raw: super::shape::Raw) {
    out.push(b'"');
    append_raw(out, bodies, raw);
    out.push(b'"');
}

fn write_quoted(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Whether an integer's JSON text (digits, maybe a `-`) is a 32-bit
/// integer, as GraphQL's `Int` must be.
fn fits_i32(text: &[u8]) -> bool {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 10 {
        return false;
    }
    let magnitude = digits.iter().fold(0_i64, |value, digit| value * 10 + i64::from(digit.wrapping_sub(b'0')));
    if negative {
        magnitude <= 1 << 31
    } else {
        magnitude < 1 << 31
    }
}

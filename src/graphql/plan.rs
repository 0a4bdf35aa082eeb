//! Compile once: an operation, validated and measured, becomes a [`Plan`]
//! that execution only fills with variables.
//!
//! A plan is the operation's fields collected as the spec's CollectFields
//! does (fragments inlined once, fields of one response key merged, in the
//! order first selected), each field knowing where its value comes from: a
//! slot of its parent's backend answer, or a backend call of its own
//! ([`CallPlan`]: the connector, the arguments with defaults applied, which
//! calls are its ancestors, and the [`Shape`] its answer is read by). The
//! shapes are built from the selection, so parsing an answer keeps only the
//! keys some selected field or child call reads.
//!
//! `@skip`/`@include` with a literal are decided here; with a variable they
//! become a [`Guard`] checked per request, so a variable that flips them
//! needs no new plan. Plans are cached per (document, operation) by the
//! HTTP door; building one is bounded by `graphql.limits.max_fields`, which
//! counts fields with fragments expanded and is checked before.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_graphql::{Name, Pos};
use async_graphql_parser::types::{
    BaseType, ExecutableDocument, Field, OperationDefinition, OperationType, Selection as AstSelection, SelectionSet,
    Type,
};
use async_graphql_value::{ConstValue, Value};
use http::HeaderValue;
use serde_json::Value as Json;

use super::connector::{BodyTemplate, Expr, PathPart, RestConnector};
use super::model::{Access, FieldModel, FieldSource, ObjectModel, SchemaModel};
use super::shape::{Need, ObjectShape, Shape, ShapeBuilder};
use crate::headers::CallHeaderRules;

/// The compiled header rules of every (service, `headerRules` name) pair
/// that has any, built once per endpoint; plans take theirs from it.
pub type HeaderRuleTable = std::collections::HashMap<(String, Option<String>), Arc<CallHeaderRules>>;

/// A compiled operation.
#[derive(Debug)]
pub struct Plan {
    /// Query or mutation.
    pub kind: OperationType,
    /// The operation's variables, for coercion.
    pub variables: Vec<VariableSpec>,
    /// The root fields.
    pub root: Selection,
    /// Call slots of the root object.
    pub root_calls: usize,
    /// Every call of the plan, by [`CallPlan::id`]: its ancestors, for
    /// knowing when a batch has all its keys.
    pub ancestors: Vec<Vec<usize>>,
    /// `Cache-Control` of a successful answer (from `@cacheControl`).
    pub cache_control: HeaderValue,
    /// The cost, when no variable changes it; `None`: measured per request.
    pub cost: Option<u64>,
    /// Whether a root field is `__schema` or `__type` (answered by
    /// async-graphql's introspection).
    pub introspects: bool,
    /// Size of the last answer, so the next one's buffer is allocated once.
    pub answer_size: AtomicUsize,
}

/// A variable definition.
#[derive(Debug, Clone)]
pub struct VariableSpec {
    /// Name without `$`.
    pub name: Name,
    /// Declared type.
    pub ty: Type,
    /// Default value.
    pub default: Option<ConstValue>,
}

/// Fields of one object, in response order.
#[derive(Debug, Default)]
pub struct Selection {
    /// Collected fields, in the order first selected.
    pub fields: Vec<FieldPlan>,
    /// Whether some field has a variable `@skip`/`@include`: then the order
    /// is decided per request (the first *included* occurrence counts).
    pub conditional: bool,
    /// The fields that make calls or hold fields that may: all the
    /// executor visits of each object (a list of 6,000 objects with six
    /// scalars and two calls visits two fields per object).
    pub with_calls: Vec<usize>,
}

/// One response key of a selection.
#[derive(Debug)]
pub struct FieldPlan {
    /// The response key (alias or name).
    pub key: Box<str>,
    /// The key as the writer copies it.
    pub key_json: JsonKey,
    /// The field's name, for messages.
    pub name: Box<str>,
    /// Where the field is in the document.
    pub pos: Pos,
    /// When the field is included, and at which position.
    pub guard: Guard,
    /// The declared type.
    pub ty: OutputType,
    /// Who may read the field; `None`: anyone.
    pub access: Option<Access>,
    /// Where the value comes from.
    pub source: ValueSource,
    /// The fields of an object-typed field.
    pub selection: Option<Selection>,
}

/// Where a field's value comes from.
#[derive(Debug)]
pub enum ValueSource {
    /// `__typename`: the object's type name.
    Typename(Box<str>),
    /// The parent object's key in this slot (named for objects kept whole).
    Key {
        /// The slot in the parent's shape.
        slot: usize,
        /// The JSON key.
        key: Box<str>,
    },
    /// A backend call.
    Call(Box<CallPlan>),
    /// `__schema` / `__type`.
    Introspection,
}

/// One field's backend call.
#[derive(Debug)]
pub struct CallPlan {
    /// Index among the plan's calls.
    pub id: usize,
    /// Ordinal of the call's slot in the parent object, counted from the
    /// object's last slot.
    pub call_slot: usize,
    /// The field's connector.
    pub connector: Arc<RestConnector>,
    /// The arguments.
    pub args: Args,
    /// Keys of the parent the connector reads (`$parent.x`).
    pub parent_reads: Vec<ParentRead>,
    /// How the whole answer is read.
    pub answer: Shape,
    /// How the field's value (at the connector's `selection`) is read.
    pub value: Shape,
    /// For a batched call: the slot of the match key in each item.
    pub match_slot: Option<usize>,
    /// For a batched call whose key is one parent key (`$parent.id`, the
    /// usual case): that key's slot in the parent, so that gathering the
    /// key reads it without evaluating anything.
    pub batch_key_slot: Option<usize>,
    /// The call's header rules (its service's, then its field's own).
    pub headers: Option<Arc<CallHeaderRules>>,
}

/// A parent key a connector reads.
#[derive(Debug, Clone)]
pub struct ParentRead {
    /// The JSON key.
    pub key: Box<str>,
    /// Its slot in the parent's shape.
    pub slot: usize,
    /// Keys read inside it (`$parent.profile.level`).
    pub nested: Vec<ParentRead>,
}

/// A field's arguments as the connector reads them (`$args`).
#[derive(Debug)]
pub enum Args {
    /// Known at compile time (defaults applied).
    Fixed(Arc<Json>),
    /// With variables: filled per request.
    WithVariables {
        /// The given arguments.
        given: Vec<(Name, Value)>,
        /// Declared defaults.
        defaults: Vec<(Name, ConstValue)>,
    },
}

impl Args {
    /// The arguments for one request.
    pub fn resolve(&self, variables: &async_graphql::Variables) -> Arc<Json> {
        match self {
            Args::Fixed(json) => Arc::clone(json),
            Args::WithVariables { given, defaults } => {
                let mut args = serde_json::Map::new();
                for (name, value) in defaults {
                    args.insert(name.to_string(), value.clone().into_json().unwrap_or_default());
                }
                for (name, value) in given {
                    // An absent variable leaves the argument to its default.
                    if let Value::Variable(variable) = value {
                        match variables.get(variable) {
                            Some(value) => {
                                args.insert(name.to_string(), value.clone().into_json().unwrap_or_default());
                            }
                            None => continue,
                        }
                        continue;
                    }
                    let value = value
                        .clone()
                        .into_const_with(|variable| Ok::<_, ()>(variables.get(&variable).cloned().unwrap_or_default()))
                        .unwrap_or_default();
                    args.insert(name.to_string(), value.into_json().unwrap_or_default());
                }
                Arc::new(Json::Object(args))
            }
        }
    }
}

/// When a field is included: any one of its occurrences' conditions holds.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Each occurrence: its position among the selection's occurrences and
    /// the `(variable, value that includes)` pairs that must all hold.
    pub occurrences: Vec<(u32, Vec<(usize, bool)>)>,
}

impl Guard {
    /// The position of the first included occurrence, if any; `flags` are
    /// the boolean variables by index.
    pub fn first_included(&self, flags: &[bool]) -> Option<u32> {
        self.occurrences
            .iter()
            .find(|(_, conditions)| {
                conditions.iter().all(|(variable, wanted)| flags.get(*variable).copied().unwrap_or(false) == *wanted)
            })
            .map(|(order, _)| *order)
    }

    fn is_unconditional(&self) -> bool {
        self.occurrences.iter().any(|(_, conditions)| conditions.is_empty())
    }
}

/// A field's declared type, as the writer needs it.
#[derive(Debug, Clone)]
pub struct OutputType {
    /// Whether null is allowed.
    pub nullable: bool,
    /// What the value is.
    pub kind: OutputKind,
}

/// The named or list part of an [`OutputType`].
#[derive(Debug, Clone)]
pub enum OutputKind {
    /// A list.
    List(Box<OutputType>),
    /// An object type (its fields are the field's selection).
    Object,
    /// An enum with its values.
    Enum(Arc<[Box<str>]>),
    /// A built-in or custom scalar.
    Scalar(ScalarKind),
}

/// Scalars the writer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// `ID`: a string or integer, written as a string.
    Id,
    /// `String`.
    String,
    /// `Int`: 32-bit.
    Int,
    /// `Float`.
    Float,
    /// `Boolean`.
    Boolean,
    /// Anything else: passed through.
    Custom,
}

impl OutputType {
    fn of(model: &SchemaModel, ty: &Type) -> Self {
        let kind = match &ty.base {
            BaseType::List(inner) => OutputKind::List(Box::new(Self::of(model, inner))),
            BaseType::Named(name) => match name.as_str() {
                "ID" => OutputKind::Scalar(ScalarKind::Id),
                "String" => OutputKind::Scalar(ScalarKind::String),
                "Int" => OutputKind::Scalar(ScalarKind::Int),
                "Float" => OutputKind::Scalar(ScalarKind::Float),
                "Boolean" => OutputKind::Scalar(ScalarKind::Boolean),
                other if model.objects.contains_key(other) => OutputKind::Object,
                other => match model.enums.get(other) {
                    Some(enumeration) => {
                        OutputKind::Enum(enumeration.values.iter().map(|v| v.as_str().into()).collect())
                    }
                    None => OutputKind::Scalar(ScalarKind::Custom),
                },
            },
        };
        Self { nullable: ty.nullable, kind }
    }

    /// What a reader of this type needs of the JSON, with `object` the need
    /// of the (innermost) object.
    fn need(&self, object: Need) -> Need {
        match &self.kind {
            OutputKind::List(inner) => Need::List(Box::new(inner.need(object))),
            OutputKind::Object => object,
            OutputKind::Scalar(ScalarKind::Custom) => Need::Any,
            OutputKind::Enum(_) | OutputKind::Scalar(_) => Need::Scalar,
        }
    }

    /// How many lists wrap the named type.
    fn lists(&self) -> usize {
        match &self.kind {
            OutputKind::List(inner) => 1 + inner.lists(),
            _ => 0,
        }
    }
}

/// Why an operation has no plan (validation and limits run before, so
/// these are gaps between the model and the document).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A field the model does not have.
    #[error("type {object} has no field {field}")]
    UnknownField {
        /// The type.
        object: String,
        /// The field.
        field: String,
    },
    /// A type the model does not have.
    #[error("the schema has no object type {0}")]
    UnknownType(String),
}

/// Compiles `operation` of `document`; `cache_control` is its answer's
/// `Cache-Control`, measured by the caller.
pub fn compile(
    model: &SchemaModel,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    root_type: &str,
    cache_control: HeaderValue,
    cost: u64,
    header_rules: &HeaderRuleTable,
) -> Result<Plan, PlanError> {
    let variables: Vec<VariableSpec> = operation
        .variable_definitions
        .iter()
        .map(|definition| VariableSpec {
            name: definition.node.name.node.clone(),
            ty: definition.node.var_type.node.clone(),
            default: definition.node.default_value.as_ref().map(|value| value.node.clone()),
        })
        .collect();
    let mut compiler = Compiler {
        model,
        header_rules,
        document,
        variables: &variables,
        calls: 0,
        ancestors: Vec::new(),
        cost_uses_variables: false,
    };
    let root_object = model.objects.get(root_type).ok_or_else(|| PlanError::UnknownType(root_type.to_owned()))?;
    let mut root_shape = ShapeBuilder::default();
    let occurrences = [(&operation.selection_set.node, Vec::new())];
    let root = compiler.selection(root_object, &occurrences, &mut root_shape, &[])?;
    let introspects = root.fields.iter().any(|field| matches!(field.source, ValueSource::Introspection));
    let root_calls = root_shape.build().call_slots;
    let (ancestors, cost_uses_variables) = (compiler.ancestors, compiler.cost_uses_variables);
    Ok(Plan {
        kind: operation.ty,
        variables,
        root,
        root_calls,
        ancestors,
        cache_control,
        cost: (!cost_uses_variables).then_some(cost),
        introspects,
        answer_size: AtomicUsize::new(512),
    })
}

struct Compiler<'a> {
    model: &'a SchemaModel,
    header_rules: &'a HeaderRuleTable,
    document: &'a ExecutableDocument,
    variables: &'a [VariableSpec],
    calls: usize,
    ancestors: Vec<Vec<usize>>,
    cost_uses_variables: bool,
}

/// One occurrence of a response key: the AST field and the conditions of
/// the fragments it sits in.
struct Occurrence<'a> {
    order: u32,
    field: &'a Field,
    conditions: Vec<(usize, bool)>,
}

impl<'a> Compiler<'a> {
    /// The selection of `object` from the selection sets `sets` (each with
    /// the conditions it is under), reading its JSON through `shape`.
    fn selection(
        &mut self,
        object: &'a ObjectModel,
        sets: &[(&'a SelectionSet, Vec<(usize, bool)>)],
        shape: &mut ShapeBuilder,
        ancestors: &[usize],
    ) -> Result<Selection, PlanError> {
        let mut grouped: indexmap::IndexMap<&'a str, Vec<Occurrence<'a>>> = indexmap::IndexMap::new();
        let mut order = 0;
        for (set, conditions) in sets {
            self.collect(set, conditions.clone(), &mut grouped, &mut order);
        }
        let mut selection = Selection::default();
        for (key, occurrences) in grouped {
            let guard = Guard {
                occurrences: occurrences
                    .iter()
                    .map(|occurrence| (occurrence.order, occurrence.conditions.clone()))
                    .collect(),
            };
            selection.conditional |= !guard.is_unconditional();
            let first = occurrences[0].field;
            let name = first.name.node.as_str();
            let pos = occurrences[0].field.name.pos;
            let plan = match name {
                "__typename" => FieldPlan {
                    key: key.into(),
                    key_json: JsonKey::new(key),
                    name: name.into(),
                    pos,
                    guard,
                    ty: OutputType { nullable: false, kind: OutputKind::Scalar(ScalarKind::String) },
                    access: None,
                    source: ValueSource::Typename(object.name.as_str().into()),
                    selection: None,
                },
                "__schema" | "__type" => FieldPlan {
                    key: key.into(),
                    key_json: JsonKey::new(key),
                    name: name.into(),
                    pos,
                    guard,
                    ty: OutputType { nullable: true, kind: OutputKind::Scalar(ScalarKind::Custom) },
                    access: None,
                    source: ValueSource::Introspection,
                    selection: None,
                },
                _ => {
                    let definition = object.field(name).ok_or_else(|| PlanError::UnknownField {
                        object: object.name.clone(),
                        field: name.to_owned(),
                    })?;
                    self.field(definition, key, guard, &occurrences, shape, ancestors)?
                }
            };
            let makes_calls = match &plan.source {
                ValueSource::Call(_) => true,
                ValueSource::Key { .. } => plan.selection.as_ref().is_some_and(|child| !child.with_calls.is_empty()),
                ValueSource::Typename(_) | ValueSource::Introspection => false,
            };
            if makes_calls {
                selection.with_calls.push(selection.fields.len());
            }
            selection.fields.push(plan);
        }
        Ok(selection)
    }

    /// CollectFields: the fields of `set` and of the fragments it spreads,
    /// grouped by response key in the order first seen.
    fn collect(
        &self,
        set: &'a SelectionSet,
        conditions: Vec<(usize, bool)>,
        grouped: &mut indexmap::IndexMap<&'a str, Vec<Occurrence<'a>>>,
        order: &mut u32,
    ) {
        for item in &set.items {
            let (directives, nested) = match &item.node {
                AstSelection::Field(field) => (&field.node.directives, None),
                AstSelection::FragmentSpread(spread) => (
                    &spread.node.directives,
                    self.document.fragments.get(&spread.node.fragment_name.node).map(|f| &f.node.selection_set.node),
                ),
                AstSelection::InlineFragment(fragment) => {
                    (&fragment.node.directives, Some(&fragment.node.selection_set.node))
                }
            };
            let Some(mut conditions) = self.conditions(directives, &conditions) else { continue };
            match (&item.node, nested) {
                (AstSelection::Field(field), _) => {
                    let field = &field.node;
                    let key = field.alias.as_ref().unwrap_or(&field.name).node.as_str();
                    conditions.sort_unstable();
                    conditions.dedup();
                    grouped.entry(key).or_default().push(Occurrence { order: *order, field, conditions });
                    *order += 1;
                }
                (_, Some(nested)) => self.collect(nested, conditions, grouped, order),
                (_, None) => {}
            }
        }
    }

    /// The conditions under which an item with `directives` is included,
    /// added to `outer`; `None` when a literal excludes it.
    fn conditions(
        &self,
        directives: &[async_graphql::Positioned<async_graphql_parser::types::Directive>],
        outer: &[(usize, bool)],
    ) -> Option<Vec<(usize, bool)>> {
        let mut conditions = outer.to_vec();
        for directive in directives {
            let skip = match directive.node.name.node.as_str() {
                "skip" => true,
                "include" => false,
                _ => continue,
            };
            match directive.node.get_argument("if").map(|value| &value.node) {
                Some(Value::Boolean(flag)) if *flag == skip => return None,
                Some(Value::Variable(name)) => {
                    let index = self.variables.iter().position(|variable| &variable.name == name)?;
                    // `@skip(if: $v)` includes when `$v` is false.
                    conditions.push((index, !skip));
                }
                _ => {}
            }
        }
        Some(conditions)
    }

    #[allow(clippy::too_many_arguments)]
    fn field(
        &mut self,
        definition: &'a FieldModel,
        key: &str,
        guard: Guard,
        occurrences: &[Occurrence<'a>],
        shape: &mut ShapeBuilder,
        ancestors: &[usize],
    ) -> Result<FieldPlan, PlanError> {
        let ty = OutputType::of(self.model, &definition.ty);
        let first = occurrences[0].field;
        self.note_slicing_variables(definition, first);
        let child_object = named_object(self.model, &definition.ty);
        let access = (!definition.access.is_open()).then(|| definition.access.clone());
        let child_sets: Vec<(&'a SelectionSet, Vec<(usize, bool)>)> = occurrences
            .iter()
            .map(|occurrence| (&occurrence.field.selection_set.node, occurrence.conditions.clone()))
            .collect();
        let (source, selection) = match &definition.source {
            FieldSource::Json { key: json_key } => {
                let slot = shape.require(json_key, ty.need(Need::Object(ShapeBuilder::default())));
                let selection = match child_object {
                    Some(child) => {
                        let child_shape = shape.object_at(slot, ty.lists());
                        Some(self.selection(child, &child_sets, child_shape, ancestors)?)
                    }
                    None => None,
                };
                (ValueSource::Key { slot, key: json_key.as_str().into() }, selection)
            }
            FieldSource::Rest(connector) => {
                let id = self.calls;
                self.calls += 1;
                self.ancestors.push(ancestors.to_vec());
                let mut own_ancestors = ancestors.to_vec();
                own_ancestors.push(id);
                let parent_reads = parent_reads(connector, shape);
                let batch_key_slot = match connector.batch.as_ref().map(|batch| &batch.key) {
                    Some(Expr::Parent(path)) if path.len() == 1 => {
                        parent_reads.iter().find(|read| *read.key == *path[0]).map(|read| read.slot)
                    }
                    _ => None,
                };
                let call_slot = shape.add_call();
                let mut value_builder = ShapeBuilder::default();
                let (selection, match_slot) = match child_object {
                    Some(child) => {
                        let item = &mut value_builder;
                        let match_slot =
                            connector.batch.as_ref().map(|batch| item.require(&batch.match_key, Need::Scalar));
                        (Some(self.selection(child, &child_sets, item, &own_ancestors)?), match_slot)
                    }
                    None => (None, None),
                };
                let item = Need::Object(value_builder);
                // A batched call answers a list of the field's objects.
                let value_need = if connector.batch.is_some() { Need::List(Box::new(item)) } else { ty.need(item) };
                let (answer, value) = answer_shapes(&connector.selection, value_need);
                let call = CallPlan {
                    id,
                    call_slot,
                    connector: Arc::clone(connector),
                    args: self.args(definition, first),
                    parent_reads,
                    answer,
                    value,
                    match_slot,
                    batch_key_slot,
                    headers: self
                        .header_rules
                        .get(&(connector.service.clone(), connector.header_rules.clone()))
                        .cloned(),
                };
                (ValueSource::Call(Box::new(call)), selection)
            }
        };
        Ok(FieldPlan {
            key: key.into(),
            key_json: JsonKey::new(key),
            name: definition.name.as_str().into(),
            pos: first.name.pos,
            guard,
            ty,
            access,
            source,
            selection,
        })
    }

    fn args(&self, definition: &FieldModel, field: &Field) -> Args {
        let defaults: Vec<(Name, ConstValue)> = definition
            .args
            .iter()
            .filter_map(|arg| arg.default.clone().map(|value| (Name::new(&arg.name), value)))
            .collect();
        let given: Vec<(Name, Value)> =
            field.arguments.iter().map(|(name, value)| (name.node.clone(), value.node.clone())).collect();
        let constant: Option<Vec<(Name, ConstValue)>> =
            given.iter().map(|(name, value)| value.clone().into_const().map(|value| (name.clone(), value))).collect();
        match constant {
            Some(constant) => {
                let mut args = serde_json::Map::new();
                for (name, value) in defaults.into_iter().chain(constant) {
                    args.insert(name.to_string(), value.into_json().unwrap_or_default());
                }
                Args::Fixed(Arc::new(Json::Object(args)))
            }
            None => Args::WithVariables { given, defaults },
        }
    }

    /// A slicing argument given by a variable makes the cost a matter of
    /// each request's variables.
    fn note_slicing_variables(&mut self, definition: &FieldModel, field: &Field) {
        let Some(list_size) = &definition.list_size else { return };
        let by_variable = field.arguments.iter().any(|(name, value)| {
            list_size.slicing_arguments.iter().any(|slicing| slicing == name.node.as_str())
                && matches!(value.node, Value::Variable(_))
        });
        self.cost_uses_variables |= by_variable;
    }
}

/// A response key as JSON with its colon (`"key":`), stored once after a
/// comma and before at least `write::WINDOW` (32) bytes of padding, for
/// the writer's fixed-size copies: with the comma for a member after the
/// first, from the second byte for the first.
#[derive(Debug)]
pub struct JsonKey {
    /// `,"key":` and the padding.
    pub window: Box<[u8]>,
    /// The length of `"key":`.
    pub len: usize,
}

impl JsonKey {
    fn new(key: &str) -> Self {
        let mut window = vec![b','];
        window.extend_from_slice(&serde_json::to_vec(key).unwrap_or_default());
        window.push(b':');
        let len = window.len() - 1;
        window.resize(window.len() + super::write::WINDOW, b' ');
        Self { window: window.into_boxed_slice(), len }
    }
}

fn named_object<'m>(model: &'m SchemaModel, ty: &Type) -> Option<&'m ObjectModel> {
    match &ty.base {
        BaseType::Named(name) => model.objects.get(name.as_str()),
        BaseType::List(inner) => named_object(model, inner),
    }
}

/// The shapes of a call's whole answer and of its value at `selection`.
/// A selection that indexes into a list is read whole.
fn answer_shapes(selection: &[String], value: Need) -> (Shape, Shape) {
    let value = wrap(value);
    if selection.iter().any(|key| key.parse::<usize>().is_ok()) {
        return (Shape::Any, value);
    }
    let mut answer = value.clone();
    for key in selection.iter().rev() {
        answer = Shape::Object(Arc::new(ObjectShape { keys: vec![(key.as_str().into(), answer)], call_slots: 0 }));
    }
    (answer, value)
}

fn wrap(need: Need) -> Shape {
    let mut builder = ShapeBuilder::default();
    let slot = builder.require("value", need);
    let mut built = builder.build();
    built.keys.swap_remove(slot).1
}

/// The parent keys a connector reads, added to the parent's shape.
fn parent_reads(connector: &RestConnector, shape: &mut ShapeBuilder) -> Vec<ParentRead> {
    let mut exprs: Vec<&Expr> = Vec::new();
    for part in &connector.path {
        if let PathPart::Value(expr) = part {
            exprs.push(expr);
        }
    }
    exprs.extend(connector.query.iter().map(|(_, expr)| expr));
    exprs.extend(connector.headers.iter().map(|(_, expr)| expr));
    if let Some(batch) = &connector.batch {
        exprs.push(&batch.key);
    }
    fn body_exprs<'e>(body: &'e BodyTemplate, into: &mut Vec<&'e Expr>) {
        match body {
            BodyTemplate::Value(expr) => into.push(expr),
            BodyTemplate::Object(entries) => entries.iter().for_each(|(_, value)| body_exprs(value, into)),
        }
    }
    if let Some(body) = &connector.body {
        body_exprs(body, &mut exprs);
    }
    let mut reads: Vec<ParentRead> = Vec::new();
    for expr in exprs {
        if let Expr::Parent(path) = expr {
            add_read(&mut reads, path, shape);
        }
    }
    reads
}

fn add_read(reads: &mut Vec<ParentRead>, path: &[String], shape: &mut ShapeBuilder) {
    let Some((key, rest)) = path.split_first() else { return };
    let slot = shape.require(key, if rest.is_empty() { Need::Scalar } else { Need::Object(ShapeBuilder::default()) });
    let index = match reads.iter().position(|read| read.slot == slot) {
        Some(index) => index,
        None => {
            reads.push(ParentRead { key: key.as_str().into(), slot, nested: Vec::new() });
            reads.len() - 1
        }
    };
    if !rest.is_empty() {
        let inner = shape.object_at(slot, 0);
        add_read(&mut reads[index].nested, rest, inner);
    }
}

impl ParentRead {
    /// The JSON `$parent` expressions see, from the parent's slots.
    pub fn json(reads: &[ParentRead], slots: &[super::shape::Node], bodies: &super::shape::Bodies) -> Json {
        let mut object = serde_json::Map::with_capacity(reads.len());
        for read in reads {
            let value = match (slots.get(read.slot), read.nested.is_empty()) {
                (Some(node), true) => node.to_json(bodies),
                (Some(super::shape::Node::Object(inner)), false) => ParentRead::json(&read.nested, inner, bodies),
                _ => Json::Null,
            };
            object.insert(read.key.to_string(), value);
        }
        Json::Object(object)
    }
}

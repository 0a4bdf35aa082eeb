//! Protection against abusive documents, checked before any backend is
//! called: size and token count before parsing, then, on the parsed
//! document, fragment cycles, the number of fields once fragments are
//! expanded, depth, introspection depth, aliases, root fields and cost.
//!
//! Every measure is taken in one pass that is linear in the document's
//! size: each fragment definition is measured once (in dependency order,
//! without recursion through spreads) into a `Summary`, and a spread adds
//! its fragment's summary instead of walking it again. A document whose 30
//! fragments each spread the next one twice (2^30 fields once expanded) is
//! therefore measured in microseconds and refused, and every later walk
//! (async-graphql's own depth check and validation, execution, the
//! `Cache-Control` computation) only ever sees documents whose expansion is
//! bounded. `@skip`/`@include` are ignored here: counting both branches is
//! an upper bound, whatever the variables say.
//!
//! Introspection's own nesting (`ofType` chains nest 9 levels in graphql-js's
//! `getIntrospectionQuery()`) does not count against `max_depth`; it is
//! bounded instead as graphql-js's `MaxIntrospectionDepthRule` does, by how
//! deeply the list fields `fields`, `interfaces`, `possibleTypes` and
//! `inputFields` nest, and by `max_fields` and the parser's nesting limit.
//!
//! Cost follows IBM's GraphQL cost directives: a field costs its `@cost`
//! weight (default 1 for fields that call a backend or return objects, 0 for
//! plain scalars) plus, for lists, the list size (its slicing argument's
//! value, else `@listSize(assumedSize:)`, else 10) times the cost of each
//! item: its type's weight (default 1 for objects) plus what is selected
//! under it.

use std::collections::{HashMap, HashSet};

use async_graphql::Value as ConstValue;
use async_graphql::Variables;
use async_graphql_parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet, Type,
};

use super::error::GraphqlCode;
use super::model::{named_type, FieldModel, FieldSource, ObjectModel, SchemaModel};

/// List size assumed when nothing in the schema says otherwise.
const DEFAULT_LIST_SIZE: u64 = 10;

/// Introspection list fields whose nesting is bounded, as in graphql-js's
/// `MaxIntrospectionDepthRule`.
const INTROSPECTION_LISTS: [&str; 4] = ["fields", "interfaces", "possibleTypes", "inputFields"];

/// Deepest nesting of `INTROSPECTION_LISTS` allowed (graphql-js refuses
/// the third level); the standard introspection query needs one.
pub const MAX_INTROSPECTION_LIST_DEPTH: usize = 2;

/// The limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_document_size: usize,
    /// Most tokens.
    pub max_tokens: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Most aliases.
    pub max_aliases: usize,
    /// Most root fields.
    pub max_root_fields: usize,
    /// Highest cost.
    pub max_cost: u64,
    /// Most fields in the document once fragments are expanded.
    pub max_fields: usize,
}

/// A limit that a document exceeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Document too large.
    #[error("the document is {size} bytes; the limit is {limit}")]
    DocumentTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many tokens.
    #[error("the document has more than {limit} tokens")]
    TooManyTokens {
        /// The limit.
        limit: usize,
    },
    /// Fragments that spread each other: the document could never be
    /// expanded (validation refuses it too, but only after this check).
    #[error("fragment {name} spreads itself, directly or through other fragments")]
    FragmentCycle {
        /// A fragment on the cycle.
        name: String,
    },
    /// Too many fields once fragments are expanded.
    #[error("the document selects {count} fields once its fragments are expanded; the limit is {limit}")]
    TooManyFields {
        /// How many (saturating at `u64::MAX`).
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// Nested too deeply.
    #[error("the operation is nested {depth} levels deep; the limit is {limit}")]
    TooDeep {
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// Introspection lists nested too deeply.
    #[error(
        "the introspection nests fields/interfaces/possibleTypes/inputFields {depth} levels deep; the limit is {limit}"
    )]
    IntrospectionTooDeep {
        /// Its nesting.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many aliases.
    #[error("the operation uses {count} aliases; the limit is {limit}")]
    TooManyAliases {
        /// How many.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// Too many root fields.
    #[error("the operation selects {count} root fields; the limit is {limit}")]
    TooManyRootFields {
        /// How many.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// Too expensive.
    #[error("the operation costs {cost}; the limit is {limit}")]
    TooExpensive {
        /// Its cost.
        cost: u64,
        /// The limit.
        limit: u64,
    },
}

impl LimitError {
    /// The `extensions.code` for this error.
    pub fn code(&self) -> GraphqlCode {
        match self {
            Self::TooExpensive { .. } => GraphqlCode::CostLimitExceeded,
            Self::FragmentCycle { .. } => GraphqlCode::GraphqlValidationFailed,
            _ => GraphqlCode::QueryLimitExceeded,
        }
    }
}

/// Why [`check_document`] refused a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// A limit is exceeded.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The text is not a GraphQL document.
    #[error("{0}")]
    Parse(String),
    /// The operation to run cannot be chosen (none named so, several and
    /// none named, or a root type the schema lacks).
    #[error("{0}")]
    Operation(String),
}

impl DocumentError {
    /// The `extensions.code` for this error.
    pub fn code(&self) -> GraphqlCode {
        match self {
            Self::Limit(error) => error.code(),
            Self::Parse(_) => GraphqlCode::GraphqlParseFailed,
            Self::Operation(_) => GraphqlCode::GraphqlValidationFailed,
        }
    }
}

/// Every check that runs before execution, from raw text to the measured
/// operation: size and tokens, parsing, choosing the operation, then
/// [`check_operation`]. Pure, and linear in the size of `query` whatever
/// its fragments do; the HTTP door runs the same steps with a parse cache
/// in between.
pub fn check_document(
    model: &SchemaModel,
    query: &str,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &Limits,
) -> Result<OperationShape, DocumentError> {
    check_text(query, limits)?;
    let document = parse(query)?;
    let operation = select_operation(&document, operation_name).map_err(DocumentError::Operation)?;
    let root_type = root_type(model, operation.ty)
        .ok_or_else(|| DocumentError::Operation("this schema has no root type for the operation".to_owned()))?;
    Ok(check_operation(model, &document, operation, root_type, variables, limits)?)
}

/// Parses a document; the error names the position.
pub fn parse(query: &str) -> Result<ExecutableDocument, DocumentError> {
    async_graphql_parser::parse_query(query).map_err(|error| {
        DocumentError::Parse(match error.positions().next() {
            Some(position) => format!("{error} (line {}, column {})", position.line, position.column),
            None => error.to_string(),
        })
    })
}

/// The operation a request asks for: the only one, or the one named.
pub fn select_operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Result<&'a OperationDefinition, String> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Ok(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .get(name)
            .map(|operation| &operation.node)
            .ok_or_else(|| format!("the document has no operation named {name:?}")),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node).ok_or_else(|| "no operation".to_owned())
        }
        (DocumentOperations::Multiple(_), None) => {
            Err("the document has several operations; name one with operationName".to_owned())
        }
    }
}

/// The schema's root type for an operation type, if it has one.
pub fn root_type(model: &SchemaModel, operation: OperationType) -> Option<&str> {
    match operation {
        OperationType::Query => Some(model.query.as_str()),
        OperationType::Mutation => model.mutation.as_deref(),
        OperationType::Subscription => None,
    }
}

/// Checks the raw text before it is parsed.
pub fn check_text(query: &str, limits: &Limits) -> Result<(), LimitError> {
    if query.len() > limits.max_document_size {
        return Err(LimitError::DocumentTooLarge { size: query.len(), limit: limits.max_document_size });
    }
    if count_tokens(query, limits.max_tokens.saturating_add(1)) > limits.max_tokens {
        return Err(LimitError::TooManyTokens { limit: limits.max_tokens });
    }
    Ok(())
}

/// Counts GraphQL lexical tokens, stopping at `stop_at`. Strings, names and
/// numbers are one token each; commas, whitespace and comments are ignored.
fn count_tokens(query: &str, stop_at: usize) -> usize {
    let bytes = query.as_bytes();
    let mut index = 0;
    let mut tokens = 0;
    while index < bytes.len() && tokens < stop_at {
        match bytes[index] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => index += 1,
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'"' => {
                tokens += 1;
                let block = bytes[index..].starts_with(b"\"\"\"");
                index += if block { 3 } else { 1 };
                while index < bytes.len() {
                    if block && bytes[index..].starts_with(b"\"\"\"") {
                        index += 3;
                        break;
                    }
                    if !block && bytes[index] == b'"' {
                        index += 1;
                        break;
                    }
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            byte if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' => {
                tokens += 1;
                while index < bytes.len()
                    && (bytes[index].is_ascii_alphanumeric() || matches!(bytes[index], b'_' | b'.' | b'-' | b'+'))
                {
                    index += 1;
                }
            }
            b'.' if bytes[index..].starts_with(b"...") => {
                tokens += 1;
                index += 3;
            }
            _ => {
                tokens += 1;
                index += 1;
            }
        }
    }
    tokens
}

/// Measures of one operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OperationShape {
    /// Deepest field nesting (root fields are depth 1; fields inside
    /// introspection do not count).
    pub depth: usize,
    /// Aliased fields, once fragments are expanded.
    pub aliases: u64,
    /// Root fields, once fragments are expanded.
    pub root_fields: u64,
    /// Cost.
    pub cost: u64,
    /// Fields, once fragments are expanded.
    pub fields: u64,
    /// Deepest nesting of introspection's list fields.
    pub introspection_depth: usize,
}

/// Measures `operation` (and the document's other operations, which
/// async-graphql's checks walk too) against the schema and checks the
/// limits. Linear in the document's size.
pub fn check_operation(
    model: &SchemaModel,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    root_type: &str,
    variables: &Variables,
    limits: &Limits,
) -> Result<OperationShape, LimitError> {
    let measurer = Measurer::new(model, document, variables)?;
    let summary = measurer.set(&operation.selection_set.node, measurer.context_of(root_type));
    let mut document_fields = summary.fields;
    for (_, other) in document.operations.iter() {
        if !std::ptr::eq(&other.node, operation) {
            let context =
                self::root_type(model, other.node.ty).map_or(Context::Unknown, |name| measurer.context_of(name));
            document_fields =
                document_fields.saturating_add(measurer.set(&other.node.selection_set.node, context).fields);
        }
    }
    let shape = OperationShape {
        depth: summary.depth,
        aliases: summary.aliases,
        root_fields: summary.top_fields,
        cost: summary.cost,
        fields: summary.fields,
        introspection_depth: summary.introspection_lists,
    };
    if document_fields > as_u64(limits.max_fields) {
        return Err(LimitError::TooManyFields { count: document_fields, limit: limits.max_fields });
    }
    if shape.depth > limits.max_depth {
        return Err(LimitError::TooDeep { depth: shape.depth, limit: limits.max_depth });
    }
    if shape.introspection_depth > MAX_INTROSPECTION_LIST_DEPTH {
        return Err(LimitError::IntrospectionTooDeep {
            depth: shape.introspection_depth,
            limit: MAX_INTROSPECTION_LIST_DEPTH,
        });
    }
    if shape.aliases > as_u64(limits.max_aliases) {
        return Err(LimitError::TooManyAliases { count: shape.aliases, limit: limits.max_aliases });
    }
    if shape.root_fields > as_u64(limits.max_root_fields) {
        return Err(LimitError::TooManyRootFields { count: shape.root_fields, limit: limits.max_root_fields });
    }
    if shape.cost > limits.max_cost {
        return Err(LimitError::TooExpensive { cost: shape.cost, limit: limits.max_cost });
    }
    Ok(shape)
}

fn as_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// What a selection set contributes once its fragments are expanded; a
/// fragment's summary is computed once and added at each of its spreads.
/// Counts saturate, so a fan-out of 2^64 and more is still just too many.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Summary {
    /// Fields at every level.
    fields: u64,
    /// Aliased fields at every level.
    aliases: u64,
    /// Fields at this set's own level (root fields, for an operation).
    top_fields: u64,
    /// Deepest counted field, relative to this set (its fields are 1).
    depth: usize,
    /// Cost of the set.
    cost: u64,
    /// Deepest nesting of introspection list fields.
    introspection_lists: usize,
}

impl Summary {
    /// Adds a sibling selection (field or fragment) at the same level.
    fn add(&mut self, other: &Summary) {
        self.fields = self.fields.saturating_add(other.fields);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.top_fields = self.top_fields.saturating_add(other.top_fields);
        self.depth = self.depth.max(other.depth);
        self.cost = self.cost.saturating_add(other.cost);
        self.introspection_lists = self.introspection_lists.max(other.introspection_lists);
    }

    /// A field over its children's summary.
    fn field(field: &Field, children: &Summary, counts_depth: bool, cost: u64, introspection_list: bool) -> Summary {
        Summary {
            fields: children.fields.saturating_add(1),
            aliases: children.aliases.saturating_add(u64::from(field.alias.is_some())),
            top_fields: 1,
            depth: children.depth + usize::from(counts_depth),
            cost,
            introspection_lists: children.introspection_lists + usize::from(introspection_list),
        }
    }
}

/// The type a selection set is read against.
#[derive(Debug, Clone, Copy)]
enum Context<'a> {
    /// An object of the schema.
    Object(&'a ObjectModel),
    /// One of introspection's `__` types.
    Introspection,
    /// A type the model does not know: validation decides about it.
    Unknown,
}

struct Measurer<'a> {
    model: &'a SchemaModel,
    variables: &'a Variables,
    /// Every fragment definition's summary, each computed once.
    fragments: HashMap<&'a str, Summary>,
}

impl<'a> Measurer<'a> {
    /// Measures every fragment definition once, dependencies first. The
    /// walk through spreads uses an explicit stack, so a long chain of
    /// fragments cannot exhaust the thread's stack; a spread back to a
    /// fragment still being measured is a cycle.
    fn new(
        model: &'a SchemaModel,
        document: &'a ExecutableDocument,
        variables: &'a Variables,
    ) -> Result<Self, LimitError> {
        let mut measurer = Measurer { model, variables, fragments: HashMap::with_capacity(document.fragments.len()) };
        let mut in_progress: HashSet<&str> = HashSet::new();
        for start in document.fragments.keys() {
            if measurer.fragments.contains_key(start.as_str()) {
                continue;
            }
            let mut stack: Vec<(&str, Vec<&str>, usize)> = Vec::new();
            let Some(definition) = document.fragments.get(start) else { continue };
            stack.push((start.as_str(), spreads_in(&definition.node.selection_set.node), 0));
            in_progress.insert(start.as_str());
            while let Some((name, spreads, next)) = stack.last_mut() {
                if let Some(&spread) = spreads.get(*next) {
                    *next += 1;
                    if measurer.fragments.contains_key(spread) {
                        continue;
                    }
                    if in_progress.contains(spread) {
                        return Err(LimitError::FragmentCycle { name: spread.to_owned() });
                    }
                    // Unknown fragments add nothing; validation names them.
                    if let Some((known, definition)) = document.fragments.get_key_value(spread) {
                        in_progress.insert(known.as_str());
                        stack.push((known.as_str(), spreads_in(&definition.node.selection_set.node), 0));
                    }
                } else {
                    let name = *name;
                    stack.pop();
                    in_progress.remove(name);
                    if let Some(definition) = document.fragments.get(name) {
                        let on = definition.node.type_condition.node.on.node.as_str();
                        let summary = measurer.set(&definition.node.selection_set.node, measurer.context_of(on));
                        measurer.fragments.insert(name, summary);
                    }
                }
            }
        }
        Ok(measurer)
    }

    fn context_of(&self, type_name: &str) -> Context<'a> {
        if type_name.starts_with("__") {
            return Context::Introspection;
        }
        self.model.objects.get(type_name).map_or(Context::Unknown, Context::Object)
    }

    /// Measures a selection set; spreads add their fragment's summary. The
    /// recursion follows only the document's own nesting, which the parser
    /// bounds.
    fn set(&self, set: &'a SelectionSet, context: Context<'a>) -> Summary {
        let mut total = Summary::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => total.add(&self.field(&field.node, context)),
                Selection::InlineFragment(fragment) => {
                    let context = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(context, |condition| self.context_of(condition.node.on.node.as_str()));
                    total.add(&self.set(&fragment.node.selection_set.node, context));
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(summary) = self.fragments.get(spread.node.fragment_name.node.as_str()) {
                        total.add(summary);
                    }
                }
            }
        }
        total
    }

    fn field(&self, field: &'a Field, context: Context<'a>) -> Summary {
        let name = field.name.node.as_str();
        let children_in = |context| self.set(&field.selection_set.node, context);
        match context {
            Context::Introspection => {
                let children = children_in(Context::Introspection);
                Summary::field(field, &children, false, children.cost, INTROSPECTION_LISTS.contains(&name))
            }
            _ if name == "__schema" || name == "__type" => {
                let children = children_in(Context::Introspection);
                Summary::field(field, &children, true, children.cost, false)
            }
            Context::Object(object) => match object.field(name) {
                Some(definition) => self.schema_field(field, definition),
                None => {
                    let children = children_in(Context::Unknown);
                    Summary::field(field, &children, true, children.cost, false)
                }
            },
            Context::Unknown => {
                let children = children_in(Context::Unknown);
                Summary::field(field, &children, true, children.cost, false)
            }
        }
    }

    fn schema_field(&self, field: &'a Field, definition: &'a FieldModel) -> Summary {
        let child_object = self.model.objects.get(named_type(&definition.ty));
        let children = self.set(&field.selection_set.node, child_object.map_or(Context::Unknown, Context::Object));
        let weight = definition.cost.unwrap_or(match (&definition.source, child_object) {
            (FieldSource::Rest(_), _) | (_, Some(_)) => 1,
            _ => 0,
        });
        // The cost spec weighs each object 1 unless its type says otherwise.
        let per_item = child_object.map_or(0, |object| object.cost.unwrap_or(1));
        let size = if is_list(&definition.ty) { self.list_size(definition, field) } else { 1 };
        let cost = weight.saturating_add(size.saturating_mul(per_item.saturating_add(children.cost)));
        Summary::field(field, &children, true, cost, false)
    }

    fn list_size(&self, definition: &FieldModel, field: &Field) -> u64 {
        let Some(list_size) = &definition.list_size else { return DEFAULT_LIST_SIZE };
        for slicing in &list_size.slicing_arguments {
            let given =
                field.arguments.iter().find(|(name, _)| name.node == slicing.as_str()).map(|(_, value)| &value.node);
            let value = match given {
                Some(async_graphql_value::Value::Variable(variable)) => self.variables.get(variable).cloned(),
                Some(other) => other.clone().into_const(),
                None => definition.args.iter().find(|arg| &arg.name == slicing).and_then(|arg| arg.default.clone()),
            };
            if let Some(ConstValue::Number(number)) = value {
                if let Some(size) = number.as_u64() {
                    return size;
                }
            }
        }
        list_size.assumed_size.unwrap_or(DEFAULT_LIST_SIZE)
    }
}

/// The fragments spread anywhere in a set, in order (with repeats).
fn spreads_in(set: &SelectionSet) -> Vec<&str> {
    fn collect<'a>(set: &'a SelectionSet, into: &mut Vec<&'a str>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => collect(&field.node.selection_set.node, into),
                Selection::InlineFragment(fragment) => collect(&fragment.node.selection_set.node, into),
                Selection::FragmentSpread(spread) => into.push(spread.node.fragment_name.node.as_str()),
            }
        }
    }
    let mut spreads = Vec::new();
    collect(set, &mut spreads);
    spreads
}

fn is_list(ty: &Type) -> bool {
    matches!(ty.base, BaseType::List(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted_like_the_graphql_lexer() {
        assert_eq!(count_tokens("{ a b }", 100), 4);
        assert_eq!(count_tokens("query Q($id: ID!) { student(id: $id) { fullName } }", 100), 21);
        assert_eq!(count_tokens("{ a(s: \"many } { words\") # comment { {\n }", 100), 8);
        assert_eq!(count_tokens("{ ...F }", 100), 4);
        assert_eq!(count_tokens(&"{ a }".repeat(1000), 50), 50, "counting stops at the limit");
    }

    fn model() -> SchemaModel {
        let services = ["student_api", "live_reading", "payment"].into_iter().map(str::to_owned).collect();
        let source = super::super::sdl::SchemaSource {
            file: "default".to_owned(),
            text: super::super::DEFAULT_SCHEMA.to_owned(),
        };
        super::super::sdl::load(&[source], &services).expect("the default schema loads")
    }

    /// Limits that let everything but the measure under test through.
    fn generous() -> Limits {
        Limits {
            max_document_size: usize::MAX,
            max_tokens: usize::MAX,
            max_depth: usize::MAX,
            max_aliases: usize::MAX,
            max_root_fields: usize::MAX,
            max_cost: u64::MAX,
            max_fields: usize::MAX,
        }
    }

    fn shape(query: &str) -> Result<OperationShape, DocumentError> {
        check_document(&model(), query, None, &Variables::default(), &generous())
    }

    /// `levels` fragments, each spreading the next twice (through `spread`,
    /// which wraps `...F<n>`); the last selects `leaf`.
    pub(crate) fn fan_out(levels: usize, spread: impl Fn(&str) -> String, leaf: &str) -> String {
        let mut query = String::from("query Q($v: Boolean = true) { student(id: 1) { ...F0 } }\n");
        for level in 0..levels {
            let next = format!("F{}", level + 1);
            query.push_str(&format!("fragment F{level} on Student {{ {} {} }}\n", spread(&next), spread(&next)));
        }
        query.push_str(&format!("fragment F{levels} on Student {{ {leaf} }}\n"));
        query
    }

    #[test]
    fn a_fragment_fan_out_is_measured_exactly_and_fast() {
        let started = std::time::Instant::now();
        let plain = shape(&fan_out(30, |next| format!("...{next}"), "id")).expect("measured");
        assert_eq!(plain.fields, (1 << 30) + 1, "2^30 leaves under the student field");
        assert_eq!(plain.depth, 2);
        assert_eq!(plain.root_fields, 1);
        let aliased = shape(&fan_out(30, |next| format!("...{next}"), "a: id")).expect("measured");
        assert_eq!(aliased.aliases, 1 << 30);
        let inline = shape(&fan_out(30, |next| format!("... on Student {{ ...{next} }}"), "id")).expect("measured");
        assert_eq!(inline.fields, (1 << 30) + 1);
        let included = shape(&fan_out(30, |next| format!("...{next} @include(if: $v)"), "id")).expect("measured");
        assert_eq!(included.fields, (1 << 30) + 1, "both branches of @include count");
        let huge = shape(&fan_out(70, |next| format!("...{next}"), "id")).expect("measured");
        assert_eq!(huge.fields, u64::MAX, "counts saturate");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    }

    #[test]
    fn fan_out_documents_are_refused_for_their_field_count() {
        let limits = Limits { max_fields: 2_000, ..generous() };
        let query = fan_out(30, |next| format!("...{next}"), "id");
        let refused = check_document(&model(), &query, None, &Variables::default(), &limits);
        assert_eq!(
            refused,
            Err(DocumentError::Limit(LimitError::TooManyFields { count: (1 << 30) + 1, limit: 2_000 }))
        );
        let small = fan_out(10, |next| format!("...{next}"), "id");
        assert!(check_document(&model(), &small, None, &Variables::default(), &limits).is_ok(), "1025 fields pass");
    }

    #[test]
    fn unselected_operations_count_towards_the_field_limit() {
        let limits = Limits { max_fields: 3, ..generous() };
        let query = "query A { lessons { id } } query B { lessons { id title level } }";
        let refused = check_document(&model(), query, Some("A"), &Variables::default(), &limits);
        assert!(
            matches!(refused, Err(DocumentError::Limit(LimitError::TooManyFields { count: 6, .. }))),
            "{refused:?}"
        );
    }

    #[test]
    fn fragment_cycles_are_refused_and_terminate() {
        for query in [
            "{ student(id: 1) { ...A } } fragment A on Student { id ...A }",
            "{ student(id: 1) { ...A } } fragment A on Student { ...B ...B } fragment B on Student { id ...A }",
            "{ student(id: 1) { ...A } } fragment A on Student { ... on Student { readingSessions { id } ...A } }",
        ] {
            let refused = shape(query);
            assert!(
                matches!(refused, Err(DocumentError::Limit(LimitError::FragmentCycle { .. }))),
                "{query}: {refused:?}"
            );
        }
        assert!(shape("{ student(id: 1) { ...A } } fragment A on Student { ...Missing id }").is_ok());
    }

    #[test]
    fn depth_aliases_root_fields_and_cost_see_through_fragments() {
        let query = "{ ...R a: lessons(first: 2) { id } } fragment R on Query { student(id: 1) { ...S } } \
                     fragment S on Student { b: readingSessions(first: 5) { lesson { title } } }";
        let shape = shape(query).expect("measured");
        assert_eq!(shape.depth, 4);
        assert_eq!(shape.aliases, 2);
        assert_eq!(shape.root_fields, 2);
        assert_eq!(shape.fields, 6);
        // student: 1 + (1 per object + sessions: 1 + 5 x (1 + lesson: 1 + 1)); lessons: 1 + 2 x 1
        assert_eq!(shape.cost, (1 + (1 + (1 + 5 * (1 + 2)))) + (1 + 2));
    }

    #[test]
    fn the_standard_introspection_query_passes_the_default_depth() {
        let query = include_str!("../../tests/fixtures/introspection-query.graphql");
        let limits = Limits { max_depth: 12, max_fields: 2_000, ..generous() };
        let shape = check_document(&model(), query, None, &Variables::default(), &limits).expect("allowed");
        assert_eq!(shape.depth, 1, "only __schema itself counts");
        assert_eq!(shape.introspection_depth, 1);
        let nested = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert_eq!(
            check_document(&model(), nested, None, &Variables::default(), &limits),
            Err(DocumentError::Limit(LimitError::IntrospectionTooDeep { depth: 3, limit: 2 }))
        );
        let through_fragments =
            "{ __type(name: \"Student\") { ...T } } fragment T on __Type { fields { type { ...U } } } \
                                 fragment U on __Type { interfaces { possibleTypes { name } } }";
        assert!(matches!(
            check_document(&model(), through_fragments, None, &Variables::default(), &limits),
            Err(DocumentError::Limit(LimitError::IntrospectionTooDeep { depth: 3, .. }))
        ));
    }
}

//! Protection against abusive documents, checked before any backend is
//! called: size and token count before parsing, then depth, aliases, root
//! fields and cost on the parsed operation.
//!
//! Cost follows IBM's GraphQL cost directives: a field costs its `@cost`
//! weight (default 1 for fields that call a backend or return objects, 0 for
//! plain scalars) plus, for lists, the list size (its slicing argument's
//! value, else `@listSize(assumedSize:)`, else 10) times the cost of each
//! item: its type's weight (default 1 for objects) plus what is selected
//! under it.

use std::collections::HashMap;

use async_graphql::Variables;
use async_graphql::{Name, Value as ConstValue};
use async_graphql_parser::types::{
    BaseType, ExecutableDocument, FragmentDefinition, OperationDefinition, Selection, SelectionSet, Type,
};
use async_graphql_parser::Positioned;

use super::model::{FieldSource, SchemaModel};

/// List size assumed when nothing in the schema says otherwise.
const DEFAULT_LIST_SIZE: u64 = 10;

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
    /// Nested too deeply.
    #[error("the operation is nested {depth} levels deep; the limit is {limit}")]
    TooDeep {
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many aliases.
    #[error("the operation uses {count} aliases; the limit is {limit}")]
    TooManyAliases {
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many root fields.
    #[error("the operation selects {count} root fields; the limit is {limit}")]
    TooManyRootFields {
        /// How many.
        count: usize,
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
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooExpensive { .. } => "COST_LIMIT_EXCEEDED",
            _ => "QUERY_LIMIT_EXCEEDED",
        }
    }
}

/// Checks the raw text before it is parsed.
pub fn check_text(query: &str, limits: &Limits) -> Result<(), LimitError> {
    if query.len() > limits.max_document_size {
        return Err(LimitError::DocumentTooLarge { size: query.len(), limit: limits.max_document_size });
    }
    if count_tokens(query, limits.max_tokens + 1) > limits.max_tokens {
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
    /// Deepest field nesting (root fields are depth 1).
    pub depth: usize,
    /// Aliased fields.
    pub aliases: usize,
    /// Root fields.
    pub root_fields: usize,
    /// Cost.
    pub cost: u64,
}

/// Measures `operation` against the schema and checks the limits.
pub fn check_operation(
    model: &SchemaModel,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    root_type: &str,
    variables: &Variables,
    limits: &Limits,
) -> Result<OperationShape, LimitError> {
    let mut walker = Walker {
        model,
        fragments: &document.fragments,
        variables,
        shape: OperationShape::default(),
        visiting: Vec::new(),
    };
    walker.shape.root_fields = count_root_fields(&operation.selection_set.node, &document.fragments, 0);
    let cost = walker.selection_cost(&operation.selection_set.node, Some(root_type), 1);
    walker.shape.cost = cost;
    let shape = walker.shape;
    if shape.depth > limits.max_depth {
        return Err(LimitError::TooDeep { depth: shape.depth, limit: limits.max_depth });
    }
    if shape.aliases > limits.max_aliases {
        return Err(LimitError::TooManyAliases { count: shape.aliases, limit: limits.max_aliases });
    }
    if shape.root_fields > limits.max_root_fields {
        return Err(LimitError::TooManyRootFields { count: shape.root_fields, limit: limits.max_root_fields });
    }
    if shape.cost > limits.max_cost {
        return Err(LimitError::TooExpensive { cost: shape.cost, limit: limits.max_cost });
    }
    Ok(shape)
}

fn count_root_fields(
    set: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    nesting: usize,
) -> usize {
    if nesting > 8 {
        return 0;
    }
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(fragment) => {
                count_root_fields(&fragment.node.selection_set.node, fragments, nesting + 1)
            }
            Selection::FragmentSpread(spread) => fragments
                .get(&spread.node.fragment_name.node)
                .map_or(0, |fragment| count_root_fields(&fragment.node.selection_set.node, fragments, nesting + 1)),
        })
        .sum()
}

struct Walker<'a> {
    model: &'a SchemaModel,
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    variables: &'a Variables,
    shape: OperationShape,
    /// Fragments being expanded, to stop fragment cycles (which validation
    /// rejects later anyway).
    visiting: Vec<&'a str>,
}

impl<'a> Walker<'a> {
    fn selection_cost(&mut self, set: &'a SelectionSet, type_name: Option<&str>, depth: usize) -> u64 {
        let mut total: u64 = 0;
        for item in &set.items {
            let cost = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    self.shape.depth = self.shape.depth.max(depth);
                    if field.alias.is_some() {
                        self.shape.aliases += 1;
                    }
                    self.field_cost(field, type_name, depth)
                }
                Selection::InlineFragment(fragment) => {
                    let condition =
                        fragment.node.type_condition.as_ref().map(|condition| condition.node.on.node.as_str());
                    self.selection_cost(&fragment.node.selection_set.node, condition.or(type_name), depth)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match self.fragments.get(name) {
                        Some(fragment) if !self.visiting.contains(&name) => {
                            self.visiting.push(name);
                            let on = fragment.node.type_condition.node.on.node.as_str();
                            let cost = self.selection_cost(&fragment.node.selection_set.node, Some(on), depth);
                            self.visiting.pop();
                            cost
                        }
                        _ => 0,
                    }
                }
            };
            total = total.saturating_add(cost);
        }
        total
    }

    fn field_cost(
        &mut self,
        field: &'a async_graphql_parser::types::Field,
        type_name: Option<&str>,
        depth: usize,
    ) -> u64 {
        let Some(definition) =
            type_name.and_then(|name| self.model.objects.get(name)).and_then(|object| object.field(&field.name.node))
        else {
            // Unknown or introspection fields: validation decides about them.
            let children = self.selection_cost(&field.selection_set.node, None, depth + 1);
            return children;
        };
        let child_type = named_type(&definition.ty);
        let child_object = self.model.objects.get(child_type);
        let weight = definition.cost.unwrap_or(match (&definition.source, child_object) {
            (FieldSource::Rest(_), _) | (_, Some(_)) => 1,
            _ => 0,
        });
        // The cost spec weighs each object 1 unless its type says otherwise.
        let per_item = child_object.map_or(0, |object| object.cost.unwrap_or(1));
        let children =
            self.selection_cost(&field.selection_set.node, child_object.map(|object| object.name.as_str()), depth + 1);
        let size = if is_list(&definition.ty) { self.list_size(definition, field) } else { 1 };
        weight.saturating_add(size.saturating_mul(per_item.saturating_add(children)))
    }

    fn list_size(&self, definition: &super::model::FieldModel, field: &async_graphql_parser::types::Field) -> u64 {
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

fn named_type(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named_type(inner),
    }
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
}

//! The `Cache-Control` header of a GraphQL answer, by Apollo Server's
//! cache-control rules: each field the operation selects restricts the
//! answer's policy; the answer's maxAge is the smallest, and its scope is
//! `private` if any field or type says `PRIVATE`.
//!
//! A field's policy is its return type's `@cacheControl` (for object
//! types), overridden by the field's own. A root field, or a field returning
//! an object, with no maxAge gets the default of 0 (not cacheable), unless
//! it asks to `inheritMaxAge`; scalar fields without hints inherit, so they
//! restrict nothing. The selection is read statically (every selected field
//! counts, fragments included), which can only make the policy stricter
//! than what was resolved. Answers with errors and mutations are `no-store`
//! (decided by the caller).
//!
//! A fragment's policy does not depend on where it is spread (only on
//! whether at the root), so each is computed once and reused: the walk is
//! linear in the document's size however often fragments spread each other.

use std::collections::{HashMap, HashSet};

use async_graphql_parser::types::{BaseType, ExecutableDocument, OperationDefinition, Selection, SelectionSet};
use http::HeaderValue;

use super::model::{CacheHintScope, SchemaModel};

/// Deepest fragment nesting followed; validation already refused cycles.
const MAX_NESTING: usize = 64;

/// The answer's policy so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Policy {
    max_age: Option<u64>,
    private: bool,
}

impl Policy {
    fn restrict(&mut self, max_age: Option<u64>, private: bool) {
        if let Some(max_age) = max_age {
            self.max_age = Some(self.max_age.map_or(max_age, |current| current.min(max_age)));
        }
        self.private |= private;
    }
}

/// `max-age=N, public|private`, or `no-store` when nothing may be cached.
pub fn header_value(
    model: &SchemaModel,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    root_type: &str,
) -> HeaderValue {
    let mut walk = Walk { model, document, fragments: HashMap::new(), expanding: HashSet::new() };
    let policy = walk.selection_set(root_type, &operation.selection_set.node, true, 0);
    match policy.max_age {
        Some(max_age) if max_age > 0 => {
            let scope = if policy.private { "private" } else { "public" };
            HeaderValue::try_from(format!("max-age={max_age}, {scope}")).unwrap_or(HeaderValue::from_static("no-store"))
        }
        _ => HeaderValue::from_static("no-store"),
    }
}

struct Walk<'a> {
    model: &'a SchemaModel,
    document: &'a ExecutableDocument,
    /// Each fragment's policy, at the root or below it.
    fragments: HashMap<(&'a str, bool), Policy>,
    /// Fragments being walked, to stop at cycles (refused before execution).
    expanding: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    /// The policy of a selection set: what its fields restrict.
    fn selection_set(&mut self, type_name: &str, set: &'a SelectionSet, root: bool, nesting: usize) -> Policy {
        let mut policy = Policy::default();
        if nesting > MAX_NESTING {
            policy.restrict(Some(0), false);
            return policy;
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    if name == "__typename" {
                        continue;
                    }
                    if name.starts_with("__") {
                        // Introspection describes the schema, not data the
                        // hints speak for.
                        policy.restrict(Some(0), false);
                        continue;
                    }
                    let Some(model) = self.model.objects.get(type_name).and_then(|object| object.field(name)) else {
                        continue;
                    };
                    let mut base = &model.ty.base;
                    while let BaseType::List(inner) = base {
                        base = &inner.base;
                    }
                    let target = match base {
                        BaseType::Named(name) => self.model.objects.get(name.as_str()),
                        BaseType::List(_) => None,
                    };
                    let mut max_age = None;
                    let mut private = false;
                    let mut inherit = false;
                    if let Some(hint) = target.and_then(|object| object.cache_control) {
                        max_age = hint.max_age;
                        private = hint.scope == Some(CacheHintScope::Private);
                        inherit = hint.inherit_max_age;
                    }
                    if let Some(hint) = model.cache_control {
                        if hint.inherit_max_age && max_age.is_none() {
                            inherit = true;
                        } else if hint.max_age.is_some() {
                            max_age = hint.max_age;
                        }
                        if let Some(scope) = hint.scope {
                            private = scope == CacheHintScope::Private;
                        }
                    }
                    if max_age.is_none() && ((target.is_some() && !inherit) || root) {
                        max_age = Some(0);
                    }
                    policy.restrict(max_age, private);
                    if let Some(object) = target {
                        let children = self.selection_set(&object.name, &field.selection_set.node, false, nesting);
                        policy.restrict(children.max_age, children.private);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on =
                        fragment.type_condition.as_ref().map_or(type_name, |condition| condition.node.on.node.as_str());
                    let inner = self.selection_set(on, &fragment.selection_set.node, root, nesting + 1);
                    policy.restrict(inner.max_age, inner.private);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some((name, fragment)) = self.document.fragments.get_key_value(name) else { continue };
                    let name = name.as_str();
                    let inner = match self.fragments.get(&(name, root)) {
                        Some(known) => *known,
                        None => {
                            if !self.expanding.insert(name) {
                                continue;
                            }
                            let on = fragment.node.type_condition.node.on.node.as_str();
                            let computed = self.selection_set(on, &fragment.node.selection_set.node, root, nesting + 1);
                            self.expanding.remove(name);
                            self.fragments.insert((name, root), computed);
                            computed
                        }
                    };
                    policy.restrict(inner.max_age, inner.private);
                }
            }
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::graphql::sdl::{load, SchemaSource};

    const SDL: &str = r#"
        type Query {
          lesson(id: ID!): Lesson @rest(service: "live_reading", path: "/lesson/{$args.id}/")
          short(id: ID!): Lesson @cacheControl(maxAge: 10) @rest(service: "live_reading", path: "/lesson/{$args.id}/")
          me: Student @rest(service: "student_api", path: "/profile/")
          count: Int @rest(service: "live_reading", path: "/count/")
          hinted: Int @cacheControl(maxAge: 30, scope: PRIVATE) @rest(service: "live_reading", path: "/count/")
        }
        type Lesson @cacheControl(maxAge: 300, scope: PUBLIC) {
          id: ID!
          title: String
          author: Student
          tag: Tag @cacheControl(inheritMaxAge: true)
          plainTag: Tag
        }
        type Tag { name: String }
        type Student @cacheControl(maxAge: 60, scope: PRIVATE) {
          id: ID!
          name: String
        }
    "#;

    fn header_for(query: &str) -> String {
        let services = ["live_reading", "student_api"].into_iter().map(str::to_owned).collect::<BTreeSet<_>>();
        let model = load(&[SchemaSource { file: "s".to_owned(), text: SDL.to_owned() }], &services).expect("schema");
        let document = async_graphql_parser::parse_query(query).expect("query");
        let operation = match &document.operations {
            async_graphql_parser::types::DocumentOperations::Single(operation) => operation.node.clone(),
            async_graphql_parser::types::DocumentOperations::Multiple(_) => panic!("one operation"),
        };
        header_value(&model, &document, &operation, "Query").to_str().expect("text").to_owned()
    }

    #[test]
    fn the_answer_takes_the_smallest_max_age_and_the_strictest_scope() {
        assert_eq!(header_for("{ lesson(id: 1) { id title } }"), "max-age=300, public");
        assert_eq!(header_for("{ short(id: 1) { id } }"), "max-age=10, public", "the field's hint wins");
        assert_eq!(header_for("{ lesson(id: 1) { author { name } } }"), "max-age=60, private");
        assert_eq!(header_for("{ lesson(id: 1) { tag { name } } }"), "max-age=300, public", "inherits the parent's");
        assert_eq!(header_for("{ hinted }"), "max-age=30, private");
        assert_eq!(header_for("{ lesson(id: 1) { id } hinted }"), "max-age=30, private");
    }

    #[test]
    fn fields_without_hints_make_the_answer_uncacheable() {
        assert_eq!(header_for("{ count }"), "no-store", "root scalar fields default to 0");
        assert_eq!(header_for("{ lesson(id: 1) { id } count }"), "no-store");
        assert_eq!(header_for("{ lesson(id: 1) { plainTag { name } } }"), "no-store", "object fields default to 0");
        assert_eq!(header_for("{ __typename }"), "no-store");
        assert_eq!(header_for("{ __schema { types { name } } }"), "no-store");
    }

    #[test]
    fn a_fragment_fan_out_is_walked_once_per_fragment() {
        let mut query = String::from("query { lesson(id: 1) { ...F0 } }\n");
        for level in 0..40 {
            query.push_str(&format!("fragment F{level} on Lesson {{ ...F{next} ...F{next} }}\n", next = level + 1));
        }
        query.push_str("fragment F40 on Lesson { id author { id } }");
        assert_eq!(header_for(&query), "max-age=60, private", "2^40 spreads, answered at once");
    }

    #[test]
    fn fragments_count_like_fields() {
        let query = "query { lesson(id: 1) { ...L } } fragment L on Lesson { id author { id } }";
        assert_eq!(header_for(query), "max-age=60, private");
        assert_eq!(header_for("{ ... on Query { lesson(id: 1) { id } } }"), "max-age=300, public");
    }
}

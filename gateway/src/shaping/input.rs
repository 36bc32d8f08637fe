//! Checks on a request's text and input values that must happen before the parser or the
//! database sees them.
//!
//! - Bracket nesting: async-graphql's parser recurses once per `[`, `{` or `(` of an argument
//!   value, without a limit; a 4 KB document of nested lists overflows the stack and aborts
//!   the process. The text is scanned (strings and comments skipped) and refused over a depth.
//! - NUL characters: PostgreSQL refuses them in text and SQLite cuts strings at them, so the
//!   same input would fail on one database and be misread on the other. Every string of the
//!   operation's arguments and variables is checked, and a NUL is refused up front.
//! - Variable defaults: async-graphql evaluates `@skip` / `@include` with the request's
//!   variables only, ignoring defaults (`query($t: Boolean = true)`), so defaults are filled
//!   in before execution.

use async_graphql::parser::types::{
    ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Positioned, Value, Variables};

/// Deepest bracket nesting a document may have (selection sets, lists, objects, arguments).
pub const MAX_NESTING: usize = 64;

/// Whether `query` nests brackets deeper than `max`, outside strings and comments.
pub fn nesting_exceeds(query: &str, max: usize) -> bool {
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // A comment ends at a line terminator: `\n`, or a lone `\r` (the GraphQL grammar's,
            // and the parser's, rule).
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped triple quote inside a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Fills in the defaults of variables the request did not give.
pub fn apply_variable_defaults(operation: &OperationDefinition, variables: &mut Variables) {
    for definition in &operation.variable_definitions {
        let definition = &definition.node;
        if let Some(default) = &definition.default_value
            && !variables.contains_key(&definition.name.node)
        {
            variables.insert(definition.name.node.clone(), default.node.clone());
        }
    }
}

/// The first argument or variable whose text holds a NUL character, as a field path.
pub fn find_nul(
    document: &ExecutableDocument,
    operation: &Positioned<OperationDefinition>,
    variables: &Variables,
) -> Option<String> {
    for (name, value) in variables.iter() {
        if has_nul(value) {
            return Some(format!("${name}"));
        }
    }
    let mut sets: Vec<&SelectionSet> = vec![&operation.node.selection_set.node];
    sets.extend(
        document
            .fragments
            .values()
            .map(|f| &f.node.selection_set.node),
    );
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    for (name, value) in &field.arguments {
                        // Variables were checked above; a literal is checked here.
                        let literal = value
                            .node
                            .clone()
                            .into_const_with(|_| Ok::<_, ()>(Value::Null));
                        if literal.is_ok_and(|v| has_nul(&v)) {
                            return Some(format!("{}.{}", field.name.node, name.node));
                        }
                    }
                    sets.push(&field.selection_set.node);
                }
                Selection::InlineFragment(fragment) => sets.push(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    None
}

/// Whether the operation asks for `__schema` or `__type` at its root (fragments included).
pub fn selects_introspection(
    document: &ExecutableDocument,
    operation: &OperationDefinition,
) -> bool {
    let mut sets: Vec<&SelectionSet> = vec![&operation.selection_set.node];
    let mut spread = std::collections::HashSet::new();
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if matches!(field.node.name.node.as_str(), "__schema" | "__type") {
                        return true;
                    }
                }
                Selection::InlineFragment(fragment) => sets.push(&fragment.node.selection_set.node),
                Selection::FragmentSpread(fragment) => {
                    let name = &fragment.node.fragment_name.node;
                    if spread.insert(name.clone())
                        && let Some(definition) = document.fragments.get(name)
                    {
                        sets.push(&definition.node.selection_set.node);
                    }
                }
            }
        }
    }
    false
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Enum(name) => name.contains('\0'),
        Value::List(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::selected_operation;

    #[test]
    fn nesting_is_counted_outside_strings_and_comments() {
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(70), "]".repeat(70));
        assert!(nesting_exceeds(&deep, MAX_NESTING));
        let shallow = "{ a(x: [[1]]) { b { c } } }";
        assert!(!nesting_exceeds(shallow, MAX_NESTING));
        let in_string = format!("{{ a(x: \"{}\") }}", "[".repeat(500));
        assert!(!nesting_exceeds(&in_string, MAX_NESTING));
        let in_block = format!("{{ a(x: \"\"\"{}\"\"\") }}", "{".repeat(500));
        assert!(!nesting_exceeds(&in_block, MAX_NESTING));
        let in_comment = format!("# {}\n{{ a }}", "(".repeat(500));
        assert!(!nesting_exceeds(&in_comment, MAX_NESTING));
        // A lone carriage return ends a comment too: what follows it is counted.
        let after_cr = format!("#x\r{{ a(x: {}1{}) }}", "[".repeat(70), "]".repeat(70));
        assert!(nesting_exceeds(&after_cr, MAX_NESTING));
        let escaped_quote = format!("{{ a(x: \"\\\"{}\") }}", "[".repeat(500));
        assert!(!nesting_exceeds(&escaped_quote, MAX_NESTING));
    }

    #[test]
    fn introspection_is_found_at_the_root_and_through_fragments() {
        let check = |query: &str| {
            let document = async_graphql::parser::parse_query(query).unwrap();
            let operation = selected_operation(&document.operations, None).unwrap();
            selects_introspection(&document, &operation.node)
        };
        assert!(check("{ __schema { types { name } } }"));
        assert!(check(
            "{ ...F } fragment F on Query { t: __type(name: \"Product\") { name } }"
        ));
        assert!(!check("{ __typename channel { code } }"));
    }

    #[test]
    fn defaults_fill_only_missing_variables() {
        let document = async_graphql::parser::parse_query(
            "query($t: Boolean = true, $n: Int = 3) { a @skip(if: $t) }",
        )
        .unwrap();
        let operation = selected_operation(&document.operations, None).unwrap();
        let mut variables = Variables::from_json(serde_json::json!({ "n": 5 }));
        apply_variable_defaults(&operation.node, &mut variables);
        assert_eq!(
            variables.into_value().into_json().unwrap(),
            serde_json::json!({ "t": true, "n": 5 })
        );
    }

    #[test]
    fn nul_characters_are_found_in_literals_and_variables() {
        let check = |query: &str, variables: serde_json::Value| {
            let document = async_graphql::parser::parse_query(query).unwrap();
            let operation = selected_operation(&document.operations, None).unwrap();
            find_nul(&document, operation, &Variables::from_json(variables))
        };
        assert_eq!(
            check(
                r#"{ variant(sku: "a\u0000b") { sku } }"#,
                serde_json::json!({})
            ),
            Some("variant.sku".to_owned())
        );
        assert_eq!(
            check(
                "query($f: ProductFilterInput) { products(filter: $f) { totalCount } }",
                serde_json::json!({ "f": { "skus": ["ok", "bad\u{0}"] } })
            ),
            Some("$f".to_owned())
        );
        assert_eq!(
            check(
                r#"{ ...F } fragment F on Query { product(slug: "x\u0000") { id } }"#,
                serde_json::json!({})
            ),
            Some("product.slug".to_owned())
        );
        assert_eq!(
            check(r#"{ variant(sku: "fine") { sku } }"#, serde_json::json!({})),
            None
        );
    }
}

//! The size of an operation as it would execute, computed from the document alone, before
//! validation and before any SQL: fragments expanded (each fragment analysed once and its
//! totals reused at every spread, so a small document can never cost much to analyse), field
//! counts, depth, aliases, root fields and a Shopify-style cost.
//!
//! Cost: an object-typed field costs 1, a scalar or enum 0; a field with a `first` argument
//! (a connection) multiplies what is below it by `first` (the configured default page size
//! when absent), the lists of a connection (`edges`, `nodes`) do not multiply again, and any
//! other list multiplies by [`LIST_ESTIMATE`]. `actual` cost, after execution, counts the
//! objects the response really holds.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationDefinition, Selection, SelectionSet, Type,
};
use async_graphql::{Name, Value, Variables};

use crate::completion::{SchemaShape, shape};

/// Assumed length of a list field that has no `first` argument (variants, tiers, rules).
pub const LIST_ESTIMATE: u64 = 5;

/// What the operation would do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationSize {
    /// Field selections once every fragment is expanded where it is spread.
    pub selections: u64,
    /// Deepest nesting of fields.
    pub depth: u64,
    /// Aliased fields, counted where they execute.
    pub aliases: u64,
    /// Fields selected at the root of the operation.
    pub root_fields: u64,
    /// Estimated cost (see the module docs).
    pub cost: u64,
}

/// The limits an operation must fit, per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimits {
    pub max_selections: u64,
    pub max_depth: u64,
    pub max_aliases: u64,
    pub max_root_fields: u64,
    pub max_cost: u64,
}

/// Why an operation was refused; the message names the limit and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("the operation is too large: {what} is {value}, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("fragment {0} spreads itself")]
    FragmentCycle(String),
    #[error("unknown fragment {0}")]
    UnknownFragment(String),
}

impl OperationSize {
    /// The first limit the operation breaks, if any.
    pub fn check(&self, limits: &SizeLimits) -> Result<(), SizeError> {
        for (what, value, limit) in [
            (
                "the number of fields",
                self.selections,
                limits.max_selections,
            ),
            ("the depth", self.depth, limits.max_depth),
            ("the number of aliases", self.aliases, limits.max_aliases),
            (
                "the number of root fields",
                self.root_fields,
                limits.max_root_fields,
            ),
            ("the cost", self.cost, limits.max_cost),
        ] {
            if value > limit {
                return Err(SizeError::TooLarge { what, value, limit });
            }
        }
        Ok(())
    }
}

/// Totals of one selection set; cost is per execution of the set (before any multiplier).
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    selections: u64,
    depth: u64,
    aliases: u64,
    cost: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.selections = self.selections.saturating_add(other.selections);
        self.depth = self.depth.max(other.depth);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.cost = self.cost.saturating_add(other.cost);
    }
}

struct Analyzer<'a> {
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    shape: &'a SchemaShape,
    default_page_size: u64,
    /// Fragments analysed so far (by name and the type they were analysed under).
    done: HashMap<(Name, Option<Name>), Totals>,
    /// Fragments being analysed right now (to find cycles).
    active: Vec<Name>,
}

/// Measures `operation` of `document`.
pub fn measure(
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
    default_page_size: u64,
) -> Result<OperationSize, SizeError> {
    let shape = shape();
    let mut analyzer = Analyzer {
        document,
        variables,
        shape,
        default_page_size,
        done: HashMap::new(),
        active: Vec::new(),
    };
    let root = shape.root(operation.ty).map(Name::new);
    let totals = analyzer.selection_set(&operation.selection_set.node, root.as_ref())?;
    let root_fields = analyzer.root_fields(&operation.selection_set.node)?;
    Ok(OperationSize {
        selections: totals.selections,
        depth: totals.depth,
        aliases: totals.aliases,
        root_fields,
        cost: totals.cost,
    })
}

impl Analyzer<'_> {
    fn selection_set(
        &mut self,
        set: &SelectionSet,
        parent: Option<&Name>,
    ) -> Result<Totals, SizeError> {
        let mut totals = Totals::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let ty = self.shape.field(parent.map(Name::as_str), name);
                    let named = ty.map(named_type);
                    let is_object = named.is_some_and(|n| self.shape.is_object(n))
                        || (ty.is_none() && !field.selection_set.node.items.is_empty());
                    let below = if field.selection_set.node.items.is_empty() {
                        Totals::default()
                    } else {
                        let named = named.map(Name::new);
                        self.selection_set(&field.selection_set.node, named.as_ref())?
                    };
                    // A connection is one object whose pages multiply what is below it; a
                    // list is that many objects, each with what is below it.
                    let own = u64::from(is_object);
                    let cost = match self.multiplier(field, ty, parent) {
                        Multiplier::Connection(n) => {
                            own.saturating_add(below.cost.saturating_mul(n))
                        }
                        Multiplier::Items(n) => own.saturating_add(below.cost).saturating_mul(n),
                    };
                    totals.add(Totals {
                        selections: below.selections.saturating_add(1),
                        depth: below.depth.saturating_add(1),
                        aliases: below
                            .aliases
                            .saturating_add(u64::from(field.alias.is_some())),
                        cost,
                    });
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = fragment
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.clone())
                        .or_else(|| parent.cloned());
                    totals.add(self.selection_set(&fragment.selection_set.node, on.as_ref())?);
                }
                Selection::FragmentSpread(spread) => {
                    totals.add(self.fragment(&spread.node.fragment_name.node)?);
                }
            }
        }
        Ok(totals)
    }

    fn fragment(&mut self, name: &Name) -> Result<Totals, SizeError> {
        let definition = self
            .document
            .fragments
            .get(name)
            .ok_or_else(|| SizeError::UnknownFragment(name.to_string()))?;
        let on = definition.node.type_condition.node.on.node.clone();
        let key = (name.clone(), Some(on.clone()));
        if let Some(totals) = self.done.get(&key) {
            return Ok(*totals);
        }
        if self.active.contains(name) {
            return Err(SizeError::FragmentCycle(name.to_string()));
        }
        self.active.push(name.clone());
        let totals = self.selection_set(&definition.node.selection_set.node, Some(&on));
        self.active.pop();
        let totals = totals?;
        self.done.insert(key, totals);
        Ok(totals)
    }

    /// Root fields of the operation: its distinct response keys, fragments expanded (fields
    /// with one key merge; each fragment is walked once).
    fn root_fields(&self, set: &SelectionSet) -> Result<u64, SizeError> {
        let mut keys = std::collections::HashSet::new();
        let mut spread = std::collections::HashSet::new();
        self.root_keys(set, &mut keys, &mut spread)?;
        Ok(keys.len() as u64)
    }

    fn root_keys<'d>(
        &'d self,
        set: &'d SelectionSet,
        keys: &mut std::collections::HashSet<&'d str>,
        spread: &mut std::collections::HashSet<&'d str>,
    ) -> Result<(), SizeError> {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    keys.insert(field.alias.as_ref().map_or(&field.name.node, |a| &a.node));
                }
                Selection::InlineFragment(fragment) => {
                    self.root_keys(&fragment.node.selection_set.node, keys, spread)?;
                }
                Selection::FragmentSpread(fragment) => {
                    let name = fragment.node.fragment_name.node.as_str();
                    if spread.insert(name) {
                        let definition = self
                            .document
                            .fragments
                            .get(name)
                            .ok_or_else(|| SizeError::UnknownFragment(name.to_owned()))?;
                        self.root_keys(&definition.node.selection_set.node, keys, spread)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// How many times what is below `field` runs per execution of `field`.
    fn multiplier(
        &self,
        field: &async_graphql::parser::types::Field,
        ty: Option<&Type>,
        parent: Option<&Name>,
    ) -> Multiplier {
        if let Some((_, value)) = field.arguments.iter().find(|(n, _)| n.node == "first") {
            // The literal, or the variable's value; a missing or odd one counts as the default.
            let value = value.node.clone().into_const_with(|name| {
                Ok::<_, ()>(self.variables.get(&name).cloned().unwrap_or(Value::Null))
            });
            return Multiplier::Connection(match value {
                Ok(Value::Number(n)) => n
                    .as_i64()
                    .map_or(self.default_page_size, |n| n.max(0) as u64),
                _ => self.default_page_size,
            });
        }
        // A quote's lines are as many as the `lines` argument holds (up to 100), priced each.
        if let Some((_, value)) = field.arguments.iter().find(|(n, _)| n.node == "lines") {
            let value = value.node.clone().into_const_with(|name| {
                Ok::<_, ()>(self.variables.get(&name).cloned().unwrap_or(Value::Null))
            });
            let lines = match value {
                Ok(Value::List(items)) => items.len() as u64,
                _ => LIST_ESTIMATE,
            };
            return Multiplier::Connection(lines.max(1));
        }
        if parent.is_some_and(|p| p.as_str() == "Quote") && field.name.node == "lines" {
            return Multiplier::Items(1);
        }
        let returns_connection = ty.is_some_and(|t| named_type(t).ends_with("Connection"));
        if returns_connection {
            return Multiplier::Connection(self.default_page_size);
        }
        let is_list = ty.is_some_and(|t| matches!(t.base, BaseType::List(_)));
        let in_connection = parent.is_some_and(|p| p.as_str().ends_with("Connection"));
        Multiplier::Items(if is_list && !in_connection {
            LIST_ESTIMATE
        } else {
            1
        })
    }
}

/// How a field multiplies the cost of what is below it.
enum Multiplier {
    /// A connection: one object, its pages of `n` items below.
    Connection(u64),
    /// `n` objects (1 for a single object), each with what is below.
    Items(u64),
}

fn named_type(ty: &Type) -> &Name {
    match &ty.base {
        BaseType::Named(name) => name,
        BaseType::List(inner) => named_type(inner),
    }
}

/// Objects in a response's data: the `actual` cost of what ran.
pub fn actual_cost(data: &Value) -> u64 {
    match data {
        Value::Object(map) => map
            .values()
            .fold(1u64, |sum, v| sum.saturating_add(actual_cost(v))),
        Value::List(items) => items
            .iter()
            .fold(0u64, |sum, v| sum.saturating_add(actual_cost(v))),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::selected_operation;
    use async_graphql::parser::parse_query;

    fn size(query: &str, variables: serde_json::Value) -> Result<OperationSize, SizeError> {
        let document = parse_query(query).unwrap();
        let operation = selected_operation(&document.operations, None).unwrap();
        measure(
            &document,
            &operation.node,
            &Variables::from_json(variables),
            20,
        )
    }

    #[test]
    fn counts_fields_depth_aliases_and_roots() {
        let s = size(
            "{ a: channel { code } b: channel { code name } categories { name } }",
            serde_json::json!({}),
        )
        .unwrap();
        assert_eq!(s.selections, 7);
        assert_eq!(s.depth, 2);
        assert_eq!(s.aliases, 2);
        assert_eq!(s.root_fields, 3);
    }

    #[test]
    fn connections_multiply_by_first_and_lists_by_the_estimate() {
        let page = "query($n: Int) { products(first: $n) { edges { node { name variants { sku availability { status } } } } } }";
        // products (1) + first × [edges (1) + node (1) + 5 × (variant 1 + availability 1)]
        // (the lists of a connection do not multiply again)
        let s = size(page, serde_json::json!({ "n": 10 })).unwrap();
        assert_eq!(s.cost, 1 + 10 * (1 + 1 + LIST_ESTIMATE * 2));
        let default = size(page, serde_json::json!({})).unwrap();
        assert_eq!(default.cost, 1 + 20 * (1 + 1 + LIST_ESTIMATE * 2));
        let scalar_only = size("{ channel { code name } }", serde_json::json!({})).unwrap();
        assert_eq!(scalar_only.cost, 1);
    }

    #[test]
    fn a_small_document_that_expands_exponentially_is_measured_at_once() {
        // 30 fragments, each spreading the next twice: 2^30 selections as executed.
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..30 {
            query.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        query.push_str("fragment F30 on Query { channel { code } }\n");
        let s = size(&query, serde_json::json!({})).unwrap();
        assert_eq!(s.selections, 2u64.pow(30) * 2);
        assert_eq!(s.root_fields, 1, "each fragment is expanded once per set");
        let limits = SizeLimits {
            max_selections: 2000,
            max_depth: 15,
            max_aliases: 30,
            max_root_fields: 20,
            max_cost: 5000,
        };
        assert!(matches!(
            s.check(&limits),
            Err(SizeError::TooLarge {
                what: "the number of fields",
                ..
            })
        ));
    }

    #[test]
    fn nested_amplification_without_fragments_is_costed() {
        let chain = "{ products(first: 100) { nodes { variants { product { variants { product { variants { sku } } } } } } } }";
        let s = size(chain, serde_json::json!({})).unwrap();
        assert!(s.cost > 100 * LIST_ESTIMATE.pow(3), "{s:?}");
    }

    #[test]
    fn cycles_and_unknown_fragments_are_refused() {
        assert_eq!(
            size(
                "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
                serde_json::json!({})
            ),
            Err(SizeError::FragmentCycle("A".into()))
        );
        assert_eq!(
            size("{ ...Nope }", serde_json::json!({})),
            Err(SizeError::UnknownFragment("Nope".into()))
        );
    }

    #[test]
    fn a_quote_costs_by_its_lines() {
        let query = "query($l: [QuoteLineInput!]!) { priceQuote(lines: $l) { lines { price { unitPrice } } } }";
        let lines: Vec<serde_json::Value> = (0..100)
            .map(|i| serde_json::json!({ "sku": format!("S{i}"), "quantity": 1 }))
            .collect();
        let s = size(query, serde_json::json!({ "l": lines })).unwrap();
        // priceQuote (1) + 100 × (line 1 + price 1)
        assert_eq!(s.cost, 1 + 100 * 2);
    }

    #[test]
    fn actual_cost_counts_objects() {
        let data = Value::from_json(serde_json::json!({
            "products": { "nodes": [{ "name": "a" }, { "name": "b" }] }
        }))
        .unwrap();
        assert_eq!(actual_cost(&data), 4);
    }
}

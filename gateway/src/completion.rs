//! Response completion as the GraphQL spec defines it, applied to what async-graphql returns.
//!
//! async-graphql 7.2.1 resolves the fields of a selection set concurrently and collects them
//! as they finish (its issue #612), so a response's fields come back in a varying order; and a
//! field whose resolver fails is left out of its object instead of being `null`. The spec says
//! a response map keeps the order of the selection set (fragments expanded in place, fields
//! merged by response key) and that a failed field is `null`, the `null` bubbling up to the
//! nearest nullable parent when the field is non-null. This module rebuilds `data` that way:
//! one walk over the response, guided by the executed document and the schema's field types.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::OnceLock;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
    Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, PathSegment, Positioned, ServerError, Value};

/// Field types of every object type of the schema, by type and field name.
pub(crate) struct SchemaShape {
    fields: HashMap<String, HashMap<String, Type>>,
    roots: [Option<String>; 3],
}

impl SchemaShape {
    fn from_sdl(sdl: &str) -> Self {
        let mut shape = Self {
            fields: HashMap::new(),
            roots: [
                Some("Query".to_owned()),
                Some("Mutation".to_owned()),
                Some("Subscription".to_owned()),
            ],
        };
        // The SDL is printed by our own schema, so it always parses; an empty shape would only
        // lose null propagation, never data.
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            return shape;
        };
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = schema.node;
                    let name = |n: Option<Positioned<Name>>| n.map(|n| n.node.to_string());
                    shape.roots = [
                        name(schema.query).or(shape.roots[0].take()),
                        name(schema.mutation).or(shape.roots[1].take()),
                        name(schema.subscription).or(shape.roots[2].take()),
                    ];
                }
                TypeSystemDefinition::Type(ty) => {
                    let ty = ty.node;
                    let fields = match ty.kind {
                        TypeKind::Object(object) => object.fields,
                        TypeKind::Interface(interface) => interface.fields,
                        _ => continue,
                    };
                    shape.fields.insert(
                        ty.name.node.to_string(),
                        fields
                            .into_iter()
                            .map(|f| (f.node.name.node.to_string(), f.node.ty.node))
                            .collect(),
                    );
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        shape
    }

    pub(crate) fn root(&self, ty: OperationType) -> Option<&str> {
        let index = match ty {
            OperationType::Query => 0,
            OperationType::Mutation => 1,
            OperationType::Subscription => 2,
        };
        self.roots[index].as_deref()
    }

    pub(crate) fn field(&self, parent: Option<&str>, field: &str) -> Option<&Type> {
        self.fields.get(parent?)?.get(field)
    }

    /// Whether `name` is an object (or interface) type of the schema.
    pub(crate) fn is_object(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }
}

pub(crate) fn shape() -> &'static SchemaShape {
    static SHAPE: OnceLock<SchemaShape> = OnceLock::new();
    SHAPE.get_or_init(|| SchemaShape::from_sdl(&crate::schema_sdl()))
}

/// A non-null position failed: its parent must become `null` in turn.
struct Bubble;

/// Puts `response.data` in selection order and turns failed fields into `null` (propagated
/// through non-null positions) for `operation` of `document`.
pub fn complete_response(
    response: &mut async_graphql::Response,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
) {
    let shape = shape();
    let walker = Walker {
        document,
        shape,
        errors: &response.errors,
        track: !response.errors.is_empty(),
        collected: RefCell::default(),
        last: RefCell::default(),
    };
    let mut data = std::mem::take(&mut response.data);
    // async-graphql answers an operation whose every root field was skipped (`@skip`) with
    // `null`; with no error it was an empty object.
    if data == Value::Null && response.errors.is_empty() {
        data = Value::Object(Object::new());
    }
    let root = shape.root(operation.ty);
    let mut path = Vec::new();
    response.data = match data {
        Value::Object(map) => {
            match walker.object(map, &[&operation.selection_set.node], root, &mut path) {
                Ok(map) => Value::Object(map),
                Err(Bubble) => Value::Null,
            }
        }
        other => other,
    };
}

/// The operation a request runs, when it can be told from the document alone.
pub fn selected_operation<'a>(
    operations: &'a DocumentOperations,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (operations, name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(map), Some(name)) => map.get(name),
        (DocumentOperations::Multiple(map), None) if map.len() == 1 => map.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

type Object = async_graphql::indexmap::IndexMap<Name, Value>;

/// One response key of a selection set: the field it names and every selection set merged
/// under it (the same key may be selected several times, directly and through fragments).
struct Collected<'d> {
    key: &'d Name,
    field: &'d Name,
    sub_selections: Vec<&'d SelectionSet>,
}

/// The response keys of some selection sets on one object type, with each key's field type.
type Shaped<'a> = Rc<Vec<(Collected<'a>, Option<&'a Type>)>>;

/// Selection sets (by address) and the object type they shape.
type ShapeKey<'a> = (Vec<usize>, Option<&'a str>);

struct Walker<'a> {
    document: &'a ExecutableDocument,
    shape: &'a SchemaShape,
    errors: &'a [ServerError],
    /// Whether any error was reported: only then do paths matter (a response without errors
    /// needs ordering only, and its walk allocates no path).
    track: bool,
    /// Response keys per selection sets and object type, collected once and reused for every
    /// object they shape: every item of a list shares its selection sets.
    collected: RefCell<HashMap<ShapeKey<'a>, Shaped<'a>>>,
    /// The last entry used, looked up without hashing (consecutive list items share it).
    last: RefCell<Option<(ShapeKey<'a>, Shaped<'a>)>>,
}

impl<'a> Walker<'a> {
    /// Whether an error was reported at `path` or below it.
    fn failed_at_or_below(&self, path: &[PathSegment]) -> bool {
        self.errors
            .iter()
            .any(|e| e.path.len() >= path.len() && e.path[..path.len()] == *path)
    }

    /// Whether an error was reported strictly below `path`.
    fn failed_below(&self, path: &[PathSegment]) -> bool {
        self.errors
            .iter()
            .any(|e| e.path.len() > path.len() && e.path[..path.len()] == *path)
    }

    /// The response keys of `selections` in document order, fragments expanded in place
    /// (each fragment once per selection set, so repeated spreads cost nothing).
    fn collect(&self, selections: &[&'a SelectionSet]) -> Vec<Collected<'a>> {
        let mut out: Vec<Collected<'a>> = Vec::new();
        let mut index: HashMap<&'a str, usize> = HashMap::new();
        let mut spread: HashSet<&'a str> = HashSet::new();
        for set in selections {
            self.collect_into(set, &mut out, &mut index, &mut spread);
        }
        out
    }

    fn collect_into(
        &self,
        set: &'a SelectionSet,
        out: &mut Vec<Collected<'a>>,
        index: &mut HashMap<&'a str, usize>,
        spread: &mut HashSet<&'a str>,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let key = field.alias.as_ref().map_or(&field.name.node, |a| &a.node);
                    let position = *index.entry(key.as_str()).or_insert_with(|| {
                        out.push(Collected {
                            key,
                            field: &field.name.node,
                            sub_selections: Vec::new(),
                        });
                        out.len() - 1
                    });
                    if !field.selection_set.node.items.is_empty() {
                        out[position].sub_selections.push(&field.selection_set.node);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    self.collect_into(&fragment.node.selection_set.node, out, index, spread);
                }
                Selection::FragmentSpread(fragment) => {
                    let name = fragment.node.fragment_name.node.as_str();
                    if spread.insert(name)
                        && let Some(definition) = self.document.fragments.get(name)
                    {
                        self.collect_into(&definition.node.selection_set.node, out, index, spread);
                    }
                }
            }
        }
    }

    /// The response keys and field types of `selections` on `type_name`.
    fn shaped(&self, selections: &[&'a SelectionSet], type_name: Option<&'a str>) -> Shaped<'a> {
        let same = |key: &ShapeKey<'a>| {
            key.1 == type_name
                && key.0.len() == selections.len()
                && key
                    .0
                    .iter()
                    .zip(selections)
                    .all(|(a, b)| *a == std::ptr::from_ref(*b) as usize)
        };
        if let Some((key, shaped)) = &*self.last.borrow()
            && same(key)
        {
            return Rc::clone(shaped);
        }
        let key: ShapeKey<'a> = (
            selections
                .iter()
                .map(|set| std::ptr::from_ref(*set) as usize)
                .collect(),
            type_name,
        );
        let shaped = Rc::clone(
            self.collected
                .borrow_mut()
                .entry(key.clone())
                .or_insert_with(|| {
                    Rc::new(
                        self.collect(selections)
                            .into_iter()
                            .map(|c| {
                                let ty = self.shape.field(type_name, c.field);
                                (c, ty)
                            })
                            .collect(),
                    )
                }),
        );
        *self.last.borrow_mut() = Some((key, Rc::clone(&shaped)));
        shaped
    }

    fn object(
        &self,
        mut map: Object,
        selections: &[&'a SelectionSet],
        type_name: Option<&'a str>,
        path: &mut Vec<PathSegment>,
    ) -> Result<Object, Bubble> {
        let all = self.shaped(selections, type_name);
        // Without errors, an object already in selection order is completed in place (no
        // field can fail, so nothing becomes null).
        let in_order = !self.track
            && map.len() == all.len()
            && map
                .keys()
                .zip(all.iter())
                .all(|(key, (collected, _))| key == collected.key);
        if in_order {
            for (value, (collected, ty)) in map.values_mut().zip(all.iter()) {
                let taken = std::mem::take(value);
                *value = match self.value(taken, *ty, &collected.sub_selections, path) {
                    Ok(completed) => completed,
                    Err(Bubble) if ty.is_none_or(|t| t.nullable) => Value::Null,
                    Err(Bubble) => return Err(Bubble),
                };
            }
            return Ok(map);
        }
        let mut out = Object::with_capacity(map.len());
        for (collected, ty) in all.iter() {
            let ty = *ty;
            if self.track {
                path.push(PathSegment::Field(collected.key.to_string()));
            }
            let completed = match map.swap_remove(collected.key.as_str()) {
                Some(value) => self.value(value, ty, &collected.sub_selections, path),
                // Absent without an error: skipped by @skip / @include or a type condition.
                None if !self.failed_at_or_below(path) => {
                    if self.track {
                        path.pop();
                    }
                    continue;
                }
                None => Err(Bubble),
            };
            if self.track {
                path.pop();
            }
            match completed {
                Ok(value) => {
                    out.insert(collected.key.clone(), value);
                }
                Err(Bubble) if ty.is_none_or(|t| t.nullable) => {
                    out.insert(collected.key.clone(), Value::Null);
                }
                Err(Bubble) => return Err(Bubble),
            }
        }
        // Nothing the document did not ask for should be there; never drop it if it is.
        out.extend(map);
        Ok(out)
    }

    fn value(
        &self,
        value: Value,
        ty: Option<&'a Type>,
        selections: &[&'a SelectionSet],
        path: &mut Vec<PathSegment>,
    ) -> Result<Value, Bubble> {
        let base = ty.map(|t| &t.base);
        match value {
            Value::List(items) => {
                let item_type = match base {
                    Some(BaseType::List(inner)) => Some(&**inner),
                    _ => None,
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    if self.track {
                        path.push(PathSegment::Index(i));
                    }
                    let completed = self.value(item, item_type, selections, path);
                    if self.track {
                        path.pop();
                    }
                    match completed {
                        Ok(item) => out.push(item),
                        Err(Bubble) if item_type.is_none_or(|t| t.nullable) => {
                            out.push(Value::Null)
                        }
                        Err(Bubble) => return Err(Bubble),
                    }
                }
                Ok(Value::List(out))
            }
            Value::Object(map) if !selections.is_empty() => {
                let type_name = match base {
                    Some(BaseType::Named(name)) => Some(name.as_str()),
                    _ => None,
                };
                self.object(map, selections, type_name, path)
                    .map(Value::Object)
            }
            // async-graphql turns an object whose every field failed or was skipped into
            // `null`: complete it as an empty object so each field is decided on its own. (A
            // non-null position cannot hold a resolver's `null`; a nullable one can, and is
            // only reopened when its fields failed.)
            Value::Null
                if !selections.is_empty()
                    && matches!(base, Some(BaseType::Named(_)))
                    && (self.failed_below(path) || ty.is_some_and(|t| !t.nullable)) =>
            {
                self.value(Value::Object(Object::new()), ty, selections, path)
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    const SDL: &str = r#"
        type Query { a: Int b: Int! obj: Obj list: [Obj!]! maybe: [Obj] }
        type Obj { x: Int y: Int! z: Obj }
    "#;

    /// The completed data as JSON text (async-graphql's values keep their key order).
    fn complete(query: &str, data: serde_json::Value, errors: &[&[&str]]) -> String {
        let document = parse_query(query).unwrap();
        let operation = selected_operation(&document.operations, None).unwrap();
        let shape = SchemaShape::from_sdl(SDL);
        let errors: Vec<ServerError> = errors
            .iter()
            .map(|path| {
                let mut error = ServerError::new("failed", None);
                error.path = path
                    .iter()
                    .map(|s| match s.parse::<usize>() {
                        Ok(i) => PathSegment::Index(i),
                        Err(_) => PathSegment::Field((*s).to_owned()),
                    })
                    .collect();
                error
            })
            .collect();
        let walker = Walker {
            document: &document,
            shape: &shape,
            errors: &errors,
            track: !errors.is_empty(),
            collected: RefCell::default(),
            last: RefCell::default(),
        };
        let Value::Object(map) = Value::from_json(data).unwrap() else {
            panic!("object data");
        };
        let completed = walker.object(
            map,
            &[&operation.node.selection_set.node],
            Some("Query"),
            &mut Vec::new(),
        );
        let value = match completed {
            Ok(map) => Value::Object(map),
            Err(Bubble) => Value::Null,
        };
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn fields_follow_the_document_at_every_level() {
        let data = serde_json::json!({
            "obj": { "z": { "y": 2, "x": 1 }, "x": 1 },
            "second": 2,
            "first": 1,
        });
        let out = complete(
            "{ first: a second: b obj { x ...F } } fragment F on Obj { z { x y } }",
            data,
            &[],
        );
        assert_eq!(
            out,
            r#"{"first":1,"second":2,"obj":{"x":1,"z":{"x":1,"y":2}}}"#
        );
    }

    #[test]
    fn a_failed_nullable_field_is_null_in_its_place() {
        let out = complete("{ a b }", serde_json::json!({ "b": 1 }), &[&["a"]]);
        assert_eq!(out, r#"{"a":null,"b":1}"#);
    }

    #[test]
    fn a_failed_non_null_field_nulls_its_nearest_nullable_parent() {
        let out = complete(
            "{ obj { x y } a }",
            serde_json::json!({ "a": 1, "obj": { "x": 1 } }),
            &[&["obj", "y"]],
        );
        assert_eq!(out, r#"{"obj":null,"a":1}"#);
        // In a list of non-null items the whole list goes; the list is non-null too, so the
        // root's data goes.
        let out = complete(
            "{ list { y } }",
            serde_json::json!({ "list": [{ "y": 1 }, {}] }),
            &[&["list", "1", "y"]],
        );
        assert_eq!(out, "null");
        // In a list of nullable items only the item goes.
        let out = complete(
            "{ maybe { y } }",
            serde_json::json!({ "maybe": [{ "y": 1 }, {}] }),
            &[&["maybe", "1", "y"]],
        );
        assert_eq!(out, r#"{"maybe":[{"y":1},null]}"#);
    }

    #[test]
    fn skipped_fields_stay_absent_and_repeated_spreads_expand_once() {
        let out = complete(
            "{ a @skip(if: true) b ...F ...F } fragment F on Query { b a @skip(if: true) }",
            serde_json::json!({ "b": 1 }),
            &[],
        );
        assert_eq!(out, r#"{"b":1}"#);
    }

    #[test]
    fn an_object_whose_fields_were_all_skipped_is_empty_not_null() {
        let out = complete(
            "{ list { y @skip(if: true) } obj { x @skip(if: true) } }",
            serde_json::json!({ "list": [null, null], "obj": null }),
            &[],
        );
        // `list` holds non-null objects; `obj` is nullable and may be a resolver's null.
        assert_eq!(out, r#"{"list":[{},{}],"obj":null}"#);
    }

    #[test]
    fn an_object_whose_fields_all_failed_is_completed_field_by_field() {
        let out = complete(
            "{ obj { x } }",
            serde_json::json!({ "obj": null }),
            &[&["obj", "x"]],
        );
        assert_eq!(out, r#"{"obj":{"x":null}}"#);
    }
}

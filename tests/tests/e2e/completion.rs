//! Response completion: fields in the order of the query at every level, and a failed
//! nullable field present as `null` (GraphQL spec, "Response" and "Handling Field Errors").

use e2e::{Client, shared_app};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// A JSON value that remembers the order of object keys as sent.
#[derive(Debug)]
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Scalar,
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
                    entries.push((key, value));
                }
                Ok(Ordered::Object(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Ordered>()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An outline of the expected response keys: `{ a { x y } b }` (no arguments, aliases as keys).
#[derive(Debug)]
struct Outline(Vec<(String, Option<Outline>)>);

fn outline(text: &str) -> Outline {
    let spaced = text.replace('{', " { ").replace('}', " } ");
    let mut tokens = spaced.split_whitespace().peekable();
    assert_eq!(tokens.next(), Some("{"));
    fn parse<'a>(tokens: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) -> Outline {
        let mut fields = Vec::new();
        while let Some(token) = tokens.next() {
            match token {
                "}" => return Outline(fields),
                "{" => {
                    let nested = parse(tokens);
                    fields.last_mut().expect("a field before {").1 = Some(nested);
                }
                name => fields.push((name.to_owned(), None)),
            }
        }
        Outline(fields)
    }
    parse(&mut tokens)
}

/// Every object has exactly the outline's keys, in its order; lists are checked item by item.
fn assert_shape(value: &Ordered, expected: &Outline, path: &str) {
    match value {
        Ordered::Object(entries) => {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            let want: Vec<&str> = expected.0.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, want, "keys at {path}");
            for ((key, value), (_, nested)) in entries.iter().zip(&expected.0) {
                if let Some(nested) = nested {
                    assert_shape(value, nested, &format!("{path}.{key}"));
                }
            }
        }
        Ordered::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_shape(item, expected, &format!("{path}[{i}]"));
            }
        }
        Ordered::Scalar => {}
    }
}

fn data_of(text: &str) -> Ordered {
    let Ordered::Object(entries) = serde_json::from_str::<Ordered>(text).expect("JSON") else {
        panic!("an object: {text}");
    };
    entries
        .into_iter()
        .find(|(k, _)| k == "data")
        .map(|(_, v)| v)
        .expect("data")
}

const QUERY: &str = r#"
query Order($sku: String!, $slug: String!) {
  b: variant(sku: $sku) {
    availability { quantity status }
    sku
    product { slug name category { parent { name } slug } }
    ...VariantBits
  }
  a: product(slug: $slug) {
    variants { availability { status } weightGrams sku options { value name } }
    name
    id
    ... on Product { slug attributes { value key } }
  }
  c: channel { locations { priority code } currency code }
  products(first: 8) {
    totalCount
    nodes { variants { sku availability { status quantity } } name category { name } }
    pageInfo { endCursor hasNextPage }
  }
  categories { children { slug name } name }
  z: variant(sku: $sku) { name }
}
fragment VariantBits on Variant { name id availability { status } }
"#;

const OUTLINE: &str = r#"{
  b { availability { quantity status } sku product { slug name category { parent { name } slug } } name id }
  a { variants { availability { status } weightGrams sku options { value name } } name id slug attributes { value key } }
  c { locations { priority code } currency code }
  products { totalCount nodes { variants { sku availability { status quantity } } name category { name } } pageInfo { endCursor hasNextPage } }
  categories { children { slug name } name }
  z { name }
}"#;

#[tokio::test]
async fn fields_keep_the_order_of_the_query_at_every_level_on_every_channel() {
    let app = shared_app();
    let expected = outline(OUTLINE);
    // Products every channel lists, so each root field has an object to order.
    let sku = "TS-0001-M";
    let variables = json!({ "sku": sku, "slug": "lightweight-crew-tee-1" });
    for channel in ["web", "mobile", "pos", "b2b"] {
        let client = Client::new(&app.url).channel(channel);
        for round in 0..8 {
            let reply = client.query(QUERY, variables.clone()).await;
            let data = reply.data();
            // Every channel lists this product, so every level is there to be ordered.
            assert!(
                !data["b"].is_null() && !data["a"].is_null(),
                "{channel}: {}",
                reply.text
            );
            assert_shape(
                &data_of(&reply.text),
                &expected,
                &format!("{channel}#{round}"),
            );
        }
    }
}

#[tokio::test]
async fn a_forbidden_nullable_field_is_present_as_null_in_its_place() {
    let app = shared_app();
    let reply = Client::new(&app.url)
        .query(
            r#"{ variant(sku: "TS-0001-M") { stockLevels { available } sku availability { status } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(reply.error_codes(), ["FORBIDDEN"]);
    let variant = reply.body["data"]["variant"]
        .as_object()
        .expect("the variant is there");
    assert!(
        variant.contains_key("stockLevels"),
        "the failed field is a key with null, not absent: {}",
        reply.text
    );
    assert_eq!(variant["stockLevels"], Value::Null);
    assert_shape(
        &data_of(&reply.text),
        &outline("{ variant { stockLevels sku availability { status } } }"),
        "web",
    );
}

#[tokio::test]
async fn skipped_fields_and_variable_defaults_follow_the_spec() {
    let app = shared_app();
    let client = Client::new(&app.url);
    // Every field of a non-null object skipped: an empty object, not null.
    let reply = client
        .query("{ channel { code @skip(if: true) } }", json!({}))
        .await;
    assert_eq!(reply.data()["channel"], json!({}), "{}", reply.text);
    let reply = client
        .query("{ __typename @skip(if: true) }", json!({}))
        .await;
    assert_eq!(reply.body["data"], json!({}), "{}", reply.text);
    // `@skip` / `@include` read a variable's default when the request omits it.
    let reply = client
        .query(
            "query($t: Boolean = true) { a: channel @skip(if: $t) { code } b: channel @include(if: $t) { code } }",
            json!({}),
        )
        .await;
    let data = reply.data().as_object().unwrap();
    assert!(!data.contains_key("a"), "{}", reply.text);
    assert_eq!(data["b"]["code"], "web");
}

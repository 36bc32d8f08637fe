//! The catalog page is N+1 free: its SQL statement count does not grow with the page size.

use e2e::{Client, spawn_app, spawn_app_with};
use serde_json::json;

const CATALOG_PAGE: &str = "query($first: Int!) {
  products(first: $first) {
    edges { cursor node { id name category { name parent { name } } variants { sku options { name value } availability { status quantity } product { slug } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// The same page written with fragments and aliases, as client code generators emit it.
const CATALOG_PAGE_WITH_FRAGMENTS: &str = "query($first: Int!) {
  page: products(first: $first) { ...Page }
}
fragment Page on ProductConnection {
  items: edges { node { ...Card } }
}
fragment Card on Product {
  name
  skus: variants { sku ... on Variant { stock: availability { status } } }
}";

/// The page a storefront shows with prices: list price, promotions and tiers per variant.
const CATALOG_PAGE_WITH_PRICES: &str = "query($first: Int!) {
  products(first: $first) {
    edges { node { id name variants { sku availability { status } price { unitPrice lineTotal appliedRules { code } } priceTiers { minQuantity unitPrice } quantityRule { minQuantity } } } }
  }
}";

async fn statements_for(app: &e2e::TestApp, channel: &str, query: &str, first: i64) -> u64 {
    let client = Client::new(app.gateway.url()).channel(channel);
    let before = app.gateway.sql_statements();
    let reply = client.query(query, json!({ "first": first })).await;
    let page = reply
        .data()
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let edges = page.get("edges").or_else(|| page.get("items")).unwrap();
    let nodes = edges.as_array().unwrap().len();
    assert_eq!(nodes as i64, first, "the page is full");
    app.gateway.sql_statements() - before
}

#[tokio::test]
async fn a_catalog_page_costs_the_same_statements_for_10_and_50_products() {
    // Its own gateway: the counter must see this test's requests only (and no sweep of
    // expired reservations runs while it counts).
    // The database path (the read model answers repeated reads from memory; its own tests
    // are in read_path.rs).
    let app = spawn_app_with(|config| {
        config.inventory.sweep_interval_secs = 3600;
        config.read_path.read_model = false;
        config.read_path.response_cache = false;
    })
    .await;
    // Exact counts, so a statement more (or a batch split by timing) fails the test:
    // channel (3) + products + variants + categories + stock (2) = 8 (parent products come
    // from the page itself); stock is the core's channel availability, one batched statement
    // for the variants' levels and one for their holds (other channels' holds lower what a
    // channel may sell). The fragment page asks for no categories; prices add the viewer's
    // lists, the channel's promotions, and the entries and quantity rules of the variants.
    for (channel, query, expected) in [
        ("web", CATALOG_PAGE, 8),
        ("pos", CATALOG_PAGE, 8),
        ("web", CATALOG_PAGE_WITH_FRAGMENTS, 7),
        ("web", CATALOG_PAGE_WITH_PRICES, 12),
        ("b2b", CATALOG_PAGE_WITH_PRICES, 12),
    ] {
        let small = statements_for(&app, channel, query, 10).await;
        let large = statements_for(&app, channel, query, 50).await;
        assert_eq!(
            small, large,
            "{channel}: statements grew with the page size (N+1)"
        );
        assert_eq!(small, expected, "{channel}: statements for one page");
    }
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn requests_that_fail_before_execution_touch_no_database() {
    let app = spawn_app().await;
    let client = Client::new(app.gateway.url());
    let before = app.gateway.sql_statements();
    let syntax = client
        .query("{ products(first: 2 { nodes { id } } }", json!({}))
        .await;
    assert_eq!(syntax.error_codes(), ["GRAPHQL_PARSE_FAILED"]);
    let missing = client
        .query(
            "query($n: Int!) { products(first: $n) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(missing.error_codes(), ["BAD_USER_INPUT"]);
    let (over_get, _) = client.get(&[("query", "mutation { anything }")]).await;
    assert_eq!(over_get.error_codes(), ["METHOD_NOT_ALLOWED"]);
    assert_eq!(
        app.gateway.sql_statements(),
        before,
        "no SQL for requests refused up front"
    );
    app.gateway.stop().await.unwrap();
}

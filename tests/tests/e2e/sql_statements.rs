//! The catalog page is N+1 free: its SQL statement count does not grow with the page size.

use e2e::{Client, spawn_app};
use serde_json::json;

const CATALOG_PAGE: &str = "query($first: Int!) {
  products(first: $first) {
    edges { cursor node { id name category { name parent { name } } variants { sku options { name value } availability { status quantity } product { slug } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

async fn statements_for(app: &e2e::TestApp, channel: &str, first: i64) -> u64 {
    let client = Client::new(app.gateway.url()).channel(channel);
    let before = app.gateway.sql_statements();
    let reply = client.query(CATALOG_PAGE, json!({ "first": first })).await;
    let nodes = reply.data()["products"]["edges"].as_array().unwrap().len();
    assert_eq!(nodes as i64, first, "the page is full");
    app.gateway.sql_statements() - before
}

#[tokio::test]
async fn a_catalog_page_costs_the_same_statements_for_10_and_50_products() {
    // Its own gateway: the counter must see this test's requests only.
    let app = spawn_app().await;
    for channel in ["web", "pos"] {
        let small = statements_for(&app, channel, 10).await;
        let large = statements_for(&app, channel, 50).await;
        assert_eq!(
            small, large,
            "{channel}: statements grew with the page size (N+1)"
        );
        // channel (3) + products + variants + categories + products-by-id + stock.
        assert!(small <= 8, "{channel}: {small} statements for one page");
    }
    app.gateway.stop().await.unwrap();
}

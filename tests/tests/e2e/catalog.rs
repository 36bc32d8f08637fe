//! The catalog read path: paging, filters, lookups and channel visibility.

use std::collections::HashSet;

use e2e::{Client, open_database, shared_app};
use gateway::auth::Role;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const PAGE: &str = "query Page($first: Int, $after: String, $filter: ProductFilterInput) {
  products(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { id slug name category { id slug parent { slug } } attributes { key value } variants { sku } } }
  }
}";

/// Slugs of the products a channel lists, straight from the database (the oracle).
async fn listed_slugs(database_url: &str, channel: &str) -> HashSet<String> {
    let db = open_database(database_url).await;
    let sql = format!(
        "SELECT p.slug FROM product p JOIN channel_product cp ON cp.product_id = p.id \
         JOIN channel c ON c.id = cp.channel_id WHERE c.code = '{channel}' AND p.status = 'active'"
    );
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.try_get::<String>("", "slug").unwrap())
        .collect()
}

/// Every product of a paged listing, following cursors to the end.
async fn page_through(client: &Client, first: i64, filter: Value) -> (Vec<Value>, i64) {
    let mut after: Option<String> = None;
    let mut nodes = Vec::new();
    let mut total = None;
    loop {
        let reply = client
            .query(
                PAGE,
                json!({ "first": first, "after": after, "filter": filter }),
            )
            .await;
        let products = &reply.data()["products"];
        assert_eq!(products["pageInfo"]["hasPreviousPage"], after.is_some());
        let count = products["totalCount"].as_i64().unwrap();
        assert_eq!(
            *total.get_or_insert(count),
            count,
            "totalCount is stable across pages"
        );
        let edges = products["edges"].as_array().unwrap();
        nodes.extend(edges.iter().map(|e| e["node"].clone()));
        if !products["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        assert_eq!(edges.len() as i64, first, "only the last page may be short");
        after = Some(
            products["pageInfo"]["endCursor"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    (nodes, total.unwrap())
}

#[tokio::test]
async fn paging_through_the_whole_catalog_returns_every_visible_product_exactly_once() {
    let app = shared_app();
    for (channel, first) in [("web", 37), ("b2b", 100), ("pos", 50)] {
        let client = Client::new(&app.url).channel(channel);
        let (nodes, total) = page_through(&client, first, Value::Null).await;
        let slugs: Vec<String> = nodes
            .iter()
            .map(|n| n["slug"].as_str().unwrap().to_owned())
            .collect();
        let unique: HashSet<String> = slugs.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            slugs.len(),
            "{channel}: a product appeared twice"
        );
        assert_eq!(
            unique,
            listed_slugs(&app.database_url, channel).await,
            "{channel}: exactly the listed products"
        );
        assert_eq!(
            total as usize,
            slugs.len(),
            "{channel}: totalCount matches the pages"
        );
    }
}

#[tokio::test]
async fn channels_see_different_catalogs() {
    let app = shared_app();
    let web = listed_slugs(&app.database_url, "web").await;
    let b2b = listed_slugs(&app.database_url, "b2b").await;
    let mobile = listed_slugs(&app.database_url, "mobile").await;
    assert!(web.len() >= 400, "web lists most products: {}", web.len());
    assert!(
        mobile.len() < web.len() && mobile.is_subset(&web),
        "mobile is a curated subset of web"
    );
    assert!(!b2b.is_subset(&web), "b2b has wholesale-only products");

    // A wholesale-only SKU (office supplies) is visible on b2b and invisible on the web.
    let query = "query($sku: String!) { variant(sku: $sku) { sku product { slug category { parent { slug } } } } }";
    let b2b_reply = Client::new(&app.url)
        .channel("b2b")
        .query(query, json!({ "sku": "PP-0012-P1" }))
        .await;
    let variant = &b2b_reply.data()["variant"];
    assert_eq!(variant["product"]["category"]["parent"]["slug"], "office");
    let web_reply = Client::new(&app.url)
        .query(query, json!({ "sku": "PP-0012-P1" }))
        .await;
    assert_eq!(web_reply.data()["variant"], Value::Null);
}

#[tokio::test]
async fn filters_narrow_the_listing() {
    let app = shared_app();
    let client = Client::new(&app.url);
    let (all, _) = page_through(&client, 100, Value::Null).await;

    // Category: a top-level category includes its subcategories.
    let apparel = client.query("{ categories { id slug } }", json!({})).await;
    let apparel_id = apparel.data()["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == "apparel")
        .unwrap()["id"]
        .clone();
    let (in_apparel, total) = page_through(&client, 100, json!({ "categoryId": apparel_id })).await;
    let expected = all
        .iter()
        .filter(|n| n["category"]["parent"]["slug"] == "apparel")
        .count();
    assert!(expected > 50);
    assert_eq!(in_apparel.len(), expected);
    assert_eq!(total as usize, expected);

    // Search is a case-insensitive substring of the name.
    let (tees, _) = page_through(&client, 100, json!({ "search": "TEE" })).await;
    let expected = all
        .iter()
        .filter(|n| n["name"].as_str().unwrap().to_lowercase().contains("tee"))
        .count();
    assert!(expected > 0);
    assert_eq!(tees.len(), expected);

    // SKUs select the products owning them.
    let (by_sku, _) = page_through(
        &client,
        100,
        json!({ "skus": ["TS-0001-M", "HD-0002-L", "NO-SUCH-SKU"] }),
    )
    .await;
    let slugs: Vec<&str> = by_sku.iter().map(|n| n["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["lightweight-crew-tee-1", "modern-pullover-2"]);

    // Attributes match exactly, and combine with the other conditions.
    let filter =
        json!({ "attributes": [{ "key": "material", "value": "linen" }], "search": "tee" });
    let (linen_tees, _) = page_through(&client, 100, filter).await;
    let expected = all
        .iter()
        .filter(|n| n["name"].as_str().unwrap().to_lowercase().contains("tee"))
        .filter(|n| {
            n["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "material" && a["value"] == "linen")
        })
        .count();
    assert!(expected > 0);
    assert_eq!(linen_tees.len(), expected);
}

#[tokio::test]
async fn invalid_filters_are_rejected_with_the_field_named() {
    let client = Client::new(&shared_app().url);
    for (filter, field) in [
        (
            json!({ "attributes": [{ "key": "a') OR 1=1 --", "value": "x" }] }),
            "filter.attributes.key",
        ),
        (json!({ "categoryId": "not-an-id" }), "filter.categoryId"),
        (json!({ "search": "   " }), "filter.search"),
        (json!({ "search": "x".repeat(101) }), "filter.search"),
        (
            json!({ "skus": (0..101).map(|i| format!("SKU-{i}")).collect::<Vec<_>>() }),
            "filter.skus",
        ),
        (
            json!({ "attributes": (0..11).map(|i| json!({ "key": format!("k{i}"), "value": "v" })).collect::<Vec<_>>() }),
            "filter.attributes",
        ),
    ] {
        let reply = client
            .query(PAGE, json!({ "first": 5, "filter": filter }))
            .await;
        assert_eq!(reply.error_codes(), ["BAD_USER_INPUT"], "{}", reply.body);
        assert_eq!(reply.body["errors"][0]["extensions"]["field"], field);
        assert_eq!(reply.body["data"], Value::Null);
    }
}

#[tokio::test]
async fn bad_cursors_and_page_sizes_get_clear_errors() {
    let client = Client::new(&shared_app().url);
    for (variables, field) in [
        (json!({ "after": "definitely-not-a-cursor" }), "after"),
        (json!({ "after": "UHJvZHVjdDox" }), "after"), // a product id, not a cursor
        (json!({ "first": 0 }), "first"),
        (json!({ "first": 101 }), "first"),
    ] {
        let reply = client.query(PAGE, variables).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.error_codes(), ["BAD_USER_INPUT"], "{}", reply.body);
        assert_eq!(reply.body["errors"][0]["extensions"]["field"], field);
        assert_eq!(reply.body["errors"][0]["path"], json!(["products"]));
    }
}

#[tokio::test]
async fn single_lookups_by_id_slug_and_sku() {
    let client = Client::new(&shared_app().url);
    let first = client.query(PAGE, json!({ "first": 1 })).await;
    let node = first.data()["products"]["edges"][0]["node"].clone();
    let query = "query($id: ID, $slug: String) { product(id: $id, slug: $slug) { id slug variants { sku } } }";
    let by_id = client.query(query, json!({ "id": node["id"] })).await;
    assert_eq!(by_id.data()["product"]["slug"], node["slug"]);
    let by_slug = client.query(query, json!({ "slug": node["slug"] })).await;
    assert_eq!(by_slug.data()["product"]["id"], node["id"]);
    let missing = client
        .query(query, json!({ "slug": "no-such-product" }))
        .await;
    assert_eq!(missing.data()["product"], Value::Null);
    let both = client
        .query(query, json!({ "id": node["id"], "slug": node["slug"] }))
        .await;
    assert_eq!(both.error_codes(), ["BAD_USER_INPUT"]);
    let neither = client.query(query, json!({})).await;
    assert_eq!(neither.error_codes(), ["BAD_USER_INPUT"]);

    let sku = node["variants"][0]["sku"].as_str().unwrap();
    let variant = client
        .query(
            "query($sku: String!) { variant(sku: $sku) { sku product { slug } } }",
            json!({ "sku": sku }),
        )
        .await;
    assert_eq!(variant.data()["variant"]["product"]["slug"], node["slug"]);
}

#[tokio::test]
async fn stock_is_shaped_per_channel() {
    let app = shared_app();
    let query = "query($sku: String!) { variant(sku: $sku) { availability { status quantity } stockLevels { location { code } onHand reserved available } } }";
    // TS-0001-M: 4 units at STORE-MALL, plenty in the warehouses.
    let clerk = app.token("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN"));
    let pos = Client::new(&app.url)
        .token(clerk)
        .query(query, json!({ "sku": "TS-0001-M" }))
        .await;
    let variant = &pos.data()["variant"];
    let levels = variant["stockLevels"].as_array().unwrap();
    assert_eq!(
        levels
            .iter()
            .map(|l| l["location"]["code"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["STORE-DOWNTOWN", "STORE-MALL"]
    );
    let total: i64 = levels
        .iter()
        .map(|l| l["available"].as_i64().unwrap())
        .sum();
    assert_eq!(
        variant["availability"]["quantity"].as_i64().unwrap(),
        total,
        "pos safety stock is 0"
    );

    // Anonymous POS requests read the catalog, but per-location stock needs a clerk.
    let anonymous_pos = Client::new(&app.url)
        .channel("pos")
        .query(query, json!({ "sku": "TS-0001-M" }))
        .await;
    assert_eq!(anonymous_pos.error_codes(), ["FORBIDDEN"]);
    assert!(anonymous_pos.body["data"]["variant"]["availability"]["quantity"].is_i64());

    let web = Client::new(&app.url)
        .query(query, json!({ "sku": "TS-0001-M" }))
        .await;
    assert_eq!(web.error_codes(), ["FORBIDDEN"]);
    // Present as null (the spec's rule for a failed nullable field), not left out.
    assert_eq!(
        web.body["data"]["variant"].get("stockLevels"),
        Some(&Value::Null),
        "{}",
        web.text
    );
    assert_eq!(
        web.body["data"]["variant"]["availability"],
        json!({ "status": "IN_STOCK", "quantity": null })
    );

    // Across the web catalog: quantities are shown exactly when stock is low.
    let client = Client::new(&app.url);
    let listing = client
        .query(
            "{ products(first: 100) { nodes { variants { availability { status quantity } } } } }",
            json!({}),
        )
        .await;
    let mut seen = HashSet::new();
    for product in listing.data()["products"]["nodes"].as_array().unwrap() {
        for variant in product["variants"].as_array().unwrap() {
            let availability = &variant["availability"];
            let status = availability["status"].as_str().unwrap().to_owned();
            assert_eq!(
                status == "LOW_STOCK",
                !availability["quantity"].is_null(),
                "{availability}"
            );
            seen.insert(status);
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "the demo has in-stock, low and out-of-stock variants: {seen:?}"
    );
}

#[tokio::test]
async fn channel_locations_and_categories_are_listed() {
    let app = shared_app();
    let reply = Client::new(&app.url)
        .channel("b2b")
        .query("{ channel { code currency locations { code } } stockLocations { code kind priority } }", json!({}))
        .await;
    let data = reply.data();
    assert_eq!(data["channel"]["code"], "b2b");
    assert_eq!(data["channel"]["currency"], "USD");
    let codes: Vec<&str> = data["stockLocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["WH-CENTRAL", "WH-EAST", "WH-WEST"]);
    assert_eq!(data["stockLocations"][0]["priority"], 1);

    let categories = Client::new(&app.url)
        .query(
            "{ categories { slug parent { slug } children { slug } } }",
            json!({}),
        )
        .await;
    let categories = categories.data()["categories"].as_array().unwrap().clone();
    assert!(categories.len() >= 10);
    let apparel = categories.iter().find(|c| c["slug"] == "apparel").unwrap();
    assert_eq!(apparel["parent"], Value::Null);
    assert!(
        apparel["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["slug"] == "jackets")
    );
}

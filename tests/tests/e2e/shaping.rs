//! Operation size limits: refused before validation and before any SQL, whatever the
//! document's trick (fragment explosion, aliases, nesting), and the cost of every answered
//! operation reported in `extensions.cost`.

use e2e::{Client, GRAPHQL_RESPONSE_JSON, StatusCode, spawn_app};
use serde_json::json;

/// 20 fragments that each spread the next twice: 837 bytes that expand to 2^20 selections.
fn fragment_bomb(leaf: &str) -> String {
    let mut query = String::from("query { ...F0 }\n");
    for i in 0..20 {
        query.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    query.push_str(&format!("fragment F20 on Query {{ {leaf} }}\n"));
    query
}

#[tokio::test]
async fn oversized_operations_are_refused_before_any_sql() {
    let app = spawn_app().await;
    let client = Client::new(app.gateway.url()).accept(GRAPHQL_RESPONSE_JSON);
    let aliases: String = (0..200)
        .map(|i| format!("a{i}: products(first: 100) {{ nodes {{ name }} }} "))
        .collect();
    let chain = "{ a: products(first: 100) { nodes { variants { product { variants { product { variants { product { variants { product { variants { sku } } } } } } } } } } } }";
    let cases = [
        (
            "fragment explosion",
            fragment_bomb("channel { code }"),
            "number of fields",
        ),
        (
            "fragment explosion over products",
            fragment_bomb("products(first: 100) { nodes { name } }"),
            "number of fields",
        ),
        ("200 aliased pages", format!("{{ {aliases} }}"), "aliases"),
        ("nested amplification", chain.to_owned(), "cost"),
    ];
    for (name, query, what) in cases {
        let before = app.gateway.sql_statements();
        let reply = client.query(&query, json!({})).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            reply.text
        );
        assert_eq!(reply.error_codes(), ["QUERY_TOO_COMPLEX"], "{name}");
        assert!(reply.body.get("data").is_none(), "{name}");
        let message = reply.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(what), "{name}: {message}");
        assert_eq!(app.gateway.sql_statements(), before, "{name}: no SQL ran");
    }
    // Legacy clients get 200 with the same coded error and no data.
    let legacy = Client::new(app.gateway.url())
        .query(&fragment_bomb("channel { code }"), json!({}))
        .await;
    assert_eq!(legacy.status, StatusCode::OK);
    assert_eq!(legacy.error_codes(), ["QUERY_TOO_COMPLEX"]);
    // The gateway still serves.
    let ok = client.query("{ channel { code } }", json!({})).await;
    assert_eq!(ok.data()["channel"]["code"], "web");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn fragment_cycles_are_validation_errors_before_any_sql() {
    let app = spawn_app().await;
    let before = app.gateway.sql_statements();
    let reply = Client::new(app.gateway.url())
        .accept(GRAPHQL_RESPONSE_JSON)
        .query(
            "{ ...A } fragment A on Query { ...B } fragment B on Query { channel { code } ...A }",
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_codes(), ["GRAPHQL_VALIDATION_FAILED"]);
    assert_eq!(app.gateway.sql_statements(), before);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn every_answer_reports_its_requested_and_actual_cost() {
    let app = e2e::shared_app();
    let reply = Client::new(&app.url)
        .query(
            "{ products(first: 3) { nodes { name variants { sku } } } }",
            json!({}),
        )
        .await;
    let data = reply.data();
    let cost = &reply.body["extensions"]["cost"];
    // products (1) + 3 × (node 1 + 5 × variant 1) = 19.
    assert_eq!(cost["requested"], 19, "{}", reply.text);
    let variants: usize = data["products"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["variants"].as_array().unwrap().len())
        .sum();
    // The data object, products, 3 nodes and their variants.
    assert_eq!(cost["actual"], 1 + 1 + 3 + variants as u64);
}

#[tokio::test]
async fn deeply_nested_values_are_refused_and_the_process_survives() {
    let app = spawn_app().await;
    let client = Client::new(app.gateway.url()).accept(GRAPHQL_RESPONSE_JSON);
    let deep = format!(
        "{{ variant(sku: {}\"x\"{}) {{ sku }} }}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let before = app.gateway.sql_statements();
    let reply = client.query(&deep, json!({})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_codes(), ["QUERY_TOO_COMPLEX"]);
    let (over_get, _) = client.get(&[("query", &deep)]).await;
    assert_eq!(over_get.error_codes(), ["QUERY_TOO_COMPLEX"]);
    assert_eq!(app.gateway.sql_statements(), before);
    let ok = client.query("{ channel { code } }", json!({})).await;
    assert_eq!(ok.data()["channel"]["code"], "web", "still serving");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn nul_characters_are_bad_input_before_any_sql_on_every_database() {
    let app = spawn_app().await;
    let client = Client::new(app.gateway.url()).accept(GRAPHQL_RESPONSE_JSON);
    let before = app.gateway.sql_statements();
    for (query, variables, field) in [
        (
            r#"{ variant(sku: "a\u0000b") { sku } }"#,
            json!({}),
            "variant.sku",
        ),
        (
            "query($f: ProductFilterInput) { products(filter: $f) { totalCount } }",
            json!({ "f": { "search": "a\u{0}b" } }),
            "$f",
        ),
        (
            "query($s: String!) { product(slug: $s) { id } }",
            json!({ "s": "x\u{0}" }),
            "$s",
        ),
    ] {
        let reply = client.query(query, variables).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        assert_eq!(reply.error_codes(), ["BAD_USER_INPUT"]);
        assert_eq!(reply.body["errors"][0]["extensions"]["field"], field);
    }
    assert_eq!(app.gateway.sql_statements(), before);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn each_channel_can_have_its_own_operation_limits() {
    let app = e2e::spawn_app_with(|config| {
        config.graphql.channels.insert(
            "mobile".into(),
            gateway::config::ChannelShaping {
                max_depth: Some(3),
                max_page_size: Some(10),
                default_page_size: Some(10),
                ..Default::default()
            },
        );
    })
    .await;
    let deep = "{ products(first: 5) { nodes { category { parent { name } } } } }";
    let web = Client::new(app.gateway.url()).query(deep, json!({})).await;
    assert!(web.data()["products"]["nodes"].is_array());
    let mobile = Client::new(app.gateway.url())
        .channel("mobile")
        .query(deep, json!({}))
        .await;
    assert_eq!(
        mobile.error_codes(),
        ["QUERY_TOO_COMPLEX"],
        "{}",
        mobile.text
    );
    let page = Client::new(app.gateway.url())
        .channel("mobile")
        .query("{ products(first: 20) { totalCount } }", json!({}))
        .await;
    assert_eq!(page.error_codes(), ["BAD_USER_INPUT"], "{}", page.text);
    app.gateway.stop().await.unwrap();
}

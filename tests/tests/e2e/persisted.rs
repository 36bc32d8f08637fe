//! Persisted operations: `mobile` and `pos` run their safelists (operations/<channel>/) only,
//! by text or by hash; automatic persisted queries elsewhere; admins are not restricted.

use e2e::{Client, StatusCode, TestApp, operations_dir, spawn_app_with};
use gateway::auth::Role;
use gateway::shaping::persisted::sha256_hex;
use serde_json::{Value, json};

async fn persisted_app() -> TestApp {
    spawn_app_with(|config| {
        config.persisted.persisted_only_channels = vec!["mobile".into(), "pos".into()];
        config.persisted.operations_dir = operations_dir();
    })
    .await
}

fn safelisted(channel: &str, name: &str) -> String {
    std::fs::read_to_string(
        operations_dir()
            .join(channel)
            .join(format!("{name}.graphql")),
    )
    .unwrap()
}

async fn post(app: &TestApp, headers: &[(&str, &str)], body: Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", app.gateway.url()))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn hash_extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn persisted_only_channels_refuse_raw_text_and_accept_safelisted_hashes() {
    let app = persisted_app().await;
    let mobile = [("x-channel", "mobile")];
    let before = app.gateway.sql_statements();
    // Raw text that is not on the safelist.
    let (_, body) = post(&app, &mobile, json!({ "query": "{ channel { code } }" })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_ALLOWED", "{body}");
    assert!(body.get("data").is_none());
    // Registering it through APQ is refused too.
    let text = "{ channel { code } }";
    let (_, body) = post(
        &app,
        &mobile,
        json!({ "query": text, "extensions": hash_extension(&sha256_hex(text)) }),
    )
    .await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_ALLOWED");
    // An unknown hash.
    let (_, body) = post(
        &app,
        &mobile,
        json!({ "extensions": hash_extension(&"0".repeat(64)) }),
    )
    .await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        app.gateway.sql_statements(),
        before,
        "refused before any SQL"
    );

    // A safelisted operation by hash, and by its exact text.
    let count = safelisted("mobile", "ProductCount");
    let (status, body) = post(
        &app,
        &mobile,
        json!({ "extensions": hash_extension(&sha256_hex(&count)) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"]["products"]["totalCount"].as_u64().unwrap() > 0);
    let (_, body) = post(&app, &mobile, json!({ "query": count })).await;
    assert!(body["data"]["products"]["totalCount"].is_u64(), "{body}");
    // POS: the clerk's stock lookup by hash, with variables.
    let clerk = app.token("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN"));
    let bearer = format!("Bearer {clerk}");
    let lookup = safelisted("pos", "StockLookup");
    let (_, body) = post(
        &app,
        &[("authorization", &bearer)],
        json!({ "extensions": hash_extension(&sha256_hex(&lookup)), "variables": { "sku": "TS-0001-M" } }),
    )
    .await;
    assert!(body["data"]["variant"]["stockLevels"].is_array(), "{body}");
    // Admins may run anything on any channel.
    let admin = app.token("pos", Role::Admin, None, None);
    let reply = Client::new(app.gateway.url())
        .token(admin)
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(reply.data()["channel"]["code"], "pos");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn automatic_persisted_queries_register_then_run_by_hash_elsewhere() {
    let app = persisted_app().await;
    let text = "{ channel { code currency } }";
    let hash = sha256_hex(text);
    let (_, body) = post(&app, &[], json!({ "extensions": hash_extension(&hash) })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    let (_, body) = post(
        &app,
        &[],
        json!({ "query": text, "extensions": hash_extension(&hash) }),
    )
    .await;
    assert_eq!(body["data"]["channel"]["code"], "web");
    let (_, body) = post(&app, &[], json!({ "extensions": hash_extension(&hash) })).await;
    assert_eq!(body["data"]["channel"]["currency"], "USD", "{body}");
    // Over GET too.
    let response = reqwest::Client::new()
        .get(format!("{}/graphql", app.gateway.url()))
        .query(&[("extensions", hash_extension(&hash).to_string())])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["channel"]["code"], "web");
    // A document that does not parse is never kept, so it cannot fill the store.
    let broken = "{ channel { code ";
    let broken_hash = sha256_hex(broken);
    let (_, body) = post(
        &app,
        &[],
        json!({ "query": broken, "extensions": hash_extension(&broken_hash) }),
    )
    .await;
    assert_eq!(code(&body), "GRAPHQL_PARSE_FAILED");
    let (_, body) = post(
        &app,
        &[],
        json!({ "extensions": hash_extension(&broken_hash) }),
    )
    .await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    // A hash that is not the text's is a bad request.
    let (status, body) = post(
        &app,
        &[],
        json!({ "query": "{ channel { name } }", "extensions": hash_extension(&hash) }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BAD_REQUEST");
    app.gateway.stop().await.unwrap();
}

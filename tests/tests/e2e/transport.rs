//! GraphQL over HTTP: content negotiation, status codes and error shapes.

use e2e::{Client, GRAPHQL_RESPONSE_JSON, StatusCode, shared_app};
use serde_json::{Value, json};

#[tokio::test]
async fn media_type_follows_the_accept_header() {
    let app = shared_app();
    let query = "{ channel { code } }";
    let legacy = Client::new(&app.url).query(query, json!({})).await;
    assert_eq!(legacy.content_type, "application/json");
    assert_eq!(legacy.data()["channel"]["code"], "web");
    let modern = Client::new(&app.url)
        .accept(GRAPHQL_RESPONSE_JSON)
        .query(query, json!({}))
        .await;
    assert_eq!(modern.content_type, GRAPHQL_RESPONSE_JSON);
    assert_eq!(modern.data()["channel"]["code"], "web");
    let refused = Client::new(&app.url)
        .accept("text/plain")
        .query(query, json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(refused.error_codes(), ["NOT_ACCEPTABLE"]);
}

#[tokio::test]
async fn response_fields_keep_the_order_of_the_query() {
    let reply = Client::new(&shared_app().url)
        .query("{ channel { name currency code } }", json!({}))
        .await;
    let text = &reply.text;
    let positions: Vec<usize> = ["\"name\"", "\"currency\"", "\"code\""]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_code_under_both_media_types() {
    let app = shared_app();
    for accept in ["application/json", GRAPHQL_RESPONSE_JSON] {
        let client = Client::new(&app.url).accept(accept);
        for body in [
            "{\"query\":",
            "[]",
            "{\"variables\":{}}",
            "{\"query\":\"{ channel { code } }\",\"variables\":\"x\"}",
        ] {
            let reply = client.post_raw("application/json", body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(reply.error_codes(), ["BAD_REQUEST"], "{body}");
            assert!(
                reply.body.get("data").is_none(),
                "no data on request errors"
            );
            assert_eq!(reply.content_type, accept);
        }
    }
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let reply = Client::new(&shared_app().url)
        .post_raw("text/plain", "{ channel { code } }")
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error_codes(), ["UNSUPPORTED_MEDIA_TYPE"]);
}

#[tokio::test]
async fn invalid_graphql_is_a_request_error_without_data() {
    let app = shared_app();
    for (query, code) in [
        (
            "{ products(first: 2 { nodes { id } } }",
            "GRAPHQL_PARSE_FAILED",
        ),
        ("{ products { nodez } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "query($n: Int!) { products(first: $n) { totalCount } }",
            "BAD_USER_INPUT",
        ),
    ] {
        let modern = Client::new(&app.url)
            .accept(GRAPHQL_RESPONSE_JSON)
            .query(query, json!({}))
            .await;
        assert_eq!(
            modern.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            modern.body
        );
        assert_eq!(modern.error_codes(), [code], "{query}");
        assert!(modern.body.get("data").is_none());
        assert!(
            !modern.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        // application/json answers well-formed requests with 200 (the spec's legacy rule).
        let legacy = Client::new(&app.url).query(query, json!({})).await;
        assert_eq!(legacy.status, StatusCode::OK);
        assert_eq!(legacy.error_codes(), [code]);
        assert!(legacy.body.get("data").is_none());
    }
}

#[tokio::test]
async fn unknown_channels_get_a_coded_error_naming_the_known_ones() {
    let app = shared_app();
    let reply = Client::new(&app.url)
        .channel("moon")
        .accept(GRAPHQL_RESPONSE_JSON)
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_codes(), ["UNKNOWN_CHANNEL"]);
    let message = reply.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("moon") && message.contains("b2b, mobile, pos, web"),
        "{message}"
    );
    // A header that is not text is refused, not mistaken for the default channel.
    let garbled = Client::new(&app.url)
        .accept(GRAPHQL_RESPONSE_JSON)
        .channel_bytes(b"w\xffb")
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbled.error_codes(), ["UNKNOWN_CHANNEL"]);
    // The header is case-insensitive and trimmed.
    let upper = Client::new(&app.url)
        .channel(" POS ")
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(upper.data()["channel"]["code"], "pos");
}

#[tokio::test]
async fn get_runs_queries_refuses_mutations_and_serves_graphiql() {
    let app = shared_app();
    let client = Client::new(&app.url);
    let (reply, _) = client
        .get(&[
            ("query", "query($s: String!) { variant(sku: $s) { sku } }"),
            ("variables", "{\"s\":\"TS-0001-M\"}"),
        ])
        .await;
    assert_eq!(reply.data()["variant"]["sku"], "TS-0001-M");

    let (reply, headers) = client.get(&[("query", "mutation { anything }")]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(reply.error_codes(), ["METHOD_NOT_ALLOWED"]);

    let (reply, _) = client.get(&[("variables", "{}")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let (reply, _) = client
        .get(&[("query", "{ channel { code } }"), ("variables", "[1]")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let (page, _) = client
        .clone()
        .accept("text/html,application/xhtml+xml")
        .get(&[])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    let html = page.body.as_str().unwrap();
    assert!(
        html.contains("graphiql") && html.contains("/graphql/ws"),
        "GraphiQL, with this host's socket for subscriptions (see graphiql.rs)"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let app = shared_app();
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["database"], "ok");
    let request_id = http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert!(request_id.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let padding = "x".repeat(2 * 1024 * 1024);
    let body =
        json!({ "query": "{ channel { code } }", "variables": { "pad": padding } }).to_string();
    let reply = Client::new(&shared_app().url)
        .post_raw("application/json", body)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_codes(), ["BAD_REQUEST"]);
}

#[tokio::test]
async fn variables_of_the_wrong_type_fail_validation() {
    let query = "query($n: Int) { products(first: $n) { totalCount } }";
    let reply = Client::new(&shared_app().url)
        .accept(GRAPHQL_RESPONSE_JSON)
        .query(query, json!({ "n": "ten" }))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_codes(), ["GRAPHQL_VALIDATION_FAILED"]);
    assert!(reply.body.get("data").is_none());
}

#[tokio::test]
async fn errors_below_the_handlers_are_coded_too() {
    let app = shared_app();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/graphql", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        put.headers()["allow"].to_str().unwrap().contains("POST"),
        "the router's Allow header survives"
    );
    let body: Value = put.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "METHOD_NOT_ALLOWED"
    );

    let missing = http
        .get(format!("{}/nowhere", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

//! Hardening of the edges (issue 12, point 5): SKU and slug lengths refused before any SQL,
//! the response-size cap, CORS per channel, and cross-site (CSRF-style) requests that never
//! reach the executor.

use e2e::{Client, GRAPHQL_RESPONSE_JSON, StatusCode, TestDatabase, spawn_app, spawn_app_with};
use gateway::Config;
use gateway::cors::ChannelCors;
use serde_json::{Value, json};

const VARIANT: &str = "query($s: String!) { variant(sku: $s) { sku } }";
const BY_SKUS: &str =
    "query($s: [String!]) { products(first: 5, filter: {skus: $s}) { nodes { slug } } }";
const PRODUCT: &str = "query($s: String) { product(slug: $s) { id } }";

#[tokio::test]
async fn long_skus_and_slugs_are_refused_before_any_sql() {
    let app = spawn_app().await;
    let client = Client::new(app.gateway.url());
    // What a request costs without its resolvers touching the database: loading its channel.
    let before = app.gateway.sql_statements();
    client.query("{ channel { code } }", json!({})).await.data();
    let baseline = app.gateway.sql_statements() - before;

    for len in [201, 10_000] {
        let long = "X".repeat(len);
        for (query, variables, field, root) in [
            (VARIANT, json!({ "s": long }), "sku", "variant"),
            (
                BY_SKUS,
                json!({ "s": ["TS-0001-M", long] }),
                "filter.skus",
                "products",
            ),
            (PRODUCT, json!({ "s": long }), "slug", "product"),
        ] {
            let before = app.gateway.sql_statements();
            let reply = client.query(query, variables).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.error_codes(),
                ["BAD_USER_INPUT"],
                "{:.300}",
                reply.body
            );
            let error = &reply.body["errors"][0];
            assert_eq!(error["extensions"]["field"], field, "{error}");
            assert_eq!(error["path"], json!([root]), "{error}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains("at most 200 characters"), "{message}");
            assert!(
                !message.contains("XXXXXXXX"),
                "the input is not echoed: {message}"
            );
            assert_eq!(reply.body["data"][root], Value::Null);
            assert_eq!(
                app.gateway.sql_statements() - before,
                baseline,
                "SQL ran for {field} of {len} characters"
            );
        }
    }

    // 200 characters are a valid argument (that names nothing).
    let at_limit = "X".repeat(200);
    for (query, variables, root, empty) in [
        (VARIANT, json!({ "s": at_limit }), "variant", Value::Null),
        (
            BY_SKUS,
            json!({ "s": [at_limit] }),
            "products",
            json!({ "nodes": [] }),
        ),
        (PRODUCT, json!({ "s": at_limit }), "product", Value::Null),
    ] {
        let reply = client.query(query, variables).await;
        assert_eq!(reply.data()[root], empty, "{}", reply.body);
    }
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn responses_over_the_cap_are_replaced_by_response_too_large() {
    let app = spawn_app_with(|config| config.http.max_response_bytes = 1024).await;
    let page = "{ products(first: 50) { nodes { name slug variants { sku } } } }";

    // Under the cap: sent as ever.
    let small = Client::new(app.gateway.url())
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(small.data()["channel"]["code"], "web");

    // application/json: 200, no data, the code (the spec's rule for legacy clients).
    let reply = Client::new(app.gateway.url()).query(page, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("application/json"));
    assert_eq!(
        reply.error_codes(),
        ["RESPONSE_TOO_LARGE"],
        "{}",
        reply.body
    );
    assert!(reply.body.get("data").is_none(), "{}", reply.body);
    let message = reply.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("1024 bytes"), "{message}");
    assert!(message.contains("http.max_response_bytes"), "{message}");
    assert!(reply.text.len() < 1024, "{}", reply.text);

    // application/graphql-response+json: the operation ran, its result cannot be sent: 500.
    let client = Client::new(app.gateway.url()).accept(GRAPHQL_RESPONSE_JSON);
    let reply = client.query(page, json!({})).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.content_type, GRAPHQL_RESPONSE_JSON);
    assert_eq!(
        reply.error_codes(),
        ["RESPONSE_TOO_LARGE"],
        "{}",
        reply.body
    );
    assert!(reply.body.get("data").is_none());

    // Over GET too.
    let (reply, _) = client.get(&[("query", page)]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.error_codes(),
        ["RESPONSE_TOO_LARGE"],
        "{}",
        reply.body
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn the_response_cap_is_validated_and_defaults_to_8_mib() {
    assert_eq!(Config::default().http.max_response_bytes, 8 * 1024 * 1024);
    let mut config = Config::default();
    config.http.max_response_bytes = 100;
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("http.max_response_bytes"), "{err}");
}

fn shop(config: &mut Config) {
    config.cors.channels.insert(
        "web".into(),
        ChannelCors {
            origins: vec!["https://shop.example.com".into()],
        },
    );
    config.cors.channels.insert(
        "b2b".into(),
        ChannelCors {
            origins: vec!["https://buyers.example.com".into()],
        },
    );
}

/// An `OPTIONS /graphql` preflight from `origin`.
async fn preflight(url: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{url}/graphql"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization, x-channel, idempotency-key",
        )
        .send()
        .await
        .expect("the gateway answers")
}

fn cors_headers(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn cors_allows_the_origins_a_channel_lists() {
    let app = spawn_app_with(shop).await;
    let url = app.gateway.url();

    // Any channel's origin passes the preflight (which cannot carry the channel).
    for origin in ["https://shop.example.com", "https://buyers.example.com"] {
        let answer = preflight(&url, origin).await;
        assert_eq!(answer.status(), StatusCode::NO_CONTENT, "{origin}");
        let headers = answer.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(
            methods.contains("POST") && methods.contains("GET"),
            "{methods}"
        );
        let allowed = headers["access-control-allow-headers"].to_str().unwrap();
        for name in ["content-type", "authorization", "x-channel"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert!(headers.contains_key("access-control-max-age"));
        assert!(!headers.contains_key("access-control-allow-credentials"));
    }

    // Another origin: no CORS header at all, and its preflight fails.
    let answer = preflight(&url, "https://evil.example.com").await;
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    assert_eq!(cors_headers(answer.headers()), Vec::<String>::new());
    let wildcard = preflight(&url, "https://shop.example.com.evil.com").await;
    assert_eq!(cors_headers(wildcard.headers()), Vec::<String>::new());

    // Actual requests: the allowed origin may read the answer; another gets the answer (CORS
    // is the browser's check) without the headers that would let its page read it.
    let http = reqwest::Client::new();
    for (origin, allowed) in [
        ("https://buyers.example.com", true),
        ("https://evil.example.com", false),
    ] {
        let response = http
            .post(format!("{url}/graphql"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("x-channel", "b2b")
            .body(json!({ "query": "{ channel { code } }" }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        // Every `Vary` line (a cacheable answer adds its own beside CORS's `origin`).
        let vary: Vec<String> = headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect();
        assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
        if allowed {
            assert_eq!(headers["access-control-allow-origin"], origin);
            let exposed = headers["access-control-expose-headers"].to_str().unwrap();
            assert!(exposed.contains("x-request-id"), "{exposed}");
        } else {
            assert_eq!(cors_headers(&headers), Vec::<String>::new());
        }
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["channel"]["code"], "b2b");
    }

    // Demo mode (as every test gateway) also allows local development pages.
    let local = preflight(&url, "http://localhost:5173").await;
    assert_eq!(local.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        local.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn production_allows_no_origin_unless_listed() {
    let database = TestDatabase::create().await;
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database.url().to_owned(),
        ..Config::default()
    };
    let mut listed = config.clone();
    listed.listen = "127.0.0.1:0".into();
    let gateway = gateway::start(config, false).await.expect("starts");
    let url = gateway.url();
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "https://shop.example.com",
    ] {
        let answer = preflight(&url, origin).await;
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(cors_headers(answer.headers()), Vec::<String>::new());
    }
    gateway.stop().await.unwrap();

    // A wildcard is refused at start, naming the key.
    shop(&mut listed);
    listed
        .cors
        .channels
        .get_mut("web")
        .unwrap()
        .origins
        .push("*".into());
    let err = gateway::start(listed, false).await.err().expect("refused");
    assert!(err.to_string().contains("cors.channels"), "{err}");
}

#[tokio::test]
async fn cross_site_simple_requests_never_reach_the_executor() {
    let app = spawn_app().await;
    let token = app.token("web", gateway::auth::Role::Admin, None, None);
    let mutation = json!({
        "query": "mutation { createPriceList(input: {code: \"csrf\", name: \"CSRF\", currency: \"USD\"}) { id } }"
    })
    .to_string();
    let before = app.gateway.sql_statements();
    // What a cross-site form or `fetch(..., {mode: "no-cors"})` can send without a preflight:
    // a "simple" content type, and no Authorization or X-Channel header. Even with a token
    // (which a browser would only attach after a preflight) the body is refused unread.
    for client in [
        Client::new(app.gateway.url()),
        Client::new(app.gateway.url()).token(&token),
    ] {
        for content_type in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let reply = client.post_raw(content_type, mutation.clone()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type}"
            );
            assert_eq!(reply.error_codes(), ["UNSUPPORTED_MEDIA_TYPE"]);
        }
    }
    // Mutations over GET (a link, an <img>) are refused too.
    let (reply, headers) = Client::new(app.gateway.url())
        .get(&[(
            "query",
            "mutation { createPriceList(input: {code: \"csrf\", name: \"CSRF\", currency: \"USD\"}) { id } }",
        )])
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_eq!(
        app.gateway.sql_statements(),
        before,
        "a refused cross-site request ran SQL"
    );
    app.gateway.stop().await.unwrap();
}

//! Per-channel rate limits over HTTP: a burst, then 429 with `Retry-After` and
//! `RATE_LIMITED`, then recovery; a bucket per client (token subject, else IP address); one
//! limit across two gateways sharing Redis (with `TEST_REDIS_URL`); and limits turned off.
//!
//! Quotas are tight (1 request per second, bursts of 2–4) so the waits stay about a second.
//! With `TEST_REDIS_URL` every gateway here keeps its buckets in Redis, under a key prefix of
//! its test, removed at the end.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use e2e::{StatusCode, TestApp, spawn_app_with, test_redis_url};
use gateway::Config;
use gateway::auth::Role;
use serde_json::{Value, json};

const QUERY: &str = "{ channel { code } }";

/// A gateway whose `web` channel allows `burst` requests at once, then 1 per second, per
/// client; in Redis under `prefix` when `TEST_REDIS_URL` is set.
async fn tight_app(burst: u32, prefix: &str, enabled: bool) -> TestApp {
    let prefix = prefix.to_owned();
    spawn_app_with(move |config: &mut Config| {
        config.limits.enabled = enabled;
        let web = config
            .limits
            .channels
            .get_mut("web")
            .expect("web has a quota");
        web.requests_per_second = 1;
        web.burst = burst;
        if let Some(url) = test_redis_url() {
            config.redis_url = Some(url);
            config.limits.redis_key_prefix = prefix;
        }
    })
    .await
}

fn unique_prefix() -> String {
    format!("e2e:{}:", uuid::Uuid::new_v4().simple())
}

async fn remove_keys(app: &TestApp) {
    if let Some(redis) = app.gateway.state.limits.redis() {
        redis
            .remove_all_keys()
            .await
            .expect("removing the test's keys");
    }
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn send(http: &reqwest::Client, app: &TestApp, token: Option<&str>) -> Answer {
    let mut request = http
        .post(format!("{}/graphql", app.gateway.url()))
        .header("content-type", "application/json")
        .body(json!({ "query": QUERY }).to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.expect("a JSON body");
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Sends until the first 429 (at most 20 requests); returns how many were answered 200
/// before it, the 429, and how long it took.
async fn until_limited(
    http: &reqwest::Client,
    apps: &[&TestApp],
    token: Option<&str>,
) -> (u32, Answer, Duration) {
    let started = Instant::now();
    for sent in 0..20 {
        let answer = send(http, apps[sent % apps.len()], token).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            return (sent as u32, answer, started.elapsed());
        }
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["data"]["channel"]["code"], "web");
    }
    panic!("20 requests in a row were not limited");
}

/// A burst of `burst` is answered; the rate (1/s) may add one more per second that passed.
fn assert_burst(answered: u32, burst: u32, elapsed: Duration) {
    let restored = elapsed.as_secs() as u32 + 1;
    assert!(
        (burst..=burst + restored).contains(&answered),
        "{answered} answered before the 429 with a burst of {burst} in {elapsed:?}"
    );
}

#[tokio::test]
async fn a_burst_then_429_with_retry_after_then_recovery() {
    let prefix = unique_prefix();
    let app = tight_app(3, &prefix, true).await;
    let http = reqwest::Client::new();
    let (answered, limited, elapsed) = until_limited(&http, &[&app], None).await;
    assert_burst(answered, 3, elapsed);
    let retry_after: u64 = limited
        .retry_after
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert_eq!(
        retry_after, 1,
        "1 request per second: the next fits within 1 s"
    );
    assert_eq!(
        limited.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    assert!(limited.body.get("data").is_none(), "{}", limited.body);
    let message = limited.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("channel web"), "{message}");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let answer = send(&http, &app, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    remove_keys(&app).await;
}

#[tokio::test]
async fn each_token_and_each_address_has_a_bucket_of_its_own() {
    let prefix = unique_prefix();
    let app = tight_app(2, &prefix, true).await;
    let shopper = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let vip = app.token("web", Role::Shopper, Some("vip@example.com"), None);
    let http = reqwest::Client::new();

    let (answered, _, elapsed) = until_limited(&http, &[&app], Some(&shopper)).await;
    assert_burst(answered, 2, elapsed);
    // Another subject, and the same address without a token, have their own buckets.
    assert_eq!(send(&http, &app, Some(&vip)).await.status, StatusCode::OK);
    let (answered, _, elapsed) = until_limited(&http, &[&app], None).await;
    assert_burst(answered, 2, elapsed);
    // Anonymous clients are told apart by address: 127.0.0.2 is not 127.0.0.1.
    let other_address = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let answer = send(&other_address, &app, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    remove_keys(&app).await;
}

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_limit() {
    if test_redis_url().is_none() {
        eprintln!("skipped: needs TEST_REDIS_URL (Redis)");
        return;
    }
    let prefix = unique_prefix();
    let a = tight_app(4, &prefix, true).await;
    let b = tight_app(4, &prefix, true).await;
    assert!(a.gateway.state.limits.redis().is_some());
    let http = reqwest::Client::new();
    // Alternating between the two: one bucket of 4, not two.
    let (answered, limited, elapsed) = until_limited(&http, &[&a, &b], None).await;
    assert_burst(answered, 4, elapsed);
    assert!(answered < 8, "each gateway counted on its own: {answered}");
    assert_eq!(
        limited.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    remove_keys(&a).await;
}

#[tokio::test]
async fn limits_off_let_the_burst_through() {
    let prefix = unique_prefix();
    let app = tight_app(2, &prefix, false).await;
    assert!(!app.gateway.state.limits.enabled());
    let http = reqwest::Client::new();
    for _ in 0..10 {
        let answer = send(&http, &app, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    remove_keys(&app).await;
}

/// The cost budget: each operation is charged its requested cost before it runs, reported in
/// `extensions.cost.budget`, and refused with 429 when the bucket is empty; one operation
/// over the channel's maximum is `QUERY_TOO_COMPLEX` before any SQL.
#[tokio::test]
async fn cost_budgets_charge_report_and_refuse() {
    let prefix = unique_prefix();
    let app = spawn_app_with(move |config: &mut Config| {
        config.limits.enabled = true;
        let web = config
            .limits
            .channels
            .get_mut("web")
            .expect("web has a quota");
        web.requests_per_second = 1000;
        web.burst = 1000;
        web.cost_bucket = 100;
        web.cost_restore_per_second = 1;
        web.max_cost_per_operation = 60;
        if let Some(url) = test_redis_url() {
            config.redis_url = Some(url);
            config.limits.redis_key_prefix = prefix;
        }
    })
    .await;
    let client = e2e::Client::new(app.gateway.url());
    // products (1) + 5 × (node 1 + 5 × variant 1) = 31 points.
    let page = "{ products(first: 5) { nodes { variants { sku } } } }";
    let first = client.query(page, json!({})).await;
    let cost = &first.body["extensions"]["cost"];
    assert_eq!(cost["requested"], 31, "{}", first.text);
    assert_eq!(cost["budget"]["max"], 100);
    assert_eq!(cost["budget"]["restoreRate"], 1);
    let remaining = cost["budget"]["remaining"].as_u64().unwrap();
    assert!((68..=70).contains(&remaining), "{remaining}");
    let second = client.query(page, json!({})).await;
    assert!(
        second.body["extensions"]["cost"]["budget"]["remaining"]
            .as_u64()
            .unwrap()
            < remaining
    );
    let third = client.query(page, json!({})).await;
    assert!(third.body.get("data").is_some(), "{}", third.text);
    let refused = client.query(page, json!({})).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.error_codes(), ["RATE_LIMITED"]);
    // One operation over the channel's maximum (60) is refused outright, before any SQL.
    let before = app.gateway.sql_statements();
    let big = client
        .query(
            "{ products(first: 20) { nodes { variants { sku } } } }",
            json!({}),
        )
        .await;
    assert_eq!(big.error_codes(), ["QUERY_TOO_COMPLEX"], "{}", big.text);
    assert_eq!(app.gateway.sql_statements(), before);
    remove_keys(&app).await;
    app.gateway.stop().await.unwrap();
}

/// Requests refused for what they carry (a syntax error, an unknown channel, a bad token)
/// still count against the client's bucket, and the refusals cost no SQL once limited.
#[tokio::test]
async fn refused_requests_count_against_the_rate_too() {
    let prefix = unique_prefix();
    let app = tight_app(3, &prefix, true).await;
    let http = reqwest::Client::new();
    let post = |body: &'static str, header: Option<(&'static str, &'static str)>| {
        let mut request = http
            .post(format!("{}/graphql", app.gateway.url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        async move { request.send().await.expect("an answer").status() }
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post(r#"{"query":"{ channel { code "}"#, None).await);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "parse errors are rate limited: {statuses:?}"
    );
    // Unknown channels share the default bucket (no fresh bucket per made-up name), and bad
    // tokens are limited by address.
    let mut limited = false;
    for i in 0..30 {
        let channel: &'static str = Box::leak(format!("nochan{i}").into_boxed_str());
        if post(
            r#"{"query":"{ channel { code } }"}"#,
            Some(("x-channel", channel)),
        )
        .await
            == StatusCode::TOO_MANY_REQUESTS
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "made-up channels do not escape the limit");
    let mut limited = false;
    for _ in 0..30 {
        if post(
            r#"{"query":"{ channel { code } }"}"#,
            Some(("authorization", "Bearer a.b.c")),
        )
        .await
            == StatusCode::TOO_MANY_REQUESTS
        {
            limited = true;
            break;
        }
    }
    assert!(limited, "a bad-token flood gets 429s");
    remove_keys(&app).await;
}

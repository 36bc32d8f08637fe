//! Idempotency keys on mutations: a repeat replays the stored response without running, the
//! same key with another request is `IDEMPOTENCY_CONFLICT`, concurrent repeats never run
//! twice, keys are per viewer and expire, queries ignore them.

use e2e::{Client, GRAPHQL_RESPONSE_JSON, StatusCode, TestApp, spawn_app};
use gateway::auth::Role;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const SKU: &str = "TS-0001-M";
const RECEIVE: &str =
    "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { sku location onHand } }";
const LEVELS: &str =
    "query($sku: String!) { variant(sku: $sku) { stockLevels { location { code } onHand } } }";

/// One answer: status, headers, the body as sent and parsed.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }

    fn replayed(&self) -> bool {
        self.headers
            .get("idempotency-replayed")
            .is_some_and(|v| v == "true")
    }
}

/// POSTs `query` with `variables` as `token`, with an `Idempotency-Key` when `key` is given.
async fn send(
    app: &TestApp,
    token: &str,
    key: Option<&[u8]>,
    accept: Option<&str>,
    query: &str,
    variables: Value,
) -> Answer {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.gateway.url()))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(json!({ "query": query, "variables": variables }).to_string());
    if let Some(key) = key {
        request = request.header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(key).expect("a header value"),
        );
    }
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        body,
    }
}

fn receive(quantity: i64) -> Value {
    json!({ "input": { "sku": SKU, "location": "WH-EAST", "quantity": quantity, "reference": "PO-IDEM" } })
}

fn admin(app: &TestApp) -> String {
    app.token("web", Role::Admin, None, None)
}

/// An admin token with its own subject (keys are per subject).
fn admin_named(app: &TestApp, subject: &str) -> String {
    let auth = &app.gateway.state.auth;
    let mut claims = auth.claims("web", Role::Admin, None, None, Some(600));
    claims.sub = subject.to_owned();
    auth.mint(&claims).expect("demo mode has a secret")
}

async fn on_hand(app: &TestApp) -> i64 {
    let reply = Client::new(app.gateway.url())
        .token(admin(app))
        .query(LEVELS, json!({ "sku": SKU }))
        .await;
    reply.data()["variant"]["stockLevels"]
        .as_array()
        .expect("levels")
        .iter()
        .find(|level| level["location"]["code"] == "WH-EAST")
        .and_then(|level| level["onHand"].as_i64())
        .expect("a level at WH-EAST")
}

#[tokio::test]
async fn the_same_key_twice_runs_once_and_replays_the_same_body() {
    let app = spawn_app().await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    let first = send(&app, &token, Some(b"rk-1"), None, RECEIVE, receive(5)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(first.body.get("errors").is_none(), "{}", first.text);
    assert!(!first.replayed());
    let second = send(&app, &token, Some(b"rk-1"), None, RECEIVE, receive(5)).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(second.replayed(), "{:?}", second.headers);
    assert_eq!(second.text, first.text);
    // The variables' order does not make another request.
    let reordered = json!({ "input": { "reference": "PO-IDEM", "quantity": 5, "location": "WH-EAST", "sku": SKU } });
    let third = send(&app, &token, Some(b"rk-1"), None, RECEIVE, reordered).await;
    assert!(third.replayed());
    assert_eq!(third.text, first.text);
    assert_eq!(on_hand(&app).await, before + 5);
    // Without a key, the same mutation runs each time.
    send(&app, &token, None, None, RECEIVE, receive(5)).await;
    assert_eq!(on_hand(&app).await, before + 10);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_a_conflict() {
    let app = spawn_app().await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    let first = send(&app, &token, Some(b"ck-1"), None, RECEIVE, receive(3)).await;
    assert!(first.body.get("errors").is_none(), "{}", first.text);
    for accept in [None, Some(GRAPHQL_RESPONSE_JSON)] {
        let other = send(&app, &token, Some(b"ck-1"), accept, RECEIVE, receive(4)).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.text);
        assert_eq!(other.code(), Some("IDEMPOTENCY_CONFLICT"), "{}", other.text);
        assert!(other.body.get("data").is_none(), "{}", other.text);
        assert!(!other.replayed());
    }
    assert_eq!(on_hand(&app).await, before + 3);
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_run_once() {
    let app = spawn_app().await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    let answers = futures_util::future::join_all(
        (0..20).map(|_| send(&app, &token, Some(b"burst-1"), None, RECEIVE, receive(7))),
    )
    .await;
    let ran: Vec<_> = answers.iter().filter(|a| !a.replayed()).collect();
    let mut bodies = Vec::new();
    for answer in &answers {
        match answer.code() {
            None => {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
                bodies.push(answer.text.clone());
            }
            Some("IDEMPOTENCY_IN_PROGRESS") => {
                assert_eq!(answer.status, StatusCode::CONFLICT);
                assert_eq!(answer.headers.get("retry-after").unwrap(), "1");
            }
            Some(other) => panic!("{other}: {}", answer.text),
        }
    }
    assert!(!bodies.is_empty());
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(
        ran.iter().filter(|a| a.code().is_none()).count(),
        1,
        "exactly one answer ran"
    );
    assert_eq!(on_hand(&app).await, before + 7);
}

#[tokio::test]
async fn queries_ignore_keys_and_bad_keys_are_refused() {
    let app = spawn_app().await;
    let token = admin(&app);
    // A query with a key (even a bad one) runs each time, nothing is stored.
    for key in [&b"q-1"[..], b"q-1", b"bad key"] {
        let answer = send(&app, &token, Some(key), None, LEVELS, json!({ "sku": SKU })).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert!(!answer.replayed());
    }
    let db = &app.gateway.state.db;
    let stored = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM idempotency_record",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(stored, 0);
    let before = on_hand(&app).await;
    let long = vec![b'k'; 256];
    for key in [&b""[..], b"has space", "caf\u{e9}".as_bytes(), &long] {
        for accept in [None, Some(GRAPHQL_RESPONSE_JSON)] {
            let answer = send(&app, &token, Some(key), accept, RECEIVE, receive(1)).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
            assert_eq!(answer.code(), Some("BAD_REQUEST"), "{}", answer.text);
            let message = answer.body["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("Idempotency-Key"), "{message}");
        }
    }
    assert_eq!(on_hand(&app).await, before);
}

#[tokio::test]
async fn keys_are_per_viewer() {
    let app = spawn_app().await;
    let before = on_hand(&app).await;
    let alice = admin_named(&app, "alice");
    let bob = admin_named(&app, "bob");
    let first = send(&app, &alice, Some(b"shared"), None, RECEIVE, receive(2)).await;
    let second = send(&app, &bob, Some(b"shared"), None, RECEIVE, receive(2)).await;
    assert!(!first.replayed() && !second.replayed());
    assert!(second.body.get("errors").is_none(), "{}", second.text);
    // Another request from bob with the same key conflicts only with bob's.
    let again = send(&app, &alice, Some(b"shared"), None, RECEIVE, receive(2)).await;
    assert!(again.replayed());
    assert_eq!(on_hand(&app).await, before + 4);
}

#[tokio::test]
async fn an_expired_key_runs_again() {
    let app = spawn_app().await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    send(&app, &token, Some(b"old-1"), None, RECEIVE, receive(1)).await;
    let db = &app.gateway.state.db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        "UPDATE idempotency_record SET expires_at = created_at".to_owned(),
    ))
    .await
    .unwrap();
    let again = send(&app, &token, Some(b"old-1"), None, RECEIVE, receive(1)).await;
    assert!(!again.replayed(), "{}", again.text);
    assert_eq!(on_hand(&app).await, before + 2);
    // And is claimed anew: the next repeat replays.
    let third = send(&app, &token, Some(b"old-1"), None, RECEIVE, receive(1)).await;
    assert!(third.replayed());
    assert_eq!(on_hand(&app).await, before + 2);
}

#[tokio::test]
async fn a_request_refused_at_validation_keeps_its_key_free() {
    let app = spawn_app().await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    // Not a field of the type: refused by validation, never ran, nothing stored.
    let refused = send(
        &app,
        &token,
        Some(b"v-1"),
        None,
        "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { nope } }",
        receive(1),
    )
    .await;
    assert_eq!(
        refused.code(),
        Some("GRAPHQL_VALIDATION_FAILED"),
        "{}",
        refused.text
    );
    let ran = send(&app, &token, Some(b"v-1"), None, RECEIVE, receive(1)).await;
    assert!(ran.body.get("errors").is_none(), "{}", ran.text);
    assert!(!ran.replayed());
    assert_eq!(on_hand(&app).await, before + 1);
}

#[tokio::test]
async fn a_repeat_waits_for_a_running_first_request_then_gets_a_coded_retry_answer() {
    let app = e2e::spawn_app_with(|config| config.idempotency.wait_secs = 1).await;
    let token = admin(&app);
    let before = on_hand(&app).await;
    send(&app, &token, Some(b"slow-1"), None, RECEIVE, receive(1)).await;
    // As if the first request were still running (on this or another instance).
    let db = &app.gateway.state.db;
    let sql = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_owned());
    db.execute_raw(sql(
        "UPDATE idempotency_record SET state = 'running', response = NULL",
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let waiting = send(&app, &token, Some(b"slow-1"), None, RECEIVE, receive(1)).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(waiting.status, StatusCode::CONFLICT, "{}", waiting.text);
    assert_eq!(waiting.code(), Some("IDEMPOTENCY_IN_PROGRESS"));
    assert_eq!(waiting.headers.get("retry-after").unwrap(), "1");
    assert_eq!(on_hand(&app).await, before + 1);
    // A run unfinished for more than twice the request timeout was lost: the next request
    // with its key takes it over and runs.
    db.execute_raw(sql(
        "UPDATE idempotency_record SET updated_at = '2000-01-01T00:00:00+00:00'",
    ))
    .await
    .unwrap();
    let taken = send(&app, &token, Some(b"slow-1"), None, RECEIVE, receive(1)).await;
    assert!(taken.body.get("errors").is_none(), "{}", taken.text);
    assert!(!taken.replayed());
    assert_eq!(on_hand(&app).await, before + 2);
    let replayed = send(&app, &token, Some(b"slow-1"), None, RECEIVE, receive(1)).await;
    assert!(replayed.replayed());
    assert_eq!(replayed.text, taken.text);
}

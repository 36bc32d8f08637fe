//! The hot read path (issue 15): channels and the catalog served from memory, anonymous
//! responses from the event-exact cache, and never a stale price or stock figure, on one
//! gateway and across two (PostgreSQL + Redis).

use e2e::{Client, TestApp, spawn_app_with};
use gateway::Config;
use gateway::auth::Role;
use reqwest::header::{HeaderMap, IF_NONE_MATCH};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const SKU: &str = "TS-0001-M";
/// What a storefront shows of one variant: stock and price.
const SHOWN: &str = "query($sku: String!) { variant(sku: $sku) { sku availability { status quantity } price { unitPrice } } }";
const ADJUST: &str =
    "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { onHand version } }";
const HOLD: &str =
    "mutation($input: SetStockHoldInput!) { setStockHold(input: $input) { quantity } }";
const CREATE_LIST: &str =
    "mutation($input: CreatePriceListInput!) { createPriceList(input: $input) { id } }";
const SET_ENTRIES: &str = "mutation($list: ID!, $entries: [PriceEntryInput!]!) { setPriceEntries(priceList: $list, entries: $entries) { amount } }";
const PAGE: &str = "query($first: Int!) { products(first: $first) { nodes { id name variants { sku availability { status quantity } price { unitPrice } } } } }";

/// Both parts on, whatever `TEST_READ_PATH` says: these tests are about them.
fn read_path_on(config: &mut Config) {
    config.read_path.read_model = true;
    config.read_path.response_cache = true;
}

async fn app_with_read_path(configure: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    spawn_app_with(|config: &mut Config| {
        read_path_on(config);
        configure(config);
    })
    .await
}

/// POSTs a query; returns the status, headers and body.
async fn post(
    app: &TestApp,
    channel: &str,
    query: &str,
    variables: Value,
    token: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.gateway.url()))
        .header("content-type", "application/json")
        .header("x-channel", channel)
        .body(json!({ "query": query, "variables": variables }).to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn cache_status(headers: &HeaderMap) -> &str {
    headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The variant as an anonymous web shopper sees it, and how it was served.
async fn shown(app: &TestApp) -> (Value, String) {
    let (status, headers, body) = post(app, "web", SHOWN, json!({ "sku": SKU }), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    (
        body["data"]["variant"].clone(),
        cache_status(&headers).to_owned(),
    )
}

async fn admin(app: &TestApp, query: &str, variables: Value) -> Value {
    let token = app.token("web", Role::Admin, None, None);
    let reply = Client::new(app.gateway.url())
        .token(token)
        .query(query, variables)
        .await;
    reply.data().clone()
}

async fn adjust(app: &TestApp, delta: i32) {
    adjust_at(app, "WH-EAST", delta).await;
}

async fn adjust_at(app: &TestApp, location: &str, delta: i32) {
    admin(
        app,
        ADJUST,
        json!({ "input": { "sku": SKU, "location": location, "delta": delta, "reason": "count" } }),
    )
    .await;
}

/// Leaves `SKU` with `units` available at WH-EAST and none at web's other locations, so web
/// shows a low-stock quantity (`units` minus web's safety stock of 2).
async fn drain_to(app: &TestApp, units: i64) {
    let db = &app.gateway.state.db;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT s.code, CAST(l.on_hand - l.reserved AS BIGINT) FROM stock_level l
                   JOIN variant v ON v.id = l.variant_id
                   JOIN stock_location s ON s.id = l.location_id
                   JOIN channel_location cl ON cl.location_id = s.id
                   JOIN channel c ON c.id = cl.channel_id
                  WHERE v.sku = '{SKU}' AND c.code = 'web'"
            ),
        ))
        .await
        .unwrap();
    for row in rows {
        let code: String = row.try_get_by_index(0).unwrap();
        let available: i64 = row.try_get_by_index(1).unwrap();
        let target = if code == "WH-EAST" { units } else { 0 };
        if target != available {
            adjust_at(app, &code, (target - available) as i32).await;
        }
    }
}

/// A web price list above every other, pricing `SKU` at `amount`; returns its id.
async fn web_sale_list(app: &TestApp, code: &str) -> String {
    let db = &app.gateway.state.db;
    let web: i64 = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM channel WHERE code = 'web'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let created = admin(
        app,
        CREATE_LIST,
        json!({ "input": { "code": code, "name": "Sale", "currency": "USD", "channelId": web, "priority": 1000 } }),
    )
    .await;
    created["createPriceList"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn set_price(app: &TestApp, list: &str, amount: &str) {
    admin(
        app,
        SET_ENTRIES,
        json!({ "list": list, "entries": [{ "sku": SKU, "minQuantity": 1, "amount": amount }] }),
    )
    .await;
}

#[tokio::test]
async fn a_request_that_reads_no_catalog_data_runs_no_sql() {
    let app = app_with_read_path(|_| {}).await;
    let before = app.gateway.sql_statements();
    for channel in ["web", "mobile", "pos", "b2b"] {
        let (status, _, body) = post(&app, channel, "{ __typename }", json!({}), None).await;
        assert_eq!(
            (status, &body["data"]["__typename"]),
            (200, &json!("Query"))
        );
        let (_, _, body) = post(
            &app,
            channel,
            "{ channel { code locations { code } } stockLocations { code } }",
            json!({}),
            None,
        )
        .await;
        assert_eq!(body["data"]["channel"]["code"], channel, "{body}");
    }
    // An unknown channel is still refused with the known ones, from memory.
    let (status, _, body) = post(&app, "kiosk", "{ __typename }", json!({}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNKNOWN_CHANNEL");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("b2b, mobile, pos, web"), "{message}");
    assert_eq!(app.gateway.sql_statements() - before, 0);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_catalog_page_read_twice_runs_sql_once() {
    let app = app_with_read_path(|config| config.read_path.response_cache = false).await;
    let page = |first: i64| post(&app, "web", PAGE, json!({ "first": first }), None);
    let before = app.gateway.sql_statements();
    let (_, _, first) = page(20).await;
    let cold = app.gateway.sql_statements() - before;
    assert!(cold > 0, "the first page reads the database");
    let before = app.gateway.sql_statements();
    let (_, headers, second) = page(20).await;
    assert_eq!(app.gateway.sql_statements() - before, 0, "{second}");
    assert_eq!(first, second);
    assert_eq!(cache_status(&headers), "", "the response cache is off");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn stock_price_and_hold_changes_are_never_read_stale() {
    let app = app_with_read_path(|_| {}).await;
    let (first, status) = shown(&app).await;
    assert_eq!(status, "gateway; fwd=uri-miss; stored");
    let (again, status) = shown(&app).await;
    assert_eq!((&again, status.as_str()), (&first, "gateway; hit"));

    // Stock: the next read shows the new figure (web shows a quantity when stock is low).
    let quantity = |v: &Value| v["availability"]["quantity"].as_i64();
    drain_to(&app, 6).await;
    let (low, status) = shown(&app).await;
    assert_eq!(
        status, "gateway; fwd=uri-miss; stored",
        "the adjustments dropped the entry"
    );
    assert_eq!(quantity(&low), Some(4), "{low}");
    let low_quantity = 4;
    adjust(&app, -1).await;
    let (lower, _) = shown(&app).await;
    assert_eq!(quantity(&lower), Some(low_quantity - 1), "{lower}");

    // A hold for another channel: availability drops, with no stock level changed.
    admin(
        &app,
        HOLD,
        json!({ "input": { "sku": SKU, "channel": "pos", "location": "WH-EAST", "quantity": 1 } }),
    )
    .await;
    let (held, status) = shown(&app).await;
    assert_eq!(status, "gateway; fwd=uri-miss; stored");
    assert_eq!(quantity(&held), Some(low_quantity - 2), "{held}");

    // Price: a new list above the others, then a new amount in it.
    let list = web_sale_list(&app, "read-path-sale").await;
    set_price(&app, &list, "7.25").await;
    let (priced, status) = shown(&app).await;
    assert_eq!(status, "gateway; fwd=uri-miss; stored");
    assert_eq!(priced["price"]["unitPrice"], "7.25", "{priced}");
    set_price(&app, &list, "6.50").await;
    let (repriced, _) = shown(&app).await;
    assert_eq!(repriced["price"]["unitPrice"], "6.50", "{repriced}");
    let (cached, status) = shown(&app).await;
    assert_eq!((&cached, status.as_str()), (&repriced, "gateway; hit"));
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn conditional_gets_answer_304_until_the_content_changes() {
    let app = app_with_read_path(|_| {}).await;
    let url = format!("{}/graphql", app.gateway.url());
    let variables = json!({ "sku": SKU }).to_string();
    let get = |etag: Option<String>| {
        let mut request = app
            .client
            .get(&url)
            .header("accept", "application/graphql-response+json")
            .query(&[("query", SHOWN), ("variables", variables.as_str())]);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        async move { request.send().await.unwrap() }
    };
    let first = get(None).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    // Any cache in front must ask again, and keep channels and viewers apart.
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let vary: Vec<&str> = first
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        vary.join(", ").contains("x-channel, authorization"),
        "{vary:?}"
    );
    let body = first.text().await.unwrap();
    // Weak: each answer carries its caller's own cost report beside the same data.
    assert!(etag.starts_with("W/\"") && etag.len() == 36, "{etag}");
    let unchanged = get(Some(etag.clone())).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"].to_str().unwrap(), etag);
    assert!(unchanged.text().await.unwrap().is_empty());
    // Another validator: the body.
    let other = get(Some("\"something-else\"".into())).await;
    assert_eq!(other.status(), 200);
    assert_eq!(other.text().await.unwrap(), body);

    // Web shows a quantity once stock is low: the content changes, and so does the tag.
    drain_to(&app, 6).await;
    let changed = get(Some(etag.clone())).await;
    assert_eq!(changed.status(), 200, "the stock changed");
    assert_eq!(
        changed.headers()["cache-status"],
        "gateway; fwd=uri-miss; stored"
    );
    let new_etag = changed.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert_ne!(changed.text().await.unwrap(), body);
    let held = get(Some(new_etag.clone())).await;
    assert_eq!(held.status(), 304);
    assert_eq!(held.headers()["cache-status"], "gateway; hit");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_contract_price_is_never_served_from_or_into_an_anonymous_entry() {
    let app = app_with_read_path(|_| {}).await;
    let db = &app.gateway.state.db;
    let sku: String = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT v.sku FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id
               JOIN variant v ON v.id = e.variant_id
              WHERE l.code = 'contract-acme' AND e.min_quantity = 1 ORDER BY v.sku LIMIT 1"
                .to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let query =
        "query($sku: String!) { variant(sku: $sku) { price { unitPrice appliedRules { code } } } }";
    let variables = json!({ "sku": sku });
    let anonymous = || post(&app, "b2b", query, variables.clone(), None);
    let (_, headers, public) = anonymous().await;
    assert_eq!(cache_status(&headers), "gateway; fwd=uri-miss; stored");
    let buyer = app.token("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None);
    let (_, headers, contract) = post(&app, "b2b", query, variables.clone(), Some(&buyer)).await;
    assert_eq!(
        cache_status(&headers),
        "",
        "a token is never served from the cache"
    );
    let rule = |body: &Value| body["data"]["variant"]["price"]["appliedRules"][0]["code"].clone();
    assert_eq!(rule(&contract), "contract-acme", "{contract}");
    assert_ne!(rule(&public), "contract-acme", "{public}");
    // …and never stored for anyone else.
    let (_, headers, again) = anonymous().await;
    assert_eq!(cache_status(&headers), "gateway; hit");
    assert_eq!(again, public);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_catalog_change_made_outside_the_api_is_seen_once_announced() {
    let app = app_with_read_path(|_| {}).await;
    let query = "query($sku: String!) { variant(sku: $sku) { name } }";
    let name = || async {
        let (_, _, body) = post(&app, "web", query, json!({ "sku": SKU }), None).await;
        body["data"]["variant"]["name"].as_str().unwrap().to_owned()
    };
    let before = name().await;
    let db = &app.gateway.state.db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        format!("UPDATE variant SET name = 'Renamed' WHERE sku = '{SKU}'"),
    ))
    .await
    .unwrap();
    assert_eq!(name().await, before, "kept in memory until announced");
    // Only admins may announce.
    let (_, _, refused) = post(
        &app,
        "web",
        "mutation { announceCatalogChange }",
        json!({}),
        None,
    )
    .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    let announced = admin(&app, "mutation { announceCatalogChange }", json!({})).await;
    assert_eq!(announced["announceCatalogChange"], true);
    assert_eq!(name().await, "Renamed");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_hits_misses_and_invalidations() {
    let app = app_with_read_path(|_| {}).await;
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.gateway.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The value of one series (counters are process-wide: the test compares before and after).
    let value = |metrics: &str, series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
    };
    let counters = [
        "gateway_response_cache_total{result=\"hit\"}",
        "gateway_response_cache_total{result=\"stored\"}",
        "gateway_response_cache_invalidated_total",
        "gateway_read_model_lookups_total{result=\"hit\"}",
    ];
    let before = scrape().await;
    shown(&app).await;
    shown(&app).await;
    adjust(&app, -1).await;
    let after = scrape().await;
    for series in counters {
        assert!(
            value(&after, series) >= value(&before, series) + 1.0,
            "{series} did not grow"
        );
    }
    for gauge in [
        "gateway_read_model_entries{part=\"channels\"}",
        "gateway_response_cache_bytes",
    ] {
        value(&after, gauge);
    }
    app.gateway.stop().await.unwrap();
}

/// Two gateways on one PostgreSQL and one Redis: a change through A is never read stale
/// through B, even when B has the old answer in memory and is read right after A answers.
#[tokio::test]
async fn a_change_through_one_gateway_is_never_read_stale_on_the_other() {
    let Some(redis) = e2e::cluster_redis_url() else {
        return;
    };
    let (a, b) = e2e::spawn_pair(redis.clone(), redis, read_path_on).await;
    let list = web_sale_list(&a, "cluster-sale").await;
    drain_to(&a, 6).await;
    for round in 0..10_i64 {
        // B's memory holds the previous round (read twice); A has answered: B must not
        // serve it.
        shown(&b).await;
        shown(&b).await;
        let amount = format!("{}.50", 10 + round);
        set_price(&a, &list, &amount).await;
        let delta = if round % 2 == 0 { -1 } else { 1 };
        adjust(&a, delta).await;
        let (on_b, _) = shown(&b).await;
        assert_eq!(
            on_b["price"]["unitPrice"],
            amount.as_str(),
            "round {round}: {on_b}"
        );
        let expected = if round % 2 == 0 { 3 } else { 4 };
        assert_eq!(
            on_b["availability"]["quantity"], expected,
            "round {round}: {on_b}"
        );
    }
    b.gateway.stop().await.unwrap();
    a.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_price_window_opening_changes_the_next_read_and_caching_resumes() {
    let app = app_with_read_path(|_| {}).await;
    let db = &app.gateway.state.db;
    let web: i64 = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM channel WHERE code = 'web'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let opens = chrono::Utc::now() + chrono::Duration::seconds(2);
    let created = admin(
        &app,
        CREATE_LIST,
        json!({ "input": { "code": "flash", "name": "Flash sale", "currency": "USD", "channelId": web,
                "priority": 1000, "validFrom": opens.to_rfc3339() } }),
    )
    .await;
    let list = created["createPriceList"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    set_price(&app, &list, "3.33").await;
    let (before, _) = shown(&app).await;
    assert_ne!(
        before["price"]["unitPrice"], "3.33",
        "not open yet: {before}"
    );
    let (_, status) = shown(&app).await;
    assert_eq!(status, "gateway; hit");
    let wait = (opens - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(200)).await;
    // No write happened: the clock opened the window.
    let (open, status) = shown(&app).await;
    assert_eq!(open["price"]["unitPrice"], "3.33", "{open}");
    assert_eq!(status, "gateway; fwd=uri-miss; stored");
    let (_, status) = shown(&app).await;
    assert_eq!(
        status, "gateway; hit",
        "kept again once the edge has passed"
    );
    app.gateway.stop().await.unwrap();
}

/// The writing instance's Redis connection dies while idle (a Redis restart, an idle timeout):
/// its next change still reaches the other instance before it answers.
#[tokio::test]
async fn a_writer_whose_redis_connection_died_idle_still_keeps_the_others_exact() {
    let Some(redis) = e2e::cluster_redis_url() else {
        return;
    };
    let proxy = e2e::RedisProxy::to(&redis).await;
    // A reaches Redis through the proxy.
    let (a, b) = e2e::spawn_pair(proxy.url.clone(), redis, read_path_on).await;
    let list = web_sale_list(&a, "idle-cut").await;
    set_price(&a, &list, "9.10").await;
    let (on_b, _) = shown(&b).await;
    assert_eq!(on_b["price"]["unitPrice"], "9.10");
    // A's connections die while it is idle, and Redis is back before A writes again.
    proxy.take_down();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    proxy.bring_back();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    set_price(&a, &list, "9.20").await;
    let (on_b, _) = shown(&b).await;
    assert_eq!(on_b["price"]["unitPrice"], "9.20", "{on_b}");
    b.gateway.stop().await.unwrap();
    a.gateway.stop().await.unwrap();
}

/// In cluster mode `/readyz` needs Redis too: 503 naming it while Redis is cut, ready again
/// once it is back.
#[tokio::test]
async fn readiness_needs_redis_in_cluster_mode() {
    let Some(redis) = e2e::cluster_redis_url() else {
        return;
    };
    let proxy = e2e::RedisProxy::to(&redis).await;
    let (a, b) = e2e::spawn_pair(proxy.url.clone(), redis, read_path_on).await;
    let ready = |app: &e2e::TestApp| {
        let url = format!("{}/readyz", app.gateway.url());
        async move {
            let reply = reqwest::get(url).await.unwrap();
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = ready(&a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"], "ok", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    proxy.take_down();
    let (status, body) = ready(&a).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["redis"], "unreachable", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    // The other instance reaches Redis directly: it stays ready.
    let (status, _) = ready(&b).await;
    assert_eq!(status, 200);
    proxy.bring_back();
    let mut back = false;
    for _ in 0..50 {
        if ready(&a).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "ready again once Redis is back");
    b.gateway.stop().await.unwrap();
    a.gateway.stop().await.unwrap();
}

/// Placing an order prices it from the read model: with it on, a warm order runs the
/// pricing statements (lists, promotions, entries, rules) no more.
#[tokio::test]
async fn orders_are_priced_from_the_read_model() {
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status total } }";
    let mut statements = Vec::new();
    for on in [true, false] {
        let app = spawn_app_with(move |config: &mut Config| {
            config.inventory.sweep_interval_secs = 3600;
            config.read_path.read_model = on;
            config.read_path.response_cache = on;
        })
        .await;
        let shopper = Client::new(app.gateway.url()).token(app.token(
            "web",
            Role::Shopper,
            Some("shopper@example.com"),
            None,
        ));
        let input = |key: &str| {
            json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "idempotencyKey": key,
                "shipTo": { "name": "Ada", "line1": "1 Main St", "city": "Newark", "postalCode": "07102",
                            "country": "US", "region": "us-east" } } })
        };
        let first = shopper.query(place, input("warm-up")).await;
        assert_eq!(first.data()["placeOrder"]["status"], "ALLOCATED");
        let before = app.gateway.sql_statements();
        let second = shopper.query(place, input("measured")).await;
        assert_eq!(second.data()["placeOrder"]["status"], "ALLOCATED");
        assert_eq!(
            second.data()["placeOrder"]["total"],
            first.data()["placeOrder"]["total"],
            "the same price either way"
        );
        statements.push(app.gateway.sql_statements() - before);
        app.gateway.stop().await.unwrap();
    }
    let [with_model, without] = statements[..] else {
        unreachable!()
    };
    assert!(
        with_model + 4 <= without,
        "an order ran {with_model} statements with the read model and {without} without"
    );
}

//! Stock mutations (issue 13 points 2 and 5): admins receive, adjust and transfer stock and
//! `stockLevels` shows it, the ledger summing to on hand; a POS clerk changes their own store
//! only; bad input is refused with a code and the field, nothing changed; too little stock is
//! `INSUFFICIENT_STOCK` naming what is available; concurrent cart reservations never
//! oversell; the sweeper releases expired reservations and announces the levels.

use std::time::Duration;

use e2e::{Client, TestApp, operations_dir, spawn_app, spawn_app_with};
use gateway::auth::Role;
use gateway::bus::Event;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

const SKU: &str = "TS-0001-M";

const LEVELS: &str = "query($sku: String!) { variant(sku: $sku) { availability { status quantity } stockLevels { location { code } onHand reserved available } } }";
const RECEIVE: &str = "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { sku location onHand reserved available version } }";
const ADJUST: &str = "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { sku location onHand reserved available version } }";
const TRANSFER: &str = "mutation($input: TransferStockInput!) { transferStock(input: $input) { sku location onHand reserved available version } }";
const RESERVE: &str = "mutation($input: ReserveStockInput!) { reserveStock(input: $input) { id sku location quantity state expiresAt } }";
const EXTEND: &str = "mutation($id: ID!, $token: String) { extendReservation(id: $id, ownerToken: $token) { id state expiresAt } }";
const RELEASE: &str = "mutation($id: ID!, $token: String) { releaseReservation(id: $id, ownerToken: $token) { id state quantity } }";
const COMMIT: &str = "mutation($id: ID!, $token: String) { commitReservation(id: $id, ownerToken: $token) { id sku location state quantity } }";
const RETURN: &str = "mutation($input: ReturnStockInput!) { returnStock(input: $input) { sku location onHand reserved available version } }";
const HOLD: &str = "mutation($input: SetStockHoldInput!) { setStockHold(input: $input) { sku channel location quantity } }";
const AVAILABILITY: &str =
    "query($sku: String!) { variant(sku: $sku) { availability { status quantity } } }";

async fn execute(app: &TestApp, sql: &str) {
    let db = &app.gateway.state.db;
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap();
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let db = &app.gateway.state.db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row for {sql}"));
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Every stock row, movement and reservation, as text: any change shows.
async fn stock_state(app: &TestApp) -> Vec<i64> {
    vec![
        scalar(app, "SELECT COALESCE(SUM(on_hand), 0) FROM stock_level").await,
        scalar(app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await,
        scalar(
            app,
            "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM stock_level",
        )
        .await,
        scalar(app, "SELECT COUNT(*) FROM stock_level").await,
        scalar(app, "SELECT COUNT(*) FROM inventory_movement").await,
        scalar(app, "SELECT COUNT(*) FROM reservation").await,
        scalar(
            app,
            "SELECT COUNT(*) FROM reservation WHERE state = 'active'",
        )
        .await,
    ]
}

/// Levels whose on hand or reserved differ from the sum of their movements.
async fn ledger_mismatches(app: &TestApp) -> i64 {
    scalar(
        app,
        "SELECT COUNT(*) FROM stock_level l WHERE l.on_hand <> (SELECT COALESCE(SUM(m.on_hand_delta), 0) \
         FROM inventory_movement m WHERE m.variant_id = l.variant_id AND m.location_id = l.location_id) \
         OR l.reserved <> (SELECT COALESCE(SUM(m.reserved_delta), 0) FROM inventory_movement m \
         WHERE m.variant_id = l.variant_id AND m.location_id = l.location_id)",
    )
    .await
}

fn admin(app: &TestApp, channel: &str) -> Client {
    Client::new(app.gateway.url()).token(app.token(channel, Role::Admin, None, None))
}

fn clerk(app: &TestApp, store: &str) -> Client {
    Client::new(app.gateway.url()).token(app.token("pos", Role::PosClerk, None, Some(store)))
}

/// `(code, onHand, reserved, available)` of every location of the client's channel.
async fn levels(client: &Client, sku: &str) -> Vec<(String, i64, i64, i64)> {
    let reply = client.query(LEVELS, json!({ "sku": sku })).await;
    reply.data()["variant"]["stockLevels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["location"]["code"].as_str().unwrap().to_owned(),
                l["onHand"].as_i64().unwrap(),
                l["reserved"].as_i64().unwrap(),
                l["available"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn at(levels: &[(String, i64, i64, i64)], code: &str) -> (i64, i64, i64) {
    let l = levels.iter().find(|l| l.0 == code).unwrap();
    (l.1, l.2, l.3)
}

fn first_error(reply: &e2e::Reply) -> &Value {
    &reply.body["errors"][0]
}

/// Sets the units `channel` (web: safety stock 2) may sell of `sku` through adjustments:
/// `units` free at the first location, none at the others.
async fn set_free_units(app: &TestApp, sku: &str, first: &str, units: i64) {
    let admin = admin(app, "web");
    for (code, on_hand, reserved, _) in levels(&admin, sku).await {
        let want = reserved + if code == first { units } else { 0 };
        let delta = want - on_hand;
        if delta != 0 {
            admin
                .query(
                    ADJUST,
                    json!({ "input": { "sku": sku, "location": code, "delta": delta, "reason": "test set-up" } }),
                )
                .await
                .data();
        }
    }
}

fn stock_events(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::StockChanged { .. }) {
            seen.push(event);
        }
    }
    seen
}

#[tokio::test]
async fn admin_receipts_adjustments_and_transfers_show_in_stock_levels_and_the_ledger() {
    let app = spawn_app().await;
    let admin = admin(&app, "web");
    let mut events = app.gateway.state.bus.subscribe();
    let before = levels(&admin, SKU).await;
    let (east, _, _) = at(&before, "WH-EAST");
    let (west, _, _) = at(&before, "WH-WEST");

    let received = admin
        .query(
            RECEIVE,
            json!({ "input": { "sku": SKU, "location": "WH-EAST", "quantity": 12, "reference": "PO-1" } }),
        )
        .await;
    let row = &received.data()["receiveStock"][0];
    assert_eq!(row["location"], "WH-EAST");
    assert_eq!(row["onHand"], east + 12);

    let adjusted = admin
        .query(
            ADJUST,
            json!({ "input": { "sku": SKU, "location": "WH-EAST", "delta": -2, "reason": "damaged" } }),
        )
        .await;
    assert_eq!(adjusted.data()["adjustStock"][0]["onHand"], east + 10);

    let moved = admin
        .query(
            TRANSFER,
            json!({ "input": { "sku": SKU, "from": "WH-EAST", "to": "WH-WEST", "quantity": 4 } }),
        )
        .await;
    assert_eq!(
        moved.data()["transferStock"].as_array().unwrap().len(),
        2,
        "both levels: {}",
        moved.body
    );

    let after = levels(&admin, SKU).await;
    assert_eq!(at(&after, "WH-EAST").0, east + 6);
    assert_eq!(at(&after, "WH-WEST").0, west + 4);
    assert_eq!(
        at(&after, "WH-CENTRAL"),
        at(&before, "WH-CENTRAL"),
        "untouched"
    );
    assert_eq!(
        ledger_mismatches(&app).await,
        0,
        "the ledger sums to on hand"
    );

    let published = stock_events(&mut events);
    assert_eq!(published.len(), 3, "one event per committed change");
    let Event::StockChanged { levels } = &published[2] else {
        unreachable!()
    };
    assert_eq!(levels.len(), 2, "a transfer changes two levels");
    assert!(levels.iter().all(|l| l.version > 0));
    // Each level carries the ledger sequence number of its movement, the newest of its level.
    for level in levels {
        let newest = scalar(
            &app,
            &format!(
                "SELECT MAX(id) FROM inventory_movement WHERE variant_id = {} AND location_id = {}",
                level.variant_id, level.location_id
            ),
        )
        .await;
        assert_eq!(level.sequence, newest, "{level:?}");
    }
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_pos_clerk_changes_stock_at_their_own_store_only() {
    let app = spawn_app_with(|config| {
        config.persisted.persisted_only_channels = vec!["pos".into()];
        config.persisted.operations_dir = operations_dir();
    })
    .await;
    let downtown = clerk(&app, "STORE-DOWNTOWN");
    let (on_hand, _, _) = at(&levels(&admin(&app, "pos"), SKU).await, "STORE-DOWNTOWN");
    // `pos` runs safelisted operations only: the clerk sends the safelisted text.
    let adjust = std::fs::read_to_string(operations_dir().join("pos/AdjustStock.graphql")).unwrap();
    let mine = downtown
        .query(
            &adjust,
            json!({ "sku": SKU, "location": "STORE-DOWNTOWN", "delta": 3, "reason": "recount" }),
        )
        .await;
    assert_eq!(mine.data()["adjustStock"][0]["onHand"], on_hand + 3);

    let before = stock_state(&app).await;
    let theirs = downtown
        .query(
            &adjust,
            json!({ "sku": SKU, "location": "STORE-MALL", "delta": 3, "reason": "recount" }),
        )
        .await;
    assert_eq!(theirs.error_codes(), ["FORBIDDEN"], "{}", theirs.body);
    assert_eq!(theirs.body["data"], Value::Null);
    // Shoppers and anonymous viewers change no stock anywhere.
    let shopper = Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("shopper@example.com"),
        None,
    ));
    for client in [shopper, Client::new(app.gateway.url()).channel("web")] {
        let reply = client
            .query(
                RECEIVE,
                json!({ "input": { "sku": SKU, "location": "WH-EAST", "quantity": 1 } }),
            )
            .await;
        assert_eq!(reply.error_codes(), ["FORBIDDEN"], "{}", reply.body);
    }
    assert_eq!(stock_state(&app).await, before, "nothing changed");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_field_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = admin(&app, "web");
    let shopper = Client::new(app.gateway.url()).channel("web");
    let mut events = app.gateway.state.bus.subscribe();
    let before = stock_state(&app).await;
    let cases: Vec<(&Client, &str, Value, &str, &str)> = vec![
        (
            &admin,
            RECEIVE,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": 0 }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (
            &admin,
            RECEIVE,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": -5 }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (
            &admin,
            RECEIVE,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": 2_000_000 }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (
            &admin,
            RECEIVE,
            json!({ "sku": "NOPE-0", "location": "WH-EAST", "quantity": 1 }),
            "NOT_FOUND",
            "input.sku",
        ),
        (
            &admin,
            RECEIVE,
            json!({ "sku": SKU, "location": "WH-MOON", "quantity": 1 }),
            "NOT_FOUND",
            "input.location",
        ),
        (
            &admin,
            ADJUST,
            json!({ "sku": SKU, "location": "WH-EAST", "delta": 0, "reason": "x" }),
            "BAD_USER_INPUT",
            "input.delta",
        ),
        (
            &admin,
            ADJUST,
            json!({ "sku": SKU, "location": "WH-EAST", "delta": 1, "reason": "  " }),
            "BAD_USER_INPUT",
            "input.reason",
        ),
        (
            &admin,
            ADJUST,
            json!({ "sku": SKU, "location": "WH-EAST", "delta": -1_000_000, "reason": "x" }),
            "INSUFFICIENT_STOCK",
            "input.delta",
        ),
        (
            &admin,
            TRANSFER,
            json!({ "sku": SKU, "from": "WH-EAST", "to": "WH-EAST", "quantity": 1 }),
            "BAD_USER_INPUT",
            "input.to",
        ),
        (
            &admin,
            TRANSFER,
            json!({ "sku": SKU, "from": "WH-EAST", "to": "WH-MOON", "quantity": 1 }),
            "NOT_FOUND",
            "input.to",
        ),
        (
            &admin,
            TRANSFER,
            json!({ "sku": SKU, "from": "WH-EAST", "to": "WH-WEST", "quantity": 0 }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (
            &shopper,
            RESERVE,
            json!({ "sku": SKU, "quantity": 1 }),
            "BAD_USER_INPUT",
            "input.ownerToken",
        ),
        (
            &shopper,
            RESERVE,
            json!({ "sku": SKU, "quantity": 0, "ownerToken": "cart-1" }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (
            &shopper,
            RESERVE,
            json!({ "sku": SKU, "quantity": 1, "ownerToken": "" }),
            "BAD_USER_INPUT",
            "input.ownerToken",
        ),
        (
            &shopper,
            RESERVE,
            json!({ "sku": "NOPE-0", "quantity": 1, "ownerToken": "cart-1" }),
            "NOT_FOUND",
            "input.sku",
        ),
    ];
    for (client, query, input, code, field) in cases {
        let reply = client.query(query, json!({ "input": input })).await;
        assert_eq!(reply.error_codes(), [code], "{input}: {}", reply.body);
        assert_eq!(
            first_error(&reply)["extensions"]["field"],
            field,
            "{input}: {}",
            reply.body
        );
        assert_eq!(reply.body["data"], Value::Null, "{input}");
    }
    assert_eq!(stock_state(&app).await, before, "nothing changed");
    assert!(stock_events(&mut events).is_empty(), "nothing published");

    // Releasing twice, someone else's reservation, an expired one.
    let reserved = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 1, "ownerToken": "cart-a" } }),
        )
        .await;
    let id = reserved.data()["reserveStock"][0]["id"].clone();
    let other = shopper
        .query(RELEASE, json!({ "id": id, "token": "cart-b" }))
        .await;
    assert_eq!(other.error_codes(), ["FORBIDDEN"], "{}", other.body);
    let other = shopper
        .query(EXTEND, json!({ "id": id, "token": "cart-b" }))
        .await;
    assert_eq!(other.error_codes(), ["FORBIDDEN"], "{}", other.body);
    let released = shopper
        .query(RELEASE, json!({ "id": id, "token": "cart-a" }))
        .await;
    assert_eq!(released.data()["releaseReservation"]["state"], "released");
    let settled = stock_state(&app).await;
    let twice = shopper
        .query(RELEASE, json!({ "id": id, "token": "cart-a" }))
        .await;
    assert_eq!(twice.error_codes(), ["CONFLICT"], "{}", twice.body);
    assert_eq!(first_error(&twice)["extensions"]["field"], "id");
    let bad_id = shopper
        .query(RELEASE, json!({ "id": "nope", "token": "cart-a" }))
        .await;
    assert_eq!(bad_id.error_codes(), ["BAD_USER_INPUT"], "{}", bad_id.body);
    assert_eq!(stock_state(&app).await, settled, "nothing changed");

    execute(
        &app,
        "UPDATE channel SET reservation_ttl_seconds = 1 WHERE code = 'web'",
    )
    .await;
    let short = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 1, "ownerToken": "cart-c" } }),
        )
        .await;
    let id = short.data()["reserveStock"][0]["id"].clone();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let settled = stock_state(&app).await;
    let late = shopper
        .query(EXTEND, json!({ "id": id, "token": "cart-c" }))
        .await;
    assert_eq!(late.error_codes(), ["CONFLICT"], "{}", late.body);
    assert_eq!(stock_state(&app).await, settled, "nothing changed");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn insufficient_stock_names_what_was_asked_and_what_is_available() {
    let app = spawn_app().await;
    let admin = admin(&app, "web");
    let (_, _, east) = at(&levels(&admin, SKU).await, "WH-EAST");
    let reply = admin
        .query(
            TRANSFER,
            json!({ "input": { "sku": SKU, "from": "WH-EAST", "to": "WH-WEST", "quantity": east + 1 } }),
        )
        .await;
    assert_eq!(
        reply.error_codes(),
        ["INSUFFICIENT_STOCK"],
        "{}",
        reply.body
    );
    let line = &first_error(&reply)["extensions"]["shortages"][0];
    assert_eq!(line["field"], "input.quantity", "{}", reply.body);
    assert_eq!(line["requested"], east + 1);
    assert_eq!(line["available"], east);
    assert_eq!(
        (&line["sku"], &line["location"]),
        (&json!(SKU), &json!("WH-EAST"))
    );
    assert_eq!(
        first_error(&reply)["message"],
        format!(
            "insufficient stock: input.quantity: {SKU} at WH-EAST: {} requested, {east} available",
            east + 1
        )
    );

    // A cart on web: 5 free at WH-EAST, safety stock 2, so 3 may be sold.
    set_free_units(&app, SKU, "WH-EAST", 5).await;
    let shopper = Client::new(app.gateway.url()).channel("web");
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 4, "ownerToken": "cart-1" } }),
        )
        .await;
    assert_eq!(
        reply.error_codes(),
        ["INSUFFICIENT_STOCK"],
        "{}",
        reply.body
    );
    let line = &first_error(&reply)["extensions"]["shortages"][0];
    assert_eq!(
        (&line["requested"], &line["available"]),
        (&json!(4), &json!(3))
    );
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 3, "ownerToken": "cart-1" } }),
        )
        .await;
    let reservation = &reply.data()["reserveStock"][0];
    assert_eq!(reservation["quantity"], 3);
    assert_eq!(reservation["state"], "active");
    assert!(reservation["expiresAt"].is_string(), "{}", reply.body);
    let seen = shopper.query(LEVELS, json!({ "sku": SKU })).await;
    assert_eq!(
        seen.body["data"]["variant"]["availability"],
        json!({ "status": "OUT_OF_STOCK", "quantity": null })
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_cart_reservations_never_oversell() {
    let app = spawn_app().await;
    const UNITS: i64 = 7;
    // UNITS + the web safety stock free at WH-EAST: the channel may sell UNITS.
    set_free_units(&app, SKU, "WH-EAST", UNITS + 2).await;
    let reserved_before = scalar(&app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await;
    let shopper = Client::new(app.gateway.url()).channel("web");
    let attempts = (0..30).map(|i| {
        let shopper = shopper.clone();
        tokio::spawn(async move {
            shopper
                .query(
                    RESERVE,
                    json!({ "input": { "sku": SKU, "quantity": 1, "ownerToken": format!("cart-{i}") } }),
                )
                .await
        })
    });
    let replies: Vec<_> = futures_join(attempts).await;
    let won = replies
        .iter()
        .filter(|r| r.body.get("errors").is_none())
        .count();
    for reply in replies.iter().filter(|r| r.body.get("errors").is_some()) {
        assert_eq!(
            reply.error_codes(),
            ["INSUFFICIENT_STOCK"],
            "{}",
            reply.body
        );
    }
    assert_eq!(won as i64, UNITS, "exactly the free units are reserved");
    assert_eq!(
        scalar(&app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await,
        reserved_before + UNITS
    );
    assert_eq!(ledger_mismatches(&app).await, 0);
    app.gateway.stop().await.unwrap();
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<e2e::Reply>>,
) -> Vec<e2e::Reply> {
    let handles: Vec<_> = handles.collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_sweeper_releases_expired_reservations_and_announces_the_levels() {
    let app = spawn_app_with(|config| config.inventory.sweep_interval_secs = 1).await;
    execute(
        &app,
        "UPDATE channel SET reservation_ttl_seconds = 1 WHERE code = 'web'",
    )
    .await;
    let reserved_before = scalar(&app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await;
    let mut events = app.gateway.state.bus.subscribe();
    let shopper = Client::new(app.gateway.url()).channel("web");
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 2, "ownerToken": "cart-s" } }),
        )
        .await;
    let id = reply.data()["reserveStock"][0]["id"].clone();
    assert_eq!(
        scalar(&app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await,
        reserved_before + 2
    );
    let mut expired = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if scalar(
            &app,
            "SELECT COUNT(*) FROM reservation WHERE state = 'expired'",
        )
        .await
            == 1
        {
            expired = true;
            break;
        }
    }
    assert!(expired, "the sweeper released the reservation");
    assert_eq!(
        scalar(&app, "SELECT COALESCE(SUM(reserved), 0) FROM stock_level").await,
        reserved_before
    );
    assert_eq!(ledger_mismatches(&app).await, 0);
    // The reservation's event, then the sweeper's (give the publish a moment).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published = stock_events(&mut events);
    assert_eq!(published.len(), 2, "{published:?}");
    let Event::StockChanged { levels } = &published[1] else {
        unreachable!()
    };
    assert_eq!(levels.len(), 1);
    let late = shopper
        .query(EXTEND, json!({ "id": id, "token": "cart-s" }))
        .await;
    assert_eq!(late.error_codes(), ["CONFLICT"], "{}", late.body);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_clerk_reserves_at_their_store_and_only_the_owner_releases() {
    let app = spawn_app().await;
    let downtown = clerk(&app, "STORE-DOWNTOWN");
    downtown
        .query(
            ADJUST,
            json!({ "input": { "sku": SKU, "location": "STORE-DOWNTOWN", "delta": 3, "reason": "recount" } }),
        )
        .await
        .data();
    // Signed in: no ownerToken needed; the units come from the clerk's store.
    let reply = downtown
        .query(RESERVE, json!({ "input": { "sku": SKU, "quantity": 2 } }))
        .await;
    let reservation = &reply.data()["reserveStock"][0];
    assert_eq!(reservation["location"], "STORE-DOWNTOWN", "{}", reply.body);
    // The demo's POS channel has no reservation TTL: a till's hold is hard, never swept.
    assert_eq!(reservation["expiresAt"], Value::Null, "{}", reply.body);
    let id = reservation["id"].clone();
    let mall = clerk(&app, "STORE-MALL");
    let theirs = mall.query(RELEASE, json!({ "id": id })).await;
    assert_eq!(theirs.error_codes(), ["FORBIDDEN"], "{}", theirs.body);
    let mine = downtown.query(RELEASE, json!({ "id": id })).await;
    assert_eq!(mine.data()["releaseReservation"]["state"], "released");
    assert_eq!(
        at(&levels(&downtown, SKU).await, "STORE-DOWNTOWN").1,
        0,
        "nothing reserved any more"
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn committing_a_reservation_sells_it_and_only_the_owner_may() {
    let app = spawn_app().await;
    let admin = admin(&app, "web");
    set_free_units(&app, SKU, "WH-EAST", 10).await;
    let shopper = Client::new(app.gateway.url()).channel("web");
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 2, "ownerToken": "cart-a" } }),
        )
        .await;
    let id = reply.data()["reserveStock"][0]["id"].clone();
    let before = at(&levels(&admin, SKU).await, "WH-EAST");
    let mut events = app.gateway.state.bus.subscribe();

    // Someone else's cart, a clerk of another store, an anonymous viewer without a token.
    let state = stock_state(&app).await;
    let other = shopper
        .query(COMMIT, json!({ "id": id, "token": "cart-b" }))
        .await;
    assert_eq!(other.error_codes(), ["FORBIDDEN"], "{}", other.body);
    assert_eq!(other.body["data"], Value::Null);
    let mall = clerk(&app, "STORE-MALL");
    let theirs = mall.query(COMMIT, json!({ "id": id })).await;
    assert_eq!(theirs.error_codes(), ["FORBIDDEN"], "{}", theirs.body);
    let anonymous = shopper.query(COMMIT, json!({ "id": id })).await;
    assert_eq!(
        anonymous.error_codes(),
        ["BAD_USER_INPUT"],
        "{}",
        anonymous.body
    );
    assert_eq!(first_error(&anonymous)["extensions"]["field"], "ownerToken");
    let missing = shopper
        .query(COMMIT, json!({ "id": "nope", "token": "cart-a" }))
        .await;
    assert_eq!(
        missing.error_codes(),
        ["BAD_USER_INPUT"],
        "{}",
        missing.body
    );
    assert_eq!(stock_state(&app).await, state, "nothing changed");
    assert!(stock_events(&mut events).is_empty(), "nothing published");

    let sold = shopper
        .query(COMMIT, json!({ "id": id, "token": "cart-a" }))
        .await;
    let row = &sold.data()["commitReservation"];
    assert_eq!(row["state"], "consumed");
    assert_eq!(
        (&row["sku"], &row["location"], &row["quantity"]),
        (&json!(SKU), &json!("WH-EAST"), &json!(2))
    );
    let after = at(&levels(&admin, SKU).await, "WH-EAST");
    assert_eq!(
        (after.0, after.1),
        (before.0 - 2, before.1 - 2),
        "on hand and reserved both drop"
    );
    assert_eq!(after.2, before.2, "available is unchanged");
    assert_eq!(ledger_mismatches(&app).await, 0, "the ledger sums hold");
    assert_eq!(
        scalar(
            &app,
            "SELECT COUNT(*) FROM inventory_movement WHERE kind = 'sale' AND on_hand_delta = -2 AND reserved_delta = -2",
        )
        .await,
        1
    );
    let published = stock_events(&mut events);
    assert_eq!(published.len(), 1, "{published:?}");

    // Sold already: no longer active.
    let settled = stock_state(&app).await;
    let twice = shopper
        .query(COMMIT, json!({ "id": id, "token": "cart-a" }))
        .await;
    assert_eq!(twice.error_codes(), ["CONFLICT"], "{}", twice.body);
    assert_eq!(first_error(&twice)["extensions"]["field"], "id");
    assert_eq!(stock_state(&app).await, settled, "nothing changed");

    // An admin sells any cart's reservation; a clerk their store's.
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 1, "ownerToken": "cart-c" } }),
        )
        .await;
    let id = reply.data()["reserveStock"][0]["id"].clone();
    let sold = admin.query(COMMIT, json!({ "id": id })).await;
    assert_eq!(sold.data()["commitReservation"]["state"], "consumed");
    let downtown = clerk(&app, "STORE-DOWNTOWN");
    downtown
        .query(
            ADJUST,
            json!({ "input": { "sku": SKU, "location": "STORE-DOWNTOWN", "delta": 2, "reason": "recount" } }),
        )
        .await
        .data();
    let reply = downtown
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 1, "ownerToken": "basket-1" } }),
        )
        .await;
    let id = reply.data()["reserveStock"][0]["id"].clone();
    let sold = downtown.query(COMMIT, json!({ "id": id })).await;
    assert_eq!(
        sold.data()["commitReservation"]["location"],
        "STORE-DOWNTOWN"
    );
    assert_eq!(ledger_mismatches(&app).await, 0);
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn returned_stock_goes_back_on_hand_through_the_ledger() {
    let app = spawn_app().await;
    let admin = admin(&app, "web");
    let (east, _, _) = at(&levels(&admin, SKU).await, "WH-EAST");
    let mut events = app.gateway.state.bus.subscribe();
    let returned = admin
        .query(
            RETURN,
            json!({ "input": { "sku": SKU, "location": "WH-EAST", "quantity": 2, "reason": "customer return", "reference": "RMA-1" } }),
        )
        .await;
    assert_eq!(returned.data()["returnStock"][0]["onHand"], east + 2);
    assert_eq!(at(&levels(&admin, SKU).await, "WH-EAST").0, east + 2);
    assert_eq!(
        scalar(
            &app,
            "SELECT COUNT(*) FROM inventory_movement WHERE kind = 'return' AND on_hand_delta = 2 \
             AND reason = 'customer return' AND reference = 'RMA-1'",
        )
        .await,
        1
    );
    assert_eq!(ledger_mismatches(&app).await, 0);
    assert_eq!(stock_events(&mut events).len(), 1, "published after commit");

    // A clerk at their store; elsewhere, or a shopper, is refused; bad input names its field.
    let downtown = clerk(&app, "STORE-DOWNTOWN");
    let mine = downtown
        .query(
            RETURN,
            json!({ "input": { "sku": SKU, "location": "STORE-DOWNTOWN", "quantity": 1, "reason": "unsold basket" } }),
        )
        .await;
    assert_eq!(mine.data()["returnStock"][0]["location"], "STORE-DOWNTOWN");
    let before = stock_state(&app).await;
    let shopper = Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("shopper@example.com"),
        None,
    ));
    let refused: Vec<(&Client, Value, &str, Option<&str>)> = vec![
        (
            &downtown,
            json!({ "sku": SKU, "location": "STORE-MALL", "quantity": 1, "reason": "x" }),
            "FORBIDDEN",
            None,
        ),
        (
            &shopper,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": 1, "reason": "x" }),
            "FORBIDDEN",
            None,
        ),
        (
            &admin,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": 0, "reason": "x" }),
            "BAD_USER_INPUT",
            Some("input.quantity"),
        ),
        (
            &admin,
            json!({ "sku": SKU, "location": "WH-EAST", "quantity": 1, "reason": " " }),
            "BAD_USER_INPUT",
            Some("input.reason"),
        ),
        (
            &admin,
            json!({ "sku": SKU, "location": "WH-MOON", "quantity": 1, "reason": "x" }),
            "NOT_FOUND",
            Some("input.location"),
        ),
        (
            &admin,
            json!({ "sku": "NOPE-0", "location": "WH-EAST", "quantity": 1, "reason": "x" }),
            "NOT_FOUND",
            Some("input.sku"),
        ),
    ];
    for (client, input, code, field) in refused {
        let reply = client.query(RETURN, json!({ "input": input })).await;
        assert_eq!(reply.error_codes(), [code], "{input}: {}", reply.body);
        if let Some(field) = field {
            assert_eq!(first_error(&reply)["extensions"]["field"], field, "{input}");
        }
    }
    assert_eq!(stock_state(&app).await, before, "nothing changed");
    app.gateway.stop().await.unwrap();
}

/// `(status, quantity)` of the client's channel availability of `sku`.
async fn availability(client: &Client, sku: &str) -> Value {
    let reply = client.query(AVAILABILITY, json!({ "sku": sku })).await;
    reply.data()["variant"]["availability"].clone()
}

#[tokio::test]
async fn a_hold_keeps_units_for_one_channel_and_only_admins_set_holds() {
    let app = spawn_app().await;
    // POS also sells from WH-EAST in this test, and its stores are empty: what POS reserves
    // comes from WH-EAST, where web can sell 7 free units less its safety stock of 2.
    execute(
        &app,
        "INSERT INTO channel_location (channel_id, location_id, priority, created_at, updated_at) \
         SELECT c.id, l.id, 3, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM channel c, stock_location l \
         WHERE c.code = 'pos' AND l.code = 'WH-EAST'",
    )
    .await;
    set_free_units(&app, SKU, "WH-EAST", 7).await;
    let web_admin = admin(&app, "web");
    let pos_admin = admin(&app, "pos");
    for store in ["STORE-DOWNTOWN", "STORE-MALL"] {
        let (on_hand, reserved, _) = at(&levels(&pos_admin, SKU).await, store);
        if on_hand > reserved {
            pos_admin
                .query(
                    ADJUST,
                    json!({ "input": { "sku": SKU, "location": store, "delta": reserved - on_hand, "reason": "test set-up" } }),
                )
                .await
                .data();
        }
    }
    let shopper = Client::new(app.gateway.url()).channel("web");
    assert_eq!(
        availability(&shopper, SKU).await,
        json!({ "status": "LOW_STOCK", "quantity": 5 })
    );

    // Only admins set holds: nothing changes for anyone else.
    let input = json!({ "sku": SKU, "channel": "pos", "location": "WH-EAST", "quantity": 3 });
    let holds = "SELECT COUNT(*) FROM stock_hold";
    let held_before = scalar(&app, holds).await;
    let signed_in = Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("shopper@example.com"),
        None,
    ));
    for client in [&shopper, &signed_in, &clerk(&app, "STORE-DOWNTOWN")] {
        let reply = client.query(HOLD, json!({ "input": input })).await;
        assert_eq!(reply.error_codes(), ["FORBIDDEN"], "{}", reply.body);
        assert_eq!(reply.body["data"], Value::Null);
    }
    for (bad, code, field) in [
        (
            json!({ "quantity": -1 }),
            "BAD_USER_INPUT",
            "input.quantity",
        ),
        (json!({ "channel": "moon" }), "NOT_FOUND", "input.channel"),
        (
            json!({ "location": "WH-MOON" }),
            "NOT_FOUND",
            "input.location",
        ),
        (json!({ "sku": "NOPE-0" }), "NOT_FOUND", "input.sku"),
    ] {
        let mut input = input.clone();
        for (key, value) in bad.as_object().unwrap() {
            input[key] = value.clone();
        }
        let reply = web_admin.query(HOLD, json!({ "input": input })).await;
        assert_eq!(reply.error_codes(), [code], "{input}: {}", reply.body);
        assert_eq!(first_error(&reply)["extensions"]["field"], field, "{input}");
    }
    assert_eq!(scalar(&app, holds).await, held_before, "no hold set");

    let held = web_admin.query(HOLD, json!({ "input": input })).await;
    assert_eq!(
        held.data()["setStockHold"],
        json!({ "sku": SKU, "channel": "pos", "location": "WH-EAST", "quantity": 3 })
    );
    // Web's availability drops by the held units; beyond it, web reservations fail.
    assert_eq!(
        availability(&shopper, SKU).await,
        json!({ "status": "LOW_STOCK", "quantity": 2 })
    );
    let state = stock_state(&app).await;
    let reply = shopper
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 3, "ownerToken": "cart-w" } }),
        )
        .await;
    assert_eq!(
        reply.error_codes(),
        ["INSUFFICIENT_STOCK"],
        "{}",
        reply.body
    );
    let line = &first_error(&reply)["extensions"]["shortages"][0];
    assert_eq!(
        (&line["requested"], &line["available"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(stock_state(&app).await, state, "nothing changed");
    // POS, whose units they are, still reserves them.
    let reply = pos_admin
        .query(
            RESERVE,
            json!({ "input": { "sku": SKU, "quantity": 3, "ownerToken": "basket-h" } }),
        )
        .await;
    let reservation = &reply.data()["reserveStock"][0];
    assert_eq!(
        (&reservation["location"], &reservation["quantity"]),
        (&json!("WH-EAST"), &json!(3)),
        "{}",
        reply.body
    );
    let id = reservation["id"].clone();
    pos_admin
        .query(RELEASE, json!({ "id": id, "token": "basket-h" }))
        .await
        .data();

    // Quantity 0 removes the hold: web sells the units again.
    let removed = web_admin
        .query(
            HOLD,
            json!({ "input": { "sku": SKU, "channel": "pos", "location": "WH-EAST", "quantity": 0 } }),
        )
        .await;
    assert_eq!(removed.data()["setStockHold"]["quantity"], 0);
    assert_eq!(scalar(&app, holds).await, held_before);
    assert_eq!(
        availability(&shopper, SKU).await,
        json!({ "status": "LOW_STOCK", "quantity": 5 })
    );
    app.gateway.stop().await.unwrap();
}

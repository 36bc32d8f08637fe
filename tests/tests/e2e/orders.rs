//! Orders end to end: planning agrees with placing, placement prices, routes and reserves in
//! one transaction (or changes nothing), the lifecycle keeps stock and history consistent,
//! and concurrent orders never oversell (SQLite, and PostgreSQL with `TEST_DATABASE_URL`).

use e2e::{Client, TestApp, spawn_app};
use gateway::auth::Role;
use serde_json::{Value, json};

const SKU: &str = "TS-0001-M";
const ORDER_FIELDS: &str = "id number status total currency lines { sku quantity unitPrice lineTotal returnedQuantity } routing { id location status promisedShipDate reasons lines { sku quantity backordered } } events { fromStatus toStatus note }";

fn place_query() -> String {
    format!(
        "mutation($input: PlaceOrderInput!) {{ placeOrder(input: $input) {{ {ORDER_FIELDS} }} }}"
    )
}

fn ship_to() -> Value {
    json!({ "name": "Ada", "line1": "1 Main St", "city": "Newark", "postalCode": "07102",
            "country": "US", "region": "us-east", "latitude": 40.73, "longitude": -74.17 })
}

fn shopper(app: &TestApp) -> Client {
    Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("shopper@example.com"),
        None,
    ))
}

fn admin(app: &TestApp) -> Client {
    Client::new(app.gateway.url()).token(app.token("web", Role::Admin, None, None))
}

/// Exact stock of `sku` on web, per location code: (on hand, reserved).
async fn levels(app: &TestApp, sku: &str) -> Vec<(String, i64, i64)> {
    levels_on(app, "web", sku).await
}

#[tokio::test]
async fn plan_and_place_agree_and_the_lifecycle_keeps_stock_consistent() {
    let app = spawn_app().await;
    let client = shopper(&app);
    let input = json!({ "lines": [{ "sku": SKU, "quantity": 2 }], "shipTo": ship_to(), "idempotencyKey": "order-1" });
    let plan = client
        .query(
            "query($input: PlaceOrderInput!) { planFulfillment(input: $input) { total groups { location shipsOn reasons lines { sku quantity } } excluded { location reason } } }",
            json!({ "input": input }),
        )
        .await;
    let plan = plan.data()["planFulfillment"].clone();
    let before = levels(&app, SKU).await;

    let placed = client
        .query(&place_query(), json!({ "input": input }))
        .await;
    let order = placed.data()["placeOrder"].clone();
    assert_eq!(order["status"], "ALLOCATED");
    assert_eq!(order["total"], plan["total"], "the plan priced it the same");
    let routing = order["routing"].as_array().unwrap();
    assert_eq!(routing.len(), plan["groups"].as_array().unwrap().len());
    assert_eq!(
        routing[0]["location"], plan["groups"][0]["location"],
        "{plan}"
    );
    assert_eq!(routing[0]["promisedShipDate"], plan["groups"][0]["shipsOn"]);
    assert!(!routing[0]["reasons"].as_array().unwrap().is_empty());
    assert_eq!(order["events"][0]["toStatus"], "ALLOCATED");
    // Two units reserved where routing said.
    let location = routing[0]["location"].as_str().unwrap().to_owned();
    let after = levels(&app, SKU).await;
    let reserved = |levels: &[(String, i64, i64)]| {
        levels
            .iter()
            .find(|l| l.0 == location)
            .map(|l| l.2)
            .unwrap()
    };
    assert_eq!(reserved(&after), reserved(&before) + 2);

    // The same key again: the same order, nothing reserved twice.
    let again = client
        .query(&place_query(), json!({ "input": input }))
        .await;
    assert_eq!(again.data()["placeOrder"]["id"], order["id"]);
    assert_eq!(reserved(&levels(&app, SKU).await), reserved(&before) + 2);

    // The shopper sees it; another shopper does not.
    let id = order["id"].as_str().unwrap().to_owned();
    let seen = client
        .query(
            "query($id: ID!) { order(id: $id) { number status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(seen.data()["order"]["number"], order["number"]);
    let other = Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("buyer@acme.example"),
        None,
    ));
    let hidden = other
        .query(
            "query($id: ID!) { order(id: $id) { number } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(hidden.error_codes(), ["NOT_FOUND"]);
    let mine = client
        .query(
            "{ orders(first: 5) { nodes { id } hasNextPage } }",
            json!({}),
        )
        .await;
    assert_eq!(mine.data()["orders"]["nodes"][0]["id"], json!(id));

    // Ship, deliver, return: sold then restocked through the ledger.
    let admin = admin(&app);
    let shipment = routing[0]["id"].as_str().unwrap().to_owned();
    let shipped = admin
        .query(
            &format!("mutation($id: ID!) {{ fulfillShipment(id: $id) {{ {ORDER_FIELDS} }} }}"),
            json!({ "id": shipment }),
        )
        .await;
    assert_eq!(shipped.data()["fulfillShipment"]["status"], "FULFILLED");
    let sold = levels(&app, SKU).await;
    let on_hand = |levels: &[(String, i64, i64)]| {
        levels
            .iter()
            .find(|l| l.0 == location)
            .map(|l| l.1)
            .unwrap()
    };
    assert_eq!(on_hand(&sold), on_hand(&before) - 2);
    assert_eq!(reserved(&sold), reserved(&before));
    // Illegal transitions are coded and change nothing.
    let twice = admin
        .query(
            "mutation($id: ID!) { fulfillShipment(id: $id) { status } }",
            json!({ "id": shipment }),
        )
        .await;
    assert_eq!(twice.error_codes(), ["CONFLICT"]);
    let cancel = admin
        .query(
            "mutation($id: ID!) { cancelOrder(id: $id, reason: \"late\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancel.error_codes(), ["CONFLICT"]);
    let delivered = admin
        .query(
            "mutation($id: ID!) { markDelivered(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(delivered.data()["markDelivered"]["status"], "DELIVERED");
    let too_many = admin
        .query(
            "mutation($id: ID!) { returnLines(id: $id, lines: [{sku: \"TS-0001-M\", quantity: 3}], reason: \"damaged\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(too_many.error_codes(), ["BAD_USER_INPUT"]);
    let returned = admin
        .query(
            &format!("mutation($id: ID!) {{ returnLines(id: $id, lines: [{{sku: \"TS-0001-M\", quantity: 2}}], reason: \"damaged\") {{ {ORDER_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    let returned = &returned.data()["returnLines"];
    assert_eq!(returned["status"], "RETURNED");
    assert_eq!(returned["lines"][0]["returnedQuantity"], 2);
    assert_eq!(on_hand(&levels(&app, SKU).await), on_hand(&before));
    let history: Vec<&str> = returned["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["toStatus"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["ALLOCATED", "FULFILLED", "DELIVERED", "RETURNED"]);
}

#[tokio::test]
async fn bad_orders_are_coded_and_change_nothing() {
    let app = spawn_app().await;
    let client = shopper(&app);
    let before = levels(&app, SKU).await;
    for (input, code, field) in [
        (
            json!({ "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to() }),
            "BAD_USER_INPUT",
            "input.idempotencyKey",
        ),
        (
            json!({ "lines": [{ "sku": SKU, "quantity": 1_000_000 }], "shipTo": ship_to(), "idempotencyKey": "k1" }),
            "INSUFFICIENT_STOCK",
            "",
        ),
        (
            json!({ "lines": [{ "sku": SKU, "quantity": 0 }], "shipTo": ship_to(), "idempotencyKey": "k2" }),
            "BAD_USER_INPUT",
            "input.lines[0].quantity",
        ),
        (
            json!({ "lines": [], "shipTo": ship_to(), "idempotencyKey": "k3" }),
            "BAD_USER_INPUT",
            "input.lines",
        ),
        (
            json!({ "lines": [{ "sku": SKU, "quantity": 1 }], "idempotencyKey": "k4" }),
            "BAD_USER_INPUT",
            "input.shipTo",
        ),
        (
            json!({ "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": "k5", "extensions": [1] }),
            "BAD_USER_INPUT",
            "input.extensions",
        ),
        (
            json!({ "lines": [{ "sku": "NOPE-1", "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": "k6" }),
            "NOT_FOUND",
            "input.lines[0].sku",
        ),
    ] {
        let reply = client
            .query(&place_query(), json!({ "input": input }))
            .await;
        assert_eq!(reply.error_codes(), [code], "{input}: {}", reply.body);
        if !field.is_empty() {
            assert_eq!(
                reply.body["errors"][0]["extensions"]["field"], field,
                "{}",
                reply.body
            );
        }
    }
    let short = client
        .query(
            &place_query(),
            json!({ "input": { "lines": [{ "sku": SKU, "quantity": 999_999 }], "shipTo": ship_to(), "idempotencyKey": "k8" } }),
        )
        .await;
    let shortage = &short.body["errors"][0]["extensions"]["shortages"][0];
    assert_eq!(shortage["sku"], SKU, "{}", short.body);
    assert_eq!(shortage["field"], "input.lines[0].quantity");
    assert_eq!(shortage["requested"], 999_999);
    assert_eq!(levels(&app, SKU).await, before, "nothing reserved");
    let none = client.query("{ orders { nodes { id } } }", json!({})).await;
    assert_eq!(none.data()["orders"]["nodes"], json!([]), "nothing written");
    // Anonymous viewers cannot order.
    let anonymous = Client::new(app.gateway.url())
        .query(&place_query(), json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": "k7" } }))
        .await;
    assert_eq!(anonymous.error_codes(), ["FORBIDDEN"]);
}

#[tokio::test]
async fn an_external_order_is_never_created_twice_and_cancelling_releases_its_stock() {
    let app = spawn_app().await;
    let client = admin(&app);
    let before = levels(&app, SKU).await;
    let input = json!({
        "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(),
        "externalRef": "MKT-1001", "extensions": { "marketplace": "acme-mall", "fee": "1.20" },
        "idempotencyKey": "ext-a",
    });
    let first = client
        .query(&place_query(), json!({ "input": input }))
        .await;
    let first = first.data()["placeOrder"].clone();
    let mut again = input.clone();
    again["idempotencyKey"] = json!("ext-b");
    let second = client
        .query(&place_query(), json!({ "input": again }))
        .await;
    assert_eq!(
        second.data()["placeOrder"]["id"],
        first["id"],
        "same external order"
    );
    let id = first["id"].as_str().unwrap();
    let read = client
        .query(
            "query($id: ID!) { order(id: $id) { externalRef extensions } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        read.data()["order"]["extensions"]["marketplace"],
        "acme-mall"
    );
    let cancelled = client
        .query(
            "mutation($id: ID!) { cancelOrder(id: $id, reason: \"customer changed mind\") { status events { toStatus } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled.data()["cancelOrder"]["status"], "CANCELLED");
    assert_eq!(
        levels(&app, SKU).await,
        before,
        "the reservation was released"
    );
}

/// Places an external order, lets `spoil` make placing its lines fail with `failure` (shown
/// with a new order under a new key), then repeats the external order under a new key: the
/// answer is the first order, and no stock moved.
async fn a_repeat_after(
    reference: &str,
    spoil: impl AsyncFnOnce(&TestApp, &Client),
    failure: &str,
) {
    let app = spawn_app().await;
    let admin = admin(&app);
    let input = json!({
        "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(),
        "externalRef": reference, "idempotencyKey": format!("{reference}-a"),
    });
    let first = admin.query(&place_query(), json!({ "input": input })).await;
    let first = first.data()["placeOrder"].clone();
    spoil(&app, &admin).await;
    let fresh = admin
        .query(
            &place_query(),
            json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": format!("{reference}-b") } }),
        )
        .await;
    assert_eq!(fresh.error_codes(), [failure], "{}", fresh.body);
    let before = ledger_entries(&app, SKU).await;
    let mut again = input.clone();
    again["idempotencyKey"] = json!(format!("{reference}-c"));
    let second = admin.query(&place_query(), json!({ "input": again })).await;
    assert_eq!(
        second.data()["placeOrder"]["id"],
        first["id"],
        "{}",
        second.body
    );
    assert_eq!(
        ledger_entries(&app, SKU).await,
        before,
        "nothing reserved again"
    );
}

/// Ledger entries of `sku` at every location, read from the database (a channel's view
/// would miss a delisted SKU or other channels' locations).
async fn ledger_entries(app: &TestApp, sku: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let db = e2e::open_database(&app.database_url).await;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM inventory_movement \
             WHERE variant_id = (SELECT id FROM variant WHERE sku = $1)",
            [sku.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

#[tokio::test]
async fn a_repeated_external_order_is_answered_after_its_stock_sold_out() {
    // Every unit left goes: the repeat fails on its unique reference after routing short.
    let sell_out = async |app: &TestApp, admin: &Client| {
        for (location, on_hand, reserved) in levels(app, SKU).await {
            if on_hand != reserved {
                admin
                    .query(
                        "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { onHand } }",
                        json!({ "input": { "sku": SKU, "location": location, "delta": reserved - on_hand, "reason": "sold out" } }),
                    )
                    .await
                    .data();
            }
        }
    };
    a_repeat_after("MKT-SOLD-1", sell_out, "INSUFFICIENT_STOCK").await;
}

#[tokio::test]
async fn a_repeated_external_order_is_answered_after_its_sku_was_delisted() {
    // The product leaves the channel outside the API, and the gateways are told: the repeat
    // fails in pricing, before any row is written.
    let delist = async |app: &TestApp, admin: &Client| {
        use sea_orm::ConnectionTrait;
        let db = e2e::open_database(&app.database_url).await;
        db.execute_unprepared(&format!(
            "DELETE FROM channel_product WHERE channel_id = (SELECT id FROM channel WHERE code = 'web') \
             AND product_id = (SELECT product_id FROM variant WHERE sku = '{SKU}')"
        ))
        .await
        .unwrap();
        admin
            .query("mutation { announceCatalogChange }", json!({}))
            .await
            .data();
    };
    a_repeat_after("MKT-GONE-1", delist, "NOT_FOUND").await;
}

#[tokio::test]
async fn concurrent_orders_never_oversell() {
    let app = spawn_app().await;
    let admin = admin(&app);
    // 10 units over two locations (6 + 4), none at the third; web keeps 2 as safety stock.
    for (location, target) in [("WH-EAST", 6), ("WH-WEST", 4), ("WH-CENTRAL", 0)] {
        let now = levels(&app, SKU)
            .await
            .into_iter()
            .find(|l| l.0 == location)
            .map_or(0, |l| l.1 - l.2);
        if now != target {
            let reply = admin
                .query(
                    "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { onHand } }",
                    json!({ "input": { "sku": SKU, "location": location, "delta": target - now, "reason": "oversell test" } }),
                )
                .await;
            reply.data();
        }
    }
    let web =
        |l: &&(String, i64, i64)| ["WH-EAST", "WH-WEST", "WH-CENTRAL"].contains(&l.0.as_str());
    let start = levels(&app, SKU).await;
    let free: i64 = start.iter().filter(web).map(|l| l.1 - l.2).sum();
    let reserved_before: i64 = start.iter().filter(web).map(|l| l.2).sum();
    assert_eq!(
        free, 10,
        "10 free units at web's locations; web keeps 2 as safety stock"
    );
    let url = app.gateway.url();
    let token = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let mut tasks = Vec::new();
    for n in 0..100 {
        let client = Client::new(url.clone()).token(token.clone());
        tasks.push(tokio::spawn(async move {
            client
                .query(
                    &place_query(),
                    json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": format!("rush-{n}") } }),
                )
                .await
        }));
    }
    let mut placed = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.error_codes().as_slice() {
            [] => placed += 1,
            [code] if code == "INSUFFICIENT_STOCK" => {}
            other => panic!("unexpected {other:?}: {}", reply.body),
        }
    }
    assert_eq!(placed, 8, "exactly the sellable units were ordered");
    let after = levels(&app, SKU).await;
    let reserved: i64 = after.iter().filter(web).map(|l| l.2).sum();
    assert_eq!(
        reserved,
        reserved_before + placed,
        "one unit reserved per placed order, none for refused ones"
    );
    for (code, on_hand, reserved) in &after {
        assert!(
            reserved <= on_hand,
            "{code}: {reserved} reserved of {on_hand}"
        );
    }
    // The ledger still sums to on hand at every level.
    let db = e2e::open_database(&app.database_url).await;
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &db,
        sea_orm::Statement::from_string(
            sea_orm::ConnectionTrait::get_database_backend(&db),
            "SELECT COUNT(*) FROM stock_level s WHERE s.on_hand <> (SELECT COALESCE(SUM(m.on_hand_delta), 0) FROM inventory_movement m WHERE m.variant_id = s.variant_id AND m.location_id = s.location_id) OR s.reserved <> (SELECT COALESCE(SUM(m.reserved_delta), 0) FROM inventory_movement m WHERE m.variant_id = s.variant_id AND m.location_id = s.location_id)",
        ),
    )
    .await
    .unwrap();
    let off: i64 = rows[0].try_get_by_index(0).unwrap();
    assert_eq!(off, 0, "every level equals its ledger");
    // On PostgreSQL the orders that arrived together were placed in batches; SQLite places
    // each alone.
    let metrics = app
        .client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let (batches, batched) = (
        series("gateway_order_batch_size_count"),
        series("gateway_order_batch_size_sum"),
    );
    if app.database_url.starts_with("postgres") {
        let (batches, batched) = (batches.unwrap(), batched.unwrap());
        assert!(
            batched > batches,
            "some batch held more than one order: {batched} orders in {batches} batches"
        );
    } else {
        assert_eq!(batches, None, "no batches on SQLite");
    }
}

#[tokio::test]
async fn twenty_concurrent_placements_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let before = levels(&app, SKU).await;
    let url = app.gateway.url();
    let token = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let input = json!({ "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": "checkout-42" });
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = Client::new(url.clone()).token(token.clone());
        let input = input.clone();
        tasks.push(tokio::spawn(async move {
            client
                .query(&place_query(), json!({ "input": input }))
                .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.error_codes().as_slice() {
            [] => {
                ids.insert(
                    reply.body["data"]["placeOrder"]["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            [code] if code == "IDEMPOTENCY_IN_PROGRESS" => {}
            other => panic!("unexpected {other:?}: {}", reply.body),
        }
    }
    assert_eq!(ids.len(), 1, "one order: {ids:?}");
    let reserved = |levels: &[(String, i64, i64)]| levels.iter().map(|l| l.2).sum::<i64>();
    assert_eq!(reserved(&levels(&app, SKU).await), reserved(&before) + 1);
    let mine = shopper(&app)
        .query("{ orders { nodes { id } } }", json!({}))
        .await;
    assert_eq!(mine.data()["orders"]["nodes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_orders_page_costs_the_same_statements_whatever_its_size() {
    let app = spawn_app().await;
    let client = admin(&app);
    for n in 0..6 {
        client
            .query(
                &place_query(),
                json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }, { "sku": "TS-0001-L", "quantity": 1 }], "shipTo": ship_to(), "idempotencyKey": format!("page-{n}") } }),
            )
            .await
            .data();
    }
    let mut counts = Vec::new();
    for first in [2, 6] {
        let before = app.gateway.sql_statements();
        let page = client
            .query(
                &format!("query($first: Int!) {{ orders(first: $first) {{ nodes {{ {ORDER_FIELDS} }} hasNextPage }} }}"),
                json!({ "first": first }),
            )
            .await;
        assert_eq!(
            page.data()["orders"]["nodes"].as_array().unwrap().len(),
            first
        );
        counts.push(app.gateway.sql_statements() - before);
    }
    assert_eq!(
        counts[0], counts[1],
        "statements grew with the page size (N+1): {counts:?}"
    );
}

/// Exact stock of `sku` as `channel`'s admin sees it: (location, on hand, reserved).
async fn levels_on(app: &TestApp, channel: &str, sku: &str) -> Vec<(String, i64, i64)> {
    let reply = Client::new(app.gateway.url())
        .token(app.token(channel, Role::Admin, None, None))
        .query(
            "query($sku: String!) { variant(sku: $sku) { stockLevels { location { code } onHand reserved } } }",
            json!({ "sku": sku }),
        )
        .await;
    reply.data()["variant"]["stockLevels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["location"]["code"].as_str().unwrap().to_owned(),
                l["onHand"].as_i64().unwrap(),
                l["reserved"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn b2b_backorders_ship_after_a_restock_and_returns_go_back_where_they_shipped_from() {
    let app = spawn_app().await;
    let sku = "PP-0012-P1";
    let buyer = Client::new(app.gateway.url()).token(app.token(
        "b2b",
        Role::B2bBuyer,
        Some("buyer@acme.example"),
        None,
    ));
    let b2b_admin = Client::new(app.gateway.url()).token(app.token("b2b", Role::Admin, None, None));
    let before = levels_on(&app, "b2b", sku).await;
    let free: i64 = before.iter().map(|l| l.1 - l.2).sum();
    // A failed placement does not use up its key: after a restock the same key runs.
    let wanted = free + 40;
    let input = json!({ "lines": [{ "sku": sku, "quantity": wanted }], "shipTo": ship_to(), "idempotencyKey": "po-77" });
    let placed = buyer.query(&place_query(), json!({ "input": input })).await;
    let order = placed.data()["placeOrder"].clone();
    let routing = order["routing"].as_array().unwrap().clone();
    let backorder = routing
        .iter()
        .find(|s| s["status"] == "BACKORDERED")
        .expect("the units beyond stock are backordered");
    assert_eq!(backorder["lines"][0]["quantity"], 40);
    assert_eq!(backorder["lines"][0]["backordered"], true);
    // Shipping the backorder before the restock is refused; after it, it ships.
    let ship = "mutation($id: ID!) { fulfillShipment(id: $id) { status routing { status } } }";
    let early = b2b_admin
        .query(ship, json!({ "id": backorder["id"] }))
        .await;
    assert_eq!(
        early.error_codes(),
        ["INSUFFICIENT_STOCK"],
        "{}",
        early.body
    );
    // The shortage names the SKU and the backorder's location.
    let shortage = &early.body["errors"][0]["extensions"]["shortages"][0];
    assert_eq!(shortage["sku"], sku, "{}", early.body);
    assert_eq!(
        shortage["location"], backorder["location"],
        "{}",
        early.body
    );
    assert_eq!(shortage["requested"], 40, "{}", early.body);
    for shipment in routing.iter().filter(|s| s["status"] == "PENDING") {
        b2b_admin
            .query(ship, json!({ "id": shipment["id"] }))
            .await
            .data();
    }
    let restock = backorder["location"].as_str().unwrap();
    b2b_admin
        .query(
            "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { onHand } }",
            json!({ "input": { "sku": sku, "location": restock, "quantity": 50 } }),
        )
        .await
        .data();
    let shipped = b2b_admin
        .query(ship, json!({ "id": backorder["id"] }))
        .await;
    assert_eq!(shipped.data()["fulfillShipment"]["status"], "FULFILLED");
    // Returns go back to each shipment's location.
    let returned = b2b_admin
        .query(
            "mutation($id: ID!, $n: Int!) { returnLines(id: $id, lines: [{sku: \"PP-0012-P1\", quantity: $n}], reason: \"overstock\") { status } }",
            json!({ "id": order["id"], "n": wanted }),
        )
        .await;
    assert_eq!(returned.data()["returnLines"]["status"], "RETURNED");
    // The same SKU on two lines is refused (it would return units twice).
    let twice = b2b_admin
        .query(
            "mutation($id: ID!) { returnLines(id: $id, lines: [{sku: \"PP-0012-P1\", quantity: 1}, {sku: \"PP-0012-P1\", quantity: 1}], reason: \"again\") { status } }",
            json!({ "id": order["id"] }),
        )
        .await;
    assert_eq!(twice.error_codes(), ["BAD_USER_INPUT"], "{}", twice.body);
    let after = levels_on(&app, "b2b", sku).await;
    for (code, on_hand, reserved) in &before {
        let now = after.iter().find(|l| &l.0 == code).unwrap();
        let restocked = if code == restock { 50 } else { 0 };
        assert_eq!(
            (now.1, now.2),
            (on_hand + restocked, *reserved),
            "{code}: every unit came back where it shipped from"
        );
    }
}

#[tokio::test]
async fn an_external_reference_is_never_another_viewers_order() {
    let app = spawn_app().await;
    let input = json!({ "lines": [{ "sku": SKU, "quantity": 1 }], "shipTo": ship_to(), "externalRef": "MKT-9", "idempotencyKey": "a" });
    let first = shopper(&app)
        .query(&place_query(), json!({ "input": input }))
        .await;
    first.data();
    let other = Client::new(app.gateway.url()).token(app.token(
        "web",
        Role::Shopper,
        Some("vip@example.com"),
        None,
    ));
    let stolen = other.query(&place_query(), json!({ "input": input })).await;
    assert_eq!(stolen.error_codes(), ["CONFLICT"], "{}", stolen.body);
    assert!(stolen.body["data"].is_null() || stolen.body["data"]["placeOrder"].is_null());
    let mut changed = input.clone();
    changed["lines"][0]["quantity"] = json!(5);
    changed["idempotencyKey"] = json!("b");
    let other_lines = shopper(&app)
        .query(&place_query(), json!({ "input": changed }))
        .await;
    assert_eq!(
        other_lines.error_codes(),
        ["CONFLICT"],
        "{}",
        other_lines.body
    );
}

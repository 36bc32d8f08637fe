//! Admin mutations over prices (issue 11 point 6): price lists, entries, quantity rules and
//! promotions change what shoppers pay; every invalid input is refused with the field named
//! and nothing written; non-admins are refused before any SQL; a committed change publishes
//! exactly one `PricesChanged` event and a failed one publishes none.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use commerce_core::entities::{price_list, promotion};

use e2e::{Client, StatusCode, TestApp, spawn_app};
use gateway::bus::Event;
use gateway::graphql::Viewer;
use gateway::graphql::ids::{Kind, encode_id};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, EntityTrait, Statement};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::sync::broadcast::Receiver;

const PRICE: &str = "query($sku: String!, $q: Int) { variant(sku: $sku) { price(quantity: $q) { listUnitPrice unitPrice tier { minQuantity priceList scope } appliedRules { kind code } } } }";

const CREATE_LIST: &str = "mutation($input: CreatePriceListInput!) { createPriceList(input: $input) { id code name currency scope scopeId priority active validFrom validUntil } }";
const UPDATE_LIST: &str = "mutation($id: ID!, $input: UpdatePriceListInput!) { updatePriceList(id: $id, input: $input) { id name priority active validFrom validUntil } }";
const SET_ENTRIES: &str = "mutation($list: ID!, $entries: [PriceEntryInput!]!) { setPriceEntries(priceList: $list, entries: $entries) { priceList sku minQuantity amount } }";
const REMOVE_ENTRY: &str = "mutation($list: ID!, $sku: String!, $min: Int!) { removePriceEntry(priceList: $list, sku: $sku, minQuantity: $min) { sku minQuantity amount } }";
const SET_RULE: &str = "mutation($list: ID!, $input: QuantityRuleInput!) { setQuantityRule(priceList: $list, input: $input) { priceList sku minQuantity maxQuantity increment } }";
const REMOVE_RULE: &str = "mutation($list: ID!, $sku: String!) { removeQuantityRule(priceList: $list, sku: $sku) { sku minQuantity } }";
const CREATE_PROMOTION: &str = "mutation($input: CreatePromotionInput!) { createPromotion(input: $input) { id code target targetId discount value currency minQuantity active } }";
const UPDATE_PROMOTION: &str = "mutation($id: ID!, $input: UpdatePromotionInput!) { updatePromotion(id: $id, input: $input) { id active priority value startsAt endsAt } }";

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

/// Rows of every table the admin mutations write.
async fn row_counts(app: &TestApp) -> [i64; 4] {
    [
        scalar(app, "SELECT COUNT(*) FROM price_list").await,
        scalar(app, "SELECT COUNT(*) FROM price_list_entry").await,
        scalar(app, "SELECT COUNT(*) FROM quantity_rule").await,
        scalar(app, "SELECT COUNT(*) FROM promotion").await,
    ]
}

/// A fingerprint of every stored price row: changes to any value show.
async fn price_state(app: &TestApp) -> Vec<String> {
    let db = &app.gateway.state.db;
    let mut out = Vec::new();
    for sql in [
        "SELECT id, code, name, priority, active, valid_from, valid_until FROM price_list ORDER BY id",
        "SELECT id, price_list_id, variant_id, min_quantity, amount FROM price_list_entry ORDER BY id",
        "SELECT id, price_list_id, variant_id, min_quantity, max_quantity, increment FROM quantity_rule ORDER BY id",
        "SELECT id, code, value, active, priority, starts_at, ends_at FROM promotion ORDER BY id",
    ] {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_owned(),
            ))
            .await
            .unwrap();
        out.push(format!("{sql}: {rows:?}"));
    }
    out
}

async fn run(app: &TestApp, admin: bool, query: &str, variables: Value) -> Value {
    let viewer = Viewer {
        admin,
        ..Viewer::default()
    };
    let response =
        gateway::transport::execute_as(&app.gateway.state, "web", viewer, query, variables).await;
    serde_json::to_value(&response).unwrap()
}

/// Runs as an admin; fails the test on any error.
async fn admin_ok(app: &TestApp, query: &str, variables: Value) -> Value {
    let body = run(app, true, query, variables).await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

fn error_of(body: &Value) -> (&str, &str) {
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(errors.len(), 1, "{body}");
    (
        errors[0]["extensions"]["code"].as_str().unwrap_or(""),
        errors[0]["extensions"]["field"].as_str().unwrap_or(""),
    )
}

fn dec(value: &Value) -> Decimal {
    value.as_str().expect("a decimal string").parse().unwrap()
}

/// A web-listed variant with only its base price (no promotion reaches it), and its id.
async fn plain_web_variant(app: &TestApp) -> (String, i64) {
    let db = &app.gateway.state.db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT v.sku, v.id FROM variant v JOIN product p ON p.id = v.product_id
              WHERE p.status = 'active'
                AND p.id IN (SELECT cp.product_id FROM channel_product cp JOIN channel c ON c.id = cp.channel_id WHERE c.code = 'web')
                AND p.id NOT IN (SELECT target_id FROM promotion WHERE target_kind = 'product' AND target_id IS NOT NULL)
                AND p.category_id NOT IN (SELECT target_id FROM promotion WHERE target_kind = 'category' AND target_id IS NOT NULL)
                AND v.id IN (SELECT e.variant_id FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id WHERE l.code = 'base-usd')
              ORDER BY v.sku LIMIT 1"
                .to_owned(),
        ))
        .await
        .unwrap()
        .expect("the demo has such a variant");
    (
        row.try_get("", "sku").unwrap(),
        row.try_get("", "id").unwrap(),
    )
}

async fn web_channel_id(app: &TestApp) -> i64 {
    scalar(app, "SELECT id FROM channel WHERE code = 'web'").await
}

async fn anonymous_price(app: &TestApp, sku: &str, quantity: i32) -> Value {
    let reply = Client::new(app.gateway.url())
        .query(PRICE, json!({ "sku": sku, "q": quantity }))
        .await;
    reply.data()["variant"]["price"].clone()
}

/// Creates a USD list scoped to the web channel; returns its id.
async fn web_list(app: &TestApp, code: &str) -> String {
    let channel_id = web_channel_id(app).await;
    let data = admin_ok(
        app,
        CREATE_LIST,
        json!({ "input": { "code": code, "name": "Web sale", "currency": "USD", "channelId": channel_id, "priority": 100 } }),
    )
    .await;
    data["createPriceList"]["id"].as_str().unwrap().to_owned()
}

/// No event arrives within a short wait.
async fn assert_no_event(events: &mut Receiver<Event>, after: &str) {
    let waited = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(waited.is_err(), "an event after {after}: {waited:?}");
}

#[tokio::test]
async fn admin_changes_to_lists_rules_and_promotions_change_the_anonymous_price() {
    let app = spawn_app().await;
    let (sku, variant_id) = plain_web_variant(&app).await;
    let before = anonymous_price(&app, &sku, 1).await;
    assert_eq!(before["appliedRules"][0]["code"], "base-usd", "{before}");
    assert_eq!(
        before["appliedRules"].as_array().unwrap().len(),
        1,
        "{before}"
    );
    let base = dec(&before["listUnitPrice"]);
    let (one, ten) = (
        (base * Decimal::new(90, 2)).round_dp(2),
        (base * Decimal::new(80, 2)).round_dp(2),
    );

    // A web channel list, more specific than the base list.
    let channel_id = web_channel_id(&app).await;
    let created = admin_ok(
        &app,
        CREATE_LIST,
        json!({ "input": { "code": "web-sale", "name": "Web sale", "currency": "USD", "channelId": channel_id, "priority": 100 } }),
    )
    .await;
    let list = &created["createPriceList"];
    assert_eq!(list["code"], "web-sale");
    assert_eq!(list["scope"], "CHANNEL");
    assert_eq!(list["scopeId"], channel_id);
    assert_eq!(list["active"], true);
    let list_id = list["id"].as_str().unwrap().to_owned();
    assert_eq!(
        list_id,
        encode_id(
            Kind::PriceList,
            scalar(&app, "SELECT id FROM price_list WHERE code = 'web-sale'").await
        )
        .0
    );
    // An empty list prices nothing yet: the base price stands.
    assert_eq!(anonymous_price(&app, &sku, 1).await, before);

    let set = admin_ok(
        &app,
        SET_ENTRIES,
        json!({ "list": list_id, "entries": [
            { "sku": sku, "minQuantity": 1, "amount": one.to_string() },
            { "sku": sku, "minQuantity": 10, "amount": ten.to_string() },
        ] }),
    )
    .await;
    let saved = set["setPriceEntries"].as_array().unwrap();
    assert_eq!(saved.len(), 2);
    assert_eq!(saved[0]["sku"], sku.as_str());
    assert_eq!(dec(&saved[1]["amount"]), ten);
    assert_eq!(saved[1]["priceList"], list_id.as_str());

    let at_one = anonymous_price(&app, &sku, 1).await;
    assert_eq!(dec(&at_one["listUnitPrice"]), one, "{at_one}");
    assert_eq!(at_one["tier"]["priceList"], "web-sale");
    assert_eq!(at_one["tier"]["scope"], "CHANNEL");
    let at_ten = anonymous_price(&app, &sku, 12).await;
    assert_eq!(dec(&at_ten["listUnitPrice"]), ten, "{at_ten}");
    assert_eq!(at_ten["tier"]["minQuantity"], 10);

    // Upsert: the same tier again replaces its amount, no new row.
    let entries = scalar(&app, "SELECT COUNT(*) FROM price_list_entry").await;
    let cheaper = (one * Decimal::new(95, 2)).round_dp(2).max(ten);
    admin_ok(
        &app,
        SET_ENTRIES,
        json!({ "list": list_id, "entries": [{ "sku": sku, "amount": cheaper.to_string() }] }),
    )
    .await;
    assert_eq!(
        scalar(&app, "SELECT COUNT(*) FROM price_list_entry").await,
        entries
    );
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["listUnitPrice"]),
        cheaper
    );

    // A quantity rule on the winning list: at least 5, in steps of 5.
    let rule = admin_ok(
        &app,
        SET_RULE,
        json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 5, "increment": 5 } }),
    )
    .await;
    assert_eq!(rule["setQuantityRule"]["minQuantity"], 5);
    assert_eq!(rule["setQuantityRule"]["maxQuantity"], Value::Null);
    let refused = Client::new(app.gateway.url())
        .query(PRICE, json!({ "sku": sku, "q": 3 }))
        .await;
    assert_eq!(
        refused.error_codes(),
        ["QUANTITY_RULE_VIOLATION"],
        "{}",
        refused.text
    );
    // Upserting the rule changes it in place.
    admin_ok(
        &app,
        SET_RULE,
        json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 2, "maxQuantity": 40, "increment": 1 } }),
    )
    .await;
    assert_eq!(
        scalar(
            &app,
            &format!("SELECT COUNT(*) FROM quantity_rule WHERE variant_id = {variant_id}")
        )
        .await,
        1
    );
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 3).await["listUnitPrice"]),
        cheaper
    );
    admin_ok(&app, REMOVE_RULE, json!({ "list": list_id, "sku": sku })).await;
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["listUnitPrice"]),
        cheaper
    );

    // Removing the 10-unit tier: 12 units cost the 1-unit price again.
    let removed = admin_ok(
        &app,
        REMOVE_ENTRY,
        json!({ "list": list_id, "sku": sku, "min": 10 }),
    )
    .await;
    assert_eq!(dec(&removed["removePriceEntry"]["amount"]), ten);
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 12).await["listUnitPrice"]),
        cheaper
    );

    // A fixed-price promotion on the variant, then switched off.
    let promoted = admin_ok(
        &app,
        CREATE_PROMOTION,
        json!({ "input": {
            "code": "ADMIN-FIXED", "name": "Admin fixed price", "target": "VARIANT",
            "targetId": encode_id(Kind::Variant, variant_id).0, "discount": "FIXED_PRICE",
            "value": "0.5", "currency": "USD", "channelId": channel_id,
        } }),
    )
    .await;
    let promotion = &promoted["createPromotion"];
    assert_eq!(promotion["discount"], "FIXED_PRICE");
    assert_eq!(promotion["target"], "VARIANT");
    assert_eq!(dec(&promotion["value"]), Decimal::new(5, 1));
    let promotion_id = promotion["id"].as_str().unwrap().to_owned();
    let discounted = anonymous_price(&app, &sku, 1).await;
    assert_eq!(
        dec(&discounted["unitPrice"]),
        Decimal::new(5, 1),
        "{discounted}"
    );
    assert_eq!(discounted["appliedRules"][1]["code"], "ADMIN-FIXED");
    let updated = admin_ok(
        &app,
        UPDATE_PROMOTION,
        json!({ "id": promotion_id, "input": { "value": "0.75", "priority": 7 } }),
    )
    .await;
    assert_eq!(updated["updatePromotion"]["priority"], 7);
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["unitPrice"]),
        Decimal::new(75, 2)
    );
    admin_ok(
        &app,
        UPDATE_PROMOTION,
        json!({ "id": promotion_id, "input": { "active": false } }),
    )
    .await;
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["unitPrice"]),
        cheaper
    );

    // Deactivating the list: the base price is back, exactly as before.
    let updated = admin_ok(
        &app,
        UPDATE_LIST,
        json!({ "id": list_id, "input": { "active": false, "name": "Web sale (ended)" } }),
    )
    .await;
    assert_eq!(updated["updatePriceList"]["active"], false);
    assert_eq!(updated["updatePriceList"]["name"], "Web sale (ended)");
    assert_eq!(anonymous_price(&app, &sku, 1).await, before);
    // A window in the future keeps it off even when active again.
    admin_ok(
        &app,
        UPDATE_LIST,
        json!({ "id": list_id, "input": { "active": true, "validFrom": "2999-01-01T00:00:00Z" } }),
    )
    .await;
    assert_eq!(anonymous_price(&app, &sku, 1).await, before);
    // Clearing the window (null) makes it apply again.
    let cleared = admin_ok(
        &app,
        UPDATE_LIST,
        json!({ "id": list_id, "input": { "validFrom": null } }),
    )
    .await;
    assert_eq!(cleared["updatePriceList"]["validFrom"], Value::Null);
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["listUnitPrice"]),
        cheaper
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn every_invalid_input_is_refused_with_its_field_and_nothing_written() {
    let app = spawn_app().await;
    let (sku, _) = plain_web_variant(&app).await;
    let channel_id = web_channel_id(&app).await;
    let list_id = web_list(&app, "web-validation").await;
    let base_list = encode_id(
        Kind::PriceList,
        scalar(&app, "SELECT id FROM price_list WHERE code = 'base-usd'").await,
    )
    .0;
    let base_amount = Decimal::new(
        scalar(
            &app,
            &format!(
                "SELECT e.amount FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id
                  JOIN variant v ON v.id = e.variant_id
                  WHERE l.code = 'base-usd' AND v.sku = '{sku}' AND e.min_quantity = 1"
            ),
        )
        .await,
        4,
    );
    let percent = admin_ok(
        &app,
        CREATE_PROMOTION,
        json!({ "input": { "code": "ADMIN-PCT", "name": "Ten percent", "discount": "PERCENT_OFF", "value": "10", "active": false } }),
    )
    .await;
    let percent_id = percent["createPromotion"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let good_list = |fields: Value| {
        let mut input = json!({ "code": "fresh-list", "name": "Fresh", "currency": "USD" });
        for (key, value) in fields.as_object().unwrap() {
            input[key] = value.clone();
        }
        json!({ "input": input })
    };
    let good_promotion = |fields: Value| {
        let mut input =
            json!({ "code": "FRESH", "name": "Fresh", "discount": "PERCENT_OFF", "value": "10" });
        for (key, value) in fields.as_object().unwrap() {
            input[key] = value.clone();
        }
        json!({ "input": input })
    };
    let entries = |entries: Value| json!({ "list": list_id, "entries": entries });
    let ok_entry =
        |min: i32, amount: &str| json!({ "sku": sku, "minQuantity": min, "amount": amount });
    let rule = |input: Value| json!({ "list": list_id, "input": input });

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            CREATE_LIST,
            good_list(json!({ "currency": "usd" })),
            "input.currency",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "currency": "US" })),
            "input.currency",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "currency": "EUR", "channelId": channel_id })),
            "input.currency",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "code": "base-usd" })),
            "input.code",
        ),
        (CREATE_LIST, good_list(json!({ "code": "" })), "input.code"),
        (CREATE_LIST, good_list(json!({ "name": " " })), "input.name"),
        (
            CREATE_LIST,
            good_list(json!({ "channelId": 999_999 })),
            "input.channelId",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "customerGroupId": 999_999 })),
            "input.customerGroupId",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "companyId": 999_999 })),
            "input.companyId",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "customerId": 999_999 })),
            "input.customerId",
        ),
        (
            CREATE_LIST,
            good_list(json!({ "channelId": channel_id, "companyId": 1 })),
            "input.companyId",
        ),
        (
            CREATE_LIST,
            good_list(
                json!({ "validFrom": "2030-01-02T00:00:00Z", "validUntil": "2030-01-01T00:00:00Z" }),
            ),
            "input.validUntil",
        ),
        (
            CREATE_LIST,
            good_list(
                json!({ "validFrom": "2030-01-01T00:00:00Z", "validUntil": "2030-01-01T00:00:00Z" }),
            ),
            "input.validUntil",
        ),
        (
            UPDATE_LIST,
            json!({ "id": list_id, "input": { "validFrom": "2030-01-02T00:00:00Z", "validUntil": "2030-01-01T00:00:00Z" } }),
            "input.validUntil",
        ),
        (
            UPDATE_LIST,
            json!({ "id": list_id, "input": { "name": "" } }),
            "input.name",
        ),
        (
            UPDATE_LIST,
            json!({ "id": "nonsense", "input": { "active": false } }),
            "id",
        ),
        (
            SET_ENTRIES,
            entries(json!([
                ok_entry(1, "9"),
                ok_entry(5, "8"),
                ok_entry(10, "-1")
            ])),
            "entries[2].amount",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), ok_entry(5, "8.12345")])),
            "entries[1].amount",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), ok_entry(0, "8")])),
            "entries[1].minQuantity",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), ok_entry(1, "8")])),
            "entries[1].minQuantity",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), ok_entry(10, "9.01")])),
            "entries[1].amount",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(10, "9"), ok_entry(1, "8")])),
            "entries[0].amount",
        ),
        (SET_ENTRIES, entries(json!([])), "entries"),
        (
            // Against the stored tier: 10 units may not cost more than the stored 1-unit price.
            SET_ENTRIES,
            json!({ "list": base_list, "entries": [ok_entry(10, &(base_amount + Decimal::ONE).to_string())] }),
            "entries[0].amount",
        ),
        (
            SET_ENTRIES,
            json!({ "list": "bad", "entries": [ok_entry(1, "1")] }),
            "priceList",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "minQuantity": 0 })),
            "input.minQuantity",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "minQuantity": 5, "maxQuantity": 4 })),
            "input.maxQuantity",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "increment": 0 })),
            "input.increment",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "value": "100.01" })),
            "input.value",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "value": "-1" })),
            "input.value",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(
                json!({ "discount": "AMOUNT_OFF", "value": "1.23456", "currency": "USD" }),
            ),
            "input.value",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "discount": "AMOUNT_OFF", "value": "1" })),
            "input.currency",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "discount": "FIXED_PRICE", "value": "1", "currency": "usd" })),
            "input.currency",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(
                json!({ "discount": "FIXED_PRICE", "value": "1", "currency": "EUR", "channelId": channel_id }),
            ),
            "input.currency",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "currency": "USD" })),
            "input.currency",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "minQuantity": 0 })),
            "input.minQuantity",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(
                json!({ "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z" }),
            ),
            "input.endsAt",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "code": "WINTER-SALE" })),
            "input.code",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "channelId": 999_999 })),
            "input.channelId",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "customerGroupId": 999_999 })),
            "input.customerGroupId",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({ "target": "PRODUCT" })),
            "input.targetId",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(
                json!({ "target": "PRODUCT", "targetId": encode_id(Kind::Product, 999_999).0 }),
            ),
            "input.targetId",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(
                json!({ "target": "CATEGORY", "targetId": encode_id(Kind::Product, 1).0 }),
            ),
            "input.targetId",
        ),
        (
            UPDATE_PROMOTION,
            json!({ "id": percent_id, "input": { "value": "101" } }),
            "input.value",
        ),
        (
            UPDATE_PROMOTION,
            json!({ "id": percent_id, "input": { "startsAt": "2030-01-02T00:00:00Z", "endsAt": "2030-01-01T00:00:00Z" } }),
            "input.endsAt",
        ),
    ];
    // Codes are unique whatever their case, and spelled from letters, digits, `_`, `.`, `-`.
    let mut cases = cases;
    for code in [
        "BASE-USD",
        "Base-Usd",
        "base-usd ",
        " base-usd",
        "base usd",
        "-leading-dash",
        ".hidden",
        "tab\there",
        "nul\u{0}code",
        "caf\u{e9}",
        &"x".repeat(65),
    ] {
        cases.push((
            CREATE_LIST,
            good_list(json!({ "code": code })),
            "input.code",
        ));
    }
    for code in ["winter-sale", "Winter-Sale", "WINTER-SALE\n", "FRESH FRESH"] {
        cases.push((
            CREATE_PROMOTION,
            good_promotion(json!({ "code": code })),
            "input.code",
        ));
    }
    // Names refuse NUL, control characters and bidirectional overrides and isolates.
    for name in [
        "bell\u{7}",
        "nul\u{0}name",
        "line\nbreak",
        "delete\u{7f}",
        "c1\u{85}",
        "evil\u{202e}txt.exe",
        "embed\u{202a}",
        "iso\u{2066}late",
        "pop\u{2069}",
    ] {
        cases.push((
            CREATE_LIST,
            good_list(json!({ "name": name })),
            "input.name",
        ));
        cases.push((
            UPDATE_LIST,
            json!({ "id": list_id, "input": { "name": name } }),
            "input.name",
        ));
        cases.push((
            CREATE_PROMOTION,
            good_promotion(json!({ "name": name })),
            "input.name",
        ));
    }
    cases.extend([
        (
            CREATE_LIST,
            good_list(json!({ "currency": "US\u{0}" })),
            "input.currency",
        ),
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), { "sku": "A\u{0}B", "amount": "8" }])),
            "entries[1].sku",
        ),
        (SET_RULE, rule(json!({ "sku": "A\u{0}B" })), "input.sku"),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": "A\u{0}B", "min": 1 }),
            "sku",
        ),
        (
            REMOVE_RULE,
            json!({ "list": list_id, "sku": "A\u{0}B" }),
            "sku",
        ),
        // Quantity rules stay within what a shopper may ask for (1,000,000 units).
        (
            SET_RULE,
            rule(json!({ "sku": sku, "increment": i32::MAX })),
            "input.increment",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "increment": 1_000_001 })),
            "input.increment",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "minQuantity": 1_000_001 })),
            "input.minQuantity",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "maxQuantity": 1_000_001 })),
            "input.maxQuantity",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": sku, "minQuantity": i32::MAX, "maxQuantity": i32::MAX })),
            "input.minQuantity",
        ),
        // A window empty at microsecond precision (what PostgreSQL stores) is empty.
        (
            CREATE_LIST,
            good_list(json!({
                "validFrom": "2030-01-01T00:00:00.123456789Z",
                "validUntil": "2030-01-01T00:00:00.1234569Z",
            })),
            "input.validUntil",
        ),
        (
            UPDATE_LIST,
            json!({ "id": list_id, "input": {
                "validFrom": "2030-01-01T00:00:00.123456789Z",
                "validUntil": "2030-01-01T00:00:00.1234569Z",
            } }),
            "input.validUntil",
        ),
        (
            CREATE_PROMOTION,
            good_promotion(json!({
                "startsAt": "2030-01-01T00:00:00.123456789Z",
                "endsAt": "2030-01-01T00:00:00.1234569Z",
            })),
            "input.endsAt",
        ),
        (
            UPDATE_PROMOTION,
            json!({ "id": percent_id, "input": {
                "startsAt": "2030-01-01T00:00:00.123456789Z",
                "endsAt": "2030-01-01T00:00:00.1234569Z",
            } }),
            "input.endsAt",
        ),
    ]);

    let mut events = app.gateway.state.bus.subscribe();
    for (query, variables, field) in cases {
        let counts = row_counts(&app).await;
        let state = price_state(&app).await;
        let body = run(&app, true, query, variables.clone()).await;
        assert_eq!(
            error_of(&body),
            ("BAD_USER_INPUT", field),
            "{variables}: {body}"
        );
        assert_eq!(body["data"], Value::Null, "{body}");
        assert_eq!(
            row_counts(&app).await,
            counts,
            "rows written by {variables}"
        );
        assert_eq!(
            price_state(&app).await,
            state,
            "rows changed by {variables}"
        );
        assert!(events.try_recv().is_err(), "an event after {variables}");
    }

    // Unknown SKUs, lists and promotions are NOT_FOUND, naming what was missing (and, for an
    // input value, its field).
    let counts = row_counts(&app).await;
    for (query, variables, missing, field) in [
        (
            SET_ENTRIES,
            entries(json!([ok_entry(1, "9"), { "sku": "NO-SUCH-SKU", "amount": "8" }])),
            "NO-SUCH-SKU",
            "entries[1].sku",
        ),
        (
            SET_RULE,
            rule(json!({ "sku": "NO-SUCH-SKU" })),
            "NO-SUCH-SKU",
            "input.sku",
        ),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": "NO-SUCH-SKU", "min": 1 }),
            "NO-SUCH-SKU",
            "sku",
        ),
        (
            REMOVE_RULE,
            json!({ "list": list_id, "sku": "NO-SUCH-SKU" }),
            "NO-SUCH-SKU",
            "sku",
        ),
        (
            REMOVE_RULE,
            json!({ "list": list_id, "sku": sku }),
            "quantity rule",
            "",
        ),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": sku, "min": 1 }),
            "price entry",
            "",
        ),
        (
            SET_ENTRIES,
            json!({ "list": encode_id(Kind::PriceList, 999_999).0, "entries": [ok_entry(1, "1")] }),
            "price list 999999",
            "",
        ),
        (
            UPDATE_PROMOTION,
            json!({ "id": encode_id(Kind::Promotion, 999_999).0, "input": { "active": false } }),
            "promotion 999999",
            "",
        ),
    ] {
        let body = run(&app, true, query, variables.clone()).await;
        assert_eq!(error_of(&body), ("NOT_FOUND", field), "{variables}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(missing), "{message}");
    }
    assert_eq!(row_counts(&app).await, counts);
    assert_no_event(&mut events, "refused mutations").await;
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn only_admins_may_change_prices_and_a_refusal_runs_no_sql() {
    let app = spawn_app().await;
    let (sku, _) = plain_web_variant(&app).await;
    let list_id = encode_id(
        Kind::PriceList,
        scalar(&app, "SELECT id FROM price_list WHERE code = 'base-usd'").await,
    )
    .0;
    let mutations: Vec<(&str, Value)> = vec![
        (
            CREATE_LIST,
            json!({ "input": { "code": "sneaky", "name": "Sneaky", "currency": "USD" } }),
        ),
        (
            UPDATE_LIST,
            json!({ "id": list_id, "input": { "active": false } }),
        ),
        (
            SET_ENTRIES,
            json!({ "list": list_id, "entries": [{ "sku": sku, "amount": "0.01" }] }),
        ),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": sku, "min": 1 }),
        ),
        (
            SET_RULE,
            json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 100 } }),
        ),
        (REMOVE_RULE, json!({ "list": list_id, "sku": sku })),
        (
            CREATE_PROMOTION,
            json!({ "input": { "code": "FREE", "name": "Free", "discount": "PERCENT_OFF", "value": "100" } }),
        ),
        (
            UPDATE_PROMOTION,
            json!({ "id": encode_id(Kind::Promotion, 1).0, "input": { "active": false } }),
        ),
    ];
    let mut events = app.gateway.state.bus.subscribe();
    let state = price_state(&app).await;
    // What an in-process request costs without resolving anything: loading its channel.
    let before = app.gateway.sql_statements();
    run(&app, false, "{ __typename }", json!({})).await;
    let baseline = app.gateway.sql_statements() - before;
    let client = Client::new(app.gateway.url());
    for (query, variables) in &mutations {
        let before = app.gateway.sql_statements();
        let body = run(&app, false, query, variables.clone()).await;
        assert_eq!(error_of(&body).0, "FORBIDDEN", "{body}");
        assert_eq!(body["data"], Value::Null, "{body}");
        assert_eq!(
            app.gateway.sql_statements() - before,
            baseline,
            "SQL ran for {query}"
        );
        // Over HTTP every viewer is anonymous, and so never an admin (yet).
        let reply = client.query(query, variables.clone()).await;
        assert_eq!(reply.error_codes(), ["FORBIDDEN"], "{}", reply.text);
    }
    assert_eq!(price_state(&app).await, state, "a refused mutation wrote");
    assert_no_event(&mut events, "refused mutations").await;
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_committed_change_publishes_one_event_and_a_failed_one_none() {
    let app = spawn_app().await;
    let (sku, variant_id) = plain_web_variant(&app).await;
    let list_id = web_list(&app, "web-events").await;
    let list_row = scalar(&app, "SELECT id FROM price_list WHERE code = 'web-events'").await;
    let mut events = app.gateway.state.bus.subscribe();

    admin_ok(
        &app,
        SET_ENTRIES,
        json!({ "list": list_id, "entries": [
            { "sku": sku, "minQuantity": 1, "amount": "5" },
            { "sku": sku, "minQuantity": 10, "amount": "4" },
        ] }),
    )
    .await;
    let event = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .expect("an event after the commit")
        .unwrap();
    assert_eq!(
        event,
        Event::PricesChanged {
            list_ids: vec![list_row],
            variant_ids: vec![variant_id],
            promotion_ids: Vec::new(),
        }
    );
    assert_no_event(&mut events, "the one event").await;

    // A failed mutation (a rising tier) publishes nothing.
    let body = run(
        &app,
        true,
        SET_ENTRIES,
        json!({ "list": list_id, "entries": [{ "sku": sku, "minQuantity": 20, "amount": "6" }] }),
    )
    .await;
    assert_eq!(error_of(&body), ("BAD_USER_INPUT", "entries[0].amount"));
    assert_no_event(&mut events, "a failed mutation").await;

    // Quantity rules and promotions announce what they touched too.
    admin_ok(
        &app,
        SET_RULE,
        json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 2 } }),
    )
    .await;
    let event = events.recv().await.unwrap();
    assert_eq!(
        event,
        Event::PricesChanged {
            list_ids: vec![list_row],
            variant_ids: vec![variant_id],
            promotion_ids: Vec::new(),
        }
    );
    let created = admin_ok(
        &app,
        CREATE_PROMOTION,
        json!({ "input": { "code": "EVT", "name": "Event", "target": "VARIANT", "targetId": encode_id(Kind::Variant, variant_id).0, "discount": "PERCENT_OFF", "value": "5" } }),
    )
    .await;
    let promotion_row = scalar(&app, "SELECT id FROM promotion WHERE code = 'EVT'").await;
    assert_eq!(
        created["createPromotion"]["id"],
        encode_id(Kind::Promotion, promotion_row).0.as_str()
    );
    assert_eq!(
        events.recv().await.unwrap(),
        Event::PricesChanged {
            list_ids: Vec::new(),
            variant_ids: vec![variant_id],
            promotion_ids: vec![promotion_row],
        }
    );
    assert_no_event(&mut events, "the promotion's event").await;
    app.gateway.stop().await.unwrap();
}

/// Runs every request as an admin at the same moment (each on its own task, released together
/// by a barrier), and returns the responses in order.
async fn admin_concurrently(app: &TestApp, requests: Vec<(&'static str, Value)>) -> Vec<Value> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(query, variables)| {
            let state = app.gateway.state.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let viewer = Viewer {
                    admin: true,
                    ..Viewer::default()
                };
                barrier.wait().await;
                let response =
                    gateway::transport::execute_as(&state, "web", viewer, query, variables).await;
                serde_json::to_value(&response).unwrap()
            })
        })
        .collect();
    let mut bodies = Vec::with_capacity(tasks.len());
    for task in tasks {
        bodies.push(task.await.unwrap());
    }
    bodies
}

/// `OK`, or the code and field of a response's one error.
fn outcome(body: &Value) -> (String, String) {
    if body.get("errors").is_none() {
        return ("OK".to_owned(), String::new());
    }
    let (code, field) = error_of(body);
    (code.to_owned(), field.to_owned())
}

/// How many responses had each outcome.
fn tally(bodies: &[Value]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for body in bodies {
        *counts.entry(outcome(body)).or_default() += 1;
    }
    counts
}

fn ok_and_refused(ok: usize, refused: usize, field: &str) -> Vec<((String, String), usize)> {
    vec![
        (("BAD_USER_INPUT".to_owned(), field.to_owned()), refused),
        (("OK".to_owned(), String::new()), ok),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_of_one_code_get_one_success_and_a_clear_error() {
    let app = spawn_app().await;
    // 20 creations of one code (in three spellings): one wins, 19 are told the code is taken.
    // (SQLite once answered some with INTERNAL "database is locked"; PostgreSQL let two
    // spellings of one code in.)
    for (query, spellings, table) in [
        (
            CREATE_LIST,
            ["rush-hour", "rush-hour", "rush-hour"],
            "price_list",
        ),
        (
            CREATE_LIST,
            ["crowd-sale", "Crowd-Sale", "CROWD-SALE"],
            "price_list",
        ),
        (CREATE_PROMOTION, ["RUSH", "rush", "Rush"], "promotion"),
    ] {
        let requests = (0..20)
            .map(|i| {
                let code = spellings[i % 3];
                let input = if query == CREATE_LIST {
                    json!({ "code": code, "name": format!("Rush {i}"), "currency": "USD" })
                } else {
                    json!({ "code": code, "name": format!("Rush {i}"), "discount": "PERCENT_OFF", "value": "1", "active": false })
                };
                (query, json!({ "input": input }))
            })
            .collect();
        let bodies = admin_concurrently(&app, requests).await;
        let counts: Vec<_> = tally(&bodies).into_iter().collect();
        assert_eq!(counts, ok_and_refused(1, 19, "input.code"), "{bodies:?}");
        let code = spellings[0].to_lowercase();
        assert_eq!(
            scalar(
                &app,
                &format!("SELECT COUNT(*) FROM {table} WHERE lower(code) = '{code}'")
            )
            .await,
            1
        );
    }

    app.gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_tier_or_rule_all_succeed_or_get_a_code() {
    let app = spawn_app().await;
    let (sku, variant_id) = plain_web_variant(&app).await;
    // 20 writers of one new tier and one new quantity rule: each succeeds (last one wins) or
    // is refused with a code; none is INTERNAL (PostgreSQL once failed them on the unique
    // index of the tier, SQLite with "database is locked").
    let list_id = web_list(&app, "web-crowd").await;
    let list_row = scalar(&app, "SELECT id FROM price_list WHERE code = 'web-crowd'").await;
    let requests = (0..20)
        .map(|i| {
            (
                SET_ENTRIES,
                json!({ "list": list_id, "entries": [{ "sku": sku, "minQuantity": 5, "amount": format!("9.{i:02}") }] }),
            )
        })
        .collect();
    let bodies = admin_concurrently(&app, requests).await;
    for body in &bodies {
        let (code, field) = outcome(body);
        assert!(
            code == "OK" || (code == "BAD_USER_INPUT" && field == "entries[0].minQuantity"),
            "{body}"
        );
    }
    assert!(bodies.iter().any(|b| outcome(b).0 == "OK"), "{bodies:?}");
    assert_eq!(
        scalar(
            &app,
            &format!(
                "SELECT COUNT(*) FROM price_list_entry WHERE price_list_id = {list_row} AND variant_id = {variant_id}"
            )
        )
        .await,
        1
    );
    let requests = (0..20)
        .map(|i| {
            (
                SET_RULE,
                json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 1 + i, "increment": 1 } }),
            )
        })
        .collect();
    let bodies = admin_concurrently(&app, requests).await;
    for body in &bodies {
        let (code, field) = outcome(body);
        assert!(
            code == "OK" || (code == "BAD_USER_INPUT" && field == "input.sku"),
            "{body}"
        );
    }
    assert!(bodies.iter().any(|b| outcome(b).0 == "OK"), "{bodies:?}");
    assert_eq!(
        scalar(
            &app,
            &format!("SELECT COUNT(*) FROM quantity_rule WHERE price_list_id = {list_row}")
        )
        .await,
        1
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tier_changes_never_store_rising_tiers() {
    let app = spawn_app().await;
    let (sku, variant_id) = plain_web_variant(&app).await;
    // Each change alone is fine: 50 units at 9 under 1 unit at 10, or 1 unit at 8. Together
    // they would make 50 units dearer than 1; both once passed the check against the tiers
    // each had read, and both were stored.
    for round in 0..15 {
        let code = format!("web-race-{round}");
        let list_id = web_list(&app, &code).await;
        let list_row = scalar(
            &app,
            &format!("SELECT id FROM price_list WHERE code = '{code}'"),
        )
        .await;
        admin_ok(
            &app,
            SET_ENTRIES,
            json!({ "list": list_id, "entries": [{ "sku": sku, "minQuantity": 1, "amount": "10" }] }),
        )
        .await;
        let bodies = admin_concurrently(
            &app,
            vec![
                (
                    SET_ENTRIES,
                    json!({ "list": list_id, "entries": [{ "sku": sku, "minQuantity": 50, "amount": "9" }] }),
                ),
                (
                    SET_ENTRIES,
                    json!({ "list": list_id, "entries": [{ "sku": sku, "minQuantity": 1, "amount": "8" }] }),
                ),
            ],
        )
        .await;
        // Whichever comes second sees the first's tier and is refused.
        let counts: Vec<_> = tally(&bodies).into_iter().collect();
        assert_eq!(
            counts,
            ok_and_refused(1, 1, "entries[0].amount"),
            "round {round}: {bodies:?}"
        );
        let db = &app.gateway.state.db;
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT min_quantity, amount FROM price_list_entry
                      WHERE price_list_id = {list_row} AND variant_id = {variant_id}
                      ORDER BY min_quantity"
                ),
            ))
            .await
            .unwrap();
        let tiers: Vec<(i32, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row.try_get_by_index::<i32>(0).unwrap(),
                    row.try_get_by_index::<i64>(1).unwrap(),
                )
            })
            .collect();
        assert!(
            tiers.windows(2).all(|pair| pair[1].1 <= pair[0].1),
            "round {round}: rising tiers stored: {tiers:?}"
        );
    }
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_extreme_quantity_rule_is_refused_and_never_fails_a_shopper() {
    let app = spawn_app().await;
    let (sku, variant_id) = plain_web_variant(&app).await;
    let list_id = web_list(&app, "web-steps").await;
    let list_row = scalar(&app, "SELECT id FROM price_list WHERE code = 'web-steps'").await;
    admin_ok(
        &app,
        SET_ENTRIES,
        json!({ "list": list_id, "entries": [{ "sku": sku, "amount": "5" }] }),
    )
    .await;
    // An increment of i32::MAX was accepted, and then every off-grid quantity overflowed
    // while looking for the nearest valid ones: a panic, HTTP 500 for anonymous shoppers.
    let body = run(
        &app,
        true,
        SET_RULE,
        json!({ "list": list_id, "input": { "sku": sku, "increment": i32::MAX } }),
    )
    .await;
    assert_eq!(
        error_of(&body),
        ("BAD_USER_INPUT", "input.increment"),
        "{body}"
    );
    // The largest accepted rule.
    admin_ok(
        &app,
        SET_RULE,
        json!({ "list": list_id, "input": { "sku": sku, "minQuantity": 1_000_000, "maxQuantity": 1_000_000, "increment": 1_000_000 } }),
    )
    .await;
    // A rule stored before the limits (or by hand) still never fails resolution.
    let db = &app.gateway.state.db;
    db.execute_unprepared(&format!(
        "UPDATE quantity_rule SET min_quantity = 1, max_quantity = NULL, increment = {}
          WHERE price_list_id = {list_row} AND variant_id = {variant_id}",
        i32::MAX
    ))
    .await
    .unwrap();
    let client = Client::new(app.gateway.url());
    for quantity in [2, 1_000_000] {
        let reply = client
            .query(PRICE, json!({ "sku": sku, "q": quantity }))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.error_codes(),
            ["QUANTITY_RULE_VIOLATION"],
            "{}",
            reply.text
        );
        let extensions = &reply.body["errors"][0]["extensions"];
        assert_eq!(extensions["nearestBelow"], 1, "{}", reply.text);
        assert_eq!(extensions["nearestAbove"], Value::Null, "{}", reply.text);
    }
    assert_eq!(
        dec(&anonymous_price(&app, &sku, 1).await["listUnitPrice"]),
        Decimal::new(5, 0)
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn windows_are_kept_to_whole_microseconds_on_every_database() {
    let app = spawn_app().await;
    let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
    // Nanoseconds are cut to microseconds before the check and before storing: the window
    // below is one microsecond long, whatever the database.
    let created = admin_ok(
        &app,
        CREATE_LIST,
        json!({ "input": { "code": "micro", "name": "Micro", "currency": "USD",
            "validFrom": "2030-01-01T00:00:00.123456789Z", "validUntil": "2030-01-01T00:00:00.1234579Z" } }),
    )
    .await;
    let list = &created["createPriceList"];
    assert_eq!(
        at(list["validFrom"].as_str().unwrap()),
        at("2030-01-01T00:00:00.123456Z")
    );
    assert_eq!(
        at(list["validUntil"].as_str().unwrap()),
        at("2030-01-01T00:00:00.123457Z")
    );
    let row = scalar(&app, "SELECT id FROM price_list WHERE code = 'micro'").await;
    let stored = price_list::Entity::find_by_id(row)
        .one(&app.gateway.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.valid_from, stored.valid_until),
        (
            Some(at("2030-01-01T00:00:00.123456Z")),
            Some(at("2030-01-01T00:00:00.123457Z"))
        )
    );
    // Against the stored bound: until .1234569 is .123456, not after from.
    let body = run(
        &app,
        true,
        UPDATE_LIST,
        json!({ "id": list["id"], "input": { "validUntil": "2030-01-01T00:00:00.1234569Z" } }),
    )
    .await;
    assert_eq!(
        error_of(&body),
        ("BAD_USER_INPUT", "input.validUntil"),
        "{body}"
    );
    let updated = admin_ok(
        &app,
        UPDATE_LIST,
        json!({ "id": list["id"], "input": { "validUntil": "2030-01-01T00:00:01.9999999Z" } }),
    )
    .await;
    assert_eq!(
        at(updated["updatePriceList"]["validUntil"].as_str().unwrap()),
        at("2030-01-01T00:00:01.999999Z")
    );

    let created = admin_ok(
        &app,
        CREATE_PROMOTION,
        json!({ "input": { "code": "MICRO", "name": "Micro", "discount": "PERCENT_OFF", "value": "1",
            "startsAt": "2030-01-01T00:00:00.000000999Z", "endsAt": "2030-01-01T00:00:00.000001Z" } }),
    )
    .await;
    let row = scalar(&app, "SELECT id FROM promotion WHERE code = 'MICRO'").await;
    let stored = promotion::Entity::find_by_id(row)
        .one(&app.gateway.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.starts_at,
        Some(at("2030-01-01T00:00:00Z")),
        "{created}"
    );
    assert_eq!(stored.ends_at, Some(at("2030-01-01T00:00:00.000001Z")));
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn long_and_nul_inputs_are_refused_briefly_and_before_any_sql() {
    let app = spawn_app().await;
    let (sku, _) = plain_web_variant(&app).await;
    let list_id = web_list(&app, "web-echo").await;
    let long = "Z".repeat(10_000);
    let entry = |sku: &str, min: i32| json!({ "sku": sku, "minQuantity": min, "amount": "1" });

    // An unknown SKU names its entry, and the echo of a long input is cut short.
    for (query, variables, code, field) in [
        (
            SET_ENTRIES,
            json!({ "list": list_id, "entries": [entry(&sku, 1), entry(&sku, 2), entry(&sku, 3), entry(&long, 4)] }),
            "NOT_FOUND",
            "entries[3].sku",
        ),
        (
            SET_RULE,
            json!({ "list": list_id, "input": { "sku": long } }),
            "NOT_FOUND",
            "input.sku",
        ),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": long, "min": 1 }),
            "NOT_FOUND",
            "sku",
        ),
        (
            REMOVE_RULE,
            json!({ "list": list_id, "sku": long }),
            "NOT_FOUND",
            "sku",
        ),
        (
            SET_ENTRIES,
            json!({ "list": list_id, "entries": [entry(&long, 1), entry(&long, 1)] }),
            "BAD_USER_INPUT",
            "entries[1].minQuantity",
        ),
        (
            CREATE_LIST,
            json!({ "input": { "code": "echo", "name": "Echo", "currency": long } }),
            "BAD_USER_INPUT",
            "input.currency",
        ),
        (
            CREATE_LIST,
            json!({ "input": { "code": long, "name": "Echo", "currency": "USD" } }),
            "BAD_USER_INPUT",
            "input.code",
        ),
    ] {
        let body = run(&app, true, query, variables).await;
        assert_eq!(error_of(&body), (code, field), "{body:.300}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.chars().count() < 200, "{message}");
        assert!(!message.contains(&"Z".repeat(65)), "{message}");
        if code == "NOT_FOUND" || field.ends_with("minQuantity") {
            assert!(message.contains(&"Z".repeat(40)), "{message}");
            assert!(message.contains('…'), "{message}");
        }
    }

    // NUL in any text input is refused before any SQL (PostgreSQL refused it with INTERNAL,
    // SQLite stored it).
    let nul = "A\u{0}B";
    let mutations: Vec<(&str, Value, &str)> = vec![
        (
            CREATE_LIST,
            json!({ "input": { "code": nul, "name": "N", "currency": "USD" } }),
            "input.code",
        ),
        (
            CREATE_LIST,
            json!({ "input": { "code": "nul-name", "name": nul, "currency": "USD" } }),
            "input.name",
        ),
        (
            CREATE_LIST,
            json!({ "input": { "code": "nul-currency", "name": "N", "currency": "U\u{0}D" } }),
            "input.currency",
        ),
        (
            UPDATE_LIST,
            json!({ "id": list_id, "input": { "name": nul } }),
            "input.name",
        ),
        (
            SET_ENTRIES,
            json!({ "list": list_id, "entries": [entry(&sku, 1), entry(nul, 2)] }),
            "entries[1].sku",
        ),
        (
            REMOVE_ENTRY,
            json!({ "list": list_id, "sku": nul, "min": 1 }),
            "sku",
        ),
        (
            SET_RULE,
            json!({ "list": list_id, "input": { "sku": nul } }),
            "input.sku",
        ),
        (REMOVE_RULE, json!({ "list": list_id, "sku": nul }), "sku"),
        (
            CREATE_PROMOTION,
            json!({ "input": { "code": nul, "name": "N", "discount": "PERCENT_OFF", "value": "1" } }),
            "input.code",
        ),
        (
            CREATE_PROMOTION,
            json!({ "input": { "code": "NUL", "name": nul, "discount": "PERCENT_OFF", "value": "1" } }),
            "input.name",
        ),
        (
            CREATE_PROMOTION,
            json!({ "input": { "code": "NUL", "name": "N", "discount": "AMOUNT_OFF", "value": "1", "currency": "\u{0}SD" } }),
            "input.currency",
        ),
    ];
    let state = price_state(&app).await;
    let before = app.gateway.sql_statements();
    run(&app, true, "{ __typename }", json!({})).await;
    let baseline = app.gateway.sql_statements() - before;
    for (query, variables, field) in mutations {
        let before = app.gateway.sql_statements();
        let body = run(&app, true, query, variables.clone()).await;
        assert_eq!(
            error_of(&body),
            ("BAD_USER_INPUT", field),
            "{variables}: {body}"
        );
        assert_eq!(
            app.gateway.sql_statements() - before,
            baseline,
            "SQL ran for {variables}"
        );
    }
    assert_eq!(price_state(&app).await, state);
    app.gateway.stop().await.unwrap();
}

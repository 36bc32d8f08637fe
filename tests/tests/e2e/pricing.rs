//! Prices per viewer: anonymous channel prices, company contracts, group prices, volume tiers,
//! quantity rules, promotions in and out of their window, and quotes.

use commerce_core::pricing::load::customer_by_email;
use e2e::{Client, TestApp, shared_app, spawn_app};
use gateway::graphql::Viewer;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
}

/// A stored amount (an integer at scale 4) as a decimal.
fn amount(row: &sea_orm::QueryResult, column: &str) -> Decimal {
    Decimal::new(row.try_get::<i64>("", column).unwrap(), 4)
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .expect("decimals travel as strings")
        .parse()
        .unwrap()
}

async fn as_customer(
    app: &TestApp,
    channel: &str,
    email: &str,
    query: &str,
    variables: Value,
) -> Value {
    let customer = customer_by_email(&app.gateway.state.db, email)
        .await
        .unwrap();
    let viewer = Viewer {
        customer: Some(customer),
        ..Viewer::default()
    };
    let response =
        gateway::transport::execute_as(&app.gateway.state, channel, viewer, query, variables).await;
    serde_json::to_value(&response).unwrap()
}

const PRICE: &str = "query($sku: String!, $q: Int) { variant(sku: $sku) { sku price(quantity: $q) { currency quantity listUnitPrice unitPrice lineTotal tier { minQuantity priceList scope } appliedRules { kind code name effect unitAmount } } priceTiers { minQuantity unitPrice priceList } } }";

#[tokio::test]
async fn one_variant_three_viewers_three_prices_each_explained() {
    let app = spawn_app().await;
    let db = e2e::open_database(&app.database_url).await;
    // A variant in ACME's contract (and so in the B2B listing) that web lists too.
    let found = rows(
        &db,
        "SELECT v.sku, e.amount AS contract FROM price_list_entry e
           JOIN price_list l ON l.id = e.price_list_id
           JOIN variant v ON v.id = e.variant_id
          WHERE l.code = 'contract-acme' AND e.min_quantity = 1
            AND v.product_id IN (SELECT cp.product_id FROM channel_product cp JOIN channel c ON c.id = cp.channel_id WHERE c.code = 'web')
            AND v.product_id NOT IN (SELECT target_id FROM promotion WHERE target_kind = 'product' AND target_id IS NOT NULL)
          ORDER BY v.sku LIMIT 1",
    )
    .await;
    let sku: String = found[0].try_get("", "sku").unwrap();
    let contract = amount(&found[0], "contract");
    let list_price = |code: &'static str| {
        let db = db.clone();
        let sku = sku.clone();
        async move {
            let found = rows(
                &db,
                &format!(
                    "SELECT e.amount FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id
                       JOIN variant v ON v.id = e.variant_id
                      WHERE l.code = '{code}' AND v.sku = '{sku}' AND e.min_quantity = 1"
                ),
            )
            .await;
            amount(&found[0], "amount")
        }
    };
    let base = list_price("base-usd").await;
    let b2b = list_price("b2b-usd").await;

    let anonymous = Client::new(app.gateway.url())
        .query(PRICE, json!({ "sku": sku }))
        .await;
    let web_price = &anonymous.data()["variant"]["price"];
    let acme = as_customer(
        &app,
        "b2b",
        "buyer@acme.example",
        PRICE,
        json!({ "sku": sku }),
    )
    .await;
    let globex = as_customer(
        &app,
        "b2b",
        "buyer@globex.example",
        PRICE,
        json!({ "sku": sku }),
    )
    .await;
    assert!(acme.get("errors").is_none(), "{acme}");
    assert!(globex.get("errors").is_none(), "{globex}");
    let acme_price = &acme["data"]["variant"]["price"];
    let globex_price = &globex["data"]["variant"]["price"];

    assert_eq!(dec(&web_price["listUnitPrice"]), base);
    assert_eq!(web_price["appliedRules"][0]["code"], "base-usd");
    assert_eq!(web_price["tier"]["scope"], "BASE");
    assert_eq!(dec(&acme_price["listUnitPrice"]), contract);
    assert_eq!(acme_price["appliedRules"][0]["code"], "contract-acme");
    assert_eq!(acme_price["tier"]["scope"], "COMPANY");
    // Globex has no contract for this variant and the wholesale group list does not carry
    // it: its buyers get the B2B channel's list price.
    assert_eq!(dec(&globex_price["listUnitPrice"]), b2b);
    assert_eq!(globex_price["appliedRules"][0]["code"], "b2b-usd");
    assert_eq!(globex_price["tier"]["scope"], "CHANNEL");
    let prices = [base, contract, b2b];
    assert!(
        prices[0] != prices[1] && prices[1] != prices[2] && prices[0] != prices[2],
        "{prices:?}"
    );
    for price in [web_price, acme_price, globex_price] {
        assert_eq!(price["currency"], "USD");
        assert_eq!(dec(&price["unitPrice"]), dec(&price["listUnitPrice"]));
        assert!(
            price["appliedRules"][0]["effect"]
                .as_str()
                .unwrap()
                .contains("list price")
        );
    }
    // Contract tiers: ACME sees its own 1 / 25 / 100 breaks, at four-decimal unit prices.
    let tiers: Vec<i64> = acme["data"]["variant"]["priceTiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["minQuantity"].as_i64().unwrap())
        .collect();
    assert_eq!(tiers, [1, 25, 100]);
    let at_25 = as_customer(
        &app,
        "b2b",
        "buyer@acme.example",
        PRICE,
        json!({ "sku": sku, "q": 30 }),
    )
    .await;
    let price = &at_25["data"]["variant"]["price"];
    assert_eq!(price["tier"]["minQuantity"], 25);
    let unit = dec(&price["unitPrice"]);
    assert_eq!(
        dec(&price["lineTotal"]),
        (unit * Decimal::from(30))
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
        "one rounding, of the line"
    );
    // Money is a decimal string, never a float, in the response text too.
    assert!(
        anonymous.text.contains("\"listUnitPrice\":\""),
        "{}",
        anonymous.text
    );
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_time_limited_promotion_applies_inside_its_window_only() {
    let app = spawn_app().await;
    let db = e2e::open_database(&app.database_url).await;
    // WINTER-SALE: 15% off jackets, live around the demo's load time.
    let found = rows(
        &db,
        "SELECT v.sku FROM variant v JOIN product p ON p.id = v.product_id
           JOIN category c ON c.id = p.category_id
          WHERE c.slug = 'jackets' AND p.status = 'active'
            AND p.id IN (SELECT cp.product_id FROM channel_product cp JOIN channel ch ON ch.id = cp.channel_id WHERE ch.code = 'web')
          ORDER BY v.sku LIMIT 1",
    )
    .await;
    let sku: String = found[0].try_get("", "sku").unwrap();
    let client = Client::new(app.gateway.url());
    let inside = client.query(PRICE, json!({ "sku": sku })).await;
    let price = &inside.data()["variant"]["price"];
    let list = dec(&price["listUnitPrice"]);
    assert_eq!(
        dec(&price["unitPrice"]),
        list * Decimal::new(85, 2),
        "{}",
        inside.text
    );
    let rules = price["appliedRules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1]["kind"], "PROMOTION");
    assert_eq!(rules[1]["code"], "WINTER-SALE");
    assert_eq!(dec(&rules[1]["unitAmount"]), -(list * Decimal::new(15, 2)));

    // Move the window into the future: the same read no longer applies it.
    let backend = db.get_database_backend();
    let future = chrono::Utc::now() + chrono::Duration::days(10);
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        match backend {
            sea_orm::DbBackend::Postgres => {
                "UPDATE promotion SET starts_at = $1 WHERE code = 'WINTER-SALE'"
            }
            _ => "UPDATE promotion SET starts_at = ? WHERE code = 'WINTER-SALE'",
        },
        [future.into()],
    ))
    .await
    .unwrap();
    // Written behind the gateway's back: announced as the admin mutations do.
    app.gateway
        .state
        .bus
        .publish(gateway::bus::Event::PricesChanged {
            list_ids: Vec::new(),
            variant_ids: Vec::new(),
            promotion_ids: Vec::new(),
        });
    let outside = client.query(PRICE, json!({ "sku": sku })).await;
    let price = &outside.data()["variant"]["price"];
    assert_eq!(dec(&price["unitPrice"]), list);
    assert_eq!(price["appliedRules"].as_array().unwrap().len(), 1);
    app.gateway.stop().await.unwrap();
}

const QUOTE: &str = "query($lines: [QuoteLineInput!]!) { priceQuote(lines: $lines) { currency subtotal discountTotal total lines { sku quantity price { unitPrice listUnitPrice lineTotal tier { minQuantity } } } } }";

#[tokio::test]
async fn quotes_total_their_lines_and_refuse_bad_lines_with_codes() {
    let app = shared_app();
    let client = Client::new(&app.url).channel("b2b");
    let db = e2e::open_database(&app.database_url).await;
    // Two B2B SKUs without quantity rules.
    let found = rows(
        &db,
        "SELECT v.sku FROM variant v WHERE v.product_id IN (SELECT cp.product_id FROM channel_product cp JOIN channel c ON c.id = cp.channel_id WHERE c.code = 'b2b')
           AND v.id NOT IN (SELECT variant_id FROM quantity_rule) ORDER BY v.id LIMIT 2",
    )
    .await;
    let a: String = found[0].try_get("", "sku").unwrap();
    let b: String = found[1].try_get("", "sku").unwrap();
    let reply = client
        .query(
            QUOTE,
            json!({ "lines": [{ "sku": a, "quantity": 12 }, { "sku": b, "quantity": 1 }] }),
        )
        .await;
    let quote = &reply.data()["priceQuote"];
    let lines = quote["lines"].as_array().unwrap();
    assert_eq!(
        lines[0]["price"]["tier"]["minQuantity"], 12,
        "the B2B volume break"
    );
    let total: Decimal = lines.iter().map(|l| dec(&l["price"]["lineTotal"])).sum();
    assert_eq!(dec(&quote["total"]), total);
    assert_eq!(
        dec(&quote["subtotal"]) - dec(&quote["discountTotal"]),
        dec(&quote["total"])
    );

    for (lines, code, field) in [
        (json!([]), "BAD_USER_INPUT", Some("lines")),
        (
            json!([{ "sku": a, "quantity": 0 }]),
            "BAD_USER_INPUT",
            Some("lines[0].quantity"),
        ),
        (
            json!([{ "sku": a, "quantity": 1 }, { "sku": a, "quantity": 2 }]),
            "BAD_USER_INPUT",
            Some("lines[1].sku"),
        ),
        (
            json!([{ "sku": "NO-SUCH-SKU", "quantity": 1 }]),
            "NOT_FOUND",
            None,
        ),
        (
            json!([{ "sku": "x".repeat(201), "quantity": 1 }]),
            "BAD_USER_INPUT",
            Some("lines[0].sku"),
        ),
    ] {
        let reply = client.query(QUOTE, json!({ "lines": lines })).await;
        assert_eq!(reply.error_codes(), [code], "{}", reply.text);
        if let Some(field) = field {
            assert_eq!(reply.body["errors"][0]["extensions"]["field"], field);
        }
        assert_eq!(reply.body["data"], Value::Null, "{}", reply.text);
    }
}

#[tokio::test]
async fn quantity_rules_are_shown_and_enforced_with_the_nearest_valid_quantities() {
    let app = shared_app();
    let client = Client::new(&app.url).channel("b2b");
    let db = e2e::open_database(&app.database_url).await;
    // A demo rule on the B2B channel list with an increment above 1.
    let found = rows(
        &db,
        "SELECT v.sku, r.min_quantity, r.increment FROM quantity_rule r
           JOIN price_list l ON l.id = r.price_list_id JOIN variant v ON v.id = r.variant_id
          WHERE l.code = 'b2b-usd' AND r.increment > 1 ORDER BY v.sku LIMIT 1",
    )
    .await;
    assert!(
        !found.is_empty(),
        "the demo has quantity rules on the B2B list"
    );
    let sku: String = found[0].try_get("", "sku").unwrap();
    let min: i32 = found[0].try_get("", "min_quantity").unwrap();
    let step: i32 = found[0].try_get("", "increment").unwrap();
    let reply = client
        .query(
            "query($sku: String!) { variant(sku: $sku) { quantityRule { minQuantity increment priceList } price { quantity } } }",
            json!({ "sku": sku }),
        )
        .await;
    let variant = &reply.data()["variant"];
    assert_eq!(variant["quantityRule"]["minQuantity"], min);
    assert_eq!(variant["quantityRule"]["increment"], step);
    assert_eq!(
        variant["price"]["quantity"], min,
        "without a quantity, the smallest allowed is priced"
    );
    let bad = min + 1;
    let refused = client
        .query(QUOTE, json!({ "lines": [{ "sku": sku, "quantity": bad }] }))
        .await;
    assert_eq!(
        refused.error_codes(),
        ["QUANTITY_RULE_VIOLATION"],
        "{}",
        refused.text
    );
    let extensions = &refused.body["errors"][0]["extensions"];
    assert_eq!(extensions["nearestBelow"], min);
    assert_eq!(extensions["nearestAbove"], min + step);
    assert_eq!(extensions["field"], "lines[0].quantity");
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&sku) && message.contains(&format!("steps of {step}")),
        "{message}"
    );
    let accepted = client
        .query(
            QUOTE,
            json!({ "lines": [{ "sku": sku, "quantity": min + step }] }),
        )
        .await;
    assert_eq!(
        accepted.data()["priceQuote"]["lines"][0]["quantity"],
        min + step
    );
}

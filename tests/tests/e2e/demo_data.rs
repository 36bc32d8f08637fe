//! The demo data set and the schema behind it, checked in the database itself.

use commerce_core::demo::{self, DemoSummary};
use e2e::fresh_database_url;
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

async fn migrated() -> (DatabaseConnection, String) {
    let url = fresh_database_url().await;
    let db = commerce_core::db::connect(&url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    (db, url)
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

#[tokio::test]
async fn the_demo_is_large_realistic_and_loaded_once() {
    let (db, _) = migrated().await;
    let summary = demo::seed_if_empty(&db)
        .await
        .unwrap()
        .expect("an empty database is seeded");
    assert!(
        summary.products >= 500 && summary.variants >= 1500 && summary.categories >= 10,
        "{summary:?}"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM product").await as usize,
        summary.products
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM variant").await as usize,
        summary.variants
    );
    assert_eq!(
        demo::seed_if_empty(&db).await.unwrap(),
        None,
        "a second start does not seed again"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM product").await as usize,
        summary.products
    );

    for code in [
        "WH-EAST",
        "WH-WEST",
        "WH-CENTRAL",
        "STORE-DOWNTOWN",
        "STORE-MALL",
    ] {
        assert_eq!(
            scalar(
                &db,
                &format!("SELECT COUNT(*) FROM stock_location WHERE code = '{code}'")
            )
            .await,
            1,
            "{code}"
        );
    }
    for email in [
        "buyer@acme.example",
        "buyer@globex.example",
        "buyer@initech.example",
    ] {
        let sql = format!(
            "SELECT COUNT(*) FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id \
             JOIN customer c ON c.company_id = l.company_id WHERE c.email = '{email}' AND e.min_quantity > 1"
        );
        assert!(
            scalar(&db, &sql).await > 0,
            "{email} has a contract with volume tiers"
        );
    }
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM customer_group").await, 2);
    assert!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM promotion WHERE ends_at IS NOT NULL"
        )
        .await
            >= 1,
        "a time-limited promotion"
    );
    assert!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM price_list WHERE channel_id IS NOT NULL"
        )
        .await
            >= 1,
        "channel prices"
    );
    assert!(
        scalar(&db, "SELECT COUNT(*) FROM stock_level WHERE on_hand = 0").await > 0,
        "some stock-outs"
    );
    // The ledger explains every stock level: on_hand is the sum of its movements.
    let drift = scalar(
        &db,
        "SELECT COUNT(*) FROM stock_level s WHERE s.on_hand <> COALESCE((SELECT SUM(m.on_hand_delta) \
         FROM inventory_movement m WHERE m.variant_id = s.variant_id AND m.location_id = s.location_id), 0)",
    )
    .await;
    assert_eq!(drift, 0);
}

#[tokio::test]
async fn the_demo_is_deterministic_and_money_is_exact() {
    let (first, _) = migrated().await;
    let (second, _) = migrated().await;
    let a: DemoSummary = demo::seed_if_empty(&first).await.unwrap().unwrap();
    let b: DemoSummary = demo::seed_if_empty(&second).await.unwrap().unwrap();
    assert_eq!(a, b);
    let fingerprint = "SELECT v.sku, e.min_quantity, e.amount FROM price_list_entry e \
                       JOIN variant v ON v.id = e.variant_id JOIN price_list l ON l.id = e.price_list_id \
                       ORDER BY l.code, v.sku, e.min_quantity";
    let rows = |db: DatabaseConnection| async move {
        db.query_all_raw(Statement::from_string(
            db.get_database_backend(),
            fingerprint.to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.try_get::<String>("", "sku").unwrap(),
                // Money is stored as amount × 10^4 (DESIGN.md §8): 19.99 reads 199900.
                r.try_get::<i64>("", "amount").unwrap(),
            )
        })
        .collect::<Vec<_>>()
    };
    let prices = rows(first).await;
    assert_eq!(prices, rows(second).await);
    // Contract prices carry four decimals and survive storage digit for digit: some stored
    // amounts are not a whole number of cents.
    assert!(
        prices.iter().any(|(_, amount)| amount % 100 != 0),
        "sub-cent prices"
    );
}

#[tokio::test]
async fn the_schema_refuses_oversell_and_duplicates() {
    let (db, _) = migrated().await;
    demo::seed_if_empty(&db).await.unwrap();
    let before = scalar(&db, "SELECT SUM(reserved) FROM stock_level").await;
    let oversell = db
        .execute_unprepared("UPDATE stock_level SET reserved = on_hand + 1 WHERE on_hand > 0")
        .await;
    assert!(oversell.is_err(), "reserved may never exceed on_hand");
    assert_eq!(
        scalar(&db, "SELECT SUM(reserved) FROM stock_level").await,
        before,
        "nothing changed"
    );
    let duplicate_sku = db
        .execute_unprepared("INSERT INTO variant (product_id, sku, name, option_values) SELECT product_id, sku, name, option_values FROM variant WHERE sku = 'TS-0001-M'")
        .await;
    assert!(duplicate_sku.is_err(), "SKUs are unique");
    let duplicate_level = db
        .execute_unprepared("INSERT INTO stock_level (variant_id, location_id) SELECT variant_id, location_id FROM stock_level LIMIT 1")
        .await;
    assert!(
        duplicate_level.is_err(),
        "one stock level per variant and location"
    );

    let order = |channel: &str, number: &str| {
        format!(
            "INSERT INTO orders (number, channel_id, idempotency_key, currency, subtotal, discount_total, total) \
             SELECT '{number}', id, 'key-1', 'USD', '0', '0', '0' FROM channel WHERE code = '{channel}'"
        )
    };
    db.execute_unprepared(&order("web", "N-1")).await.unwrap();
    assert!(
        db.execute_unprepared(&order("web", "N-2")).await.is_err(),
        "idempotency key unique per channel"
    );
    db.execute_unprepared(&order("b2b", "N-3"))
        .await
        .expect("the same key on another channel is fine");
}

/// The README's table of what each channel sees of the demo stock, checked through the API.
#[tokio::test]
async fn the_readme_numbers_of_the_demo_stock_are_true() {
    use e2e::{Client, shared_app};
    use serde_json::json;
    let app = shared_app();
    // channel → (variants, in stock, low, out of stock, quantities shown when low)
    let expected: [(&str, [usize; 4], &[i64]); 4] = [
        ("web", [1510, 1249, 58, 203], &[1]),
        ("mobile", [1358, 1113, 56, 189], &[1]),
        ("pos", [1273, 1041, 12, 220], &[1, 2, 3]),
        ("b2b", [693, 570, 70, 53], &[1, 2, 3]),
    ];
    for (channel, counts, low_quantities) in expected {
        let client = Client::new(&app.url).channel(channel);
        let mut after = serde_json::Value::Null;
        let mut seen = [0usize; 4];
        let mut quantities = std::collections::BTreeSet::new();
        loop {
            let reply = client
                .query(
                    "query($after: String) { products(first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { variants { availability { status quantity } } } } }",
                    json!({ "after": after }),
                )
                .await;
            let page = &reply.data()["products"];
            for variant in page["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|n| n["variants"].as_array().unwrap())
            {
                seen[0] += 1;
                match variant["availability"]["status"].as_str().unwrap() {
                    "IN_STOCK" => seen[1] += 1,
                    "LOW_STOCK" => {
                        seen[2] += 1;
                        quantities.insert(variant["availability"]["quantity"].as_i64().unwrap());
                    }
                    _ => seen[3] += 1,
                }
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, counts, "{channel}: variants, in stock, low, out");
        assert_eq!(
            quantities.into_iter().collect::<Vec<_>>(),
            low_quantities,
            "{channel}"
        );
    }
    let db = e2e::open_database(&app.database_url).await;
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM stock_level").await, 7703);
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM stock_level WHERE on_hand = 0").await,
        1247
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM inventory_movement").await,
        6456
    );
}

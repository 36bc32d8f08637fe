//! The money migration (m20261126_000001) on real databases: rows written as decimal text by
//! the first migration's schema come out as exact integers SQL can sort and sum, the schema
//! around them is unchanged, and the new constraints refuse what they must.
//!
//! Every test runs on a fresh SQLite file, and on a fresh scratch PostgreSQL database
//! (`mig_<uuid>`, dropped afterwards) when `TEST_DATABASE_URL` is set.

mod support;
use support::{exec, on_each_database};

use std::collections::BTreeMap;
use std::str::FromStr;

use commerce_core::entities::{order, order_line, price_list_entry, promotion};
use migrations::{Migrator, MigratorTrait};
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement};

// ---- running a scenario on every database ----

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

async fn column_i64(db: &DatabaseConnection, sql: &str) -> Vec<i64> {
    rows(db, sql)
        .await
        .iter()
        .map(|row| {
            // PostgreSQL is strict about INT4 (quantities) versus INT8 (ids, amounts).
            row.try_get_by_index::<i64>(0)
                .or_else(|_| row.try_get_by_index::<i32>(0).map(i64::from))
                .unwrap()
        })
        .collect()
}

async fn column_text(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    rows(db, sql)
        .await
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// The entry amounts of the fixture, by min_quantity 1..=5, as the text storage wrote them.
const AMOUNTS: [&str; 5] = ["19.99", "0.1234", "100", "9.5", "1234567.5"];

/// On the first migration's schema: a catalog, a price list with [`AMOUNTS`], three
/// promotions, and an order with a line, a shipment and an event (rows that point at the
/// rebuilt tables). One more entry is inserted and deleted, so the next id is 7.
async fn fixture(db: &DatabaseConnection) {
    for sql in [
        "INSERT INTO category (slug, name) VALUES ('paper', 'Paper')",
        "INSERT INTO product (slug, name, description, category_id, attributes) \
         SELECT 'copy-paper', 'Copy Paper', '', id, '{}' FROM category WHERE slug = 'paper'",
        "INSERT INTO variant (product_id, sku, name, option_values) \
         SELECT id, 'PP-1', 'Single', '{}' FROM product WHERE slug = 'copy-paper'",
        "INSERT INTO variant (product_id, sku, name, option_values) \
         SELECT id, 'PP-2', 'Case', '{}' FROM product WHERE slug = 'copy-paper'",
        "INSERT INTO channel (code, name, currency) VALUES ('eu', 'EU shop', 'EUR')",
        "INSERT INTO price_list (code, name, currency) VALUES ('base', 'Base', 'USD')",
    ] {
        exec(db, sql).await;
    }
    for (tier, amount) in AMOUNTS.iter().enumerate() {
        exec(
            db,
            &entry_sql("PP-1", tier as i32 + 1, &format!("'{amount}'")),
        )
        .await;
    }
    exec(db, &entry_sql("PP-1", 6, "'1'")).await;
    exec(db, "DELETE FROM price_list_entry WHERE min_quantity = 6").await;
    for sql in [
        "INSERT INTO promotion (code, name, target_kind, discount_kind, value) \
         VALUES ('PCT', 'Percent', 'all', 'percent_off', '15')",
        "INSERT INTO promotion (code, name, channel_id, target_kind, discount_kind, value) \
         SELECT 'EU-OFF', 'Euro off', id, 'all', 'amount_off', '1.00' FROM channel WHERE code = 'eu'",
        "INSERT INTO promotion (code, name, target_kind, discount_kind, value) \
         VALUES ('FIXED', 'Fixed', 'all', 'fixed_price', '9.99')",
        "INSERT INTO orders (number, channel_id, currency, subtotal, discount_total, total) \
         SELECT 'N-1', id, 'EUR', '39.98', '0.5', '39.48' FROM channel WHERE code = 'eu'",
        "INSERT INTO order_line (order_id, variant_id, sku, quantity, unit_price, line_total, price_breakdown) \
         SELECT o.id, v.id, 'PP-1', 2, '19.99', '39.98', '{}' FROM orders o, variant v \
         WHERE o.number = 'N-1' AND v.sku = 'PP-1'",
        "INSERT INTO stock_location (code, name, kind, region, latitude, longitude, handling_hours, cutoff_time) \
         VALUES ('WH', 'Warehouse', 'warehouse', 'eu', 0, 0, 24, '15:00')",
        "INSERT INTO shipment (order_id, location_id, service_level) \
         SELECT o.id, l.id, 'standard' FROM orders o, stock_location l WHERE o.number = 'N-1'",
        "INSERT INTO shipment_line (shipment_id, order_line_id, quantity) \
         SELECT s.id, l.id, 2 FROM shipment s, order_line l",
        "INSERT INTO order_event (order_id, to_status, actor, note) \
         SELECT id, 'pending', 'test', 'placed' FROM orders",
    ] {
        exec(db, sql).await;
    }
}

fn entry_sql(sku: &str, min_quantity: i32, amount: &str) -> String {
    format!(
        "INSERT INTO price_list_entry (price_list_id, variant_id, min_quantity, amount) \
         SELECT l.id, v.id, {min_quantity}, {amount} FROM price_list l, variant v \
         WHERE l.code = 'base' AND v.sku = '{sku}'"
    )
}

async fn refused(db: &DatabaseConnection, sql: &str, why: &str) {
    assert!(db.execute_unprepared(sql).await.is_err(), "{why}: {sql}");
}

// ---- the schema, described per backend ----

const MONEY_COLUMNS: [(&str, &str); 7] = [
    ("price_list_entry", "amount"),
    ("promotion", "value"),
    ("orders", "subtotal"),
    ("orders", "discount_total"),
    ("orders", "total"),
    ("order_line", "unit_price"),
    ("order_line", "line_total"),
];

const TABLES: [&str; 7] = [
    "price_list_entry",
    "promotion",
    "orders",
    "order_line",
    "shipment",
    "shipment_line",
    "order_event",
];

/// Columns (name, type, nullability, default, key), foreign keys and indexes of the money
/// tables and of the tables pointing at them; PostgreSQL adds its constraints. With
/// `mask_money`, money column types read `<money>`.
async fn describe(db: &DatabaseConnection, mask_money: bool) -> BTreeMap<String, Vec<String>> {
    let mut schema = BTreeMap::new();
    for table in TABLES {
        let is_money = |column: &str| mask_money && MONEY_COLUMNS.contains(&(table, column));
        let mut lines = Vec::new();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                for row in rows(db, &format!("PRAGMA table_info(\"{table}\")")).await {
                    let name: String = row.try_get("", "name").unwrap();
                    let kind: String = row.try_get("", "type").unwrap();
                    lines.push(format!(
                        "column {name} {} notnull={} default={:?} pk={}",
                        if is_money(&name) {
                            "<money>".to_owned()
                        } else {
                            kind
                        },
                        row.try_get::<i64>("", "notnull").unwrap(),
                        row.try_get::<Option<String>>("", "dflt_value").unwrap(),
                        row.try_get::<i64>("", "pk").unwrap(),
                    ));
                }
                for row in rows(db, &format!("PRAGMA foreign_key_list(\"{table}\")")).await {
                    lines.push(format!(
                        "foreign key {} -> {}.{} on delete {}",
                        row.try_get::<String>("", "from").unwrap(),
                        row.try_get::<String>("", "table").unwrap(),
                        row.try_get::<String>("", "to").unwrap(),
                        row.try_get::<String>("", "on_delete").unwrap(),
                    ));
                }
                for row in rows(db, &format!("PRAGMA index_list(\"{table}\")")).await {
                    let name: String = row.try_get("", "name").unwrap();
                    let columns = column_text(
                        db,
                        &format!("SELECT name FROM pragma_index_info('{name}') ORDER BY seqno"),
                    )
                    .await;
                    lines.push(format!(
                        "index {name} unique={} ({})",
                        row.try_get::<i64>("", "unique").unwrap(),
                        columns.join(", ")
                    ));
                }
            }
            _ => {
                for row in rows(
                    db,
                    &format!(
                        "SELECT column_name::text AS name, \
                         (data_type || COALESCE('(' || character_maximum_length || ')', ''))::text AS kind, \
                         is_nullable::text AS nullable, column_default::text AS dflt \
                         FROM information_schema.columns WHERE table_schema = current_schema() \
                         AND table_name = '{table}' ORDER BY ordinal_position"
                    ),
                )
                .await
                {
                    let name: String = row.try_get("", "name").unwrap();
                    let kind: String = row.try_get("", "kind").unwrap();
                    lines.push(format!(
                        "column {name} {} nullable={} default={:?}",
                        if is_money(&name) { "<money>".to_owned() } else { kind },
                        row.try_get::<String>("", "nullable").unwrap(),
                        row.try_get::<Option<String>>("", "dflt").unwrap(),
                    ));
                }
                for row in rows(
                    db,
                    &format!(
                        "SELECT conname::text AS name, pg_get_constraintdef(oid) AS def \
                         FROM pg_constraint WHERE conrelid = '\"{table}\"'::regclass ORDER BY conname"
                    ),
                )
                .await
                {
                    lines.push(format!(
                        "constraint {} {}",
                        row.try_get::<String>("", "name").unwrap(),
                        row.try_get::<String>("", "def").unwrap(),
                    ));
                }
                for row in rows(
                    db,
                    &format!(
                        "SELECT indexname::text AS name, indexdef::text AS def FROM pg_indexes \
                         WHERE schemaname = current_schema() AND tablename = '{table}' ORDER BY indexname"
                    ),
                )
                .await
                {
                    lines.push(format!(
                        "index {} {}",
                        row.try_get::<String>("", "name").unwrap(),
                        row.try_get::<String>("", "def").unwrap(),
                    ));
                }
            }
        }
        // Index listing order is not part of the schema.
        lines.sort_by_key(|line| {
            (
                line.starts_with("index "),
                line.starts_with("index ").then(|| line.clone()),
            )
        });
        schema.insert(table.to_owned(), lines);
    }
    schema
}

/// SQLite: every table's and index's `CREATE` statement.
async fn sqlite_ddl(db: &DatabaseConnection) -> Vec<String> {
    column_text(
        db,
        "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_schema \
         WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .await
}

// ---- the tests ----

#[tokio::test]
async fn text_amounts_become_exact_integers_that_sql_sorts_and_sums() {
    on_each_database("text_amounts_become_exact_integers", |db| async move {
        Migrator::up(&db, Some(1)).await.unwrap();
        fixture(&db).await;
        Migrator::up(&db, None).await.unwrap();
        assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());

        // Each amount reads back exactly through the entity.
        let entries = price_list_entry::Entity::find()
            .order_by_asc(price_list_entry::Column::MinQuantity)
            .all(&db)
            .await
            .unwrap();
        let amounts: Vec<Decimal> = entries.iter().map(|e| e.amount.amount()).collect();
        assert_eq!(amounts, AMOUNTS.map(d));
        assert_eq!(entries[0].amount.to_string(), "19.99");
        assert_eq!(entries[1].amount.to_string(), "0.1234");

        // The column holds amount × 10^4 …
        assert_eq!(
            column_i64(&db, "SELECT amount FROM price_list_entry ORDER BY min_quantity").await,
            [199_900, 1_234, 1_000_000, 95_000, 12_345_675_000]
        );
        // … so ORDER BY is numeric (as text it was 0.1234, 100, 1234567.5, 19.99, 9.5) …
        assert_eq!(
            column_i64(&db, "SELECT min_quantity FROM price_list_entry ORDER BY amount").await,
            [2, 4, 1, 3, 5]
        );
        let sorted: Vec<Decimal> = price_list_entry::Entity::find()
            .order_by_asc(price_list_entry::Column::Amount)
            .all(&db)
            .await
            .unwrap()
            .iter()
            .map(|e| e.amount.amount())
            .collect();
        assert_eq!(sorted, ["0.1234", "9.5", "19.99", "100", "1234567.5"].map(d));
        // … and SUM is exact: 1234697.1134 × 10^4.
        let total = AMOUNTS.iter().map(|a| d(a)).sum::<Decimal>();
        assert_eq!(total, d("1234697.1134"));
        assert_eq!(
            column_i64(&db, "SELECT CAST(SUM(amount) AS BIGINT) FROM price_list_entry").await,
            [12_346_971_134]
        );

        // Promotions: values exact; amounts carry the channel's currency, else USD.
        let promotions = promotion::Entity::find()
            .order_by_asc(promotion::Column::Code)
            .all(&db)
            .await
            .unwrap();
        let summary: Vec<(String, Decimal, Option<String>)> = promotions
            .into_iter()
            .map(|p| (p.code, p.value.amount(), p.currency))
            .collect();
        assert_eq!(
            summary,
            [
                ("EU-OFF".to_owned(), d("1"), Some("EUR".to_owned())),
                ("FIXED".to_owned(), d("9.99"), Some("USD".to_owned())),
                ("PCT".to_owned(), d("15"), None),
            ]
        );

        // Orders and their lines, and the rows pointing at them, are all still there.
        let placed = order::Entity::find().one(&db).await.unwrap().unwrap();
        assert_eq!(
            (
                placed.subtotal.amount(),
                placed.discount_total.amount(),
                placed.total.amount()
            ),
            (d("39.98"), d("0.5"), d("39.48"))
        );
        let line = order_line::Entity::find().one(&db).await.unwrap().unwrap();
        assert_eq!(
            (line.unit_price.amount(), line.line_total.amount()),
            (d("19.99"), d("39.98"))
        );
        assert_eq!(
            column_i64(
                &db,
                "SELECT COUNT(*) FROM shipment_line sl JOIN order_line l ON l.id = sl.order_line_id \
                 JOIN orders o ON o.id = l.order_id JOIN shipment s ON s.id = sl.shipment_id \
                 JOIN order_event e ON e.order_id = o.id"
            )
            .await,
            [1]
        );
        refused(&db, "DELETE FROM orders", "order lines still point at their order").await;
        refused(&db, "DELETE FROM order_line", "shipment lines still point at their line").await;

        // Ids continue after the highest ever used (6, deleted before the migration).
        exec(&db, &entry_sql("PP-2", 1, "50000")).await;
        assert_eq!(
            column_i64(&db, "SELECT id FROM price_list_entry WHERE amount = 50000").await,
            [7]
        );
    })
    .await;
}

#[tokio::test]
async fn the_new_constraints_refuse_bad_money_tiers_and_rules() {
    on_each_database("the_new_constraints_refuse", |db| async move {
        Migrator::up(&db, Some(1)).await.unwrap();
        fixture(&db).await;
        Migrator::up(&db, None).await.unwrap();

        refused(&db, &entry_sql("PP-2", 1, "-1"), "a negative amount").await;
        if db.get_database_backend() == DbBackend::Sqlite {
            // (PostgreSQL rounds a numeric assigned to a BIGINT column before any check.)
            refused(&db, &entry_sql("PP-2", 1, "19.99"), "a float, not the integer").await;
        }
        refused(&db, &entry_sql("PP-2", 1, "'19.99'"), "decimal text, not the integer").await;
        refused(&db, "UPDATE orders SET total = -5", "a negative order total").await;
        refused(&db, "UPDATE order_line SET line_total = -1", "a negative line total").await;
        refused(&db, "UPDATE promotion SET value = -1 WHERE code = 'PCT'", "a negative value").await;
        refused(
            &db,
            &entry_sql("PP-1", 1, "5"),
            "one price per list, variant and min_quantity",
        )
        .await;
        exec(&db, &entry_sql("PP-2", 1, "0")).await;

        refused(
            &db,
            "UPDATE promotion SET currency = NULL WHERE code = 'EU-OFF'",
            "an amount_off promotion without currency",
        )
        .await;
        refused(
            &db,
            "INSERT INTO promotion (code, name, target_kind, discount_kind, value) \
             VALUES ('NOCUR', 'No currency', 'all', 'fixed_price', 10000)",
            "a fixed_price promotion without currency",
        )
        .await;
        exec(
            &db,
            "INSERT INTO promotion (code, name, target_kind, discount_kind, value) \
             VALUES ('PCT-2', 'Percent', 'all', 'percent_off', 100000)",
        )
        .await;

        let rule = |sku: &str, min: &str, max: &str, increment: &str| {
            format!(
                "INSERT INTO quantity_rule (price_list_id, variant_id, min_quantity, max_quantity, increment) \
                 SELECT l.id, v.id, {min}, {max}, {increment} FROM price_list l, variant v \
                 WHERE l.code = 'base' AND v.sku = '{sku}'"
            )
        };
        exec(&db, &rule("PP-1", "10", "NULL", "5")).await;
        refused(&db, &rule("PP-1", "1", "NULL", "1"), "one rule per list and variant").await;
        refused(&db, &rule("PP-2", "0", "NULL", "1"), "min_quantity below 1").await;
        refused(&db, &rule("PP-2", "10", "9", "1"), "max_quantity below min_quantity").await;
        refused(&db, &rule("PP-2", "1", "NULL", "0"), "increment below 1").await;
        exec(&db, &rule("PP-2", "5", "5", "1")).await;
        refused(
            &db,
            "INSERT INTO quantity_rule (price_list_id, variant_id) \
             SELECT id, (SELECT id FROM variant WHERE sku = 'PP-2') FROM price_list WHERE code = 'base'",
            "a second rule for PP-2, with the defaults",
        )
        .await;
        assert_eq!(
            column_i64(
                &db,
                "SELECT min_quantity * 100 + increment FROM quantity_rule ORDER BY min_quantity"
            )
            .await,
            [501, 1005],
            "the refused rules left nothing behind"
        );
        refused(
            &db,
            "INSERT INTO quantity_rule (price_list_id, variant_id) VALUES (999, 999)",
            "rules point at a list and a variant",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn the_schema_keeps_its_columns_defaults_foreign_keys_and_indexes() {
    on_each_database("the_schema_keeps_its_columns", |db| async move {
        Migrator::up(&db, Some(1)).await.unwrap();
        let before = describe(&db, true).await;
        // The money migration alone (the later ones add columns of their own).
        Migrator::up(&db, Some(1)).await.unwrap();
        let mut after = describe(&db, true).await;
        let promotion = after.get_mut("promotion").unwrap();
        let currency = promotion
            .iter()
            .position(|line| line.starts_with("column currency "))
            .expect("promotion.currency");
        let currency = promotion.remove(currency);
        assert!(
            currency.contains("nullable=YES") || currency.contains("notnull=0"),
            "{currency}"
        );
        assert!(currency.contains("char") && currency.contains('3'), "{currency}");
        // PostgreSQL lists the new CHECK constraints among the constraints.
        for lines in after.values_mut() {
            lines.retain(|line| !line.starts_with("constraint ck_"));
        }
        assert_eq!(before, after, "only the money types and promotion.currency changed");

        // The money columns are integers now.
        let exact = describe(&db, false).await;
        for (table, column) in MONEY_COLUMNS {
            let line = exact[table]
                .iter()
                .find(|line| line.starts_with(&format!("column {column} ")))
                .unwrap();
            // SQLite writes BIGINT as INTEGER (the same 64-bit integer affinity).
            let line = line.to_lowercase();
            assert!(
                line.contains(" bigint ") || line.contains(" integer "),
                "{table}.{column}: {line}"
            );
        }
        let quantity_rule_indexes = match db.get_database_backend() {
            DbBackend::Sqlite => column_text(&db, "SELECT name FROM pragma_index_list('quantity_rule') ORDER BY name").await,
            _ => column_text(&db, "SELECT indexname::text FROM pg_indexes WHERE tablename = 'quantity_rule' ORDER BY indexname").await,
        };
        assert!(
            quantity_rule_indexes.contains(&"uq_quantity_rule".to_owned())
                && quantity_rule_indexes.contains(&"idx_quantity_rule_variant".to_owned()),
            "{quantity_rule_indexes:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn text_that_cannot_be_stored_exactly_stops_the_migration_and_changes_nothing() {
    on_each_database("text_that_cannot_be_stored_exactly", |db| async move {
        Migrator::up(&db, Some(1)).await.unwrap();
        fixture(&db).await;
        exec(&db, &entry_sql("PP-2", 1, "'1.23456'")).await;
        exec(&db, &entry_sql("PP-2", 2, "'-2'")).await;
        let err = Migrator::up(&db, None).await.unwrap_err().to_string();
        assert!(
            err.contains("2 value(s) cannot be converted exactly")
                && err.contains(
                    "price_list_entry.amount of id 7 (\"1.23456\") has more than 4 decimal places"
                )
                && err.contains("price_list_entry.amount of id 8 (\"-2\") is negative"),
            "{err}"
        );
        // Only the initial migration is applied: the money migration (and every later one)
        // is still pending.
        assert_eq!(
            Migrator::get_pending_migrations(&db).await.unwrap().len(),
            Migrator::migrations().len() - 1
        );
        assert_eq!(
            column_text(&db, "SELECT amount FROM price_list_entry ORDER BY id").await,
            [
                "19.99",
                "0.1234",
                "100",
                "9.5",
                "1234567.5",
                "1.23456",
                "-2"
            ],
            "still the text columns"
        );

        // Fixed, it goes through.
        exec(
            &db,
            "UPDATE price_list_entry SET amount = '1.2346' WHERE id = 7",
        )
        .await;
        exec(&db, "DELETE FROM price_list_entry WHERE id = 8").await;
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            column_i64(&db, "SELECT amount FROM price_list_entry WHERE id = 7").await,
            [12_346]
        );
    })
    .await;
}

#[tokio::test]
async fn down_restores_the_text_schema_and_amounts_exactly() {
    on_each_database("down_restores_the_text_schema", |db| async move {
        Migrator::up(&db, Some(1)).await.unwrap();
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        let before = describe(&db, false).await;
        let ddl_before = if sqlite {
            sqlite_ddl(&db).await
        } else {
            Vec::new()
        };
        fixture(&db).await;
        // Up to the money migration only, so `down(Some(1))` reverts exactly it.
        Migrator::up(&db, Some(1)).await.unwrap();
        Migrator::down(&db, Some(1)).await.unwrap();
        assert_eq!(describe(&db, false).await, before);
        if sqlite {
            assert_eq!(
                sqlite_ddl(&db).await,
                ddl_before,
                "the initial CREATE statements"
            );
        }
        assert_eq!(
            column_text(
                &db,
                "SELECT amount FROM price_list_entry ORDER BY min_quantity"
            )
            .await,
            AMOUNTS
        );
        assert_eq!(
            column_text(&db, "SELECT value FROM promotion ORDER BY code").await,
            ["1", "9.99", "15"]
        );
        assert_eq!(
            column_text(
                &db,
                "SELECT subtotal || ' ' || discount_total || ' ' || total FROM orders"
            )
            .await,
            ["39.98 0.5 39.48"]
        );
        // And up again (another statement text: PostgreSQL connections cache the plan of the
        // one above, whose result type was text).
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            column_i64(
                &db,
                "SELECT amount AS units FROM price_list_entry ORDER BY min_quantity"
            )
            .await,
            [199_900, 1_234, 1_000_000, 95_000, 12_345_675_000]
        );
    })
    .await;
}

#[tokio::test]
async fn the_demo_money_is_exact_integers_with_currencies_and_quantity_rules() {
    on_each_database("the_demo_money_is_exact_integers", |db| async move {
        Migrator::up(&db, None).await.unwrap();
        let summary = commerce_core::demo::seed_if_empty(&db)
            .await
            .unwrap()
            .expect("seeded");
        assert_eq!((summary.price_entries, summary.quantity_rules), (4660, 32));

        // Every amount through the entity, summed in Rust, equals SQL's SUM (× 10^4) …
        let entries = price_list_entry::Entity::find()
            .order_by_asc(price_list_entry::Column::Amount)
            .order_by_asc(price_list_entry::Column::Id)
            .all(&db)
            .await
            .unwrap();
        let amounts: Vec<Decimal> = entries.iter().map(|e| e.amount.amount()).collect();
        let mut total: Decimal = amounts.iter().sum();
        total.rescale(4);
        assert_eq!(
            column_i64(&db, "SELECT CAST(SUM(amount) AS BIGINT) FROM price_list_entry").await,
            [i64::try_from(total.mantissa()).unwrap()]
        );
        // … ORDER BY amount is numeric order …
        let mut sorted = amounts.clone();
        sorted.sort();
        assert_eq!(amounts, sorted);
        // … and the contracts' four-decimal prices are kept digit for digit.
        assert!(amounts.iter().any(|a| a.normalize().scale() == 4), "sub-cent prices");
        assert!(
            column_i64(&db, "SELECT COUNT(*) FROM price_list_entry WHERE amount % 100 <> 0").await[0] > 0
        );

        assert_eq!(
            column_text(
                &db,
                "SELECT code || ' ' || COALESCE(currency, '-') FROM promotion ORDER BY code"
            )
            .await,
            ["APP-SNEAKERS-10 -", "PAPER-BULK USD", "VIP-5 -", "WINTER-SALE -"]
        );
        let rule = |sku: &str| {
            format!(
                "SELECT l.code || ' ' || r.min_quantity || ' ' || COALESCE(CAST(r.max_quantity AS TEXT), '-') \
                 || ' ' || r.increment FROM quantity_rule r JOIN price_list l ON l.id = r.price_list_id \
                 JOIN variant v ON v.id = r.variant_id WHERE v.sku = '{sku}'"
            )
        };
        assert_eq!(column_text(&db, &rule("PP-0064-P1")).await, ["b2b-usd 10 - 5"]);
        assert_eq!(column_text(&db, &rule("PP-0454-P3")).await, ["b2b-usd 10 - 5"]);
        assert_eq!(column_text(&db, &rule("IK-0039-P2")).await, ["wholesale-usd 1 50 1"]);
        assert_eq!(column_text(&db, &rule("IK-0013-P1")).await, ["contract-acme 25 1000 25"]);
        assert_eq!(
            column_i64(
                &db,
                "SELECT COUNT(*) FROM quantity_rule r JOIN price_list l ON l.id = r.price_list_id \
                 WHERE l.code = 'b2b-usd'"
            )
            .await,
            [28]
        );
    })
    .await;
}

//! The inventory-service migration (m20261126_000002) on real databases: existing stock
//! levels and channels get the new columns' defaults, `stock_hold` refuses what it must, and
//! `down` removes exactly what `up` added.
//!
//! Every test runs on a fresh SQLite file, and on a fresh scratch PostgreSQL database
//! (`mig_<uuid>`, dropped afterwards) when `TEST_DATABASE_URL` is set.

mod support;
use support::{exec, on_each_database};

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

async fn one_row_i64(db: &DatabaseConnection, sql: &str) -> Vec<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a row");
    (0..)
        .map_while(|i| {
            row.try_get_by_index::<i64>(i)
                .or_else(|_| row.try_get_by_index::<i32>(i).map(i64::from))
                .ok()
        })
        .collect()
}

async fn text(db: &DatabaseConnection, sql: &str) -> String {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a row")
        .try_get_by_index::<String>(0)
        .unwrap()
}

#[tokio::test]
async fn existing_rows_get_defaults_holds_are_checked_and_down_reverts() {
    on_each_database("inventory_service_migration", |db| async move {
        // The migrations before this one; those after it are applied and reverted around it.
        let all = Migrator::migrations();
        let before_this = all
            .iter()
            .position(|m| m.name() == "m20261126_000002_inventory_service")
            .expect("the migration is listed") as u32;
        let after_this = all.len() as u32 - before_this - 1;
        Migrator::up(&db, Some(before_this)).await.unwrap();
        for sql in [
            "INSERT INTO category (slug, name) VALUES ('c', 'C')",
            "INSERT INTO product (slug, name, description, category_id, attributes) \
             SELECT 'p', 'P', '', id, '{}' FROM category",
            "INSERT INTO variant (product_id, sku, name, option_values) \
             SELECT id, 'V-1', 'V', '{}' FROM product",
            "INSERT INTO channel (code, name, currency) VALUES ('web', 'Web', 'USD')",
            "INSERT INTO stock_location (code, name, kind, region, latitude, longitude, \
             handling_hours, cutoff_time) VALUES ('WH', 'WH', 'warehouse', 'us', 0, 0, 24, '15:00')",
            "INSERT INTO stock_level (variant_id, location_id, on_hand, reserved) \
             SELECT v.id, l.id, 7, 2 FROM variant v, stock_location l",
        ] {
            exec(&db, sql).await;
        }
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            one_row_i64(&db, "SELECT on_hand, reserved, version FROM stock_level").await,
            [7, 2, 0]
        );
        assert_eq!(
            text(&db, "SELECT allocation_strategy FROM channel").await,
            "priority"
        );
        assert_eq!(
            one_row_i64(&db, "SELECT reservation_ttl_seconds FROM channel").await,
            [900]
        );
        exec(
            &db,
            "INSERT INTO stock_hold (channel_id, variant_id, location_id, quantity) \
             SELECT c.id, v.id, NULL, 3 FROM channel c, variant v",
        )
        .await;
        for bad in [
            // Not a positive quantity.
            "INSERT INTO stock_hold (channel_id, variant_id, quantity) \
             SELECT c.id, v.id, 0 FROM channel c, variant v",
            // No such channel.
            "INSERT INTO stock_hold (channel_id, variant_id, quantity) \
             SELECT 999, v.id, 1 FROM variant v",
        ] {
            assert!(db.execute_unprepared(bad).await.is_err(), "{bad}");
        }

        Migrator::down(&db, Some(after_this + 1)).await.unwrap();
        assert!(
            db.execute_unprepared("SELECT version FROM stock_level")
                .await
                .is_err()
        );
        assert!(
            db.execute_unprepared("SELECT 1 FROM stock_hold")
                .await
                .is_err()
        );
        assert_eq!(
            one_row_i64(&db, "SELECT on_hand, reserved FROM stock_level").await,
            [7, 2]
        );
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            one_row_i64(&db, "SELECT version FROM stock_level").await,
            [0]
        );
    })
    .await;
}

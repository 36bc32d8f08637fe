//! The inventory service on real databases: concurrent reservations never oversell, random
//! operation sequences keep every invariant, and bad input changes nothing.
//!
//! Scenarios run on a fresh SQLite file, and on a fresh scratch PostgreSQL database
//! (`inv_<pid>_<n>`, dropped afterwards) when `TEST_DATABASE_URL` is set.

#[path = "../../migrations/tests/support/mod.rs"]
mod support;
use support::{remove_sqlite, scratch_name};

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Duration, TimeZone, Utc};
use commerce_core::CoreError;
use commerce_core::entities::{
    category, channel, channel_location, inventory_movement, product, reservation, stock_hold,
    stock_level, stock_location, variant,
};
use commerce_core::inventory::{
    self, Adjustment, Lifetime, Owner, OwnerKind, ReserveRequest, StockIn, StockView, Transfer,
};
use migrations::{Migrator, MigratorTrait};
use proptest::prelude::*;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, QueryOrder, Set};

// ---- databases ----

/// Runs `scenario` on a fresh migrated SQLite file with the [`Fixture`], then on a fresh
/// PostgreSQL database when `TEST_DATABASE_URL` is set; removes the databases, also when it
/// panics.
async fn on_each_database<F, Fut>(test: &str, scenario: F)
where
    F: Fn(DatabaseConnection, Fixture) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::on_each_database(test, move |db| {
        let scenario = scenario.clone();
        async move {
            Migrator::up(&db, None).await.expect("migrations");
            let fixture = Fixture::load(&db).await;
            scenario(db, fixture).await;
        }
    })
    .await;
}

// ---- the fixture ----

/// Two variants; three locations (two warehouses, one store); channels `web` (both
/// warehouses, priority), `b2b` (both warehouses, highest stock, safety stock 2) and `pos`
/// (the store, hard holds).
#[derive(Clone, Copy, Debug)]
struct Fixture {
    variants: [i64; 2],
    /// WH-EAST, WH-WEST, STORE.
    locations: [i64; 3],
    /// web, b2b, pos.
    channels: [i64; 3],
}

impl Fixture {
    async fn load(db: &DatabaseConnection) -> Self {
        let category = category::ActiveModel {
            slug: Set("tees".into()),
            name: Set("Tees".into()),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        let product = product::ActiveModel {
            slug: Set("tee".into()),
            name: Set("Tee".into()),
            description: Set(String::new()),
            category_id: Set(category.id),
            attributes: Set(serde_json::json!({})),
            status: Set("active".into()),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        let mut variants = [0; 2];
        for (i, sku) in ["TEE-S", "TEE-M"].into_iter().enumerate() {
            variants[i] = variant::ActiveModel {
                product_id: Set(product.id),
                sku: Set(sku.into()),
                name: Set(sku.into()),
                option_values: Set(serde_json::json!({})),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap()
            .id;
        }
        let mut locations = [0; 3];
        for (i, (code, kind, lat)) in [
            ("WH-EAST", "warehouse", 40.0),
            ("WH-WEST", "warehouse", 37.0),
            ("STORE", "store", 41.0),
        ]
        .into_iter()
        .enumerate()
        {
            locations[i] = stock_location::ActiveModel {
                code: Set(code.into()),
                name: Set(code.into()),
                kind: Set(kind.into()),
                region: Set("us".into()),
                latitude: Set(lat),
                longitude: Set(-80.0 - 10.0 * i as f64),
                handling_hours: Set(24),
                cutoff_time: Set("15:00".into()),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap()
            .id;
        }
        let mut channels = [0; 3];
        for (i, (code, strategy, safety, ttl, feeds)) in [
            ("web", "priority", 0, 900, vec![0, 1]),
            ("b2b", "highest_stock", 2, 3600, vec![0, 1]),
            ("pos", "priority", 0, 0, vec![2]),
        ]
        .into_iter()
        .enumerate()
        {
            let channel = channel::ActiveModel {
                code: Set(code.into()),
                name: Set(code.into()),
                currency: Set("USD".into()),
                safety_stock: Set(safety),
                low_stock_threshold: Set(3),
                allocation_strategy: Set(strategy.into()),
                reservation_ttl_seconds: Set(ttl),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap();
            channels[i] = channel.id;
            for (priority, feed) in feeds.into_iter().enumerate() {
                channel_location::ActiveModel {
                    channel_id: Set(channel.id),
                    location_id: Set(locations[feed]),
                    priority: Set(priority as i32 + 1),
                    ..Default::default()
                }
                .insert(db)
                .await
                .unwrap();
            }
        }
        Self {
            variants,
            locations,
            channels,
        }
    }
}

// ---- helpers ----

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

fn stock_in(variant_id: i64, location_id: i64, quantity: i32) -> StockIn {
    StockIn {
        variant_id,
        location_id,
        quantity,
        actor: "test".into(),
        reason: String::new(),
        reference: None,
    }
}

fn cart(reference: &str) -> Owner {
    Owner {
        kind: OwnerKind::Cart,
        reference: reference.into(),
    }
}

fn reserve_request(
    variant_id: i64,
    channel_id: i64,
    quantity: i32,
    owner: &str,
    lifetime: Lifetime,
) -> ReserveRequest {
    ReserveRequest {
        variant_id,
        quantity,
        channel_id,
        owner: cart(owner),
        lifetime,
        location_id: None,
        near: None,
        actor: "test".into(),
    }
}

/// Every row the service may touch, in a comparable form.
async fn snapshot(db: &DatabaseConnection) -> String {
    let levels = stock_level::Entity::find()
        .order_by_asc(stock_level::Column::Id)
        .all(db)
        .await
        .unwrap();
    let reservations = reservation::Entity::find()
        .order_by_asc(reservation::Column::Id)
        .all(db)
        .await
        .unwrap();
    let movements = inventory_movement::Entity::find()
        .order_by_asc(inventory_movement::Column::Id)
        .all(db)
        .await
        .unwrap();
    let holds = stock_hold::Entity::find()
        .order_by_asc(stock_hold::Column::Id)
        .all(db)
        .await
        .unwrap();
    format!("{levels:?}\n{reservations:?}\n{movements:?}\n{holds:?}")
}

/// The invariants of the inventory: available never negative; per level, on_hand and
/// reserved equal the sums of the ledger's deltas, and reserved equals the sum of the
/// level's active reservations.
async fn check_invariants(db: &DatabaseConnection) -> Result<(), String> {
    let levels = stock_level::Entity::find().all(db).await.unwrap();
    let movements = inventory_movement::Entity::find().all(db).await.unwrap();
    let reservations = reservation::Entity::find().all(db).await.unwrap();
    let mut ledger: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
    for m in &movements {
        let entry = ledger.entry((m.variant_id, m.location_id)).or_default();
        entry.0 += i64::from(m.on_hand_delta);
        entry.1 += i64::from(m.reserved_delta);
    }
    let mut held: HashMap<(i64, i64), i64> = HashMap::new();
    for r in reservations.iter().filter(|r| r.state == "active") {
        *held.entry((r.variant_id, r.location_id)).or_default() += i64::from(r.quantity);
    }
    for level in &levels {
        let key = (level.variant_id, level.location_id);
        if level.reserved < 0 || level.on_hand < level.reserved {
            return Err(format!("negative availability: {level:?}"));
        }
        let (on_hand, reserved) = ledger.remove(&key).unwrap_or_default();
        if on_hand != i64::from(level.on_hand) || reserved != i64::from(level.reserved) {
            return Err(format!(
                "ledger sums ({on_hand}, {reserved}) differ from {level:?}"
            ));
        }
        let active = held.remove(&key).unwrap_or_default();
        if active != i64::from(level.reserved) {
            return Err(format!(
                "active reservations sum to {active}, level says {level:?}"
            ));
        }
    }
    if !ledger.is_empty() || !held.is_empty() {
        return Err(format!(
            "movements or reservations without a level: {ledger:?} {held:?}"
        ));
    }
    Ok(())
}

fn field_of(err: &CoreError) -> String {
    match err {
        CoreError::InvalidInput { field, .. }
        | CoreError::Conflict { field, .. }
        | CoreError::Forbidden { field, .. } => field.clone(),
        CoreError::InsufficientStock { lines } => lines[0].field.clone(),
        CoreError::NotFound { key, .. } => key
            .rsplit_once(" (")
            .map(|(_, field)| field.trim_end_matches(')').to_owned())
            .unwrap_or_default(),
        CoreError::Database(err) => panic!("a database error: {err}"),
    }
}

// ---- concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_of_ten_units_let_exactly_ten_through() {
    on_each_database("concurrent reservations", |db, fx| async move {
        let v = fx.variants[0];
        // 6 at the first warehouse, 4 at the second: reservations spill over.
        inventory::receive(&db, &stock_in(v, fx.locations[0], 6), t0())
            .await
            .unwrap();
        inventory::receive(&db, &stock_in(v, fx.locations[1], 4), t0())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    inventory::reserve(
                        &db,
                        &reserve_request(
                            v,
                            fx.channels[0],
                            1,
                            &format!("cart-{i}"),
                            Lifetime::ChannelDefault,
                        ),
                        t0(),
                    )
                    .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(reserved) => {
                    assert_eq!(reserved.reservations.len(), 1);
                    won += 1;
                }
                Err(CoreError::InsufficientStock { lines }) => {
                    assert_eq!(lines[0].field, "quantity");
                    assert_eq!(lines[0].requested, 1);
                }
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(won, 10, "exactly the stock on hand is reserved");
        let levels = stock_level::Entity::find().all(&db).await.unwrap();
        assert_eq!(levels.iter().map(|l| l.reserved).sum::<i32>(), 10);
        assert!(levels.iter().all(|l| l.reserved == l.on_hand));
        // One version per change: the receipt, then one per reservation.
        assert_eq!(levels.iter().map(|l| l.version).sum::<i64>(), 2 + 10);
        check_invariants(&db).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_on_two_channels_never_take_another_channels_hold() {
    on_each_database("concurrent reservations with holds", |db, fx| async move {
        let v = fx.variants[1];
        // 5 + 5 in the warehouses; pos keeps 4 of them anywhere, so web and b2b (which
        // keeps 2 of safety stock) share 6 between them, whatever locations they pick.
        inventory::receive(&db, &stock_in(v, fx.locations[0], 5), t0())
            .await
            .unwrap();
        inventory::receive(&db, &stock_in(v, fx.locations[1], 5), t0())
            .await
            .unwrap();
        inventory::set_hold(&db, fx.channels[2], v, None, 4, t0())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let db = db.clone();
                let channel = fx.channels[i % 2];
                tokio::spawn(async move {
                    inventory::reserve(
                        &db,
                        &reserve_request(v, channel, 1, &format!("c{i}"), Lifetime::ChannelDefault),
                        t0(),
                    )
                    .await
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(CoreError::InsufficientStock { .. }) => {}
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        let levels = stock_level::Entity::find().all(&db).await.unwrap();
        let holds = stock_hold::Entity::find().all(&db).await.unwrap();
        hold_cover_ok(fx.channels[0], v, &levels, &holds).unwrap();
        // Whatever the order, web (no safety stock) takes what b2b leaves.
        assert_eq!(
            won, 6,
            "the pos hold leaves 6 of the 10 units to the others"
        );
        assert_eq!(
            levels.iter().map(|l| l.on_hand - l.reserved).sum::<i32>(),
            10 - won
        );
        check_invariants(&db).await.unwrap();
    })
    .await;
}

// ---- lifecycle ----

#[tokio::test]
async fn reservations_live_extend_commit_release_and_expire() {
    on_each_database("reservation lifecycle", |db, fx| async move {
        let v = fx.variants[0];
        let change = inventory::receive(&db, &stock_in(v, fx.locations[0], 10), t0())
            .await
            .unwrap();
        assert_eq!(change.levels[0].version, 1);
        assert_eq!(change.movements[0].kind, "receive");

        // The channel's TTL (15 minutes), visible on the reservation.
        let a = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[0], 3, "a", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap();
        let a_row = &a.reservations[0];
        assert_eq!(a_row.expires_at, Some(t0() + Duration::minutes(15)));
        assert_eq!(a.change.levels[0].version, 2);
        assert_eq!(a.change.levels[0].reserved, 3);

        // The owner extends it; it then outlives the first deadline.
        let extended = inventory::extend_reservation(
            &db,
            a_row.id,
            &cart("a"),
            Lifetime::Seconds(600),
            t0() + Duration::minutes(10),
        )
        .await
        .unwrap();
        assert_eq!(extended.expires_at, Some(t0() + Duration::minutes(20)));

        // A short one, and a POS hard hold (the pos channel's TTL is 0).
        let b = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[0], 2, "b", Lifetime::Seconds(60)),
            t0(),
        )
        .await
        .unwrap();
        inventory::receive(&db, &stock_in(v, fx.locations[2], 1), t0())
            .await
            .unwrap();
        let pos = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[2], 1, "till-1", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(pos.reservations[0].expires_at, None);

        // The sweeper releases only what expired, once.
        let swept = inventory::release_expired(&db, t0() + Duration::minutes(16), 100)
            .await
            .unwrap();
        assert_eq!(
            swept.reservations.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![b.reservations[0].id]
        );
        assert_eq!(swept.reservations[0].state, "expired");
        assert_eq!(swept.change.movements[0].kind, "release");
        assert_eq!(swept.change.movements[0].reason, "expired");
        assert_eq!(swept.change.movements[0].reserved_delta, -2);
        let again = inventory::release_expired(&db, t0() + Duration::minutes(16), 100)
            .await
            .unwrap();
        assert!(again.reservations.is_empty());

        // Commit turns the reservation into a sale.
        let (sold, change) = inventory::commit_reservation(
            &db,
            a_row.id,
            Some(&cart("a")),
            "checkout",
            Some("order:1001"),
            t0() + Duration::minutes(17),
        )
        .await
        .unwrap();
        assert_eq!(sold.state, "consumed");
        assert_eq!(change.movements[0].kind, "sale");
        assert_eq!(change.movements[0].on_hand_delta, -3);
        assert_eq!(change.movements[0].reference.as_deref(), Some("order:1001"));
        assert_eq!(
            (change.levels[0].on_hand, change.levels[0].reserved),
            (7, 0)
        );

        // The hard hold never expires, and is released on demand.
        let late = inventory::release_expired(&db, t0() + Duration::days(365), 100)
            .await
            .unwrap();
        assert!(late.reservations.is_empty());
        let (released, _) = inventory::release(
            &db,
            pos.reservations[0].id,
            None,
            "clerk",
            "basket cleared",
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(released.state, "released");

        // A return and a transfer, then the ledger still adds up.
        inventory::return_stock(&db, &stock_in(v, fx.locations[0], 1), t0())
            .await
            .unwrap();
        let moved = inventory::transfer(
            &db,
            &Transfer {
                variant_id: v,
                from_location_id: fx.locations[0],
                to_location_id: fx.locations[1],
                quantity: 5,
                actor: "ops".into(),
                reason: String::new(),
            },
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(moved.movements.len(), 2);
        assert_eq!(
            moved
                .levels
                .iter()
                .map(|l| (l.location_id, l.on_hand))
                .collect::<Vec<_>>(),
            vec![(fx.locations[0], 3), (fx.locations[1], 5)]
        );
        check_invariants(&db).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn holds_keep_units_from_other_channels_and_strategies_choose_locations() {
    on_each_database("holds and strategies", |db, fx| async move {
        let v = fx.variants[1];
        inventory::receive(&db, &stock_in(v, fx.locations[0], 3), t0())
            .await
            .unwrap();
        inventory::receive(&db, &stock_in(v, fx.locations[1], 5), t0())
            .await
            .unwrap();
        // b2b (highest stock) takes from WH-WEST; web (priority) from WH-EAST.
        let b2b = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[1], 1, "b2b", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(b2b.reservations[0].location_id, fx.locations[1]);
        let web = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[0], 1, "web", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap();
        assert_eq!(web.reservations[0].location_id, fx.locations[0]);
        // Free: 2 at east, 4 at west. The pos channel holds 3 at west and 1 anywhere.
        inventory::set_hold(&db, fx.channels[2], v, Some(fx.locations[1]), 3, t0())
            .await
            .unwrap();
        inventory::set_hold(&db, fx.channels[2], v, None, 1, t0())
            .await
            .unwrap();
        let policy = inventory::load_policy_by_id(&db, fx.channels[0])
            .await
            .unwrap();
        let seen = inventory::availability_for_variants(&db, &policy, StockView::Coarse, &[v])
            .await
            .unwrap();
        // Sellable for web: 2 at east + (4 − 3) at west = 3, minus the hold anywhere = 2.
        assert_eq!(seen[0].available, 2);
        assert_eq!(seen[0].quantity, Some(2), "low stock shows its quantity");
        let before = snapshot(&db).await;
        let err = inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[0], 3, "web2", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, CoreError::InsufficientStock { lines } if lines[0].available == 2),
            "{err:?}"
        );
        assert_eq!(
            snapshot(&db).await,
            before,
            "a refused reservation changes nothing"
        );
        inventory::reserve(
            &db,
            &reserve_request(v, fx.channels[0], 2, "web2", Lifetime::ChannelDefault),
            t0(),
        )
        .await
        .unwrap();
        // b2b keeps 2 units of safety stock: nothing left for it either.
        let b2b_policy = inventory::load_policy_by_id(&db, fx.channels[1])
            .await
            .unwrap();
        let seen = inventory::availability_for_variants(&db, &b2b_policy, StockView::Exact, &[v])
            .await
            .unwrap();
        assert_eq!(seen[0].available, 0);
        // Removing the holds frees the units again.
        inventory::set_hold(&db, fx.channels[2], v, Some(fx.locations[1]), 0, t0())
            .await
            .unwrap();
        inventory::set_hold(&db, fx.channels[2], v, None, 0, t0())
            .await
            .unwrap();
        let seen = inventory::availability_for_variants(&db, &policy, StockView::Coarse, &[v])
            .await
            .unwrap();
        assert_eq!(seen[0].available, 4);
        // A channel allocating by distance takes from the location nearest to the point,
        // though its first-priority location has stock too.
        inventory::receive(&db, &stock_in(v, fx.locations[0], 2), t0())
            .await
            .unwrap();
        let mut web: channel::ActiveModel = policy.channel.clone().into();
        web.allocation_strategy = Set("nearest".into());
        web.update(&db).await.unwrap();
        let mut near_west = reserve_request(v, fx.channels[0], 1, "near", Lifetime::ChannelDefault);
        near_west.near = Some(inventory::GeoPoint {
            latitude: 36.5,
            longitude: -91.0,
        });
        let reserved = inventory::reserve(&db, &near_west, t0()).await.unwrap();
        assert_eq!(reserved.reservations[0].location_id, fx.locations[1]);
        near_west.near = Some(inventory::GeoPoint {
            latitude: 95.0,
            longitude: 0.0,
        });
        let err = inventory::reserve(&db, &near_west, t0()).await.unwrap_err();
        assert_eq!(field_of(&err), "near.latitude");
        check_invariants(&db).await.unwrap();
    })
    .await;
}

// ---- bad input ----

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    on_each_database("bad input", |db, fx| async move {
        let v = fx.variants[0];
        let [east, west, _store] = fx.locations;
        let web = fx.channels[0];
        inventory::receive(&db, &stock_in(v, east, 5), t0())
            .await
            .unwrap();
        let r = inventory::reserve(
            &db,
            &reserve_request(v, web, 2, "mine", Lifetime::Seconds(60)),
            t0(),
        )
        .await
        .unwrap()
        .reservations[0]
            .clone();
        let released = inventory::reserve(
            &db,
            &reserve_request(v, web, 1, "mine", Lifetime::Seconds(600)),
            t0(),
        )
        .await
        .unwrap()
        .reservations[0]
            .clone();
        inventory::release(&db, released.id, Some(&cart("mine")), "test", "", t0())
            .await
            .unwrap();
        let later = t0() + Duration::minutes(5);

        let before = snapshot(&db).await;
        let adjust = |delta: i32, reason: &str| Adjustment {
            variant_id: v,
            location_id: east,
            delta,
            actor: "test".into(),
            reason: reason.into(),
        };
        let transfer = |from: i64, to: i64, quantity: i32| Transfer {
            variant_id: v,
            from_location_id: from,
            to_location_id: to,
            quantity,
            actor: "test".into(),
            reason: String::new(),
        };
        let cases: Vec<(&str, Result<(), CoreError>, &str)> = vec![
            (
                "receive 0",
                inventory::receive(&db, &stock_in(v, east, 0), t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "receive -3",
                inventory::receive(&db, &stock_in(v, east, -3), t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "receive an unknown variant",
                inventory::receive(&db, &stock_in(999_999, east, 1), t0())
                    .await
                    .map(drop),
                "variant_id",
            ),
            (
                "receive at an unknown location",
                inventory::receive(&db, &stock_in(v, 999_999, 1), t0())
                    .await
                    .map(drop),
                "location_id",
            ),
            (
                "return 0",
                inventory::return_stock(&db, &stock_in(v, east, 0), t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "adjust by 0",
                inventory::adjust(&db, &adjust(0, "count"), t0())
                    .await
                    .map(drop),
                "delta",
            ),
            (
                "adjust without a reason",
                inventory::adjust(&db, &adjust(1, " "), t0())
                    .await
                    .map(drop),
                "reason",
            ),
            (
                "adjust below what is reserved",
                inventory::adjust(&db, &adjust(-4, "damaged"), t0())
                    .await
                    .map(drop),
                "delta",
            ),
            (
                "transfer to the same location",
                inventory::transfer(&db, &transfer(east, east, 1), t0())
                    .await
                    .map(drop),
                "to_location_id",
            ),
            (
                "transfer 0",
                inventory::transfer(&db, &transfer(east, west, 0), t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "transfer reserved units",
                inventory::transfer(&db, &transfer(east, west, 4), t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "transfer to an unknown location",
                inventory::transfer(&db, &transfer(east, 999_999, 1), t0())
                    .await
                    .map(drop),
                "to_location_id",
            ),
            (
                "reserve 0",
                inventory::reserve(
                    &db,
                    &reserve_request(v, web, 0, "x", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "quantity",
            ),
            (
                "reserve -1",
                inventory::reserve(
                    &db,
                    &reserve_request(v, web, -1, "x", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "quantity",
            ),
            (
                "reserve more than available",
                inventory::reserve(
                    &db,
                    &reserve_request(v, web, 4, "x", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "quantity",
            ),
            (
                "reserve an unknown variant",
                inventory::reserve(
                    &db,
                    &reserve_request(999_999, web, 1, "x", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "variant_id",
            ),
            (
                "reserve on an unknown channel",
                inventory::reserve(
                    &db,
                    &reserve_request(v, 999_999, 1, "x", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "channel_id",
            ),
            (
                "reserve with a zero TTL",
                inventory::reserve(
                    &db,
                    &reserve_request(v, web, 1, "x", Lifetime::Seconds(0)),
                    t0(),
                )
                .await
                .map(drop),
                "ttl_seconds",
            ),
            (
                "reserve for an empty owner",
                inventory::reserve(
                    &db,
                    &reserve_request(v, web, 1, "", Lifetime::ChannelDefault),
                    t0(),
                )
                .await
                .map(drop),
                "owner.reference",
            ),
            (
                "release twice",
                inventory::release(&db, released.id, Some(&cart("mine")), "test", "", t0())
                    .await
                    .map(drop),
                "reservation_id",
            ),
            (
                "release an unknown reservation",
                inventory::release(&db, 999_999, None, "test", "", t0())
                    .await
                    .map(drop),
                "reservation_id",
            ),
            (
                "extend an expired reservation",
                inventory::extend_reservation(
                    &db,
                    r.id,
                    &cart("mine"),
                    Lifetime::ChannelDefault,
                    later,
                )
                .await
                .map(drop),
                "reservation_id",
            ),
            (
                "commit an expired reservation",
                inventory::commit_reservation(&db, r.id, Some(&cart("mine")), "test", None, later)
                    .await
                    .map(drop),
                "reservation_id",
            ),
            (
                "extend someone else's reservation",
                inventory::extend_reservation(
                    &db,
                    r.id,
                    &cart("theirs"),
                    Lifetime::ChannelDefault,
                    t0(),
                )
                .await
                .map(drop),
                "reservation_id",
            ),
            (
                "commit someone else's reservation",
                inventory::commit_reservation(&db, r.id, Some(&cart("theirs")), "test", None, t0())
                    .await
                    .map(drop),
                "reservation_id",
            ),
            (
                "hold a negative quantity",
                inventory::set_hold(&db, web, v, None, -1, t0())
                    .await
                    .map(drop),
                "quantity",
            ),
            (
                "hold at an unknown location",
                inventory::set_hold(&db, web, v, Some(999_999), 1, t0())
                    .await
                    .map(drop),
                "location_id",
            ),
        ];
        for (case, outcome, field) in cases {
            let err = outcome.expect_err(case);
            assert_eq!(field_of(&err), field, "{case}: {err}");
            assert_eq!(snapshot(&db).await, before, "{case} changed rows");
        }
        // The variants say what was wrong.
        let err = inventory::release(&db, released.id, None, "test", "", t0())
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
        let err = inventory::extend_reservation(
            &db,
            r.id,
            &cart("theirs"),
            Lifetime::ChannelDefault,
            t0(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CoreError::Forbidden { .. }), "{err:?}");
        let err = inventory::commit_reservation(&db, r.id, None, "test", None, later)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::Conflict { reason, .. } if reason.contains("expired")),
            "{err:?}"
        );
        check_invariants(&db).await.unwrap();
    })
    .await;
}

// ---- random operation sequences (SQLite) ----

#[derive(Clone, Debug)]
enum Op {
    Receive {
        variant: usize,
        location: usize,
        quantity: i32,
    },
    Adjust {
        variant: usize,
        location: usize,
        delta: i32,
    },
    Transfer {
        variant: usize,
        from: usize,
        to: usize,
        quantity: i32,
    },
    Reserve {
        variant: usize,
        channel: usize,
        quantity: i32,
        ttl: Option<i64>,
    },
    Release {
        pick: usize,
    },
    Commit {
        pick: usize,
    },
    Extend {
        pick: usize,
        own: bool,
    },
    Return {
        variant: usize,
        location: usize,
        quantity: i32,
    },
    Sweep,
    Hold {
        variant: usize,
        channel: usize,
        location: Option<usize>,
        quantity: i32,
    },
    Tick {
        minutes: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..3usize, -1..8i32)
            .prop_map(|(variant, location, quantity)| Op::Receive { variant, location, quantity }),
        1 => (0..2usize, 0..3usize, -4..4i32)
            .prop_map(|(variant, location, delta)| Op::Adjust { variant, location, delta }),
        1 => (0..2usize, 0..3usize, 0..3usize, 0..5i32)
            .prop_map(|(variant, from, to, quantity)| Op::Transfer { variant, from, to, quantity }),
        5 => (0..2usize, 0..3usize, -1..6i32, prop::option::of(1..1200i64))
            .prop_map(|(variant, channel, quantity, ttl)| Op::Reserve { variant, channel, quantity, ttl }),
        2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, own)| Op::Extend { pick, own }),
        1 => (0..2usize, 0..3usize, 1..3i32)
            .prop_map(|(variant, location, quantity)| Op::Return { variant, location, quantity }),
        1 => Just(Op::Sweep),
        3 => (0..2usize, 0..3usize, prop::option::of(0..3usize), 0..4i32)
            .prop_map(|(variant, channel, location, quantity)| Op::Hold { variant, channel, location, quantity }),
        2 => (1..20i64).prop_map(|minutes| Op::Tick { minutes }),
    ]
}

/// A migrated SQLite file with the fixture, copied for every proptest case.
fn template() -> &'static (std::path::PathBuf, Fixture) {
    static TEMPLATE: std::sync::OnceLock<(std::path::PathBuf, Fixture)> =
        std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let path = std::env::temp_dir().join(format!("{}-template.db", scratch_name()));
            let db = commerce_core::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
            Migrator::up(&db, None).await.unwrap();
            let fixture = Fixture::load(&db).await;
            commerce_core::db::close(&db).await.unwrap();
            (path, fixture)
        })
    })
}

/// Sellable units beyond other channels' holds, everywhere (the location-less holds' cover).
fn hold_cover_ok(
    channel_id: i64,
    variant_id: i64,
    levels: &[stock_level::Model],
    holds: &[stock_hold::Model],
) -> Result<(), String> {
    let others = |h: &&stock_hold::Model| h.variant_id == variant_id && h.channel_id != channel_id;
    let mut beyond = 0_i64;
    for level in levels.iter().filter(|l| l.variant_id == variant_id) {
        let held: i64 = holds
            .iter()
            .filter(others)
            .filter(|h| h.location_id == Some(level.location_id))
            .map(|h| i64::from(h.quantity))
            .sum();
        beyond += (i64::from(level.on_hand - level.reserved) - held).max(0);
    }
    let anywhere: i64 = holds
        .iter()
        .filter(others)
        .filter(|h| h.location_id.is_none())
        .map(|h| i64::from(h.quantity))
        .sum();
    if beyond < anywhere {
        return Err(format!("holds anywhere {anywhere} not covered by {beyond}"));
    }
    Ok(())
}

async fn reservation_row(db: &DatabaseConnection, id: i64) -> reservation::Model {
    reservation::Entity::find_by_id(id)
        .one(db)
        .await
        .unwrap()
        .expect("a reservation it made")
}

async fn run_ops(db: &DatabaseConnection, fx: Fixture, ops: &[Op]) -> Result<(), String> {
    let mut now = t0();
    let mut made: Vec<(i64, String)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let tag = |e: String| format!("step {step} {op:?}: {e}");
        match op.clone() {
            Op::Receive {
                variant,
                location,
                quantity,
            } => {
                let result = inventory::receive(
                    db,
                    &stock_in(fx.variants[variant], fx.locations[location], quantity),
                    now,
                )
                .await;
                if result.is_ok() != (quantity > 0) {
                    return Err(tag(format!("{result:?}")));
                }
            }
            Op::Adjust {
                variant,
                location,
                delta,
            } => {
                let _ = inventory::adjust(
                    db,
                    &Adjustment {
                        variant_id: fx.variants[variant],
                        location_id: fx.locations[location],
                        delta,
                        actor: "p".into(),
                        reason: "count".into(),
                    },
                    now,
                )
                .await;
            }
            Op::Transfer {
                variant,
                from,
                to,
                quantity,
            } => {
                let _ = inventory::transfer(
                    db,
                    &Transfer {
                        variant_id: fx.variants[variant],
                        from_location_id: fx.locations[from],
                        to_location_id: fx.locations[to],
                        quantity,
                        actor: "p".into(),
                        reason: String::new(),
                    },
                    now,
                )
                .await;
            }
            Op::Return {
                variant,
                location,
                quantity,
            } => {
                inventory::return_stock(
                    db,
                    &stock_in(fx.variants[variant], fx.locations[location], quantity),
                    now,
                )
                .await
                .map_err(|e| tag(e.to_string()))?;
            }
            Op::Reserve {
                variant,
                channel,
                quantity,
                ttl,
            } => {
                let (v, c) = (fx.variants[variant], fx.channels[channel]);
                let policy = inventory::load_policy_by_id(db, c).await.unwrap();
                let before =
                    inventory::availability_for_variants(db, &policy, StockView::Exact, &[v])
                        .await
                        .unwrap()[0]
                        .available;
                let owner = format!("o{step}");
                let lifetime = ttl.map_or(Lifetime::ChannelDefault, Lifetime::Seconds);
                let result =
                    inventory::reserve(db, &reserve_request(v, c, quantity, &owner, lifetime), now)
                        .await;
                let expected = quantity > 0 && i64::from(quantity) <= before;
                match result {
                    Ok(reserved) if expected => {
                        let total: i32 = reserved.reservations.iter().map(|r| r.quantity).sum();
                        if total != quantity {
                            return Err(tag(format!("reserved {total}")));
                        }
                        let levels = stock_level::Entity::find().all(db).await.unwrap();
                        let holds = stock_hold::Entity::find().all(db).await.unwrap();
                        // Where it took units, it left the other channels' holds intact.
                        for r in &reserved.reservations {
                            let level = levels
                                .iter()
                                .find(|l| l.variant_id == v && l.location_id == r.location_id)
                                .unwrap();
                            let held: i32 = holds
                                .iter()
                                .filter(|h| h.variant_id == v && h.channel_id != c)
                                .filter(|h| h.location_id == Some(r.location_id))
                                .map(|h| h.quantity)
                                .sum();
                            if level.on_hand - level.reserved < held {
                                return Err(tag(format!("hold broken at {level:?}")));
                            }
                        }
                        hold_cover_ok(c, v, &levels, &holds).map_err(tag)?;
                        for r in reserved.reservations {
                            made.push((r.id, owner.clone()));
                        }
                    }
                    Err(CoreError::InsufficientStock { .. }) if !expected && quantity > 0 => {}
                    Err(CoreError::InvalidInput { .. }) if quantity <= 0 => {}
                    other => {
                        return Err(tag(format!("available {before}: {other:?}")));
                    }
                }
            }
            Op::Release { pick } if !made.is_empty() => {
                let (id, owner) = made[pick % made.len()].clone();
                let row = reservation_row(db, id).await;
                let result = inventory::release(db, id, Some(&cart(&owner)), "p", "", now).await;
                let expected = row.state == "active";
                if result.is_ok() != expected
                    || (!expected && !matches!(result, Err(CoreError::Conflict { .. })))
                {
                    return Err(tag(format!("{row:?}: {result:?}")));
                }
            }
            Op::Commit { pick } if !made.is_empty() => {
                let (id, owner) = made[pick % made.len()].clone();
                let row = reservation_row(db, id).await;
                let result =
                    inventory::commit_reservation(db, id, Some(&cart(&owner)), "p", None, now)
                        .await;
                let expected = row.state == "active" && row.expires_at.is_none_or(|at| at > now);
                if result.is_ok() != expected
                    || (!expected && !matches!(result, Err(CoreError::Conflict { .. })))
                {
                    return Err(tag(format!("{row:?}: {result:?}")));
                }
            }
            Op::Extend { pick, own } if !made.is_empty() => {
                let (id, owner) = made[pick % made.len()].clone();
                let row = reservation_row(db, id).await;
                let who = if own { owner } else { "intruder".to_owned() };
                let result = inventory::extend_reservation(
                    db,
                    id,
                    &cart(&who),
                    Lifetime::ChannelDefault,
                    now,
                )
                .await;
                let expected =
                    own && row.state == "active" && row.expires_at.is_none_or(|at| at > now);
                let refusal_ok = if own {
                    matches!(result, Err(CoreError::Conflict { .. }))
                } else {
                    matches!(result, Err(CoreError::Forbidden { .. }))
                };
                if result.is_ok() != expected || (!expected && !refusal_ok) {
                    return Err(tag(format!("{row:?}: {result:?}")));
                }
                if let Ok(extended) = result
                    && row.expires_at.is_some()
                    && extended.expires_at.is_some_and(|at| {
                        Some(at) < row.expires_at || at < now + Duration::minutes(15)
                    })
                {
                    return Err(tag(format!("not extended: {extended:?}")));
                }
            }
            Op::Release { .. } | Op::Commit { .. } | Op::Extend { .. } => {}
            Op::Sweep => {
                let swept = inventory::release_expired(db, now, 50)
                    .await
                    .map_err(|e| tag(e.to_string()))?;
                if swept
                    .reservations
                    .iter()
                    .any(|r| r.state != "expired" || r.expires_at.is_none_or(|at| at > now))
                {
                    return Err(tag(format!("swept the wrong ones: {swept:?}")));
                }
            }
            Op::Hold {
                variant,
                channel,
                location,
                quantity,
            } => {
                inventory::set_hold(
                    db,
                    fx.channels[channel],
                    fx.variants[variant],
                    location.map(|l| fx.locations[l]),
                    quantity,
                    now,
                )
                .await
                .map_err(|e| tag(e.to_string()))?;
            }
            Op::Tick { minutes } => now += Duration::minutes(minutes),
        }
        check_invariants(db).await.map_err(tag)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operation_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..40)) {
        let (template, fx) = template();
        let path = std::env::temp_dir().join(format!("{}.db", scratch_name()));
        std::fs::copy(template, &path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = runtime.block_on(async {
            let db = commerce_core::db::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let outcome = run_ops(&db, *fx, &ops).await;
            let _ = db.close().await;
            outcome
        });
        remove_sqlite(&path);
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

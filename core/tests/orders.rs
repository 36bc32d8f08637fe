//! The order service on real databases: random sequences of valid and invalid lifecycle
//! operations (place, fulfil, deliver, cancel, return) keep stock, ledger and order history
//! consistent, and every refused operation changes nothing.
//!
//! Each proptest case runs on a copy of a migrated database holding the demo data: a copied
//! SQLite file, and, when `TEST_DATABASE_URL` is set, a PostgreSQL database created from a
//! template database (both templates are built once per test and removed afterwards).

#[path = "../../migrations/tests/support/mod.rs"]
mod support;
use support::{remove_sqlite, scratch_name, with_database_name};

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use commerce_core::CoreError;
use commerce_core::entities::{
    channel, inventory_movement, order, order_line, reservation, shipment, shipment_line,
    stock_level, stock_location, variant,
};
use commerce_core::inventory::{self, Adjustment, StockView};
use commerce_core::orders::batch::{self, Batched, PricedOrder};
use commerce_core::orders::routing::ServiceLevel;
use commerce_core::orders::service::{
    self, Fulfilment, NewOrder, OrderDetails, OrderError, OrderLineInput,
};
use commerce_core::pricing::load::FromDatabase;
use commerce_core::pricing::resolve::PriceViewer;
use migrations::{Migrator, MigratorTrait};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, Set, Statement,
};

/// Demo SKUs listed on `web`, priced from the base list, without quantity rules.
const SKUS: [&str; 4] = ["TS-0001-S", "TS-0001-M", "TS-0001-L", "HD-0002-M"];
/// An id no order or shipment has.
const UNKNOWN_ID: i64 = 987_654_321;

// ---- the fixture ----

/// What the cases work on, the same in every copy of the template.
#[derive(Clone, Debug)]
struct Fixture {
    web: i64,
    /// The variants of [`SKUS`].
    variants: [i64; 4],
    /// WH-EAST and WH-WEST: the cases stock these two with a few units.
    stocked: [i64; 2],
}

impl Fixture {
    /// Migrates, loads the demo data and empties WH-CENTRAL of the pool's SKUs, so every
    /// unit the web channel can sell lies at the two stocked warehouses.
    async fn load(db: &DatabaseConnection) -> Self {
        Migrator::up(db, None).await.expect("migrations");
        commerce_core::demo::seed_if_empty(db)
            .await
            .expect("the demo data")
            .expect("an empty database");
        let web = channel::Entity::find()
            .filter(channel::Column::Code.eq("web"))
            .one(db)
            .await
            .unwrap()
            .expect("the web channel")
            .id;
        let location = async |code: &str| {
            stock_location::Entity::find()
                .filter(stock_location::Column::Code.eq(code))
                .one(db)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("location {code}"))
                .id
        };
        let stocked = [location("WH-EAST").await, location("WH-WEST").await];
        let central = location("WH-CENTRAL").await;
        let mut variants = [0; 4];
        for (i, sku) in SKUS.into_iter().enumerate() {
            variants[i] = variant::Entity::find()
                .filter(variant::Column::Sku.eq(sku))
                .one(db)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("demo SKU {sku}"))
                .id;
            set_on_hand(db, variants[i], central, 0).await;
        }
        Self {
            web,
            variants,
            stocked,
        }
    }
}

impl Fixture {
    /// An anonymous standard `web` order of `(index into SKUS, quantity)` lines, shipped to
    /// us-east.
    fn web_order(&self, lines: &[(usize, i32)]) -> NewOrder {
        NewOrder {
            channel_id: self.web,
            viewer: PriceViewer::anonymous(self.web, "USD"),
            customer_id: None,
            lines: lines
                .iter()
                .map(|(sku, quantity)| OrderLineInput {
                    sku: SKUS[*sku].to_owned(),
                    quantity: *quantity,
                })
                .collect(),
            fulfilment: Fulfilment::Ship {
                address: serde_json::json!({ "line1": "1 Market St", "city": "Newark" }),
                region: "us-east".into(),
                point: None,
            },
            service_level: ServiceLevel::Standard,
            note: String::new(),
            external_ref: None,
            extensions: None,
            idempotency_key: None,
            store: None,
            actor: "test".into(),
        }
    }
}

/// Sets the units on hand of a variant at a location (nothing is reserved there yet).
async fn set_on_hand(db: &DatabaseConnection, variant_id: i64, location_id: i64, units: i32) {
    let level = stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.eq(variant_id))
        .filter(stock_level::Column::LocationId.eq(location_id))
        .one(db)
        .await
        .unwrap();
    let delta = units - level.map_or(0, |l| l.on_hand);
    if delta != 0 {
        inventory::adjust(
            db,
            &Adjustment {
                variant_id,
                location_id,
                delta,
                actor: "proptest".into(),
                reason: "small stock for the order sequences".into(),
            },
            t0(),
        )
        .await
        .expect("setting the stock");
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
}

// ---- databases ----

/// A migrated database with the demo data that every case starts from.
enum Template {
    Sqlite(std::path::PathBuf),
    Postgres {
        admin: DatabaseConnection,
        base: String,
        name: String,
    },
}

impl Template {
    async fn sqlite() -> (Self, Fixture) {
        let path = std::env::temp_dir().join(format!("{}-orders-template.db", scratch_name()));
        let db = commerce_core::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("a SQLite file");
        let fixture = Fixture::load(&db).await;
        commerce_core::db::close(&db).await.unwrap();
        (Self::Sqlite(path), fixture)
    }

    async fn postgres(base: &str) -> (Self, Fixture) {
        let admin = Database::connect(base)
            .await
            .expect("TEST_DATABASE_URL is reachable");
        let name = format!("{}_orders_template", scratch_name());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("creating the template database");
        let db = commerce_core::db::connect(&with_database_name(base, &name))
            .await
            .expect("the template database");
        let fixture = Fixture::load(&db).await;
        // A template must have no connection while it is copied.
        db.close().await.unwrap();
        let template = Self::Postgres {
            admin,
            base: base.to_owned(),
            name,
        };
        (template, fixture)
    }

    /// A fresh copy for one case, and what [`Template::discard`] needs to remove it.
    async fn copy(&self) -> (DatabaseConnection, String) {
        let copy = scratch_name();
        match self {
            Self::Sqlite(path) => {
                let file = std::env::temp_dir().join(format!("{copy}.db"));
                std::fs::copy(path, &file).unwrap();
                let db = commerce_core::db::connect(&format!("sqlite://{}", file.display()))
                    .await
                    .unwrap();
                (db, file.display().to_string())
            }
            Self::Postgres { admin, base, name } => {
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{copy}\" TEMPLATE \"{name}\""))
                    .await
                    .expect("copying the template database");
                let db = commerce_core::db::connect(&with_database_name(base, &copy))
                    .await
                    .unwrap();
                (db, copy)
            }
        }
    }

    async fn discard(&self, db: DatabaseConnection, copy: &str) {
        let _ = db.close().await;
        match self {
            Self::Sqlite(_) => remove_sqlite(std::path::Path::new(copy)),
            Self::Postgres { admin, .. } => {
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{copy}\" WITH (FORCE)"))
                    .await
                    .expect("dropping a case database");
            }
        }
    }

    async fn remove(self) {
        match self {
            Self::Sqlite(path) => remove_sqlite(&path),
            Self::Postgres { admin, name, .. } => {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
            }
        }
    }
}

// ---- operations ----

/// Which order an operation names: one placed earlier (by index, modulo how many there
/// are), or an id that does not exist.
#[derive(Clone, Copy, Debug)]
enum Pick {
    Placed(usize),
    Unknown,
}

#[derive(Clone, Debug)]
enum Op {
    /// Lines are (SKU index, quantity); empty lists, zero quantities and repeated SKUs are
    /// invalid.
    Place {
        lines: Vec<(usize, i32)>,
        express: bool,
    },
    /// The order's shipment by index (modulo its shipments).
    Fulfill {
        order: Pick,
        shipment: usize,
    },
    Deliver {
        order: Pick,
    },
    Cancel {
        order: Pick,
    },
    /// Lines are (SKU index, quantity), the SKU maybe not in the order, maybe twice.
    Return {
        order: Pick,
        lines: Vec<(usize, i32)>,
    },
}

/// One case: the starting stock of each SKU at the two warehouses, whether the web channel
/// takes backorders, and the operations.
#[derive(Clone, Debug)]
struct Case {
    stock: [[i32; 2]; 4],
    backorders: bool,
    ops: Vec<Op>,
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        9 => any::<usize>().prop_map(Pick::Placed),
        1 => Just(Pick::Unknown),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0..4usize, 0..6i32), 0..4), any::<bool>())
            .prop_map(|(lines, express)| Op::Place { lines, express }),
        5 => (pick(), 0..3usize).prop_map(|(order, shipment)| Op::Fulfill { order, shipment }),
        2 => pick().prop_map(|order| Op::Deliver { order }),
        2 => pick().prop_map(|order| Op::Cancel { order }),
        4 => (pick(), prop::collection::vec((0..4usize, 0..4i32), 0..3))
            .prop_map(|(order, lines)| Op::Return { order, lines }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::array::uniform4(prop::array::uniform2(0..5i32)),
        prop::bool::weighted(0.3),
        prop::collection::vec(op(), 1..30),
    )
        .prop_map(|(stock, backorders, ops)| Case {
            stock,
            backorders,
            ops,
        })
}

// ---- the model ----

/// A shipment as the model sees it.
#[derive(Clone, Debug)]
struct ShipmentModel {
    id: i64,
    location_id: i64,
    /// `pending`, `backordered`, `fulfilled` or `cancelled`.
    status: String,
    /// (SKU index, units, backordered).
    parts: Vec<(usize, i32, bool)>,
}

/// A placed order as the model sees it.
#[derive(Clone, Debug)]
struct OrderModel {
    id: i64,
    status: String,
    /// Events the order should have.
    events: usize,
    /// (SKU index, quantity ordered, quantity returned).
    lines: Vec<(usize, i32, i32)>,
    shipments: Vec<ShipmentModel>,
}

impl OrderModel {
    /// Units of the SKU in fulfilled shipments (backordered ones shipped from a restock).
    fn shipped(&self, sku: usize) -> i32 {
        self.shipments
            .iter()
            .filter(|s| s.status == "fulfilled")
            .flat_map(|s| &s.parts)
            .filter(|(i, _, _)| *i == sku)
            .map(|(_, units, _)| units)
            .sum()
    }
}

/// The kind of an outcome, for comparing what happened with what should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ok,
    Invalid,
    NotFound,
    Conflict,
    Shortage,
}

fn kind_of(err: &CoreError) -> Kind {
    match err {
        CoreError::InvalidInput { .. } => Kind::Invalid,
        CoreError::NotFound { .. } => Kind::NotFound,
        CoreError::Conflict { .. } => Kind::Conflict,
        CoreError::InsufficientStock { .. } => Kind::Shortage,
        other => panic!("an unexpected error: {other:?}"),
    }
}

fn order_kind(err: &OrderError) -> Kind {
    match err {
        OrderError::Core(err) => kind_of(err),
        OrderError::Pricing { .. } | OrderError::UnknownSku { .. } => {
            panic!("the pool's SKUs are sold and priced: {err:?}")
        }
    }
}

// ---- running a case ----

struct Run<'a> {
    db: &'a DatabaseConnection,
    fx: &'a Fixture,
    backorders: bool,
    orders: Vec<OrderModel>,
}

impl Run<'_> {
    fn sku_of(&self, variant_id: i64) -> usize {
        self.fx
            .variants
            .iter()
            .position(|v| *v == variant_id)
            .expect("a pool variant")
    }

    fn resolve(&self, pick: Pick) -> Option<usize> {
        match pick {
            Pick::Placed(i) if !self.orders.is_empty() => Some(i % self.orders.len()),
            _ => None,
        }
    }

    fn order_id(&self, pick: Pick) -> i64 {
        self.resolve(pick).map_or(UNKNOWN_ID, |i| self.orders[i].id)
    }

    /// The model's view of an order the service just returned.
    fn model_of(&self, details: &OrderDetails) -> OrderModel {
        let sku_of_line: HashMap<i64, usize> = details
            .lines
            .iter()
            .map(|l| (l.id, self.sku_of(l.variant_id)))
            .collect();
        OrderModel {
            id: details.order.id,
            status: details.order.status.clone(),
            events: details.events.len(),
            lines: details
                .lines
                .iter()
                .map(|l| (sku_of_line[&l.id], l.quantity, l.returned_quantity))
                .collect(),
            shipments: details
                .shipments
                .iter()
                .map(|(s, parts)| ShipmentModel {
                    id: s.id,
                    location_id: s.location_id,
                    status: s.status.clone(),
                    parts: parts
                        .iter()
                        .map(|p| (sku_of_line[&p.order_line_id], p.quantity, p.backordered))
                        .collect(),
                })
                .collect(),
        }
    }

    async fn step(&mut self, op: &Op, now: DateTime<Utc>) -> Result<(), String> {
        let before = snapshot(self.db, self.fx).await;
        let outcome = match op {
            Op::Place { lines, express } => self.place(lines, *express, now).await?,
            Op::Fulfill { order, shipment } => self.fulfill(*order, *shipment, now).await?,
            Op::Deliver { order } => self.deliver(*order, now).await?,
            Op::Cancel { order } => self.cancel(*order, now).await?,
            Op::Return { order, lines } => self.return_lines(*order, lines, now).await?,
        };
        if outcome != Kind::Ok {
            let after = snapshot(self.db, self.fx).await;
            if before != after {
                return Err(format!(
                    "a refused operation ({outcome:?}) changed rows:\nbefore {before}\nafter  {after}"
                ));
            }
        }
        check_invariants(self.db, self.fx, &self.orders).await
    }

    async fn place(
        &mut self,
        lines: &[(usize, i32)],
        express: bool,
        now: DateTime<Utc>,
    ) -> Result<Kind, String> {
        let policy = inventory::load_policy_by_id(self.db, self.fx.web)
            .await
            .unwrap();
        let available: HashMap<i64, i64> = inventory::availability_for_variants(
            self.db,
            &policy,
            StockView::Exact,
            &self.fx.variants,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.variant_id, a.available))
        .collect();
        let mut skus: Vec<usize> = lines.iter().map(|(sku, _)| *sku).collect();
        skus.sort_unstable();
        skus.dedup();
        let expected = if lines.is_empty()
            || skus.len() != lines.len()
            || lines.iter().any(|(_, quantity)| *quantity < 1)
        {
            Kind::Invalid
        } else if !self.backorders
            && lines
                .iter()
                .any(|(sku, quantity)| i64::from(*quantity) > available[&self.fx.variants[*sku]])
        {
            Kind::Shortage
        } else {
            Kind::Ok
        };
        let input = NewOrder {
            service_level: if express {
                ServiceLevel::Express
            } else {
                ServiceLevel::Standard
            },
            actor: "proptest".into(),
            ..self.fx.web_order(lines)
        };
        let placed = match service::place(self.db, &input, now).await {
            Ok(placed) => placed,
            Err(err) => {
                let kind = order_kind(&err);
                return if kind == expected {
                    Ok(kind)
                } else {
                    Err(format!(
                        "expected {expected:?} (available {available:?}), got {err:?}"
                    ))
                };
            }
        };
        if expected != Kind::Ok {
            return Err(format!(
                "expected {expected:?} (available {available:?}), it placed {:?}",
                placed.details
            ));
        }
        let model = self.model_of(&placed.details);
        if model.status != "allocated" || model.events != 1 || !placed.created {
            return Err(format!("a new order is not allocated: {model:?}"));
        }
        for (sku, quantity) in lines {
            let (mut reserved, mut backordered) = (0, 0);
            for (i, units, back) in model.shipments.iter().flat_map(|s| &s.parts) {
                if i == sku {
                    if *back {
                        backordered += units;
                    } else {
                        reserved += units;
                    }
                }
            }
            if reserved + backordered != *quantity || (!self.backorders && backordered != 0) {
                return Err(format!(
                    "{} x{quantity} routed as {reserved} reserved + {backordered} backordered",
                    SKUS[*sku]
                ));
            }
            // Never more than the channel may sell, backorders or not.
            if i64::from(reserved) > available[&self.fx.variants[*sku]] {
                return Err(format!(
                    "{} x{quantity}: reserved {reserved} of only {} available to the channel",
                    SKUS[*sku], available[&self.fx.variants[*sku]]
                ));
            }
        }
        self.orders.push(model);
        Ok(Kind::Ok)
    }

    async fn fulfill(
        &mut self,
        pick: Pick,
        index: usize,
        now: DateTime<Utc>,
    ) -> Result<Kind, String> {
        let slot = self.resolve(pick);
        let (shipment_id, expected) = match slot {
            None => (UNKNOWN_ID, Kind::NotFound),
            Some(o) => {
                let order = &self.orders[o];
                let shipment = &order.shipments[index % order.shipments.len()];
                let expected =
                    if !matches!(order.status.as_str(), "allocated" | "partially_fulfilled") {
                        Kind::Conflict
                    } else {
                        match shipment.status.as_str() {
                            "pending" => Kind::Ok,
                            // A backorder ships from what is free at its location now.
                            "backordered" => self.backorder_ships(shipment).await,
                            _ => Kind::Conflict,
                        }
                    };
                (shipment.id, expected)
            }
        };
        let result = service::fulfill_shipment(self.db, shipment_id, "proptest", now).await;
        let details = match settle(result.map(|(details, _)| details), expected)? {
            Some(details) => details,
            None => return Ok(expected),
        };
        let o = slot.expect("a placed order");
        let order = &mut self.orders[o];
        let target = order
            .shipments
            .iter_mut()
            .find(|s| s.id == shipment_id)
            .unwrap();
        target.status = "fulfilled".into();
        order.status = if order.shipments.iter().all(|s| s.status == "fulfilled") {
            "fulfilled"
        } else {
            "partially_fulfilled"
        }
        .into();
        order.events += 1;
        same_as_model(order, &details)?;
        Ok(Kind::Ok)
    }

    /// Whether every part of a backordered shipment is free (on hand, not reserved) at its
    /// location now.
    async fn backorder_ships(&self, shipment: &ShipmentModel) -> Kind {
        for (sku, units, _) in &shipment.parts {
            let free = stock_level::Entity::find()
                .filter(stock_level::Column::VariantId.eq(self.fx.variants[*sku]))
                .filter(stock_level::Column::LocationId.eq(shipment.location_id))
                .one(self.db)
                .await
                .unwrap()
                .map_or(0, |l| l.on_hand - l.reserved);
            if free < *units {
                return Kind::Shortage;
            }
        }
        Kind::Ok
    }

    async fn deliver(&mut self, pick: Pick, now: DateTime<Utc>) -> Result<Kind, String> {
        let slot = self.resolve(pick);
        let expected = match slot {
            None => Kind::NotFound,
            Some(o) if self.orders[o].status == "fulfilled" => Kind::Ok,
            Some(_) => Kind::Conflict,
        };
        let result = service::mark_delivered(self.db, self.order_id(pick), "proptest", now).await;
        let Some(details) = settle(result, expected)? else {
            return Ok(expected);
        };
        let order = &mut self.orders[slot.expect("a placed order")];
        order.status = "delivered".into();
        order.events += 1;
        same_as_model(order, &details)?;
        Ok(Kind::Ok)
    }

    async fn cancel(&mut self, pick: Pick, now: DateTime<Utc>) -> Result<Kind, String> {
        let slot = self.resolve(pick);
        let expected = match slot {
            None => Kind::NotFound,
            Some(o)
                if matches!(
                    self.orders[o].status.as_str(),
                    "pending" | "allocated" | "partially_fulfilled"
                ) =>
            {
                Kind::Ok
            }
            Some(_) => Kind::Conflict,
        };
        let result = service::cancel(
            self.db,
            self.order_id(pick),
            "proptest",
            "changed my mind",
            now,
        )
        .await;
        let Some(details) = settle(result.map(|(details, _)| details), expected)? else {
            return Ok(expected);
        };
        let order = &mut self.orders[slot.expect("a placed order")];
        order.status = "cancelled".into();
        order.events += 1;
        // What shipped stays sold.
        for shipment in &mut order.shipments {
            if shipment.status != "fulfilled" {
                shipment.status = "cancelled".into();
            }
        }
        same_as_model(order, &details)?;
        Ok(Kind::Ok)
    }

    async fn return_lines(
        &mut self,
        pick: Pick,
        lines: &[(usize, i32)],
        now: DateTime<Utc>,
    ) -> Result<Kind, String> {
        let slot = self.resolve(pick);
        // What the order would look like after the return, when it is allowed.
        let mut after = slot.map(|o| self.orders[o].clone());
        let mut skus: Vec<usize> = lines.iter().map(|(sku, _)| *sku).collect();
        skus.sort_unstable();
        skus.dedup();
        // Empty, or a SKU named twice (its whole quantity goes on one line).
        let expected = if lines.is_empty() || skus.len() != lines.len() {
            Kind::Invalid
        } else {
            match &mut after {
                None => Kind::NotFound,
                Some(order)
                    if !(matches!(
                        order.status.as_str(),
                        "partially_fulfilled" | "fulfilled" | "delivered"
                    ) || (order.status == "cancelled"
                        && (0..SKUS.len()).any(|sku| order.shipped(sku) > 0))) =>
                {
                    Kind::Conflict
                }
                Some(order) => {
                    let mut kind = Kind::Ok;
                    for (sku, quantity) in lines {
                        let shipped = order.shipped(*sku);
                        match order.lines.iter_mut().find(|(i, _, _)| i == sku) {
                            Some((_, _, returned))
                                if *quantity >= 1 && *returned + quantity <= shipped =>
                            {
                                *returned += quantity;
                            }
                            _ => {
                                kind = Kind::Invalid;
                                break;
                            }
                        }
                    }
                    kind
                }
            }
        };
        let input: Vec<OrderLineInput> = lines
            .iter()
            .map(|(sku, quantity)| OrderLineInput {
                sku: SKUS[*sku].to_owned(),
                quantity: *quantity,
            })
            .collect();
        let result = service::return_lines(
            self.db,
            self.order_id(pick),
            &input,
            "proptest",
            "did not fit",
            now,
        )
        .await;
        let Some(details) = settle(result.map(|(details, _)| details), expected)? else {
            return Ok(expected);
        };
        let mut order = after.expect("a placed order");
        if !matches!(order.status.as_str(), "partially_fulfilled" | "cancelled")
            && order
                .lines
                .iter()
                .all(|(_, quantity, returned)| returned >= quantity)
        {
            order.status = "returned".into();
        }
        order.events += 1;
        same_as_model(&order, &details)?;
        self.orders[slot.expect("a placed order")] = order;
        Ok(Kind::Ok)
    }
}

/// The details when the call succeeded as expected, `None` when it failed as expected.
fn settle(
    result: Result<OrderDetails, CoreError>,
    expected: Kind,
) -> Result<Option<OrderDetails>, String> {
    match result {
        Ok(details) if expected == Kind::Ok => Ok(Some(details)),
        Ok(details) => Err(format!(
            "expected {expected:?}, it succeeded: {:?} (events {:?})",
            details.order, details.events
        )),
        Err(err) if kind_of(&err) == expected => Ok(None),
        Err(err) => Err(format!("expected {expected:?}, got {err:?}")),
    }
}

fn same_as_model(model: &OrderModel, details: &OrderDetails) -> Result<(), String> {
    let statuses: Vec<(i64, &str)> = details
        .shipments
        .iter()
        .map(|(s, _)| (s.id, s.status.as_str()))
        .collect();
    let expected: Vec<(i64, &str)> = model
        .shipments
        .iter()
        .map(|s| (s.id, s.status.as_str()))
        .collect();
    let returned: Vec<i32> = details.lines.iter().map(|l| l.returned_quantity).collect();
    let expected_returned: Vec<i32> = model.lines.iter().map(|(_, _, r)| *r).collect();
    if details.order.status != model.status
        || details.events.len() != model.events
        || statuses != expected
        || returned != expected_returned
    {
        return Err(format!(
            "the service's order differs from the model:\n service {:?} {statuses:?} returned {returned:?} ({} events)\n model   {model:?}",
            details.order.status,
            details.events.len()
        ));
    }
    Ok(())
}

// ---- checks ----

/// Every row an order operation may touch (levels and movements of the pool only, plus the
/// movement count), in a comparable form.
async fn snapshot(db: &DatabaseConnection, fx: &Fixture) -> String {
    let pool = fx.variants;
    let levels = stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.is_in(pool))
        .order_by_asc(stock_level::Column::Id)
        .all(db)
        .await
        .unwrap();
    let movements = count(db, "SELECT COUNT(*) FROM inventory_movement").await;
    let reservations = reservation::Entity::find()
        .order_by_asc(reservation::Column::Id)
        .all(db)
        .await
        .unwrap();
    let orders = order::Entity::find()
        .order_by_asc(order::Column::Id)
        .all(db)
        .await
        .unwrap();
    let lines = order_line::Entity::find()
        .order_by_asc(order_line::Column::Id)
        .all(db)
        .await
        .unwrap();
    let shipments = shipment::Entity::find()
        .order_by_asc(shipment::Column::Id)
        .all(db)
        .await
        .unwrap();
    let parts = shipment_line::Entity::find()
        .order_by_asc(shipment_line::Column::Id)
        .all(db)
        .await
        .unwrap();
    let events = count(db, "SELECT COUNT(*) FROM order_event").await;
    format!(
        "{levels:?}\nmovements {movements}\n{reservations:?}\n{orders:?}\n{lines:?}\n{shipments:?}\n{parts:?}\nevents {events}"
    )
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .unwrap_or_else(|err| panic!("{sql}: {err:?}"))
}

/// Stock levels anywhere in the database that break the ledger: reserved outside
/// 0..=on_hand, on_hand or reserved not the sum of the level's movements, or reserved not
/// the sum of its active reservations.
const BROKEN_LEVELS: &str = "SELECT COUNT(*) FROM stock_level l \
    LEFT JOIN (SELECT variant_id, location_id, SUM(on_hand_delta) AS on_hand, \
               SUM(reserved_delta) AS reserved \
               FROM inventory_movement GROUP BY variant_id, location_id) m \
      ON m.variant_id = l.variant_id AND m.location_id = l.location_id \
    LEFT JOIN (SELECT variant_id, location_id, SUM(quantity) AS quantity \
               FROM reservation WHERE state = 'active' GROUP BY variant_id, location_id) r \
      ON r.variant_id = l.variant_id AND r.location_id = l.location_id \
    WHERE l.reserved < 0 OR l.reserved > l.on_hand \
       OR COALESCE(m.on_hand, 0) <> l.on_hand OR COALESCE(m.reserved, 0) <> l.reserved \
       OR COALESCE(r.quantity, 0) <> l.reserved";

/// Movements and active reservations without a stock level.
const ORPHANS: &str = "SELECT (SELECT COUNT(*) FROM inventory_movement m WHERE NOT EXISTS \
      (SELECT 1 FROM stock_level l WHERE l.variant_id = m.variant_id \
       AND l.location_id = m.location_id)) \
    + (SELECT COUNT(*) FROM reservation r WHERE r.state = 'active' AND NOT EXISTS \
      (SELECT 1 FROM stock_level l WHERE l.variant_id = r.variant_id \
       AND l.location_id = r.location_id))";

/// The invariants, on the database (and, for the orders, against the model).
///
async fn check_invariants(
    db: &DatabaseConnection,
    fx: &Fixture,
    model: &[OrderModel],
) -> Result<(), String> {
    let broken = count(db, BROKEN_LEVELS).await;
    if broken != 0 {
        let levels = stock_level::Entity::find()
            .filter(stock_level::Column::VariantId.is_in(fx.variants))
            .all(db)
            .await
            .unwrap();
        return Err(format!(
            "{broken} stock levels break the ledger; the pool's: {levels:?}"
        ));
    }
    let orphans = count(db, ORPHANS).await;
    if orphans != 0 {
        return Err(format!(
            "{orphans} movements or reservations without a level"
        ));
    }
    let orders = order::Entity::find()
        .order_by_asc(order::Column::Id)
        .all(db)
        .await
        .unwrap();
    if orders.len() != model.len() {
        return Err(format!(
            "{} orders stored, {} placed",
            orders.len(),
            model.len()
        ));
    }
    let reservations = reservation::Entity::find().all(db).await.unwrap();
    let movements = inventory_movement::Entity::find()
        .filter(inventory_movement::Column::Reference.like("order:%"))
        .all(db)
        .await
        .unwrap();
    for (order, expected) in orders.into_iter().zip(model) {
        let number = order.number.clone();
        let details = service::details(db, order).await.unwrap();
        let order = &details.order;
        let tag = |e: String| format!("order {} ({}): {e}", order.id, order.status);
        if order.id != expected.id || order.status != expected.status {
            return Err(tag(format!("the model says {expected:?}")));
        }
        // History: a chain from `allocated` to the status, one event per transition.
        let mut previous: Option<&str> = None;
        for event in &details.events {
            if event.from_status.as_deref() != previous {
                return Err(tag(format!("broken history: {:?}", details.events)));
            }
            previous = Some(&event.to_status);
        }
        if details.events.first().map(|e| e.to_status.as_str()) != Some("allocated")
            || previous != Some(order.status.as_str())
            || details.events.len() != expected.events
        {
            return Err(tag(format!(
                "history {:?} does not end in the status after {} events",
                details.events, expected.events
            )));
        }
        // Shipments: all cancelled with the order, all gone once it is fulfilled.
        for (shipment, _) in &details.shipments {
            let fine = match order.status.as_str() {
                "cancelled" => matches!(shipment.status.as_str(), "cancelled" | "fulfilled"),
                "fulfilled" | "delivered" | "returned" => shipment.status == "fulfilled",
                _ => shipment.status != "cancelled",
            };
            if !fine {
                return Err(tag(format!("shipment {shipment:?}")));
            }
        }
        // Per (variant, location): units reserved when placed, still held by pending
        // shipments, released by cancelled ones, and shipped (all, and those that had been
        // reserved; a backorder ships straight from on hand).
        #[derive(Debug, Default)]
        struct Units {
            reserved: i64,
            pending: i64,
            released: i64,
            shipped: i64,
            shipped_reserved: i64,
        }
        let mut units: HashMap<(i64, i64), Units> = HashMap::new();
        for (shipment, parts) in &details.shipments {
            for part in parts {
                let line = details
                    .lines
                    .iter()
                    .find(|l| l.id == part.order_line_id)
                    .ok_or_else(|| tag(format!("a part of another order: {part:?}")))?;
                let at = units
                    .entry((line.variant_id, shipment.location_id))
                    .or_default();
                let q = i64::from(part.quantity);
                let reserved = if part.backordered { 0 } else { q };
                at.reserved += reserved;
                match shipment.status.as_str() {
                    "pending" => at.pending += reserved,
                    "cancelled" => at.released += reserved,
                    "fulfilled" => {
                        at.shipped += q;
                        at.shipped_reserved += reserved;
                    }
                    _ => {}
                }
            }
        }
        // Reservations: exactly the pending shipments' units.
        let mut held: HashMap<(i64, i64), i64> = HashMap::new();
        for r in reservations
            .iter()
            .filter(|r| r.owner_kind == "order" && r.owner_ref == number && r.state == "active")
        {
            *held.entry((r.variant_id, r.location_id)).or_default() += i64::from(r.quantity);
        }
        let pending: HashMap<(i64, i64), i64> = units
            .iter()
            .filter(|(_, u)| u.pending != 0)
            .map(|(key, u)| (*key, u.pending))
            .collect();
        if held != pending {
            return Err(tag(format!(
                "active reservations {held:?}, pending shipments hold {pending:?}"
            )));
        }
        // The ledger: one movement kind per step of the lifecycle, returned units back where
        // they were sold.
        let reference = format!("order:{number}");
        let mut ledger: HashMap<(&str, i64, i64), (i64, i64)> = HashMap::new();
        for m in movements
            .iter()
            .filter(|m| m.reference.as_deref() == Some(&reference))
        {
            let entry = ledger
                .entry((m.kind.as_str(), m.variant_id, m.location_id))
                .or_default();
            entry.0 += i64::from(m.on_hand_delta);
            entry.1 += i64::from(m.reserved_delta);
        }
        let of = |kind: &str, key: (i64, i64)| {
            ledger
                .get(&(kind, key.0, key.1))
                .copied()
                .unwrap_or_default()
        };
        for (key, u) in &units {
            let expected = [
                ("reserve", (0, u.reserved)),
                ("release", (0, -u.released)),
                ("sale", (-u.shipped, -u.shipped_reserved)),
            ];
            for (kind, sums) in expected {
                if of(kind, *key) != sums {
                    return Err(tag(format!(
                        "{kind} movements {:?} at {key:?}, expected {sums:?} for {u:?}",
                        of(kind, *key)
                    )));
                }
            }
            let back = of("return", *key);
            if back.1 != 0 || back.0 < 0 || back.0 > u.shipped {
                return Err(tag(format!(
                    "returns {back:?} at {key:?} where {} were sold; ledger {ledger:?}",
                    u.shipped
                )));
            }
        }
        for (kind, variant_id, location_id) in ledger.keys() {
            if !units.contains_key(&(*variant_id, *location_id))
                || !matches!(*kind, "reserve" | "release" | "sale" | "return")
            {
                return Err(tag(format!(
                    "a {kind} movement where the order has nothing: {ledger:?}"
                )));
            }
        }
        // Lines: every unit routed once, never more back than shipped.
        for line in &details.lines {
            let routed: i32 = details
                .shipments
                .iter()
                .flat_map(|(_, parts)| parts)
                .filter(|p| p.order_line_id == line.id)
                .map(|p| p.quantity)
                .sum();
            let shipped: i64 = units
                .iter()
                .filter(|((variant_id, _), _)| *variant_id == line.variant_id)
                .map(|(_, u)| u.shipped)
                .sum();
            let returns: i64 = ledger
                .iter()
                .filter(|((kind, variant_id, _), _)| {
                    *kind == "return" && *variant_id == line.variant_id
                })
                .map(|(_, (on_hand, _))| on_hand)
                .sum();
            if routed != line.quantity
                || line.returned_quantity < 0
                || i64::from(line.returned_quantity) > shipped
                || returns != i64::from(line.returned_quantity)
            {
                return Err(tag(format!(
                    "line {line:?}: routed {routed}, shipped {shipped}, returns in the ledger {returns}"
                )));
            }
        }
    }
    Ok(())
}

// ---- the properties ----

async fn run_case(db: &DatabaseConnection, fx: &Fixture, case: &Case) -> Result<(), String> {
    for (sku, at) in case.stock.iter().enumerate() {
        for (location, units) in at.iter().enumerate() {
            set_on_hand(db, fx.variants[sku], fx.stocked[location], *units).await;
        }
    }
    if case.backorders {
        let web = channel::Entity::find_by_id(fx.web)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        let mut web: channel::ActiveModel = web.into();
        web.backorders = Set(true);
        web.update(db).await.unwrap();
    }
    let mut run = Run {
        db,
        fx,
        backorders: case.backorders,
        orders: Vec::new(),
    };
    check_invariants(db, fx, &run.orders).await?;
    for (step, op) in case.ops.iter().enumerate() {
        // A few minutes apart, all before the warehouses' cut-offs: routing stays the same.
        let now = t0() + Duration::minutes(2 * step as i64);
        run.step(op, now)
            .await
            .map_err(|err| format!("step {step} {op:?}: {err}"))?;
    }
    Ok(())
}

/// Runs `cases` random cases on copies of `template`'s database.
fn check_sequences(cases: u32, template: impl AsyncFnOnce() -> (Template, Fixture)) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (template, fx) = runtime.block_on(template());
    // PROPTEST_CASES overrides the count, for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 400,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let outcome = runtime.block_on(async {
            let (db, copy) = template.copy().await;
            let outcome = run_case(&db, &fx, &case).await;
            template.discard(db, &copy).await;
            outcome
        });
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        Ok(())
    });
    runtime.block_on(template.remove());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => {
            panic!("{reason}\nminimal failing case: {case:#?}")
        }
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn random_lifecycle_sequences_keep_stock_ledger_and_history_consistent_on_sqlite() {
    check_sequences(24, Template::sqlite);
}

#[test]
fn random_lifecycle_sequences_keep_stock_ledger_and_history_consistent_on_postgres() {
    let Some(base) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("skipped on PostgreSQL: TEST_DATABASE_URL is unset");
        return;
    };
    check_sequences(8, async || Template::postgres(&base).await);
}

// ---- found by the property: minimal sequences ----

/// Runs `case` on a fresh database with the demo data (SQLite, then PostgreSQL when
/// `TEST_DATABASE_URL` is set) and fails with the step that broke the model or an invariant.
async fn replay(test: &str, case: Case) {
    support::on_each_database(test, move |db| {
        let case = case.clone();
        async move {
            let fx = Fixture::load(&db).await;
            if let Err(err) = run_case(&db, &fx, &case).await {
                panic!("{err}");
            }
        }
    })
    .await;
}

/// TS-0001-M only: `units` at WH-EAST and WH-WEST.
fn m_stock(east: i32, west: i32) -> [[i32; 2]; 4] {
    [[0, 0], [east, west], [0, 0], [0, 0]]
}

#[tokio::test]
// Found by the property: the second line was checked against the units returnable before
// the call, so one unit shipped came back twice. `return_lines` now refuses a repeated SKU.
async fn a_return_naming_a_sku_twice_never_exceeds_what_shipped() {
    replay(
        "a return naming a SKU twice",
        Case {
            stock: m_stock(3, 0),
            backorders: false,
            ops: vec![
                Op::Place {
                    lines: vec![(1, 1)],
                    express: false,
                },
                Op::Fulfill {
                    order: Pick::Placed(0),
                    shipment: 0,
                },
                Op::Return {
                    order: Pick::Placed(0),
                    lines: vec![(1, 1), (1, 1)],
                },
            ],
        },
    )
    .await;
}

#[tokio::test]
// Found by the property before `return_lines` spread returns over the shipping locations:
// all four units went back to WH-EAST, which had sold three.
async fn units_of_a_line_split_over_two_warehouses_return_where_they_were_sold() {
    replay(
        "a split line returned",
        Case {
            stock: m_stock(3, 3),
            backorders: false,
            ops: vec![
                Op::Place {
                    lines: vec![(1, 4)],
                    express: false,
                },
                Op::Fulfill {
                    order: Pick::Placed(0),
                    shipment: 0,
                },
                Op::Fulfill {
                    order: Pick::Placed(0),
                    shipment: 1,
                },
                Op::Return {
                    order: Pick::Placed(0),
                    lines: vec![(1, 4)],
                },
            ],
        },
    )
    .await;
}

#[tokio::test]
async fn backordered_orders_leave_the_safety_stock_alone() {
    support::on_each_database("backorders and safety stock", |db| async move {
        let fx = Fixture::load(&db).await;
        // One unit on hand in all, two kept as the web channel's safety stock: nothing to
        // sell.
        set_on_hand(&db, fx.variants[1], fx.stocked[0], 1).await;
        for location in &fx.stocked[1..] {
            set_on_hand(&db, fx.variants[1], *location, 0).await;
        }
        let web = channel::Entity::find_by_id(fx.web)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let mut web: channel::ActiveModel = web.into();
        web.backorders = Set(true);
        web.update(&db).await.unwrap();
        let input = fx.web_order(&[(1, 1)]);
        let placed = service::place(&db, &input, t0()).await.unwrap();
        let parts: Vec<_> = placed
            .details
            .shipments
            .iter()
            .flat_map(|(s, parts)| {
                parts
                    .iter()
                    .map(move |p| (s.status.clone(), p.quantity, p.backordered))
            })
            .collect();
        assert_eq!(
            parts,
            vec![("backordered".to_owned(), 1, true)],
            "the unit is backordered, not taken from the safety stock"
        );
    })
    .await;
}

/// What placing returns is what it wrote (the stock levels it reuses from its routing read
/// and the ones `UPDATE … RETURNING` gives back included): a split order, and a backorder at
/// the location that ships the rest.
#[tokio::test]
async fn a_placed_order_is_returned_as_it_was_written() {
    support::on_each_database("placed as written", |db| async move {
        let fx = Fixture::load(&db).await;
        let [east, west] = fx.stocked;
        set_on_hand(&db, fx.variants[1], east, 3).await;
        set_on_hand(&db, fx.variants[1], west, 3).await;
        set_on_hand(&db, fx.variants[2], east, 3).await;
        set_on_hand(&db, fx.variants[2], west, 0).await;
        set_on_hand(&db, fx.variants[3], east, 5).await;
        set_on_hand(&db, fx.variants[3], west, 0).await;
        let order_of = |lines: &[(usize, i32)]| NewOrder {
            note: "as written".into(),
            ..fx.web_order(lines)
        };
        let split = service::place(&db, &order_of(&[(1, 4), (2, 1)]), t0())
            .await
            .unwrap();
        assert_eq!(split.details.shipments.len(), 2, "{:?}", split.details);
        // Backorders on: 3 of 5 units sellable at WH-EAST (2 kept as safety stock), the 4th
        // backordered there too.
        let web = channel::Entity::find_by_id(fx.web)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let mut web: channel::ActiveModel = web.into();
        web.backorders = Set(true);
        web.update(&db).await.unwrap();
        let backordered = service::place(&db, &order_of(&[(3, 4)]), t0())
            .await
            .unwrap();
        let statuses: Vec<&str> = backordered
            .details
            .shipments
            .iter()
            .map(|(s, _)| s.status.as_str())
            .collect();
        assert_eq!(
            statuses,
            ["pending", "backordered"],
            "{:?}",
            backordered.details
        );
        for placed in [split, backordered] {
            assert_written(&db, &placed).await;
            assert!(!placed.change.levels.is_empty());
            for level in &placed.change.levels {
                let row = stock_level::Entity::find_by_id(level.id)
                    .one(&db)
                    .await
                    .unwrap();
                assert_eq!(Some(level), row.as_ref());
            }
        }
    })
    .await;
}

/// `placed` is what the database holds: the order with its parts, its ledger entries (one
/// per level it changed, referencing the order), and a reservation for each unit from stock.
async fn assert_written(db: &DatabaseConnection, placed: &service::Placed) {
    assert!(placed.created);
    let stored = order::Entity::find_by_id(placed.details.order.id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(placed.details, service::details(db, stored).await.unwrap());
    assert_eq!(placed.change.movements.len(), placed.change.levels.len());
    for movement in &placed.change.movements {
        let row = inventory_movement::Entity::find_by_id(movement.id)
            .one(db)
            .await
            .unwrap();
        assert_eq!(Some(movement), row.as_ref());
        assert_eq!(
            movement.reference.as_deref(),
            Some(format!("order:{}", placed.details.order.number).as_str())
        );
    }
    let reservations = reservation::Entity::find()
        .filter(reservation::Column::OwnerRef.eq(placed.details.order.number.clone()))
        .all(db)
        .await
        .unwrap();
    let held: i32 = reservations.iter().map(|r| r.quantity).sum();
    let shipped: i32 = placed
        .details
        .shipments
        .iter()
        .flat_map(|(_, lines)| lines)
        .filter(|l| !l.backordered)
        .map(|l| l.quantity)
        .sum();
    assert_eq!(held, shipped, "a reservation for each unit from stock");
}

#[tokio::test]
async fn units_shipped_before_a_cancel_can_still_be_returned() {
    support::on_each_database("a return after a partial cancel", |db| async move {
        let fx = Fixture::load(&db).await;
        let case = Case {
            stock: m_stock(3, 3),
            backorders: false,
            ops: vec![
                // Split: 3 from WH-EAST, 1 from WH-WEST.
                Op::Place {
                    lines: vec![(1, 4)],
                    express: false,
                },
                Op::Fulfill {
                    order: Pick::Placed(0),
                    shipment: 0,
                },
                Op::Cancel {
                    order: Pick::Placed(0),
                },
            ],
        };
        run_case(&db, &fx, &case).await.unwrap();
        let cancelled = order::Entity::find().one(&db).await.unwrap().unwrap();
        assert_eq!(cancelled.status, "cancelled");
        let back = [OrderLineInput {
            sku: SKUS[1].into(),
            quantity: 1,
        }];
        let returned = service::return_lines(
            &db,
            cancelled.id,
            &back,
            "test",
            "did not fit",
            t0() + Duration::hours(1),
        )
        .await;
        assert!(returned.is_ok(), "a shipped unit comes back: {returned:?}");
    })
    .await;
}

// ---- orders placed in batches (PostgreSQL) ----

async fn priced(db: &DatabaseConnection, input: NewOrder) -> PricedOrder {
    let policy = inventory::service::load_policy_by_id(db, input.channel_id)
        .await
        .unwrap();
    PricedOrder::new(&FromDatabase(db), Arc::new(policy), input, t0())
        .await
        .expect("priced")
}

#[tokio::test]
async fn a_batch_places_its_orders_as_placing_each_alone_would() {
    support::on_each_database("orders in a batch", |db| async move {
        let fx = Fixture::load(&db).await;
        let [east, west] = fx.stocked;
        // web keeps 2 units of safety stock: 4 of TS-0001-M's 6 are sellable.
        set_on_hand(&db, fx.variants[1], east, 3).await;
        set_on_hand(&db, fx.variants[1], west, 3).await;
        set_on_hand(&db, fx.variants[2], east, 4).await;
        set_on_hand(&db, fx.variants[0], east, 9).await;
        let earlier = service::place(
            &db,
            &NewOrder {
                external_ref: Some("MKT-1".into()),
                ..fx.web_order(&[(0, 1)])
            },
            t0(),
        )
        .await
        .unwrap();
        let inputs = [
            // Split over both warehouses: all 4 sellable units.
            fx.web_order(&[(1, 4), (2, 1)]),
            // Nothing of TS-0001-M left for these two once the first is placed.
            fx.web_order(&[(1, 1)]),
            fx.web_order(&[(0, 2), (1, 1)]),
            fx.web_order(&[(0, 2)]),
            // A repeat of the order placed before.
            NewOrder {
                external_ref: Some("MKT-1".into()),
                ..fx.web_order(&[(0, 1)])
            },
            fx.web_order(&[(0, 3), (2, 1)]),
        ];
        let mut batch = Vec::new();
        for input in inputs.clone() {
            batch.push(priced(&db, input).await);
        }
        let orders_before = count(&db, "SELECT COUNT(*) FROM orders").await;
        let lines_before = count(&db, "SELECT COUNT(*) FROM order_line").await;
        let movements_before = count(&db, "SELECT COUNT(*) FROM inventory_movement").await;
        let placed = match batch::place_batch(&db, &batch).await {
            Ok(placed) => placed,
            Err(err) => {
                assert_eq!(db.get_database_backend(), sea_orm::DbBackend::Sqlite);
                assert!(err.to_string().contains("PostgreSQL only"), "{err}");
                assert_eq!(
                    count(&db, "SELECT COUNT(*) FROM orders").await,
                    orders_before
                );
                eprintln!("SQLite refuses batches, as expected; the rest runs on PostgreSQL");
                return;
            }
        };
        let placed_at: Vec<bool> = placed
            .iter()
            .map(|answer| matches!(answer, Batched::Placed(_)))
            .collect();
        assert_eq!(placed_at, [true, false, false, true, false, true]);
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM orders").await,
            orders_before + 3,
            "only the placed orders are written"
        );
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM order_line").await,
            lines_before + 5,
            "only the placed orders' lines are written"
        );
        // 3 + 1 + 2 reservations (the first order's TS-0001-M at both warehouses), one ledger
        // entry each.
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM inventory_movement").await,
            movements_before + 6
        );
        assert_eq!(
            count(&db, BROKEN_LEVELS).await,
            0,
            "ledger and levels agree"
        );
        // Each placed order is what the database holds; each stock change shows its level as
        // it was after that order's own reservations, with one version per reservation.
        let mut last_seen: HashMap<i64, stock_level::Model> = HashMap::new();
        for placed in placed.iter().filter_map(|answer| match answer {
            Batched::Placed(placed) => Some(placed),
            _ => None,
        }) {
            assert_written(&db, placed).await;
            for level in &placed.change.levels {
                if let Some(before) = last_seen.get(&level.id) {
                    assert!(level.version > before.version, "{level:?} after {before:?}");
                    assert!(level.reserved > before.reserved);
                }
                last_seen.insert(level.id, level.clone());
            }
        }
        for level in last_seen.values() {
            let row = stock_level::Entity::find_by_id(level.id)
                .one(&db)
                .await
                .unwrap();
            assert_eq!(
                Some(level),
                row.as_ref(),
                "the last change is the level as stored"
            );
        }
        // What the batch left alone, placed alone, answers as a single placement does.
        let short = service::place(&db, &inputs[1], t0()).await.unwrap_err();
        assert!(
            matches!(short, OrderError::Core(CoreError::InsufficientStock { .. })),
            "{short:?}"
        );
        let repeat = service::place(&db, &inputs[4], t0()).await.unwrap();
        assert!(!repeat.created);
        assert_eq!(repeat.details.order.id, earlier.details.order.id);
    })
    .await;
}

/// A PostgreSQL database with the fixture, and its template (to discard both), when
/// `TEST_DATABASE_URL` is set.
async fn postgres_copy() -> Option<(Template, Fixture, DatabaseConnection, String)> {
    let Some(base) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("skipped: TEST_DATABASE_URL is unset (batches are placed on PostgreSQL only)");
        return None;
    };
    let (template, fx) = Template::postgres(&base).await;
    let (db, copy) = template.copy().await;
    Some((template, fx, db, copy))
}

#[tokio::test]
async fn concurrent_batches_and_single_placements_never_oversell() {
    let Some((template, fx, db, copy)) = postgres_copy().await else {
        return;
    };
    let [east, west] = fx.stocked;
    // 12 on hand over two warehouses, 2 kept as web's safety stock: 10 sellable units.
    set_on_hand(&db, fx.variants[1], east, 7).await;
    set_on_hand(&db, fx.variants[1], west, 5).await;
    let orders_before = count(&db, "SELECT COUNT(*) FROM orders").await;
    let mut batches = Vec::new();
    for _ in 0..4 {
        let mut batch = Vec::new();
        for _ in 0..8 {
            batch.push(priced(&db, fx.web_order(&[(1, 1)])).await);
        }
        batches.push(batch);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for batch in batches {
        let db = db.clone();
        tasks.spawn(async move {
            // Orders whose variant another transaction held go in the next batch, as the
            // gateway's writers do.
            let mut batch = batch;
            let mut placed = 0;
            while !batch.is_empty() {
                let answers = batch::place_batch(&db, &batch).await.expect("a batch");
                let mut busy = Vec::new();
                for (order, answer) in batch.into_iter().zip(answers) {
                    match answer {
                        Batched::Placed(_) => placed += 1,
                        Batched::Busy => busy.push(order),
                        Batched::Alone => {}
                    }
                }
                batch = busy;
                tokio::task::yield_now().await;
            }
            placed
        });
    }
    for _ in 0..8 {
        let db = db.clone();
        let input = fx.web_order(&[(1, 1)]);
        tasks.spawn(async move {
            match service::place(&db, &input, t0()).await {
                Ok(_) => 1,
                Err(OrderError::Core(CoreError::InsufficientStock { .. })) => 0,
                Err(err) => panic!("{err:?}"),
            }
        });
    }
    let mut placed = 0;
    while let Some(done) = tasks.join_next().await {
        placed += done.unwrap();
    }
    assert_eq!(
        placed, 10,
        "exactly the sellable units are sold, of 40 one-unit orders"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM orders").await,
        orders_before + 10
    );
    let sold = count(
        &db,
        &format!(
            "SELECT COALESCE(SUM(reserved), 0) FROM stock_level WHERE variant_id = {}",
            fx.variants[1]
        ),
    )
    .await;
    assert_eq!(sold, 10);
    assert_eq!(
        count(&db, BROKEN_LEVELS).await,
        0,
        "ledger and levels agree"
    );
    template.discard(db, &copy).await;
    template.remove().await;
}

#[tokio::test]
async fn an_order_whose_variant_another_transaction_holds_waits_for_a_later_batch() {
    let Some((template, fx, db, copy)) = postgres_copy().await else {
        return;
    };
    let [east, _] = fx.stocked;
    set_on_hand(&db, fx.variants[0], east, 9).await;
    set_on_hand(&db, fx.variants[1], east, 9).await;
    let batch = vec![
        priced(&db, fx.web_order(&[(0, 1)])).await,
        priced(&db, fx.web_order(&[(1, 1)])).await,
        priced(&db, fx.web_order(&[(0, 1), (1, 1)])).await,
    ];
    let orders_before = count(&db, "SELECT COUNT(*) FROM orders").await;
    // Another transaction holds TS-0001-M's stock (as a placement does while it writes).
    let holder = sea_orm::TransactionTrait::begin(&db).await.unwrap();
    holder
        .execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock(hashtextextended('inventory.variant:{}', 0))",
            fx.variants[1]
        ))
        .await
        .unwrap();
    // A batch that waited for the lock would wait for the holder, which waits for it: the
    // guard only turns that hang into a failure.
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        batch::place_batch(&db, &batch),
    )
    .await
    .expect("the batch does not wait for the lock")
    .unwrap();
    let kinds: Vec<&str> = answers
        .iter()
        .map(|answer| match answer {
            Batched::Placed(_) => "placed",
            Batched::Busy => "busy",
            Batched::Alone => "alone",
        })
        .collect();
    assert_eq!(kinds, ["placed", "busy", "busy"]);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM orders").await,
        orders_before + 1,
        "the other SKU's order is placed; nothing of the held SKU's orders is written"
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM order_line WHERE variant_id = {}",
                fx.variants[1]
            )
        )
        .await,
        0
    );
    holder.rollback().await.unwrap();
    assert_eq!(count(&db, BROKEN_LEVELS).await, 0);
    // With the lock free the held orders are placed.
    let placed = batch::place_batch(&db, &batch[1..]).await.unwrap();
    assert!(
        placed
            .iter()
            .all(|answer| matches!(answer, Batched::Placed(_)))
    );
    template.discard(db, &copy).await;
    template.remove().await;
}

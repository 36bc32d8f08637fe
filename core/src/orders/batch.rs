//! Placing many orders in one transaction, on PostgreSQL (the rules of
//! [`super::service::place_with`], in fewer statements).
//!
//! Under load the gateway gathers the `placeOrder` requests that arrive together and places
//! them here, in one transaction: every ordered variant's lock is taken without waiting (in
//! one statement; an order with a variant another transaction holds is left for a later batch,
//! [`Batched::Busy`], with nothing written), then the orders and their lines are written (a
//! repeat, whose number, `externalRef` or idempotency key is taken, is skipped), the variants'
//! levels and holds read once, the orders routed one after another over that stock (each
//! sees what the ones before it reserved), and each table's rows written in one multi-row
//! statement: about a dozen statements for the whole batch instead of about a dozen per
//! order. Each order is written exactly as placing it alone would write it, and each gets its
//! own [`Placed`] (its stock change carries the levels as they were after its own
//! reservations). An order the stock cannot cover loses its rows again before the commit.
//!
//! An order the batch does not place for good is answered [`Batched::Alone`], and the caller
//! places it alone, which answers it as a single placement does: an order the stock cannot
//! cover (the shortage named then, against the stock as it is then), one whose routing fails,
//! or a repeat (it is answered its order). A batch never waits for a variant's lock, and any
//! other lock (another transaction's unique key) at most [`BATCH_LOCK_WAIT`]; a batch that
//! fails places none of its orders.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, Value,
};

use super::routing::Plan;
use super::service::{
    NewOrder, OrderDetails, OrderError, Placed, PricedLine, Stock, check_for, head_rows,
    order_hold, placed_event, price, read_stock, route_over, shipment_line_row, shipment_row,
};
use crate::CoreError;
use crate::channels::ChannelPolicy;
use crate::db::rows_statement;
use crate::entities::{
    inventory_movement, order, order_event, order_line, reservation, shipment, shipment_line,
    stock_level,
};
use crate::inventory::service::{
    Hold, Move, Owner, OwnerKind, StockChange, in_write, micros, movement_row, reservation_row,
};
use crate::pricing::load::PriceInputs;

/// Most orders in one batch.
pub const MAX_ORDERS: usize = 32;
/// The longest a batch waits for a lock (another transaction's unique key, say; it never
/// waits for a variant's) before it fails and its orders are placed alone.
pub const BATCH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// Most lines of an order placed in a batch (larger orders are placed alone; this keeps a
/// batch's statements well inside PostgreSQL's bind parameter limit).
pub const MAX_LINES: usize = 10;

/// An order priced for its viewer, ready to be placed in a batch.
#[derive(Clone, Debug)]
pub struct PricedOrder {
    /// The order's channel.
    pub policy: Arc<ChannelPolicy>,
    /// The order as asked.
    pub input: NewOrder,
    /// Its lines, priced for its viewer.
    pub lines: Vec<PricedLine>,
    /// When it was placed (to the microsecond, as stored).
    pub now: DateTime<Utc>,
}

impl PricedOrder {
    /// Checks and prices `input` as placing it alone would (its errors are that path's).
    pub async fn new(
        inputs: &impl PriceInputs,
        policy: Arc<ChannelPolicy>,
        input: NewOrder,
        now: DateTime<Utc>,
    ) -> Result<Self, OrderError> {
        check_for(&policy, &input)?;
        let now = micros(now);
        let lines = price(inputs, &policy, &input, now).await?;
        Ok(Self {
            policy,
            input,
            lines,
            now,
        })
    }

    /// Whether it may go in a batch (else it is placed alone).
    pub fn batchable(&self) -> bool {
        self.lines.len() <= MAX_LINES
    }
}

/// What a batch did with one of its orders.
#[derive(Debug)]
pub enum Batched {
    /// Placed: what placing did.
    Placed(Box<Placed>),
    /// Not placed: the caller places it alone (short of stock, a repeat, its routing failed).
    Alone,
    /// Another transaction holds one of its variants: nothing was written; place it in a
    /// later batch.
    Busy,
}

/// Places `orders` in one transaction (see the module documentation): what it did with each.
pub async fn place_batch(
    db: &DatabaseConnection,
    orders: &[PricedOrder],
) -> Result<Vec<Batched>, CoreError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Err(CoreError::invalid(
            "orders",
            "orders are placed in batches on PostgreSQL only",
        ));
    }
    if orders.len() > MAX_ORDERS || orders.iter().any(|o| !o.batchable()) {
        return Err(CoreError::invalid(
            "orders",
            format!("at most {MAX_ORDERS} orders of at most {MAX_LINES} lines"),
        ));
    }
    in_write(db, async |txn| place_in(txn, orders).await).await
}

/// One order the batch writes: its plan, and its row and its lines' rows as inserted.
struct Writing<'a> {
    index: usize,
    order: &'a PricedOrder,
    plan: Plan,
    head: order::Model,
    lines: Vec<order_line::Model>,
}

async fn place_in(
    txn: &DatabaseTransaction,
    orders: &[PricedOrder],
) -> Result<Vec<Batched>, CoreError> {
    let mut answers: Vec<Batched> = orders.iter().map(|_| Batched::Alone).collect();
    // No wait of this batch outlasts BATCH_LOCK_WAIT (a unique key held by a transaction that
    // waits on this one fails the batch, and its orders are placed alone).
    txn.execute_unprepared(&format!(
        "SET LOCAL lock_timeout = {}",
        BATCH_LOCK_WAIT.as_millis()
    ))
    .await?;
    // The variants' locks, without waiting: an order with a variant another transaction
    // holds waits for a later batch, and the others go on.
    let mut variant_ids: Vec<i64> = orders
        .iter()
        .flat_map(|o| o.lines.iter().map(|l| l.variant.id))
        .collect();
    variant_ids.sort_unstable();
    variant_ids.dedup();
    let locked = try_lock_variants(txn, &variant_ids).await?;
    let mut ready = Vec::with_capacity(orders.len());
    for (index, order) in orders.iter().enumerate() {
        if order.lines.iter().all(|l| locked.contains(&l.variant.id)) {
            ready.push(index);
        } else {
            answers[index] = Batched::Busy;
        }
    }
    // The orders and their lines, as a single placement writes them; an order whose unique
    // number, reference or key is taken (a repeat) is skipped.
    let mut rows = Vec::with_capacity(ready.len());
    for &index in &ready {
        let order = &orders[index];
        rows.push((
            index,
            head_rows(&order.policy, &order.input, &order.lines, order.now)?,
        ));
    }
    if rows.is_empty() {
        return Ok(answers);
    }
    // Inserted in the order of their unique keys, so two batches never wait on each other's.
    let mut heads_in_key_order: Vec<&order::ActiveModel> =
        rows.iter().map(|(_, (head, _))| head).collect();
    heads_in_key_order.sort_by(|a, b| {
        let key = |head: &order::ActiveModel| {
            (
                *head.channel_id.as_ref(),
                head.external_ref.as_ref().clone(),
                head.idempotency_key.as_ref().clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let inserted = order::Entity::insert_many(heads_in_key_order.into_iter().cloned())
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .exec_with_returning(txn)
        .await?;
    let mut by_number: HashMap<String, order::Model> = inserted
        .into_iter()
        .map(|o| (o.number.clone(), o))
        .collect();
    let heads: Vec<(usize, order::Model, Vec<order_line::ActiveModel>)> = rows
        .into_iter()
        .filter_map(|(index, (head, lines))| {
            Some((
                index,
                by_number.remove(head.number.as_ref().as_str())?,
                lines,
            ))
        })
        .collect();
    if heads.is_empty() {
        return Ok(answers);
    }
    let lines = order_line::Entity::insert_many(heads.iter().flat_map(|(_, head, lines)| {
        lines.iter().cloned().map(|mut line| {
            line.order_id = sea_orm::Set(head.id);
            line
        })
    }))
    .exec_with_returning(txn)
    .await?;
    let counts: Vec<usize> = heads.iter().map(|(_, _, lines)| lines.len()).collect();
    let lines = split(lines, &counts, "order_line")?;
    for ((index, head, _), rows) in heads.iter().zip(&lines) {
        check_rows(
            rows.iter()
                .zip(&orders[*index].lines)
                .all(|(row, line)| row.order_id == head.id && row.variant_id == line.variant.id),
            "order_line",
        )?;
    }

    // Then the stock (locked), read once, and routed one order after another (each over
    // what the ones before it left). An order it cannot cover loses its rows again.
    let mut variant_ids: Vec<i64> = heads
        .iter()
        .flat_map(|(index, _, _)| orders[*index].lines.iter().map(|l| l.variant.id))
        .collect();
    variant_ids.sort_unstable();
    variant_ids.dedup();
    let start = read_stock(txn, &variant_ids).await?;
    let mut stock = Stock {
        levels: start.levels.clone(),
        holds: start.holds.clone(),
    };
    let mut writing = Vec::with_capacity(heads.len());
    let mut dropped = Vec::new();
    for ((index, head, _), lines) in heads.into_iter().zip(lines) {
        let order = &orders[index];
        let plan = route_over(&order.policy, &order.input, &order.lines, order.now, &stock)
            .ok()
            .and_then(|(plan, _)| take(&mut stock, &plan).then_some(plan));
        match plan {
            Some(plan) => writing.push(Writing {
                index,
                order,
                plan,
                head,
                lines,
            }),
            None => dropped.push(head.id),
        }
    }
    if !dropped.is_empty() {
        order_line::Entity::delete_many()
            .filter(order_line::Column::OrderId.is_in(dropped.iter().copied()))
            .exec(txn)
            .await?;
        order::Entity::delete_many()
            .filter(order::Column::Id.is_in(dropped))
            .exec(txn)
            .await?;
    }
    if writing.is_empty() {
        return Ok(answers);
    }

    let shipments = shipment::Entity::insert_many(writing.iter().flat_map(|w| {
        w.plan
            .groups
            .iter()
            .map(|group| shipment_row(w.head.id, &w.order.input, group, w.order.now))
    }))
    .exec_with_returning(txn)
    .await?;
    let shipments = split(
        shipments,
        &per(&writing, |w| w.plan.groups.len()),
        "shipment",
    )?;
    for (w, rows) in writing.iter().zip(&shipments) {
        check_rows(
            rows.iter().zip(&w.plan.groups).all(|(row, group)| {
                row.order_id == w.head.id && row.location_id == group.location_id
            }),
            "shipment",
        )?;
    }

    // The reservations and their ledger entries, over the stock as it was read: each order's
    // levels are as they were after its own reservations.
    let mut levels: HashMap<(i64, i64), stock_level::Model> = start
        .levels
        .into_values()
        .flatten()
        .map(|level| ((level.variant_id, level.location_id), level))
        .collect();
    let mut reservations = Vec::new();
    let mut movements = Vec::new();
    // Per order, the level after each of its reservations.
    let mut after: Vec<Vec<stock_level::Model>> = Vec::with_capacity(writing.len());
    // Per level: units, reservations and the time of the last.
    let mut totals: BTreeMap<i64, (i32, i64, DateTime<Utc>)> = BTreeMap::new();
    for w in &writing {
        let owner = Owner {
            kind: OwnerKind::Order,
            reference: w.head.number.clone(),
        };
        let mut own = Vec::new();
        for group in &w.plan.groups {
            for part in group.lines.iter().filter(|part| !part.backordered) {
                let level = levels
                    .get_mut(&(part.variant_id, group.location_id))
                    .ok_or_else(|| inconsistent("a routed level was not read"))?;
                let units = i32::try_from(part.quantity).expect("at most a line's i32 quantity");
                if level
                    .reserved
                    .checked_add(units)
                    .is_none_or(|r| r > level.on_hand)
                {
                    return Err(inconsistent("a routed reservation exceeds its level"));
                }
                let hold = Hold {
                    units,
                    ..order_hold(&w.order.policy, &w.order.input, &owner)
                };
                reservations.push(reservation_row(level, &hold, w.order.now));
                movements.push(movement_row(
                    level,
                    Move {
                        kind: "reserve",
                        on_hand: 0,
                        reserved: units,
                        actor: hold.actor,
                        reason: hold.reason,
                        reference: hold.reference.clone(),
                    },
                    w.order.now,
                ));
                level.reserved += units;
                level.version += 1;
                level.updated_at = w.order.now;
                own.push(level.clone());
                let total = totals.entry(level.id).or_insert((0, 0, w.order.now));
                *total = (total.0 + units, total.1 + 1, w.order.now);
            }
        }
        after.push(own);
    }
    if !reservations.is_empty() {
        let written = reservation::Entity::insert_many(reservations)
            .exec_without_returning(txn)
            .await?;
        check_rows(written as usize == movements.len(), "reservation")?;
        let updated = update_levels(txn, &totals).await?;
        let expected: Vec<&stock_level::Model> = levels
            .values()
            .filter(|level| totals.contains_key(&level.id))
            .collect();
        check_rows(
            updated.len() == expected.len()
                && expected.iter().all(|level| {
                    updated.get(&level.id) == Some(&(level.on_hand, level.reserved, level.version))
                }),
            "stock_level",
        )?;
    }
    let movements = if movements.is_empty() {
        Vec::new()
    } else {
        inventory_movement::Entity::insert_many(movements)
            .exec_with_returning(txn)
            .await?
    };
    let movements = split(
        movements,
        &per(&writing, |w| reserved_parts(&w.plan)),
        "movement",
    )?;

    // Shipment lines and the first events.
    let shipment_lines = shipment_line::Entity::insert_many(
        writing.iter().zip(&shipments).flat_map(|(w, shipments)| {
            w.plan
                .groups
                .iter()
                .zip(shipments)
                .flat_map(move |(group, shipment)| {
                    group.lines.iter().map(move |part| {
                        shipment_line_row(shipment.id, w.lines[part.line].id, part, w.order.now)
                    })
                })
        }),
    )
    .exec_with_returning(txn)
    .await?;
    let shipment_lines = split(
        shipment_lines,
        &per(&writing, |w| {
            w.plan.groups.iter().map(|g| g.lines.len()).sum()
        }),
        "shipment_line",
    )?;
    let events = order_event::Entity::insert_many(
        writing
            .iter()
            .map(|w| placed_event(w.head.id, &w.order.input, &w.plan, w.order.now)),
    )
    .exec_with_returning(txn)
    .await?;
    let events = split(events, &per(&writing, |_| 1), "order_event")?;

    for (((w, shipments), mut shipment_lines), (events, (own, movements))) in writing
        .into_iter()
        .zip(shipments)
        .zip(shipment_lines)
        .zip(events.into_iter().zip(after.into_iter().zip(movements)))
    {
        let mut grouped = Vec::with_capacity(shipments.len());
        for (group, shipment) in w.plan.groups.iter().zip(shipments) {
            let rest = shipment_lines.split_off(group.lines.len());
            grouped.push((shipment, std::mem::replace(&mut shipment_lines, rest)));
        }
        let mut change = StockChange::default();
        for (level, movement) in own.into_iter().zip(movements) {
            change.record(level, movement);
        }
        answers[w.index] = Batched::Placed(Box::new(Placed {
            details: OrderDetails {
                order: w.head,
                lines: w.lines,
                shipments: grouped,
                events,
            },
            change,
            created: true,
        }));
    }
    Ok(answers)
}

/// Takes the variants' stock locks ([`crate::inventory::service::lock_variant`]'s) that no
/// other transaction holds, without waiting, in one statement: the variants locked.
async fn try_lock_variants(
    txn: &DatabaseTransaction,
    variant_ids: &[i64],
) -> Result<HashSet<i64>, DbErr> {
    if variant_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let statement = rows_statement(
        "SELECT t.id, \
         pg_try_advisory_xact_lock(hashtextextended('inventory.variant:' || t.id, 0)) AS locked \
         FROM (VALUES ",
        Vec::new(),
        variant_ids
            .iter()
            .map(|id| vec![Value::from(*id)])
            .collect(),
        |n| format!("(${}::bigint)", n[0]),
        ") AS t(id)",
    );
    let mut locked = HashSet::with_capacity(variant_ids.len());
    for row in txn.query_all_raw(statement).await? {
        if row.try_get::<bool>("", "locked")? {
            locked.insert(row.try_get::<i64>("", "id")?);
        }
    }
    Ok(locked)
}

/// Takes the plan's reserved units from `stock`; `false` (nothing taken) when a part is at a
/// level that was not read.
fn take(stock: &mut Stock, plan: &Plan) -> bool {
    let parts = || {
        plan.groups.iter().flat_map(|group| {
            group
                .lines
                .iter()
                .filter(|part| !part.backordered)
                .map(move |part| (part.variant_id, group.location_id, part.quantity))
        })
    };
    let found = |stock: &Stock, variant: i64, location: i64| {
        stock
            .levels
            .get(&variant)
            .is_some_and(|levels| levels.iter().any(|l| l.location_id == location))
    };
    if !parts().all(|(variant, location, _)| found(stock, variant, location)) {
        return false;
    }
    for (variant, location, units) in parts() {
        if let Some(level) = stock
            .levels
            .get_mut(&variant)
            .and_then(|levels| levels.iter_mut().find(|l| l.location_id == location))
        {
            level.reserved += i32::try_from(units).expect("at most a line's i32 quantity");
        }
    }
    true
}

fn reserved_parts(plan: &Plan) -> usize {
    plan.groups
        .iter()
        .flat_map(|group| &group.lines)
        .filter(|part| !part.backordered)
        .count()
}

/// Adds each level's reserved units and reservations in one UPDATE, under the same condition
/// as a single reservation; the levels as updated: (on hand, reserved, version) by id.
async fn update_levels(
    txn: &DatabaseTransaction,
    totals: &BTreeMap<i64, (i32, i64, DateTime<Utc>)>,
) -> Result<HashMap<i64, (i32, i32, i64)>, DbErr> {
    let statement = rows_statement(
        "UPDATE stock_level AS s \
         SET reserved = s.reserved + v.units, version = s.version + v.holds, updated_at = v.at \
         FROM (VALUES ",
        Vec::new(),
        totals
            .iter()
            .map(|(id, (units, holds, at))| {
                vec![(*id).into(), (*units).into(), (*holds).into(), (*at).into()]
            })
            .collect(),
        |n| {
            format!(
                "(${}::bigint, ${}::integer, ${}::bigint, ${}::timestamptz)",
                n[0], n[1], n[2], n[3]
            )
        },
        ") AS v(id, units, holds, at) \
         WHERE s.id = v.id AND s.reserved + v.units <= s.on_hand \
           AND s.reserved + v.units >= 0 \
         RETURNING s.id, s.on_hand, s.reserved, s.version",
    );
    let mut updated = HashMap::with_capacity(totals.len());
    for row in txn.query_all_raw(statement).await? {
        updated.insert(
            row.try_get::<i64>("", "id")?,
            (
                row.try_get::<i32>("", "on_hand")?,
                row.try_get::<i32>("", "reserved")?,
                row.try_get::<i64>("", "version")?,
            ),
        );
    }
    Ok(updated)
}

/// How many rows of a table each order writes.
fn per(writing: &[Writing], count: impl Fn(&Writing) -> usize) -> Vec<usize> {
    writing.iter().map(count).collect()
}

/// `rows` (returned in the order they were inserted) cut into each order's part, of
/// `counts[i]` rows for the i-th.
fn split<T>(rows: Vec<T>, counts: &[usize], table: &str) -> Result<Vec<Vec<T>>, CoreError> {
    check_rows(rows.len() == counts.iter().sum::<usize>(), table)?;
    let mut rows = rows.into_iter();
    Ok(counts
        .iter()
        .map(|&n| rows.by_ref().take(n).collect())
        .collect())
}

fn check_rows(ok: bool, table: &str) -> Result<(), CoreError> {
    if ok {
        Ok(())
    } else {
        Err(inconsistent(&format!(
            "the {table} rows written are not the ones expected"
        )))
    }
}

fn inconsistent(what: &str) -> CoreError {
    CoreError::Database(DbErr::Custom(format!("order batch: {what}")))
}

//! The inventory service: every change to stock, each in one write transaction that also
//! appends its ledger entries (DESIGN.md §4, §5, §7).
//!
//! * Every change to a `stock_level` row is one conditional UPDATE that moves `on_hand` and
//!   `reserved`, bumps `version` and refuses to leave `reserved` above `on_hand` or below
//!   zero, and it writes the matching `inventory_movement` in the same transaction, so for
//!   every level `on_hand` (and `reserved`) equals the sum of its movements' deltas.
//! * Writers of one variant take turns: on SQLite every write transaction is IMMEDIATE (it
//!   takes the database's write lock at `BEGIN`), on PostgreSQL it first takes a
//!   transaction-scoped advisory lock on the variant. Each then checks availability against
//!   what the previous writer committed, so no interleaving oversells, breaks a hold or makes
//!   available stock negative; the conditional UPDATE and the table's CHECK
//!   (`reserved <= on_hand`) stand behind that.
//! * Input is validated before the first write; an error leaves nothing changed. Bad values
//!   are [`CoreError::InvalidInput`] naming the field, unknown ids [`CoreError::NotFound`]
//!   with the field in parentheses at the end of the key, shortfalls
//!   [`CoreError::InsufficientStock`], reservations in the wrong state
//!   [`CoreError::Conflict`], someone else's reservation [`CoreError::Forbidden`].
//! * Every function returns what it changed ([`StockChange`]: the levels with their new
//!   versions and the movements with their sequence numbers) for the caller to publish once
//!   the transaction has committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Timelike, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use super::allocation::{AllocationStrategy, Candidate, GeoPoint, allocate};
use super::availability::{ChannelAvailability, StockView, channel_availability};
use crate::channels::{ChannelLocation, ChannelPolicy};
use crate::entities::{
    channel, channel_location, inventory_movement, reservation, stock_hold, stock_level,
    stock_location, variant,
};
use crate::error::{CoreError, StockShortage};

/// Most units one operation may move (keeps every sum far from the INTEGER columns' limit).
pub const MAX_QUANTITY: i32 = 1_000_000;
/// Longest actor, owner reference or movement reference (the columns' length).
pub const MAX_REF_LEN: usize = 128;
/// Longest reason (the column's length).
pub const MAX_REASON_LEN: usize = 500;
/// Longest lifetime a reservation may be given or extended by: 30 days.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;
/// The reason of the releases [`release_expired`] writes.
pub const EXPIRED_REASON: &str = "expired";
/// Most reservations one [`release_expired`] call releases.
pub const MAX_SWEEP: u64 = 1000;

/// What a successful change touched, to publish after commit: each changed level once, at
/// its new version, and the movements written, in ledger order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StockChange {
    /// The changed levels, by id, as they are after the change.
    pub levels: Vec<stock_level::Model>,
    /// The ledger entries written; their ids are the stock event sequence numbers.
    pub movements: Vec<inventory_movement::Model>,
}

impl StockChange {
    pub(crate) fn record(
        &mut self,
        level: stock_level::Model,
        movement: inventory_movement::Model,
    ) {
        self.levels.retain(|l| l.id != level.id);
        self.levels.push(level);
        self.levels.sort_by_key(|l| l.id);
        self.movements.push(movement);
    }
}

/// Who owns a reservation: an order or a cart, by reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `order` or `cart` (the `reservation.owner_kind` values).
    pub kind: OwnerKind,
    /// The order number or cart token.
    pub reference: String,
}

/// The kinds of reservation owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerKind {
    /// An order being placed or placed.
    Order,
    /// A shopping cart (or a POS basket).
    Cart,
}

impl OwnerKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Cart => "cart",
        }
    }
}

/// How long a reservation lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// The channel's `reservation_ttl_seconds` (a hard hold when that is 0).
    ChannelDefault,
    /// This many seconds from now (1 to [`MAX_TTL_SECONDS`]).
    Seconds(i64),
    /// No expiry: held until committed or released (POS).
    Hard,
}

/// A receipt of goods (or a return) at a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockIn {
    /// The variant received.
    pub variant_id: i64,
    /// Where it arrived.
    pub location_id: i64,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: i32,
    /// Who did it (user, system or integration name).
    pub actor: String,
    /// Why; empty takes the kind's default (`received`, `returned`).
    pub reason: String,
    /// An outside reference (purchase order, return number).
    pub reference: Option<String>,
}

/// A correction of the counted stock at a location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjustment {
    /// The variant counted.
    pub variant_id: i64,
    /// Where.
    pub location_id: i64,
    /// Units added (positive) or removed (negative); never zero.
    pub delta: i32,
    /// Who did it.
    pub actor: String,
    /// Why (required: damage, count correction, …).
    pub reason: String,
}

/// Moving unreserved units of a variant from one location to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The variant moved.
    pub variant_id: i64,
    /// Where from.
    pub from_location_id: i64,
    /// Where to; not the same as `from_location_id`.
    pub to_location_id: i64,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: i32,
    /// Who did it.
    pub actor: String,
    /// Why; empty for `transfer`.
    pub reason: String,
}

/// A request to reserve units of a variant for a channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ReserveRequest {
    /// The variant.
    pub variant_id: i64,
    /// Units, 1 to [`MAX_QUANTITY`].
    pub quantity: i32,
    /// The channel selling them; its locations, holds and safety stock apply.
    pub channel_id: i64,
    /// Who holds the reservation.
    pub owner: Owner,
    /// How long it lives.
    pub lifetime: Lifetime,
    /// Take every unit from this location (one of the channel's), e.g. a POS terminal's store.
    pub location_id: Option<i64>,
    /// The point the `nearest` strategy measures from (the shipping address).
    pub near: Option<GeoPoint>,
    /// Who did it.
    pub actor: String,
}

/// The reservations one request made (one per location the units come from) and the stock
/// change.
#[derive(Clone, Debug, PartialEq)]
pub struct Reserved {
    /// The new reservations.
    pub reservations: Vec<reservation::Model>,
    /// The levels and movements written.
    pub change: StockChange,
}

/// What [`release_expired`] released.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Swept {
    /// The reservations now in state `expired`.
    pub reservations: Vec<reservation::Model>,
    /// The levels and movements written.
    pub change: StockChange,
}

// ---- validation ----

fn check_quantity(quantity: i32, field: &str) -> Result<(), CoreError> {
    if quantity <= 0 {
        return Err(CoreError::invalid(field, "must be at least 1"));
    }
    if quantity > MAX_QUANTITY {
        return Err(CoreError::invalid(
            field,
            format!("must be at most {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

fn check_text(value: &str, max: usize, required: bool, field: &str) -> Result<(), CoreError> {
    if value.contains('\0') {
        return Err(CoreError::invalid(field, "must not contain NUL characters"));
    }
    if required && value.trim().is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(CoreError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

fn check_reference(reference: Option<&str>, field: &str) -> Result<(), CoreError> {
    reference.map_or(Ok(()), |r| check_text(r, MAX_REF_LEN, true, field))
}

fn check_owner(owner: &Owner, field: &str) -> Result<(), CoreError> {
    check_text(
        &owner.reference,
        MAX_REF_LEN,
        true,
        &format!("{field}.reference"),
    )
}

fn check_ttl(seconds: i64, field: &str) -> Result<(), CoreError> {
    if !(1..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(CoreError::invalid(
            field,
            format!("must be between 1 and {MAX_TTL_SECONDS} seconds"),
        ));
    }
    Ok(())
}

fn reason_or<'a>(reason: &'a str, default: &'a str) -> &'a str {
    if reason.trim().is_empty() {
        default
    } else {
        reason
    }
}

/// `now` cut to whole microseconds (what PostgreSQL stores), so both databases compare alike.
pub(crate) fn micros(now: DateTime<Utc>) -> DateTime<Utc> {
    now.with_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

fn not_found(entity: &'static str, id: i64, field: &str) -> CoreError {
    CoreError::NotFound {
        entity,
        key: format!("{id} ({field})"),
    }
}

fn shortage(
    field: &str,
    variant_id: i64,
    location_id: Option<i64>,
    requested: i64,
    available: i64,
) -> CoreError {
    CoreError::InsufficientStock {
        lines: vec![StockShortage {
            field: field.to_owned(),
            variant_id,
            location_id,
            requested,
            available: std::cmp::max(available, 0),
        }],
    }
}

// ---- transactions and locks ----

/// A write transaction: IMMEDIATE on SQLite, so writers queue at `BEGIN` on the busy
/// timeout instead of failing halfway.
async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Makes the transaction the only writer of the variant's stock until it ends (PostgreSQL:
/// an advisory lock; SQLite: the IMMEDIATE transaction already is the only writer), then
/// checks that the variant exists.
pub(crate) async fn lock_variant(
    txn: &DatabaseTransaction,
    variant_id: i64,
    field: &str,
) -> Result<(), CoreError> {
    let exists = if txn.get_database_backend() == DbBackend::Postgres {
        // The lock and the check in one round trip (variants are never deleted while
        // stock rows name them, so the statement's snapshot answers the check).
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)) AS locked, \
                 EXISTS (SELECT 1 FROM variant WHERE id = $2) AS found",
                [
                    format!("inventory.variant:{variant_id}").into(),
                    variant_id.into(),
                ],
            ))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("advisory lock row".to_owned()))?;
        row.try_get::<bool>("", "found")?
    } else {
        variant::Entity::find_by_id(variant_id)
            .select_only()
            .column(variant::Column::Id)
            .into_tuple::<i64>()
            .one(txn)
            .await?
            .is_some()
    };
    if !exists {
        return Err(not_found("variant", variant_id, field));
    }
    Ok(())
}

async fn location(
    conn: &impl ConnectionTrait,
    location_id: i64,
    field: &str,
) -> Result<stock_location::Model, CoreError> {
    stock_location::Entity::find_by_id(location_id)
        .one(conn)
        .await?
        .ok_or_else(|| not_found("stock location", location_id, field))
}

/// The channel with `channel_id` and its locations, in priority order.
pub async fn load_policy_by_id(
    conn: &impl ConnectionTrait,
    channel_id: i64,
) -> Result<ChannelPolicy, CoreError> {
    let channel = channel::Entity::find_by_id(channel_id)
        .one(conn)
        .await?
        .ok_or_else(|| not_found("channel", channel_id, "channel_id"))?;
    let links = channel_location::Entity::find()
        .filter(channel_location::Column::ChannelId.eq(channel.id))
        .order_by_asc(channel_location::Column::Priority)
        .order_by_asc(channel_location::Column::LocationId)
        .all(conn)
        .await?;
    let mut by_id: HashMap<i64, stock_location::Model> = stock_location::Entity::find()
        .filter(stock_location::Column::Id.is_in(links.iter().map(|l| l.location_id)))
        .all(conn)
        .await?
        .into_iter()
        .map(|location| (location.id, location))
        .collect();
    let locations = links
        .into_iter()
        .filter_map(|link| {
            Some(ChannelLocation {
                location: by_id.remove(&link.location_id)?,
                priority: link.priority,
            })
        })
        .collect();
    Ok(ChannelPolicy { channel, locations })
}

pub(crate) async fn levels_of(
    conn: &impl ConnectionTrait,
    variant_id: i64,
) -> Result<Vec<stock_level::Model>, DbErr> {
    stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.eq(variant_id))
        .order_by_asc(stock_level::Column::Id)
        .all(conn)
        .await
}

pub(crate) async fn holds_of(
    conn: &impl ConnectionTrait,
    variant_id: i64,
) -> Result<Vec<stock_hold::Model>, DbErr> {
    stock_hold::Entity::find()
        .filter(stock_hold::Column::VariantId.eq(variant_id))
        .order_by_asc(stock_hold::Column::Id)
        .all(conn)
        .await
}

pub(crate) async fn level_at(
    conn: &impl ConnectionTrait,
    variant_id: i64,
    location_id: i64,
) -> Result<Option<stock_level::Model>, DbErr> {
    stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.eq(variant_id))
        .filter(stock_level::Column::LocationId.eq(location_id))
        .one(conn)
        .await
}

/// The level of the variant at the location, created empty (version 0) when missing.
pub(crate) async fn level_or_new(
    txn: &DatabaseTransaction,
    variant_id: i64,
    location_id: i64,
    now: DateTime<Utc>,
) -> Result<stock_level::Model, DbErr> {
    if let Some(level) = level_at(txn, variant_id, location_id).await? {
        return Ok(level);
    }
    stock_level::ActiveModel {
        variant_id: Set(variant_id),
        location_id: Set(location_id),
        on_hand: Set(0),
        reserved: Set(0),
        version: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(txn)
    .await
}

/// One ledger entry to write with its level change.
pub(crate) struct Move<'a> {
    pub(crate) kind: &'static str,
    pub(crate) on_hand: i32,
    pub(crate) reserved: i32,
    pub(crate) actor: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) reference: Option<String>,
}

/// Applies `mv` to the level in one conditional UPDATE (bumping its version) and appends its
/// movement. Refuses, changing nothing, when the level would end with `reserved` above
/// `on_hand` or below zero.
pub(crate) async fn apply(
    txn: &DatabaseTransaction,
    level: &stock_level::Model,
    mv: Move<'_>,
    now: DateTime<Utc>,
    field: &str,
    change: &mut StockChange,
) -> Result<stock_level::Model, CoreError> {
    use stock_level::Column as C;
    let new_on_hand = i64::from(level.on_hand) + i64::from(mv.on_hand);
    if new_on_hand > i64::from(i32::MAX) {
        return Err(CoreError::invalid(
            field,
            format!("would take on hand above {}", i32::MAX),
        ));
    }
    let update = stock_level::Entity::update_many()
        .col_expr(C::OnHand, Expr::col(C::OnHand).add(mv.on_hand))
        .col_expr(C::Reserved, Expr::col(C::Reserved).add(mv.reserved))
        .col_expr(C::Version, Expr::col(C::Version).add(1))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .filter(C::Id.eq(level.id))
        .filter(
            Expr::col(C::OnHand)
                .add(mv.on_hand)
                .gte(Expr::col(C::Reserved).add(mv.reserved)),
        )
        .filter(Expr::col(C::Reserved).add(mv.reserved).gte(0));
    // The level as updated: returned by the UPDATE where the backend can (PostgreSQL), read
    // again otherwise.
    let updated = if txn.support_returning() {
        update.exec_with_returning(txn).await?.pop()
    } else if update.exec(txn).await?.rows_affected == 1 {
        Some(
            stock_level::Entity::find_by_id(level.id)
                .one(txn)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound(format!("stock_level {}", level.id)))?,
        )
    } else {
        None
    };
    let Some(updated) = updated else {
        let current = stock_level::Entity::find_by_id(level.id).one(txn).await?;
        let free = current.map_or(0, |l| i64::from(l.on_hand) - i64::from(l.reserved));
        let requested =
            i64::from(std::cmp::max(mv.reserved, 0)) + i64::from(std::cmp::max(-mv.on_hand, 0));
        return Err(shortage(
            field,
            level.variant_id,
            Some(level.location_id),
            requested,
            free,
        ));
    };
    let movement = movement_row(level, mv, now).insert(txn).await?;
    change.record(updated.clone(), movement);
    Ok(updated)
}

/// The ledger entry of `mv` at `level`.
pub(crate) fn movement_row(
    level: &stock_level::Model,
    mv: Move<'_>,
    now: DateTime<Utc>,
) -> inventory_movement::ActiveModel {
    inventory_movement::ActiveModel {
        variant_id: Set(level.variant_id),
        location_id: Set(level.location_id),
        kind: Set(mv.kind.to_owned()),
        on_hand_delta: Set(mv.on_hand),
        reserved_delta: Set(mv.reserved),
        actor: Set(mv.actor.to_owned()),
        reason: Set(mv.reason.to_owned()),
        reference: Set(mv.reference),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// Runs `work` in a write transaction, committing on success and rolling back on error.
pub(crate) async fn in_write<T, F>(db: &DatabaseConnection, work: F) -> Result<T, CoreError>
where
    F: AsyncFnOnce(&DatabaseTransaction) -> Result<T, CoreError>,
{
    let txn = begin_write(db).await?;
    match work(&txn).await {
        Ok(value) => {
            txn.commit().await?;
            Ok(value)
        }
        Err(err) => {
            txn.rollback().await?;
            Err(err)
        }
    }
}

// ---- stock in, out and between locations ----

async fn stock_in(
    db: &DatabaseConnection,
    input: &StockIn,
    kind: &'static str,
    default_reason: &'static str,
    now: DateTime<Utc>,
) -> Result<StockChange, CoreError> {
    check_quantity(input.quantity, "quantity")?;
    check_text(&input.actor, MAX_REF_LEN, true, "actor")?;
    check_text(&input.reason, MAX_REASON_LEN, false, "reason")?;
    check_reference(input.reference.as_deref(), "reference")?;
    let now = micros(now);
    in_write(db, async |txn| {
        lock_variant(txn, input.variant_id, "variant_id").await?;
        location(txn, input.location_id, "location_id").await?;
        let level = level_or_new(txn, input.variant_id, input.location_id, now).await?;
        let mut change = StockChange::default();
        apply(
            txn,
            &level,
            Move {
                kind,
                on_hand: input.quantity,
                reserved: 0,
                actor: &input.actor,
                reason: reason_or(&input.reason, default_reason),
                reference: input.reference.clone(),
            },
            now,
            "quantity",
            &mut change,
        )
        .await?;
        Ok(change)
    })
    .await
}

/// Receives goods at a location (movement `receive`), creating the level when missing.
pub async fn receive(
    db: &DatabaseConnection,
    input: &StockIn,
    now: DateTime<Utc>,
) -> Result<StockChange, CoreError> {
    stock_in(db, input, "receive", "received", now).await
}

/// Takes returned goods back into stock at a location (movement `return`).
pub async fn return_stock(
    db: &DatabaseConnection,
    input: &StockIn,
    now: DateTime<Utc>,
) -> Result<StockChange, CoreError> {
    stock_in(db, input, "return", "returned", now).await
}

/// Corrects the stock at a location by `delta` (movement `adjust` with the reason); may not
/// take on hand below what is reserved there.
pub async fn adjust(
    db: &DatabaseConnection,
    input: &Adjustment,
    now: DateTime<Utc>,
) -> Result<StockChange, CoreError> {
    if input.delta == 0 {
        return Err(CoreError::invalid("delta", "must not be zero"));
    }
    if input.delta.unsigned_abs() > MAX_QUANTITY as u32 {
        return Err(CoreError::invalid(
            "delta",
            format!("must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
        ));
    }
    check_text(&input.actor, MAX_REF_LEN, true, "actor")?;
    check_text(&input.reason, MAX_REASON_LEN, true, "reason")?;
    let now = micros(now);
    in_write(db, async |txn| {
        lock_variant(txn, input.variant_id, "variant_id").await?;
        location(txn, input.location_id, "location_id").await?;
        let level = if input.delta > 0 {
            level_or_new(txn, input.variant_id, input.location_id, now).await?
        } else {
            level_at(txn, input.variant_id, input.location_id)
                .await?
                .ok_or_else(|| {
                    shortage(
                        "delta",
                        input.variant_id,
                        Some(input.location_id),
                        i64::from(-input.delta),
                        0,
                    )
                })?
        };
        let mut change = StockChange::default();
        apply(
            txn,
            &level,
            Move {
                kind: "adjust",
                on_hand: input.delta,
                reserved: 0,
                actor: &input.actor,
                reason: &input.reason,
                reference: None,
            },
            now,
            "delta",
            &mut change,
        )
        .await?;
        Ok(change)
    })
    .await
}

/// Moves unreserved units between two locations: two `transfer` movements (out and in) in
/// one transaction.
pub async fn transfer(
    db: &DatabaseConnection,
    input: &Transfer,
    now: DateTime<Utc>,
) -> Result<StockChange, CoreError> {
    check_quantity(input.quantity, "quantity")?;
    if input.from_location_id == input.to_location_id {
        return Err(CoreError::invalid(
            "to_location_id",
            "must differ from from_location_id",
        ));
    }
    check_text(&input.actor, MAX_REF_LEN, true, "actor")?;
    check_text(&input.reason, MAX_REASON_LEN, false, "reason")?;
    let now = micros(now);
    in_write(db, async |txn| {
        lock_variant(txn, input.variant_id, "variant_id").await?;
        location(txn, input.from_location_id, "from_location_id").await?;
        location(txn, input.to_location_id, "to_location_id").await?;
        let quantity = i64::from(input.quantity);
        let source = level_at(txn, input.variant_id, input.from_location_id)
            .await?
            .ok_or_else(|| {
                shortage(
                    "quantity",
                    input.variant_id,
                    Some(input.from_location_id),
                    quantity,
                    0,
                )
            })?;
        let reference = Some(format!(
            "transfer:{}->{}",
            input.from_location_id, input.to_location_id
        ));
        let reason = reason_or(&input.reason, "transfer");
        let mut change = StockChange::default();
        apply(
            txn,
            &source,
            Move {
                kind: "transfer",
                on_hand: -input.quantity,
                reserved: 0,
                actor: &input.actor,
                reason,
                reference: reference.clone(),
            },
            now,
            "quantity",
            &mut change,
        )
        .await?;
        let target = level_or_new(txn, input.variant_id, input.to_location_id, now).await?;
        apply(
            txn,
            &target,
            Move {
                kind: "transfer",
                on_hand: input.quantity,
                reserved: 0,
                actor: &input.actor,
                reason,
                reference,
            },
            now,
            "quantity",
            &mut change,
        )
        .await?;
        Ok(change)
    })
    .await
}

// ---- availability ----

/// The availability of each variant for the channel of `policy` (variants without stock
/// are out of stock), from every level of the variants and their holds ([`stock_rows`] and
/// [`channel_availability`], the rule the gateway applies to the same rows when it keeps them
/// in memory).
pub async fn availability_for_variants(
    db: &impl ConnectionTrait,
    policy: &ChannelPolicy,
    view: StockView,
    variant_ids: &[i64],
) -> Result<Vec<ChannelAvailability>, CoreError> {
    let rows = stock_rows(db, variant_ids).await?;
    Ok(variant_ids
        .iter()
        .map(|&id| channel_availability(policy, view, id, &rows.levels, &rows.holds))
        .collect())
}

/// What availability is computed from: stock levels (at every location) and holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StockRows {
    /// Ordered by id.
    pub levels: Vec<stock_level::Model>,
    pub holds: Vec<stock_hold::Model>,
}

/// The stock levels and holds of `variant_ids`, two statements for any number of variants.
pub async fn stock_rows(
    db: &impl ConnectionTrait,
    variant_ids: &[i64],
) -> Result<StockRows, CoreError> {
    let ids: BTreeSet<i64> = variant_ids.iter().copied().collect();
    let levels = stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.is_in(ids.iter().copied()))
        .order_by_asc(stock_level::Column::Id)
        .all(db)
        .await?;
    let holds = stock_hold::Entity::find()
        .filter(stock_hold::Column::VariantId.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(StockRows { levels, holds })
}

// ---- reservations ----

fn strategy_of(channel: &channel::Model) -> AllocationStrategy {
    AllocationStrategy::parse(&channel.allocation_strategy).unwrap_or(AllocationStrategy::Priority)
}

fn expiry(
    lifetime: Lifetime,
    channel: &channel::Model,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let seconds = match lifetime {
        Lifetime::Hard => return None,
        Lifetime::Seconds(seconds) => seconds,
        Lifetime::ChannelDefault if channel.reservation_ttl_seconds <= 0 => return None,
        Lifetime::ChannelDefault => i64::from(channel.reservation_ttl_seconds),
    };
    Some(now + Duration::seconds(seconds))
}

/// Reserves units of a variant for a channel, atomically: only the channel's locations,
/// within the channel's availability (holds of other channels and its safety stock
/// respected), locations chosen by the channel's allocation strategy (or the one asked
/// for). Writes one reservation and one `reserve` movement per location used.
pub async fn reserve(
    db: &DatabaseConnection,
    request: &ReserveRequest,
    now: DateTime<Utc>,
) -> Result<Reserved, CoreError> {
    check_quantity(request.quantity, "quantity")?;
    check_owner(&request.owner, "owner")?;
    check_text(&request.actor, MAX_REF_LEN, true, "actor")?;
    if let Lifetime::Seconds(seconds) = request.lifetime {
        check_ttl(seconds, "ttl_seconds")?;
    }
    let near = request.near.map(|p| p.validate("near")).transpose()?;
    let now = micros(now);
    in_write(db, async |txn| {
        lock_variant(txn, request.variant_id, "variant_id").await?;
        let policy = load_policy_by_id(txn, request.channel_id).await?;
        if let Some(location_id) = request.location_id {
            location(txn, location_id, "location_id").await?;
            if !policy
                .locations
                .iter()
                .any(|l| l.location.id == location_id)
            {
                return Err(CoreError::invalid(
                    "location_id",
                    format!(
                        "location {location_id} does not feed channel {}",
                        policy.channel.code
                    ),
                ));
            }
        }
        let levels = levels_of(txn, request.variant_id).await?;
        let holds = holds_of(txn, request.variant_id).await?;
        let seen = channel_availability(
            &policy,
            StockView::Exact,
            request.variant_id,
            &levels,
            &holds,
        );
        let quantity = i64::from(request.quantity);
        if quantity > seen.available {
            return Err(shortage(
                "quantity",
                request.variant_id,
                None,
                quantity,
                seen.available,
            ));
        }
        let candidates: Vec<Candidate> = policy
            .locations
            .iter()
            .filter(|feed| request.location_id.is_none_or(|id| id == feed.location.id))
            .filter_map(|feed| {
                let at = seen
                    .locations
                    .iter()
                    .find(|l| l.location_id == feed.location.id)?;
                Some(Candidate {
                    location_id: feed.location.id,
                    priority: feed.priority,
                    sellable: at.sellable,
                    point: GeoPoint {
                        latitude: feed.location.latitude,
                        longitude: feed.location.longitude,
                    },
                })
            })
            .collect();
        let plan = allocate(strategy_of(&policy.channel), near, &candidates, quantity).ok_or_else(
            || {
                let there: i64 = candidates.iter().map(|c| c.sellable).sum();
                shortage(
                    "quantity",
                    request.variant_id,
                    request.location_id,
                    quantity,
                    std::cmp::min(there, seen.available),
                )
            },
        )?;
        let expires_at = expiry(request.lifetime, &policy.channel, now);
        let mut reserved = Reserved {
            reservations: Vec::new(),
            change: StockChange::default(),
        };
        for (location_id, units) in plan {
            let units = i32::try_from(units).expect("at most the requested i32 quantity");
            let level = levels
                .iter()
                .find(|l| l.location_id == location_id)
                .expect("planned locations have levels");
            let row = hold_at(
                txn,
                level,
                Hold {
                    channel_id: policy.channel.id,
                    units,
                    owner: &request.owner,
                    expires_at,
                    actor: &request.actor,
                    reason: "reserved",
                    reference: None,
                },
                now,
                "quantity",
                &mut reserved.change,
            )
            .await?;
            reserved.reservations.push(row);
        }
        Ok(reserved)
    })
    .await
}

/// Units to hold at one level for an owner.
pub(crate) struct Hold<'a> {
    pub(crate) channel_id: i64,
    pub(crate) units: i32,
    pub(crate) owner: &'a Owner,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) actor: &'a str,
    pub(crate) reason: &'a str,
    /// The ledger reference; `None`: the reservation itself (`reservation:<id>`).
    pub(crate) reference: Option<String>,
}

/// Writes a reservation of `hold.units` at `level` and its `reserve` movement (which refuses,
/// changing nothing, when the level has fewer units free).
pub(crate) async fn hold_at(
    txn: &DatabaseTransaction,
    level: &stock_level::Model,
    hold: Hold<'_>,
    now: DateTime<Utc>,
    field: &str,
    change: &mut StockChange,
) -> Result<reservation::Model, CoreError> {
    let row = reservation_row(level, &hold, now).insert(txn).await?;
    apply(
        txn,
        level,
        Move {
            kind: "reserve",
            on_hand: 0,
            reserved: hold.units,
            actor: hold.actor,
            reason: hold.reason,
            reference: Some(
                hold.reference
                    .unwrap_or_else(|| format!("reservation:{}", row.id)),
            ),
        },
        now,
        field,
        change,
    )
    .await?;
    Ok(row)
}

/// The reservation row of `hold` at `level`.
pub(crate) fn reservation_row(
    level: &stock_level::Model,
    hold: &Hold<'_>,
    now: DateTime<Utc>,
) -> reservation::ActiveModel {
    reservation::ActiveModel {
        variant_id: Set(level.variant_id),
        location_id: Set(level.location_id),
        channel_id: Set(hold.channel_id),
        quantity: Set(hold.units),
        owner_kind: Set(hold.owner.kind.as_str().to_owned()),
        owner_ref: Set(hold.owner.reference.clone()),
        expires_at: Set(hold.expires_at),
        state: Set("active".to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// The reservation, after its variant was locked; `NotFound` when there is none.
pub(crate) async fn locked_reservation(
    txn: &DatabaseTransaction,
    reservation_id: i64,
) -> Result<reservation::Model, CoreError> {
    let missing = || not_found("reservation", reservation_id, "reservation_id");
    let first = reservation::Entity::find_by_id(reservation_id)
        .one(txn)
        .await?
        .ok_or_else(missing)?;
    lock_variant(txn, first.variant_id, "reservation_id").await?;
    // Read again under the lock: a concurrent writer may have changed its state.
    reservation::Entity::find_by_id(reservation_id)
        .one(txn)
        .await?
        .ok_or_else(missing)
}

fn check_owned(row: &reservation::Model, owner: Option<&Owner>) -> Result<(), CoreError> {
    match owner {
        Some(owner)
            if owner.kind.as_str() != row.owner_kind || owner.reference != row.owner_ref =>
        {
            Err(CoreError::Forbidden {
                field: "reservation_id".to_owned(),
                reason: format!("reservation {} belongs to another owner", row.id),
            })
        }
        _ => Ok(()),
    }
}

fn check_active(row: &reservation::Model) -> Result<(), CoreError> {
    if row.state != "active" {
        return Err(CoreError::conflict(
            "reservation_id",
            format!("reservation {} is {}, not active", row.id, row.state),
        ));
    }
    Ok(())
}

fn check_unexpired(row: &reservation::Model, now: DateTime<Utc>) -> Result<(), CoreError> {
    if let Some(at) = row.expires_at
        && at <= now
    {
        return Err(CoreError::conflict(
            "reservation_id",
            format!("reservation {} expired at {}", row.id, at.to_rfc3339()),
        ));
    }
    Ok(())
}

/// Moves an active reservation's expiry to `now` + `lifetime` (the channel's TTL for
/// [`Lifetime::ChannelDefault`]), never earlier than it was; only its owner may, and only
/// before it expires. A [`Lifetime::Hard`] turns it into a hard hold.
pub async fn extend_reservation(
    db: &DatabaseConnection,
    reservation_id: i64,
    owner: &Owner,
    lifetime: Lifetime,
    now: DateTime<Utc>,
) -> Result<reservation::Model, CoreError> {
    check_owner(owner, "owner")?;
    if let Lifetime::Seconds(seconds) = lifetime {
        check_ttl(seconds, "ttl_seconds")?;
    }
    let now = micros(now);
    in_write(db, async |txn| {
        let row = locked_reservation(txn, reservation_id).await?;
        check_owned(&row, Some(owner))?;
        check_active(&row)?;
        check_unexpired(&row, now)?;
        let channel = channel::Entity::find_by_id(row.channel_id)
            .one(txn)
            .await?
            .ok_or_else(|| not_found("channel", row.channel_id, "reservation_id"))?;
        // Never earlier than it was: an extension does not shorten a reservation.
        let expires_at = expiry(lifetime, &channel, now)
            .map(|at| row.expires_at.map_or(at, |old| std::cmp::max(old, at)));
        let mut active: reservation::ActiveModel = row.into();
        active.expires_at = Set(expires_at);
        active.updated_at = Set(now);
        Ok(active.update(txn).await?)
    })
    .await
}

/// Releases an active reservation (movement `release` with the reason): its units become
/// available again. With an `owner`, only that owner may; `None` is the system (order
/// cancellation, an administrator).
pub async fn release(
    db: &DatabaseConnection,
    reservation_id: i64,
    owner: Option<&Owner>,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(reservation::Model, StockChange), CoreError> {
    if let Some(owner) = owner {
        check_owner(owner, "owner")?;
    }
    check_text(actor, MAX_REF_LEN, true, "actor")?;
    check_text(reason, MAX_REASON_LEN, false, "reason")?;
    let now = micros(now);
    in_write(db, async |txn| {
        let row = locked_reservation(txn, reservation_id).await?;
        check_owned(&row, owner)?;
        check_active(&row)?;
        let mut change = StockChange::default();
        let row = finish(
            txn,
            row,
            "released",
            "release",
            actor,
            reason_or(reason, "released"),
            format!("reservation:{reservation_id}"),
            now,
            &mut change,
        )
        .await?;
        Ok((row, change))
    })
    .await
}

/// Turns an active, unexpired reservation into a sale (movement `sale`: on hand and
/// reserved both go down by its quantity). With an `owner`, only that owner may.
pub async fn commit_reservation(
    db: &DatabaseConnection,
    reservation_id: i64,
    owner: Option<&Owner>,
    actor: &str,
    reference: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(reservation::Model, StockChange), CoreError> {
    if let Some(owner) = owner {
        check_owner(owner, "owner")?;
    }
    check_text(actor, MAX_REF_LEN, true, "actor")?;
    check_reference(reference, "reference")?;
    let now = micros(now);
    in_write(db, async |txn| {
        let row = locked_reservation(txn, reservation_id).await?;
        check_owned(&row, owner)?;
        check_active(&row)?;
        check_unexpired(&row, now)?;
        let mut change = StockChange::default();
        let sold = reference.map_or_else(|| format!("reservation:{}", row.id), str::to_owned);
        let row = finish(
            txn,
            row,
            "consumed",
            "sale",
            actor,
            "sold",
            sold,
            now,
            &mut change,
        )
        .await?;
        Ok((row, change))
    })
    .await
}

/// Ends a reservation in `state`, moving its units with a `kind` movement.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    txn: &DatabaseTransaction,
    row: reservation::Model,
    state: &str,
    kind: &'static str,
    actor: &str,
    reason: &str,
    reference: String,
    now: DateTime<Utc>,
    change: &mut StockChange,
) -> Result<reservation::Model, CoreError> {
    let level = level_at(txn, row.variant_id, row.location_id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("stock level of reservation {}", row.id)))?;
    let on_hand = if kind == "sale" { -row.quantity } else { 0 };
    apply(
        txn,
        &level,
        Move {
            kind,
            on_hand,
            reserved: -row.quantity,
            actor,
            reason,
            reference: Some(reference),
        },
        now,
        "reservation_id",
        change,
    )
    .await?;
    let mut active: reservation::ActiveModel = row.into();
    active.state = Set(state.to_owned());
    active.updated_at = Set(now);
    Ok(active.update(txn).await?)
}

/// Releases up to `limit` (at most [`MAX_SWEEP`]) reservations that expired at or before
/// `now`, oldest expiry first, in one transaction: state `expired`, movement `release` with
/// reason `expired`. Returns what it released; run it on an interval.
pub async fn release_expired(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Swept, CoreError> {
    let now = micros(now);
    let limit = std::cmp::min(limit, MAX_SWEEP);
    if limit == 0 {
        return Ok(Swept::default());
    }
    in_write(db, async |txn| {
        let due = reservation::Entity::find()
            .filter(reservation::Column::State.eq("active"))
            .filter(reservation::Column::ExpiresAt.lte(now))
            .order_by_asc(reservation::Column::ExpiresAt)
            .order_by_asc(reservation::Column::Id)
            .limit(limit)
            .all(txn)
            .await?;
        // Lock the variants in one order, so two sweepers never wait on each other.
        let mut by_variant: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for row in &due {
            by_variant.entry(row.variant_id).or_default().push(row.id);
        }
        let mut swept = Swept::default();
        for (variant_id, ids) in by_variant {
            lock_variant(txn, variant_id, "variant_id").await?;
            for id in ids {
                let Some(row) = reservation::Entity::find_by_id(id).one(txn).await? else {
                    continue;
                };
                if row.state != "active" || row.expires_at.is_none_or(|at| at > now) {
                    continue;
                }
                let row = finish(
                    txn,
                    row,
                    "expired",
                    "release",
                    "sweeper",
                    EXPIRED_REASON,
                    format!("reservation:{id}"),
                    now,
                    &mut swept.change,
                )
                .await?;
                swept.reservations.push(row);
            }
        }
        Ok(swept)
    })
    .await
}

/// The active reservations of an owner, oldest first.
pub async fn reservations_of(
    db: &impl ConnectionTrait,
    owner: &Owner,
) -> Result<Vec<reservation::Model>, CoreError> {
    Ok(reservation::Entity::find()
        .filter(reservation::Column::OwnerKind.eq(owner.kind.as_str()))
        .filter(reservation::Column::OwnerRef.eq(owner.reference.as_str()))
        .filter(reservation::Column::State.eq("active"))
        .order_by_asc(reservation::Column::Id)
        .all(db)
        .await?)
}

// ---- holds ----

/// Keeps `quantity` units of a variant for a channel, at one location or (`None`) anywhere:
/// other channels cannot reserve them. Replaces the channel's hold on the same variant and
/// location; 0 removes it. Returns the hold, or `None` when removed.
pub async fn set_hold(
    db: &DatabaseConnection,
    channel_id: i64,
    variant_id: i64,
    location_id: Option<i64>,
    quantity: i32,
    now: DateTime<Utc>,
) -> Result<Option<stock_hold::Model>, CoreError> {
    if quantity < 0 {
        return Err(CoreError::invalid("quantity", "must be zero or more"));
    }
    if quantity > MAX_QUANTITY {
        return Err(CoreError::invalid(
            "quantity",
            format!("must be at most {MAX_QUANTITY}"),
        ));
    }
    let now = micros(now);
    in_write(db, async |txn| {
        lock_variant(txn, variant_id, "variant_id").await?;
        if channel::Entity::find_by_id(channel_id)
            .one(txn)
            .await?
            .is_none()
        {
            return Err(not_found("channel", channel_id, "channel_id"));
        }
        if let Some(location_id) = location_id {
            location(txn, location_id, "location_id").await?;
        }
        let mut query = stock_hold::Entity::find()
            .filter(stock_hold::Column::ChannelId.eq(channel_id))
            .filter(stock_hold::Column::VariantId.eq(variant_id));
        query = match location_id {
            Some(id) => query.filter(stock_hold::Column::LocationId.eq(id)),
            None => query.filter(stock_hold::Column::LocationId.is_null()),
        };
        let existing = query.one(txn).await?;
        match (existing, quantity) {
            (None, 0) => Ok(None),
            (Some(hold), 0) => {
                stock_hold::Entity::delete_by_id(hold.id).exec(txn).await?;
                Ok(None)
            }
            (Some(hold), _) => {
                let mut active: stock_hold::ActiveModel = hold.into();
                active.quantity = Set(quantity);
                active.updated_at = Set(now);
                Ok(Some(active.update(txn).await?))
            }
            (None, _) => Ok(Some(
                stock_hold::ActiveModel {
                    channel_id: Set(channel_id),
                    variant_id: Set(variant_id),
                    location_id: Set(location_id),
                    quantity: Set(quantity),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(txn)
                .await?,
            )),
        }
    })
    .await
}

/// The holds on the given variants, by id.
pub async fn holds_for_variants(
    db: &impl ConnectionTrait,
    variant_ids: &[i64],
) -> Result<Vec<stock_hold::Model>, CoreError> {
    Ok(stock_hold::Entity::find()
        .filter(stock_hold::Column::VariantId.is_in(variant_ids.iter().copied()))
        .order_by_asc(stock_hold::Column::Id)
        .all(db)
        .await?)
}

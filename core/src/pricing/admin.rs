//! Changing prices: price lists, their entries (volume tiers), quantity rules and promotions.
//!
//! Every function runs in one transaction and validates all of its input before the first
//! write, so an error leaves nothing half-written. Validation errors are
//! [`CoreError::InvalidInput`] whose `field` names the input as the gateway spells it
//! (`input.currency`, `entries[2].amount`); an unknown list, promotion or SKU is
//! [`CoreError::NotFound`] (an unknown SKU names its field too, see [`not_found_field`]).
//! Each function returns the saved row and a [`PriceChange`] naming exactly what was
//! touched, for the caller to announce once the transaction has committed.
//!
//! Input rules shared by every function: no text input may hold a NUL character (checked
//! before any SQL); codes match `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$` and are unique whatever
//! their case; names hold no control characters and no bidirectional overrides or isolates;
//! error messages quote input values cut to [`MAX_ECHO`] characters; instants are cut to
//! whole microseconds (what PostgreSQL stores) before they are checked and stored, so both
//! databases keep and compare the same values.
//!
//! Concurrent writers take turns instead of failing: every write transaction is IMMEDIATE
//! on SQLite (it takes the write lock at `BEGIN`, waiting on the busy timeout, so it never
//! finds its snapshot stale halfway through), and on PostgreSQL a change to a list or
//! promotion first locks its row (`SELECT … FOR UPDATE`) and a creation locks its code, so
//! each validates against what the previous writer committed. A unique-key violation that
//! still slips through is a [`CoreError::InvalidInput`] on the field, never a database error.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Timelike, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::CoreError;
use crate::entities::{
    category, channel, company, customer, customer_group, price_list, price_list_entry, product,
    promotion, quantity_rule, variant,
};
use crate::money::{MoneyError, StoredAmount, validate_currency};

use super::resolve::PromotionTarget;

/// Longest list or promotion code (the column's length).
pub const MAX_CODE_LEN: usize = 64;
/// Longest list or promotion name (the column's length).
pub const MAX_NAME_LEN: usize = 200;
/// Most entries one [`set_price_entries`] call may carry.
pub const MAX_ENTRIES: usize = 1000;
/// Largest min, max and increment of a quantity rule: the most units a shopper may ask a
/// price for (the gateway's `MAX_QUANTITY`).
pub const MAX_RULE_QUANTITY: i32 = 1_000_000;
/// Most characters of an input value an error message quotes; longer ones are cut, ending
/// in an ellipsis.
pub const MAX_ECHO: usize = 64;

/// What a successful change touched: the lists, the variants whose prices may have changed
/// and the promotions. Sorted, without duplicates. `variant_ids` is empty when the change
/// reaches no variant in particular (a new empty list, or a promotion on every variant).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceChange {
    pub list_ids: Vec<i64>,
    pub variant_ids: Vec<i64>,
    pub promotion_ids: Vec<i64>,
}

impl PriceChange {
    fn new(list_ids: Vec<i64>, variant_ids: Vec<i64>, promotion_ids: Vec<i64>) -> Self {
        let tidy = |mut ids: Vec<i64>| {
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        Self {
            list_ids: tidy(list_ids),
            variant_ids: tidy(variant_ids),
            promotion_ids: tidy(promotion_ids),
        }
    }
}

/// A new price list. At most one of the four scope ids may be set (none: a base list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPriceList {
    pub code: String,
    pub name: String,
    pub currency: String,
    pub channel_id: Option<i64>,
    pub customer_group_id: Option<i64>,
    pub company_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub priority: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
}

/// Changes to a price list; `None` keeps the stored value. For the window, `Some(None)`
/// removes the bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceListChanges {
    pub name: Option<String>,
    pub priority: Option<i32>,
    pub valid_from: Option<Option<DateTime<Utc>>>,
    pub valid_until: Option<Option<DateTime<Utc>>>,
    pub active: Option<bool>,
}

/// One tier of a variant in a list: from `min_quantity` units, `amount` per unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceEntryInput {
    pub sku: String,
    pub min_quantity: i32,
    pub amount: Decimal,
}

/// Min, max and increment of a variant's quantity under a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityRuleInput {
    pub sku: String,
    pub min_quantity: i32,
    pub max_quantity: Option<i32>,
    pub increment: i32,
}

/// How a promotion discounts, as stored in `promotion.discount_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscountKind {
    /// `value` percent off (0–100), in any currency.
    PercentOff,
    /// `value` off per unit, in the promotion's currency.
    AmountOff,
    /// The unit price becomes `value` when lower, in the promotion's currency.
    FixedPrice,
}

impl DiscountKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PercentOff => "percent_off",
            Self::AmountOff => "amount_off",
            Self::FixedPrice => "fixed_price",
        }
    }

    /// The kind of a stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "percent_off" => Some(Self::PercentOff),
            "amount_off" => Some(Self::AmountOff),
            "fixed_price" => Some(Self::FixedPrice),
            _ => None,
        }
    }
}

/// A new promotion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPromotion {
    pub code: String,
    pub name: String,
    pub channel_id: Option<i64>,
    pub customer_group_id: Option<i64>,
    pub target: PromotionTarget,
    pub discount: DiscountKind,
    /// Percent for [`DiscountKind::PercentOff`], else an amount in `currency`.
    pub value: Decimal,
    /// Required for amounts, absent for percentages.
    pub currency: Option<String>,
    pub min_quantity: i32,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub stackable: bool,
    pub priority: i32,
    pub active: bool,
}

/// Changes to a promotion; `None` keeps the stored value, `Some(None)` removes a window bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromotionChanges {
    pub starts_at: Option<Option<DateTime<Utc>>>,
    pub ends_at: Option<Option<DateTime<Utc>>>,
    pub active: Option<bool>,
    pub priority: Option<i32>,
    pub value: Option<Decimal>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CoreError {
    CoreError::invalid(field, reason)
}

fn money_reason(err: MoneyError) -> String {
    match err {
        MoneyError::Negative { .. } => "must be zero or more".to_owned(),
        other => other.to_string(),
    }
}

fn check_amount(amount: Decimal, field: &str) -> Result<StoredAmount, CoreError> {
    StoredAmount::new(amount).map_err(|err| invalid(field, money_reason(err)))
}

/// `value` quoted for an error message, at most [`MAX_ECHO`] characters of it (the last an
/// ellipsis when it is cut); control characters are escaped.
fn echo(value: &str) -> String {
    if value.chars().count() <= MAX_ECHO {
        return format!("{value:?}");
    }
    let mut cut: String = value.chars().take(MAX_ECHO - 1).collect();
    cut.push('…');
    format!("{cut:?}")
}

/// Refuses a NUL character: PostgreSQL cannot store one in text (it failed with a database
/// error) while SQLite stored it.
fn check_no_nul(value: &str, field: &str) -> Result<(), CoreError> {
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_currency(currency: &str, field: &str) -> Result<(), CoreError> {
    check_no_nul(currency, field)?;
    validate_currency(currency).map_err(|_| {
        invalid(
            field,
            format!(
                "currency {} is not an ISO-4217 code of three uppercase letters A-Z",
                echo(currency)
            ),
        )
    })
}

fn check_text(value: &str, max: usize, field: &str) -> Result<(), CoreError> {
    check_no_nul(value, field)?;
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// A bidirectional embedding, override (U+202A–U+202E) or isolate (U+2066–U+2069): it can
/// make a name display as something else than it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A list or promotion name: not blank, at most [`MAX_NAME_LEN`] characters, no NUL, control
/// characters or bidirectional controls.
fn check_name(value: &str, field: &str) -> Result<(), CoreError> {
    check_text(value, MAX_NAME_LEN, field)?;
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() || is_bidi_control(c))
    {
        return Err(invalid(
            field,
            format!(
                "must not contain control characters or bidirectional overrides, found U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A list or promotion code: `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, so no spaces, control
/// characters or look-alikes (uniqueness whatever the case is checked against the table).
fn check_code(value: &str, field: &str) -> Result<(), CoreError> {
    check_no_nul(value, field)?;
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_CODE_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_CODE_LEN} characters"),
        ));
    }
    let starts_well = value.starts_with(|c: char| c.is_ascii_alphanumeric());
    let spelled_well = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !starts_well || !spelled_well {
        return Err(invalid(
            field,
            format!(
                "must start with a letter or digit and hold only ASCII letters, digits, '_', \
                 '.' and '-', got {}",
                echo(value)
            ),
        ));
    }
    Ok(())
}

/// A SKU naming a variant: not blank, no NUL.
fn check_sku(sku: &str, field: &str) -> Result<(), CoreError> {
    check_no_nul(sku, field)?;
    if sku.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

/// `at` cut to whole microseconds, the precision PostgreSQL stores (SQLite would keep
/// nanoseconds). Every input instant is cut before it is checked and stored, so a window
/// that is empty once stored is refused, identically on both databases.
fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// [`to_micros`] of an optional change of an optional bound.
fn change_to_micros(change: Option<Option<DateTime<Utc>>>) -> Option<Option<DateTime<Utc>>> {
    change.map(|bound| bound.map(to_micros))
}

fn check_window(
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    from_name: &str,
    field: &str,
) -> Result<(), CoreError> {
    match (from, until) {
        (Some(from), Some(until)) if from >= until => Err(invalid(
            field,
            format!("must be after {from_name} ({from}), got {until}"),
        )),
        _ => Ok(()),
    }
}

fn check_at_least_one(value: i32, field: &str) -> Result<(), CoreError> {
    if value < 1 {
        return Err(invalid(field, format!("must be at least 1, got {value}")));
    }
    Ok(())
}

/// A quantity of a rule: 1 to [`MAX_RULE_QUANTITY`].
fn check_rule_quantity(value: i32, field: &str) -> Result<(), CoreError> {
    check_at_least_one(value, field)?;
    if value > MAX_RULE_QUANTITY {
        return Err(invalid(
            field,
            format!("must be at most {MAX_RULE_QUANTITY}, got {value}"),
        ));
    }
    Ok(())
}

/// A unique-key violation on `field` becomes a clear input error (a concurrent writer got
/// there first); every other database error stays one.
fn unique_as_input(err: DbErr, field: &str, reason: &str) -> CoreError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => invalid(field, reason),
        _ => CoreError::Database(err),
    }
}

/// Starts a write transaction. On SQLite it is IMMEDIATE: it takes the database's write lock
/// at `BEGIN`, waiting on the busy timeout while another writer holds it. (A deferred
/// transaction that read and then writes after another writer committed cannot wait: SQLite
/// fails it with `SQLITE_BUSY_SNAPSHOT`, "database is locked".) PostgreSQL ignores the mode.
async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// On PostgreSQL, makes creations of one code in `table` take turns whatever the case of
/// the code: a transaction-scoped advisory lock on the lowercase code, so the second
/// creation's check sees the first's committed row. (On SQLite the IMMEDIATE transaction
/// serializes every writer already.)
async fn lock_code(txn: &DatabaseTransaction, table: &str, code: &str) -> Result<(), DbErr> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("{table}.code:{}", code.to_ascii_lowercase()).into()],
        ))
        .await?;
    }
    Ok(())
}

/// The key of a [`CoreError::NotFound`] for an input value naming nothing: the value (quoted,
/// cut short) and, in parentheses at the end, the field that carried it.
fn unknown_key(value: &str, field: &str) -> String {
    format!("with SKU {} ({field})", echo(value))
}

/// The input field a [`CoreError::NotFound`] of this module names (`entries[3].sku`), when
/// an input value named nothing; `None` for an unknown list or promotion and other errors.
pub fn not_found_field(err: &CoreError) -> Option<&str> {
    match err {
        CoreError::NotFound {
            entity: "variant",
            key,
        } => key
            .strip_suffix(')')
            .and_then(|rest| rest.rsplit_once(" ("))
            .map(|(_, field)| field),
        _ => None,
    }
}

/// The list, its row locked until the transaction ends (`SELECT … FOR UPDATE` on
/// PostgreSQL; on SQLite the IMMEDIATE transaction holds the write lock already): writers of
/// one list take turns, and each validates against what the previous one committed.
async fn lock_list(
    txn: &DatabaseTransaction,
    list_id: i64,
) -> Result<price_list::Model, CoreError> {
    price_list::Entity::find_by_id(list_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "price list",
            key: list_id.to_string(),
        })
}

/// The promotion, its row locked like [`lock_list`]'s.
async fn lock_promotion(
    txn: &DatabaseTransaction,
    promotion_id: i64,
) -> Result<promotion::Model, CoreError> {
    promotion::Entity::find_by_id(promotion_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "promotion",
            key: promotion_id.to_string(),
        })
}

/// The variants of `skus`, by SKU; the first unknown SKU is `NotFound`, naming its field
/// (`field(index)`).
async fn variants_by_sku(
    db: &impl ConnectionTrait,
    skus: &[&str],
    field: impl Fn(usize) -> String,
) -> Result<HashMap<String, variant::Model>, CoreError> {
    let wanted: BTreeSet<&str> = skus.iter().copied().collect();
    let found: HashMap<String, variant::Model> = variant::Entity::find()
        .filter(variant::Column::Sku.is_in(wanted.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|v| (v.sku.clone(), v))
        .collect();
    if let Some((index, missing)) = skus
        .iter()
        .enumerate()
        .find(|(_, sku)| !found.contains_key(**sku))
    {
        return Err(CoreError::NotFound {
            entity: "variant",
            key: unknown_key(missing, &field(index)),
        });
    }
    Ok(found)
}

/// The channel `id` names, or an input error on `field`.
async fn existing_channel(
    db: &impl ConnectionTrait,
    id: i64,
    field: &str,
) -> Result<channel::Model, CoreError> {
    channel::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| invalid(field, format!("no channel has id {id}")))
}

async fn check_group(db: &impl ConnectionTrait, id: i64, field: &str) -> Result<(), CoreError> {
    match customer_group::Entity::find_by_id(id).one(db).await? {
        Some(_) => Ok(()),
        None => Err(invalid(field, format!("no customer group has id {id}"))),
    }
}

/// Creates a price list. Validates the code (spelling, unique whatever its case), name,
/// currency (three uppercase letters; a channel list's currency must be its channel's), the
/// scope (at most one, and it must exist) and the window (cut to microseconds).
pub async fn create_price_list(
    db: &DatabaseConnection,
    mut input: NewPriceList,
) -> Result<(price_list::Model, PriceChange), CoreError> {
    check_code(&input.code, "input.code")?;
    check_name(&input.name, "input.name")?;
    check_currency(&input.currency, "input.currency")?;
    input.valid_from = input.valid_from.map(to_micros);
    input.valid_until = input.valid_until.map(to_micros);
    let scopes = [
        ("input.channelId", input.channel_id),
        ("input.customerGroupId", input.customer_group_id),
        ("input.companyId", input.company_id),
        ("input.customerId", input.customer_id),
    ];
    let set: Vec<&str> = scopes
        .iter()
        .filter(|(_, id)| id.is_some())
        .map(|(name, _)| *name)
        .collect();
    if set.len() > 1 {
        return Err(invalid(
            set[1],
            format!(
                "a price list has at most one scope; {} is set already",
                set[0].trim_start_matches("input.")
            ),
        ));
    }
    check_window(
        input.valid_from,
        input.valid_until,
        "validFrom",
        "input.validUntil",
    )?;

    let txn = begin_write(db).await?;
    lock_code(&txn, "price_list", &input.code).await?;
    let taken = price_list::Entity::find()
        .filter(
            Expr::expr(Func::lower(Expr::col(price_list::Column::Code)))
                .eq(input.code.to_ascii_lowercase()),
        )
        .one(&txn)
        .await?;
    let duplicate = |code: &str| {
        format!(
            "a price list with code {} exists already (codes are unique whatever their case)",
            echo(code)
        )
    };
    if let Some(taken) = taken {
        return Err(invalid("input.code", duplicate(&taken.code)));
    }
    if let Some(id) = input.channel_id {
        let channel = existing_channel(&txn, id, "input.channelId").await?;
        if channel.currency != input.currency {
            return Err(invalid(
                "input.currency",
                format!(
                    "channel {} sells in {}, so its lists must be in {}, not {}",
                    channel.code, channel.currency, channel.currency, input.currency
                ),
            ));
        }
    }
    if let Some(id) = input.customer_group_id {
        check_group(&txn, id, "input.customerGroupId").await?;
    }
    if let Some(id) = input.company_id
        && company::Entity::find_by_id(id).one(&txn).await?.is_none()
    {
        return Err(invalid(
            "input.companyId",
            format!("no company has id {id}"),
        ));
    }
    if let Some(id) = input.customer_id
        && customer::Entity::find_by_id(id).one(&txn).await?.is_none()
    {
        return Err(invalid(
            "input.customerId",
            format!("no customer has id {id}"),
        ));
    }
    let now = Utc::now();
    let code = input.code.clone();
    let saved = price_list::ActiveModel {
        code: Set(input.code),
        name: Set(input.name),
        currency: Set(input.currency),
        channel_id: Set(input.channel_id),
        customer_group_id: Set(input.customer_group_id),
        company_id: Set(input.company_id),
        customer_id: Set(input.customer_id),
        priority: Set(input.priority),
        valid_from: Set(input.valid_from),
        valid_until: Set(input.valid_until),
        active: Set(input.active),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|err| unique_as_input(err, "input.code", &duplicate(&code)))?;
    txn.commit().await?;
    let change = PriceChange::new(vec![saved.id], Vec::new(), Vec::new());
    Ok((saved, change))
}

/// The variants with an entry in a list.
async fn list_variant_ids(db: &impl ConnectionTrait, list_id: i64) -> Result<Vec<i64>, DbErr> {
    Ok(price_list_entry::Entity::find()
        .filter(price_list_entry::Column::PriceListId.eq(list_id))
        .all(db)
        .await?
        .into_iter()
        .map(|e| e.variant_id)
        .collect())
}

/// Changes a list's name, priority, window or active flag. Every variant priced by the list
/// counts as touched.
pub async fn update_price_list(
    db: &DatabaseConnection,
    list_id: i64,
    mut changes: PriceListChanges,
) -> Result<(price_list::Model, PriceChange), CoreError> {
    if let Some(name) = &changes.name {
        check_name(name, "input.name")?;
    }
    changes.valid_from = change_to_micros(changes.valid_from);
    changes.valid_until = change_to_micros(changes.valid_until);
    let txn = begin_write(db).await?;
    let list = lock_list(&txn, list_id).await?;
    let valid_from = changes.valid_from.unwrap_or(list.valid_from);
    let valid_until = changes.valid_until.unwrap_or(list.valid_until);
    let field = if changes.valid_until.is_some() {
        "input.validUntil"
    } else {
        "input.validFrom"
    };
    if let (Some(from), Some(until)) = (valid_from, valid_until)
        && from >= until
    {
        return Err(invalid(
            field,
            format!("validFrom ({from}) must be before validUntil ({until})"),
        ));
    }
    let mut active: price_list::ActiveModel = list.into();
    if let Some(name) = changes.name {
        active.name = Set(name);
    }
    if let Some(priority) = changes.priority {
        active.priority = Set(priority);
    }
    active.valid_from = Set(valid_from);
    active.valid_until = Set(valid_until);
    if let Some(flag) = changes.active {
        active.active = Set(flag);
    }
    active.updated_at = Set(Utc::now());
    let saved = active.update(&txn).await?;
    let variant_ids = list_variant_ids(&txn, list_id).await?;
    txn.commit().await?;
    let change = PriceChange::new(vec![list_id], variant_ids, Vec::new());
    Ok((saved, change))
}

/// A tier while checking that more units never cost more per unit.
struct Tier {
    amount: Decimal,
    /// Its index in the input, when the call sets it.
    input: Option<usize>,
}

/// Adds or replaces tiers of a list, one per (variant, min quantity). Every entry is checked
/// first (min quantity ≥ 1, amount storable, no duplicates, SKUs exist) and so is the
/// result: within the list, a variant's tiers must not rise in price as the min quantity
/// grows. Returns the saved entries in input order.
pub async fn set_price_entries(
    db: &DatabaseConnection,
    list_id: i64,
    entries: Vec<PriceEntryInput>,
) -> Result<(Vec<price_list_entry::Model>, PriceChange), CoreError> {
    if entries.is_empty() {
        return Err(invalid("entries", "give at least one entry"));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(invalid(
            "entries",
            format!(
                "at most {MAX_ENTRIES} entries per call, got {}",
                entries.len()
            ),
        ));
    }
    let mut amounts = Vec::with_capacity(entries.len());
    let mut seen: HashMap<(&str, i32), usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        check_sku(&entry.sku, &format!("entries[{i}].sku"))?;
        check_at_least_one(entry.min_quantity, &format!("entries[{i}].minQuantity"))?;
        amounts.push(check_amount(entry.amount, &format!("entries[{i}].amount"))?);
        if let Some(first) = seen.insert((entry.sku.as_str(), entry.min_quantity), i) {
            return Err(invalid(
                format!("entries[{i}].minQuantity"),
                format!(
                    "entries[{first}] sets the tier of {} from {} units already",
                    echo(&entry.sku),
                    entry.min_quantity
                ),
            ));
        }
    }

    let txn = begin_write(db).await?;
    // Locked before the stored tiers are read: a concurrent change to this list waits, and
    // the tiers checked below are the ones this call's write will sit beside.
    let list = lock_list(&txn, list_id).await?;
    let skus: Vec<&str> = entries.iter().map(|e| e.sku.as_str()).collect();
    let variants = variants_by_sku(&txn, &skus, |i| format!("entries[{i}].sku")).await?;
    let variant_ids: Vec<i64> = variants.values().map(|v| v.id).collect();
    let existing = price_list_entry::Entity::find()
        .filter(price_list_entry::Column::PriceListId.eq(list_id))
        .filter(price_list_entry::Column::VariantId.is_in(variant_ids.iter().copied()))
        .all(&txn)
        .await?;

    // The tiers after the call, per variant, by min quantity.
    let mut tiers: HashMap<i64, BTreeMap<i32, Tier>> = HashMap::new();
    for entry in &existing {
        tiers.entry(entry.variant_id).or_default().insert(
            entry.min_quantity,
            Tier {
                amount: entry.amount.amount(),
                input: None,
            },
        );
    }
    for (i, entry) in entries.iter().enumerate() {
        tiers.entry(variants[&entry.sku].id).or_default().insert(
            entry.min_quantity,
            Tier {
                amount: entry.amount,
                input: Some(i),
            },
        );
    }
    let mut violations = Vec::new();
    for (variant_id, by_quantity) in &tiers {
        let ordered: Vec<(&i32, &Tier)> = by_quantity.iter().collect();
        for pair in ordered.windows(2) {
            let ((&fewer, cheaper), (&more, dearer)) = (pair[0], pair[1]);
            if dearer.amount <= cheaper.amount {
                continue;
            }
            // Blame the tier this call sets; a conflict between stored tiers alone is not ours.
            let Some(index) = dearer.input.or(cheaper.input) else {
                continue;
            };
            let sku = variants
                .values()
                .find(|v| v.id == *variant_id)
                .map_or_else(String::new, |v| v.sku.clone());
            violations.push((
                index,
                format!(
                    "{sku} would cost {} per unit from {more} units but {} from {fewer}: more \
                     units must never cost more per unit",
                    dearer.amount.normalize(),
                    cheaper.amount.normalize()
                ),
            ));
        }
    }
    if let Some((index, reason)) = violations.into_iter().min_by_key(|(i, _)| *i) {
        return Err(invalid(format!("entries[{index}].amount"), reason));
    }

    let now = Utc::now();
    let mut saved = Vec::with_capacity(entries.len());
    for (i, (entry, amount)) in entries.iter().zip(amounts).enumerate() {
        let variant_id = variants[&entry.sku].id;
        let stored = existing
            .iter()
            .find(|e| e.variant_id == variant_id && e.min_quantity == entry.min_quantity);
        let model = match stored {
            Some(stored) => {
                let mut active: price_list_entry::ActiveModel = stored.clone().into();
                active.amount = Set(amount);
                active.updated_at = Set(now);
                active.update(&txn).await?
            }
            None => price_list_entry::ActiveModel {
                price_list_id: Set(list.id),
                variant_id: Set(variant_id),
                min_quantity: Set(entry.min_quantity),
                amount: Set(amount),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .map_err(|err| {
                unique_as_input(
                    err,
                    &format!("entries[{i}].minQuantity"),
                    &format!(
                        "another change set the tier of {} from {} units at the same \
                             time; try again",
                        echo(&entry.sku),
                        entry.min_quantity
                    ),
                )
            })?,
        };
        saved.push(model);
    }
    txn.commit().await?;
    let change = PriceChange::new(vec![list.id], variant_ids, Vec::new());
    Ok((saved, change))
}

/// Removes one tier of a variant from a list; returns the removed entry. (Removing a tier
/// cannot make more units cost more per unit.)
pub async fn remove_price_entry(
    db: &DatabaseConnection,
    list_id: i64,
    sku: &str,
    min_quantity: i32,
) -> Result<(price_list_entry::Model, PriceChange), CoreError> {
    check_no_nul(sku, "sku")?;
    let txn = begin_write(db).await?;
    let list = lock_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[sku], |_| "sku".to_owned()).await?;
    let variant_id = variants[sku].id;
    let entry = price_list_entry::Entity::find()
        .filter(price_list_entry::Column::PriceListId.eq(list_id))
        .filter(price_list_entry::Column::VariantId.eq(variant_id))
        .filter(price_list_entry::Column::MinQuantity.eq(min_quantity))
        .one(&txn)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "price entry",
            key: format!("{sku} from {min_quantity} units in list {}", list.code),
        })?;
    price_list_entry::Entity::delete_by_id(entry.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    let change = PriceChange::new(vec![list_id], vec![variant_id], Vec::new());
    Ok((entry, change))
}

/// Sets the quantity rule of a variant in a list (one per list and variant): min ≥ 1,
/// max ≥ min when given, increment ≥ 1, each at most [`MAX_RULE_QUANTITY`].
pub async fn set_quantity_rule(
    db: &DatabaseConnection,
    list_id: i64,
    input: QuantityRuleInput,
) -> Result<(quantity_rule::Model, PriceChange), CoreError> {
    check_sku(&input.sku, "input.sku")?;
    check_rule_quantity(input.min_quantity, "input.minQuantity")?;
    if let Some(max) = input.max_quantity {
        if max < input.min_quantity {
            return Err(invalid(
                "input.maxQuantity",
                format!(
                    "must be at least minQuantity ({}), got {max}",
                    input.min_quantity
                ),
            ));
        }
        check_rule_quantity(max, "input.maxQuantity")?;
    }
    check_rule_quantity(input.increment, "input.increment")?;

    let txn = begin_write(db).await?;
    lock_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[input.sku.as_str()], |_| "input.sku".to_owned()).await?;
    let variant_id = variants[&input.sku].id;
    let stored = quantity_rule::Entity::find()
        .filter(quantity_rule::Column::PriceListId.eq(list_id))
        .filter(quantity_rule::Column::VariantId.eq(variant_id))
        .one(&txn)
        .await?;
    let now = Utc::now();
    let saved = match stored {
        Some(stored) => {
            let mut active: quantity_rule::ActiveModel = stored.into();
            active.min_quantity = Set(input.min_quantity);
            active.max_quantity = Set(input.max_quantity);
            active.increment = Set(input.increment);
            active.updated_at = Set(now);
            active.update(&txn).await?
        }
        None => quantity_rule::ActiveModel {
            price_list_id: Set(list_id),
            variant_id: Set(variant_id),
            min_quantity: Set(input.min_quantity),
            max_quantity: Set(input.max_quantity),
            increment: Set(input.increment),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(|err| {
            unique_as_input(
                err,
                "input.sku",
                &format!(
                    "another change set the quantity rule of {} at the same time; try again",
                    echo(&input.sku)
                ),
            )
        })?,
    };
    txn.commit().await?;
    let change = PriceChange::new(vec![list_id], vec![variant_id], Vec::new());
    Ok((saved, change))
}

/// Removes the quantity rule of a variant in a list; returns the removed rule.
pub async fn remove_quantity_rule(
    db: &DatabaseConnection,
    list_id: i64,
    sku: &str,
) -> Result<(quantity_rule::Model, PriceChange), CoreError> {
    check_no_nul(sku, "sku")?;
    let txn = begin_write(db).await?;
    let list = lock_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[sku], |_| "sku".to_owned()).await?;
    let variant_id = variants[sku].id;
    let rule = quantity_rule::Entity::find()
        .filter(quantity_rule::Column::PriceListId.eq(list_id))
        .filter(quantity_rule::Column::VariantId.eq(variant_id))
        .one(&txn)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "quantity rule",
            key: format!("of {sku} in list {}", list.code),
        })?;
    quantity_rule::Entity::delete_by_id(rule.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    let change = PriceChange::new(vec![list_id], vec![variant_id], Vec::new());
    Ok((rule, change))
}

/// Checks a promotion's value for its kind: a percentage 0–100, or a storable amount.
fn check_promotion_value(
    kind: DiscountKind,
    value: Decimal,
    field: &str,
) -> Result<StoredAmount, CoreError> {
    let stored = check_amount(value, field)?;
    if kind == DiscountKind::PercentOff && value > Decimal::ONE_HUNDRED {
        return Err(invalid(
            field,
            format!("a percentage must be between 0 and 100, got {value}"),
        ));
    }
    Ok(stored)
}

/// The variants a promotion target reaches (empty for every variant).
async fn target_variant_ids(
    db: &impl ConnectionTrait,
    target: PromotionTarget,
) -> Result<Vec<i64>, DbErr> {
    let product_ids: Vec<i64> = match target {
        PromotionTarget::All => return Ok(Vec::new()),
        PromotionTarget::Variant(id) => return Ok(vec![id]),
        PromotionTarget::Product(id) => vec![id],
        PromotionTarget::Category(id) => {
            let categories = category::Entity::find()
                .order_by_asc(category::Column::Id)
                .all(db)
                .await?;
            let subtree: Vec<i64> = categories
                .iter()
                .filter(|c| super::load::category_path(&categories, c.id).contains(&id))
                .map(|c| c.id)
                .collect();
            product::Entity::find()
                .filter(product::Column::CategoryId.is_in(subtree))
                .all(db)
                .await?
                .into_iter()
                .map(|p| p.id)
                .collect()
        }
    };
    Ok(variant::Entity::find()
        .filter(variant::Column::ProductId.is_in(product_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect())
}

/// The target of a stored promotion.
fn stored_target(p: &promotion::Model) -> PromotionTarget {
    match (p.target_kind.as_str(), p.target_id) {
        ("variant", Some(id)) => PromotionTarget::Variant(id),
        ("product", Some(id)) => PromotionTarget::Product(id),
        ("category", Some(id)) => PromotionTarget::Category(id),
        _ => PromotionTarget::All,
    }
}

/// Creates a promotion. Validates the code (spelling, unique whatever its case), name,
/// channel and group (exist), the target (exists), the value (a percentage 0–100, or a
/// storable amount with a currency, the channel's when there is one), the min quantity (≥ 1)
/// and the window (cut to microseconds).
pub async fn create_promotion(
    db: &DatabaseConnection,
    mut input: NewPromotion,
) -> Result<(promotion::Model, PriceChange), CoreError> {
    check_code(&input.code, "input.code")?;
    check_name(&input.name, "input.name")?;
    input.starts_at = input.starts_at.map(to_micros);
    input.ends_at = input.ends_at.map(to_micros);
    let value = check_promotion_value(input.discount, input.value, "input.value")?;
    let currency = match (input.discount, &input.currency) {
        (DiscountKind::PercentOff, None) => None,
        (DiscountKind::PercentOff, Some(_)) => {
            return Err(invalid(
                "input.currency",
                "a percentage applies in any currency: leave currency out",
            ));
        }
        (_, None) => {
            return Err(invalid(
                "input.currency",
                "an amount needs its currency (three uppercase letters, e.g. USD)",
            ));
        }
        (_, Some(currency)) => {
            check_currency(currency, "input.currency")?;
            Some(currency.clone())
        }
    };
    check_at_least_one(input.min_quantity, "input.minQuantity")?;
    check_window(input.starts_at, input.ends_at, "startsAt", "input.endsAt")?;

    let txn = begin_write(db).await?;
    lock_code(&txn, "promotion", &input.code).await?;
    let duplicate = |code: &str| {
        format!(
            "a promotion with code {} exists already (codes are unique whatever their case)",
            echo(code)
        )
    };
    let taken = promotion::Entity::find()
        .filter(
            Expr::expr(Func::lower(Expr::col(promotion::Column::Code)))
                .eq(input.code.to_ascii_lowercase()),
        )
        .one(&txn)
        .await?;
    if let Some(taken) = taken {
        return Err(invalid("input.code", duplicate(&taken.code)));
    }
    if let Some(id) = input.channel_id {
        let channel = existing_channel(&txn, id, "input.channelId").await?;
        if let Some(currency) = &currency
            && *currency != channel.currency
        {
            return Err(invalid(
                "input.currency",
                format!(
                    "channel {} sells in {}, not {currency}",
                    channel.code, channel.currency
                ),
            ));
        }
    }
    if let Some(id) = input.customer_group_id {
        check_group(&txn, id, "input.customerGroupId").await?;
    }
    let (target_kind, target_id) = match input.target {
        PromotionTarget::All => ("all", None),
        PromotionTarget::Variant(id) => {
            let found = variant::Entity::find_by_id(id).one(&txn).await?;
            if found.is_none() {
                return Err(invalid("input.targetId", format!("no variant has id {id}")));
            }
            ("variant", Some(id))
        }
        PromotionTarget::Product(id) => {
            let found = product::Entity::find_by_id(id).one(&txn).await?;
            if found.is_none() {
                return Err(invalid("input.targetId", format!("no product has id {id}")));
            }
            ("product", Some(id))
        }
        PromotionTarget::Category(id) => {
            let found = category::Entity::find_by_id(id).one(&txn).await?;
            if found.is_none() {
                return Err(invalid(
                    "input.targetId",
                    format!("no category has id {id}"),
                ));
            }
            ("category", Some(id))
        }
    };
    let now = Utc::now();
    let code = input.code.clone();
    let saved = promotion::ActiveModel {
        code: Set(input.code),
        name: Set(input.name),
        channel_id: Set(input.channel_id),
        customer_group_id: Set(input.customer_group_id),
        target_kind: Set(target_kind.to_owned()),
        target_id: Set(target_id),
        discount_kind: Set(input.discount.as_str().to_owned()),
        value: Set(value),
        currency: Set(currency),
        min_quantity: Set(input.min_quantity),
        starts_at: Set(input.starts_at),
        ends_at: Set(input.ends_at),
        stackable: Set(input.stackable),
        priority: Set(input.priority),
        active: Set(input.active),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|err| unique_as_input(err, "input.code", &duplicate(&code)))?;
    let variant_ids = target_variant_ids(&txn, input.target).await?;
    txn.commit().await?;
    let change = PriceChange::new(Vec::new(), variant_ids, vec![saved.id]);
    Ok((saved, change))
}

/// Changes a promotion's window, active flag, priority or value (checked against its kind).
pub async fn update_promotion(
    db: &DatabaseConnection,
    promotion_id: i64,
    mut changes: PromotionChanges,
) -> Result<(promotion::Model, PriceChange), CoreError> {
    changes.starts_at = change_to_micros(changes.starts_at);
    changes.ends_at = change_to_micros(changes.ends_at);
    let txn = begin_write(db).await?;
    let stored = lock_promotion(&txn, promotion_id).await?;
    let value = match changes.value {
        Some(value) => {
            let kind = DiscountKind::parse(&stored.discount_kind).ok_or_else(|| {
                invalid(
                    "input.value",
                    format!("unknown discount kind {:?}", stored.discount_kind),
                )
            })?;
            Some(check_promotion_value(kind, value, "input.value")?)
        }
        None => None,
    };
    let starts_at = changes.starts_at.unwrap_or(stored.starts_at);
    let ends_at = changes.ends_at.unwrap_or(stored.ends_at);
    if let (Some(from), Some(until)) = (starts_at, ends_at)
        && from >= until
    {
        let field = if changes.ends_at.is_some() {
            "input.endsAt"
        } else {
            "input.startsAt"
        };
        return Err(invalid(
            field,
            format!("startsAt ({from}) must be before endsAt ({until})"),
        ));
    }
    let target = stored_target(&stored);
    let mut active: promotion::ActiveModel = stored.into();
    active.starts_at = Set(starts_at);
    active.ends_at = Set(ends_at);
    if let Some(flag) = changes.active {
        active.active = Set(flag);
    }
    if let Some(priority) = changes.priority {
        active.priority = Set(priority);
    }
    if let Some(value) = value {
        active.value = Set(value);
    }
    active.updated_at = Set(Utc::now());
    let saved = active.update(&txn).await?;
    let variant_ids = target_variant_ids(&txn, target).await?;
    txn.commit().await?;
    let change = PriceChange::new(Vec::new(), variant_ids, vec![promotion_id]);
    Ok((saved, change))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn field_of(result: Result<(), CoreError>) -> Option<String> {
        match result {
            Err(CoreError::InvalidInput { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn codes_are_letters_digits_and_a_few_marks() {
        for good in ["base-usd", "WINTER-SALE", "a", "9.x_y-z", &"x".repeat(64)] {
            assert_eq!(field_of(check_code(good, "input.code")), None, "{good}");
        }
        for bad in [
            "",
            " base-usd",
            "base-usd ",
            "base usd",
            "-x",
            ".x",
            "_x",
            "a\0b",
            "tab\tx",
            "café",
            "ＡＢＣ",
            &"x".repeat(65),
        ] {
            assert_eq!(
                field_of(check_code(bad, "input.code")).as_deref(),
                Some("input.code"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_refuse_nul_controls_and_bidi_overrides() {
        for good in ["Winter sale", "Soldes d'été", "セール", "a – b"] {
            assert_eq!(field_of(check_name(good, "input.name")), None, "{good}");
        }
        for bad in [
            " ",
            "a\0",
            "a\u{7}",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            "a\u{202a}",
            "a\u{202e}",
            "a\u{2066}",
            "a\u{2069}",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                field_of(check_name(bad, "input.name")).as_deref(),
                Some("input.name"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn echoes_are_cut_to_64_characters() {
        assert_eq!(echo("ABC"), "\"ABC\"");
        let long = "Z".repeat(10_000);
        let shown = echo(&long);
        assert_eq!(shown, format!("\"{}…\"", "Z".repeat(MAX_ECHO - 1)));
        assert_eq!(shown.trim_matches('"').chars().count(), MAX_ECHO);
        assert_eq!(echo(&"Z".repeat(MAX_ECHO)).len(), MAX_ECHO + 2);
    }

    #[test]
    fn an_unknown_sku_names_its_field() {
        let err = CoreError::NotFound {
            entity: "variant",
            key: unknown_key("NO (SUCH) SKU", "entries[3].sku"),
        };
        assert_eq!(not_found_field(&err), Some("entries[3].sku"));
        assert_eq!(
            err.to_string(),
            "variant with SKU \"NO (SUCH) SKU\" (entries[3].sku) not found"
        );
        let list = CoreError::NotFound {
            entity: "price list",
            key: "7".into(),
        };
        assert_eq!(not_found_field(&list), None);
    }

    #[test]
    fn instants_are_cut_to_whole_microseconds() {
        let at = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let nanos = |n: u32| at.with_nanosecond(n).unwrap();
        assert_eq!(to_micros(nanos(123_456_789)), nanos(123_456_000));
        assert_eq!(to_micros(nanos(123_456_900)), nanos(123_456_000));
        assert_eq!(to_micros(nanos(999)), at);
        // Before 1970 too: the fraction counts forward from the whole second.
        let old = Utc.with_ymd_and_hms(1960, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            to_micros(old.with_nanosecond(1_999).unwrap()),
            old.with_nanosecond(1_000).unwrap()
        );
        // An empty window once cut is refused.
        let (from, until) = (to_micros(nanos(123_456_789)), to_micros(nanos(123_456_900)));
        assert!(check_window(Some(from), Some(until), "validFrom", "input.validUntil").is_err());
    }

    #[test]
    fn rule_quantities_stay_within_what_a_shopper_may_ask_for() {
        assert!(check_rule_quantity(1, "f").is_ok());
        assert!(check_rule_quantity(MAX_RULE_QUANTITY, "f").is_ok());
        for bad in [i32::MIN, -1, 0, MAX_RULE_QUANTITY + 1, i32::MAX] {
            assert!(check_rule_quantity(bad, "f").is_err(), "{bad}");
        }
    }
}

//! Changing prices: price lists, their entries (volume tiers), quantity rules and promotions.
//!
//! Every function runs in one transaction and validates all of its input before the first
//! write, so an error leaves nothing half-written. Validation errors are
//! [`CoreError::InvalidInput`] whose `field` names the input as the gateway spells it
//! (`input.currency`, `entries[2].amount`); an unknown list, promotion or SKU is
//! [`CoreError::NotFound`]. Each function returns the saved row and a [`PriceChange`] naming
//! exactly what was touched, for the caller to announce once the transaction has committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set, SqlErr, TransactionTrait,
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

fn check_currency(currency: &str, field: &str) -> Result<(), CoreError> {
    validate_currency(currency).map_err(|err| invalid(field, err.to_string()))
}

fn check_text(value: &str, max: usize, field: &str) -> Result<(), CoreError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
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

/// A unique-key violation on `field` becomes a clear input error (a concurrent writer got
/// there first); every other database error stays one.
fn unique_as_input(err: DbErr, field: &str, reason: &str) -> CoreError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => invalid(field, reason),
        _ => CoreError::Database(err),
    }
}

async fn find_list(
    db: &impl ConnectionTrait,
    list_id: i64,
) -> Result<price_list::Model, CoreError> {
    price_list::Entity::find_by_id(list_id)
        .one(db)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "price list",
            key: list_id.to_string(),
        })
}

async fn find_promotion(
    db: &impl ConnectionTrait,
    promotion_id: i64,
) -> Result<promotion::Model, CoreError> {
    promotion::Entity::find_by_id(promotion_id)
        .one(db)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "promotion",
            key: promotion_id.to_string(),
        })
}

/// The variants of `skus`, by SKU; the first unknown SKU is `NotFound`.
async fn variants_by_sku(
    db: &impl ConnectionTrait,
    skus: &[&str],
) -> Result<HashMap<String, variant::Model>, CoreError> {
    let wanted: BTreeSet<&str> = skus.iter().copied().collect();
    let found: HashMap<String, variant::Model> = variant::Entity::find()
        .filter(variant::Column::Sku.is_in(wanted.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|v| (v.sku.clone(), v))
        .collect();
    if let Some(missing) = skus.iter().find(|sku| !found.contains_key(**sku)) {
        return Err(CoreError::NotFound {
            entity: "variant",
            key: (*missing).to_owned(),
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

/// Creates a price list. Validates the code (unique), name, currency (three uppercase
/// letters; a channel list's currency must be its channel's), the scope (at most one, and it
/// must exist) and the window.
pub async fn create_price_list(
    db: &DatabaseConnection,
    input: NewPriceList,
) -> Result<(price_list::Model, PriceChange), CoreError> {
    check_text(&input.code, MAX_CODE_LEN, "input.code")?;
    check_text(&input.name, MAX_NAME_LEN, "input.name")?;
    check_currency(&input.currency, "input.currency")?;
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

    let txn = db.begin().await?;
    let taken = price_list::Entity::find()
        .filter(price_list::Column::Code.eq(input.code.as_str()))
        .one(&txn)
        .await?;
    let duplicate = format!("a price list with code {:?} exists already", input.code);
    if taken.is_some() {
        return Err(invalid("input.code", duplicate));
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
    .map_err(|err| unique_as_input(err, "input.code", &duplicate))?;
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
    changes: PriceListChanges,
) -> Result<(price_list::Model, PriceChange), CoreError> {
    if let Some(name) = &changes.name {
        check_text(name, MAX_NAME_LEN, "input.name")?;
    }
    let txn = db.begin().await?;
    let list = find_list(&txn, list_id).await?;
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
        if entry.sku.trim().is_empty() {
            return Err(invalid(format!("entries[{i}].sku"), "must not be empty"));
        }
        check_at_least_one(entry.min_quantity, &format!("entries[{i}].minQuantity"))?;
        amounts.push(check_amount(entry.amount, &format!("entries[{i}].amount"))?);
        if let Some(first) = seen.insert((entry.sku.as_str(), entry.min_quantity), i) {
            return Err(invalid(
                format!("entries[{i}].minQuantity"),
                format!(
                    "entries[{first}] sets the tier of {} from {} units already",
                    entry.sku, entry.min_quantity
                ),
            ));
        }
    }

    let txn = db.begin().await?;
    let list = find_list(&txn, list_id).await?;
    let skus: Vec<&str> = entries.iter().map(|e| e.sku.as_str()).collect();
    let variants = variants_by_sku(&txn, &skus).await?;
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
    for (entry, amount) in entries.iter().zip(amounts) {
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
            None => {
                price_list_entry::ActiveModel {
                    price_list_id: Set(list.id),
                    variant_id: Set(variant_id),
                    min_quantity: Set(entry.min_quantity),
                    amount: Set(amount),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await?
            }
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
    let txn = db.begin().await?;
    let list = find_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[sku]).await?;
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
/// max ≥ min when given, increment ≥ 1.
pub async fn set_quantity_rule(
    db: &DatabaseConnection,
    list_id: i64,
    input: QuantityRuleInput,
) -> Result<(quantity_rule::Model, PriceChange), CoreError> {
    if input.sku.trim().is_empty() {
        return Err(invalid("input.sku", "must not be empty"));
    }
    check_at_least_one(input.min_quantity, "input.minQuantity")?;
    if let Some(max) = input.max_quantity
        && max < input.min_quantity
    {
        return Err(invalid(
            "input.maxQuantity",
            format!(
                "must be at least minQuantity ({}), got {max}",
                input.min_quantity
            ),
        ));
    }
    check_at_least_one(input.increment, "input.increment")?;

    let txn = db.begin().await?;
    find_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[input.sku.as_str()]).await?;
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
        None => {
            quantity_rule::ActiveModel {
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
            .await?
        }
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
    let txn = db.begin().await?;
    let list = find_list(&txn, list_id).await?;
    let variants = variants_by_sku(&txn, &[sku]).await?;
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

/// Creates a promotion. Validates the code (unique), name, channel and group (exist), the
/// target (exists), the value (a percentage 0–100, or a storable amount with a currency, the
/// channel's when there is one), the min quantity (≥ 1) and the window.
pub async fn create_promotion(
    db: &DatabaseConnection,
    input: NewPromotion,
) -> Result<(promotion::Model, PriceChange), CoreError> {
    check_text(&input.code, MAX_CODE_LEN, "input.code")?;
    check_text(&input.name, MAX_NAME_LEN, "input.name")?;
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

    let txn = db.begin().await?;
    let duplicate = format!("a promotion with code {:?} exists already", input.code);
    let taken = promotion::Entity::find()
        .filter(promotion::Column::Code.eq(input.code.as_str()))
        .one(&txn)
        .await?;
    if taken.is_some() {
        return Err(invalid("input.code", duplicate));
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
    .map_err(|err| unique_as_input(err, "input.code", &duplicate))?;
    let variant_ids = target_variant_ids(&txn, input.target).await?;
    txn.commit().await?;
    let change = PriceChange::new(Vec::new(), variant_ids, vec![saved.id]);
    Ok((saved, change))
}

/// Changes a promotion's window, active flag, priority or value (checked against its kind).
pub async fn update_promotion(
    db: &DatabaseConnection,
    promotion_id: i64,
    changes: PromotionChanges,
) -> Result<(promotion::Model, PriceChange), CoreError> {
    let txn = db.begin().await?;
    let stored = find_promotion(&txn, promotion_id).await?;
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

//! Price resolution (DESIGN.md §5) as one pure function: plain data in, a [`PriceBreakdown`]
//! with every rule that shaped the price out. No I/O: the caller loads the candidates.
//!
//! The order of the rules:
//! 1. The list price: among the price lists that apply to the viewer (active, in the channel's
//!    currency, inside their validity window, scoped to the viewer or unscoped), the most
//!    specific level wins (customer, company, group, channel, base); within a level the higher
//!    priority, then the lower list id. In that list, the highest `min_quantity` tier not above
//!    the quantity sets the list unit price.
//! 2. The quantity rule of the winning list for the variant (min, max, increment), if any.
//! 3. Promotions: the best single non-stackable one, or every stackable one in priority order,
//!    whichever leaves the lower price; never below zero.
//! 4. One rounding, of the line total, to the currency's minor unit (half away from zero).

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// Who a list is for; the more specific, the stronger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PriceScope {
    /// Everyone, on every channel in the list's currency.
    Base,
    Channel(i64),
    Group(i64),
    Company(i64),
    Customer(i64),
}

impl PriceScope {
    /// Specificity: base 0 … customer 4.
    pub fn level(self) -> u8 {
        match self {
            Self::Base => 0,
            Self::Channel(_) => 1,
            Self::Group(_) => 2,
            Self::Company(_) => 3,
            Self::Customer(_) => 4,
        }
    }

    /// `BASE`, `CHANNEL`, … as shown in explanations.
    pub fn name(self) -> &'static str {
        match self {
            Self::Base => "BASE",
            Self::Channel(_) => "CHANNEL",
            Self::Group(_) => "GROUP",
            Self::Company(_) => "COMPANY",
            Self::Customer(_) => "CUSTOMER",
        }
    }
}

/// Whom a price is for: the request's channel and, when signed in, the customer, their
/// company and their group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceViewer {
    pub channel_id: i64,
    pub currency: String,
    pub customer_id: Option<i64>,
    pub company_id: Option<i64>,
    pub group_id: Option<i64>,
}

impl PriceViewer {
    /// An anonymous shopper on a channel.
    pub fn anonymous(channel_id: i64, currency: impl Into<String>) -> Self {
        Self {
            channel_id,
            currency: currency.into(),
            customer_id: None,
            company_id: None,
            group_id: None,
        }
    }

    fn sees(&self, scope: PriceScope) -> bool {
        match scope {
            PriceScope::Base => true,
            PriceScope::Channel(id) => id == self.channel_id,
            PriceScope::Group(id) => Some(id) == self.group_id,
            PriceScope::Company(id) => Some(id) == self.company_id,
            PriceScope::Customer(id) => Some(id) == self.customer_id,
        }
    }
}

/// A price list as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceListInfo {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub currency: String,
    pub scope: PriceScope,
    pub priority: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
}

impl PriceListInfo {
    fn applies(&self, viewer: &PriceViewer, now: DateTime<Utc>) -> bool {
        self.active
            && self.currency == viewer.currency
            && in_window(self.valid_from, self.valid_until, now)
            && viewer.sees(self.scope)
    }
}

/// One tier of one list for one variant: from `min_quantity` units, `amount` per unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceEntry {
    pub list_id: i64,
    pub min_quantity: i32,
    pub amount: Decimal,
}

/// Min, max and increment a list imposes on a variant's quantity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuantityRule {
    pub id: i64,
    pub list_id: i64,
    pub min_quantity: i32,
    pub max_quantity: Option<i32>,
    pub increment: i32,
}

impl QuantityRule {
    /// The grid in `i64`, so no arithmetic on it can overflow whatever the stored `i32`s:
    /// the step (at least 1), the first allowed quantity (at least 1) and the last one, if
    /// the rule has a max (below the first when the rule allows nothing).
    fn grid(&self) -> (i64, i64, Option<i64>) {
        let step = i64::from(self.increment.max(1));
        let min = i64::from(self.min_quantity.max(1));
        let last = self
            .max_quantity
            .map(|max| i64::from(max) - (i64::from(max) - min).rem_euclid(step));
        (step, min, last)
    }

    /// Whether `quantity` meets the rule.
    pub fn allows(&self, quantity: i32) -> bool {
        let (step, min, last) = self.grid();
        let q = i64::from(quantity);
        q >= min && last.is_none_or(|last| q <= last) && (q - min) % step == 0
    }

    /// The nearest allowed quantities below and above `quantity` (either may not exist, for
    /// instance when the next step up is past `i32::MAX`).
    pub fn nearest(&self, quantity: i32) -> (Option<i32>, Option<i32>) {
        let (step, min, last) = self.grid();
        let q = i64::from(quantity);
        let valid = |q: i64| q >= min && last.is_none_or(|last| q <= last);
        let below = if q <= min {
            None
        } else {
            let below = min + (q - min - 1) / step * step;
            Some(last.map_or(below, |last| below.min(last)))
        };
        let above = if q < min {
            min
        } else {
            min + ((q - min) / step + 1) * step
        };
        let fit = |q: i64| i32::try_from(q).ok().filter(|_| valid(q));
        (below.and_then(fit), fit(above))
    }
}

/// How a promotion discounts a unit price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discount {
    /// `percent` off (0–100).
    PercentOff(Decimal),
    /// A fixed amount off per unit, in `currency`.
    AmountOff { amount: Decimal, currency: String },
    /// The unit price becomes `amount` (when that is lower), in `currency`.
    FixedPrice { amount: Decimal, currency: String },
}

/// What a promotion applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromotionTarget {
    All,
    Variant(i64),
    Product(i64),
    /// The category and everything below it.
    Category(i64),
}

/// A promotion as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionInfo {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub channel_id: Option<i64>,
    pub group_id: Option<i64>,
    pub target: PromotionTarget,
    pub discount: Discount,
    pub min_quantity: i32,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub stackable: bool,
    pub priority: i32,
    pub active: bool,
}

/// The item being priced: the variant, its product, and its category with every ancestor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedItem {
    pub variant_id: i64,
    pub product_id: i64,
    pub category_path: Vec<i64>,
}

impl PromotionInfo {
    fn applies(
        &self,
        item: &PricedItem,
        quantity: i32,
        viewer: &PriceViewer,
        now: DateTime<Utc>,
    ) -> bool {
        let targets = match self.target {
            PromotionTarget::All => true,
            PromotionTarget::Variant(id) => id == item.variant_id,
            PromotionTarget::Product(id) => id == item.product_id,
            PromotionTarget::Category(id) => item.category_path.contains(&id),
        };
        let currency_fits = match &self.discount {
            Discount::PercentOff(_) => true,
            Discount::AmountOff { currency, .. } | Discount::FixedPrice { currency, .. } => {
                *currency == viewer.currency
            }
        };
        self.active
            && targets
            && currency_fits
            && quantity >= self.min_quantity
            && self.channel_id.is_none_or(|id| id == viewer.channel_id)
            && self.group_id.is_none_or(|id| Some(id) == viewer.group_id)
            && in_window(self.starts_at, self.ends_at, now)
    }

    /// The unit price after this promotion, never below zero.
    fn apply(&self, unit: Decimal) -> Decimal {
        let after = match &self.discount {
            Discount::PercentOff(percent) => {
                unit - unit * (*percent).clamp(Decimal::ZERO, Decimal::ONE_HUNDRED)
                    / Decimal::ONE_HUNDRED
            }
            Discount::AmountOff { amount, .. } => unit - *amount,
            Discount::FixedPrice { amount, .. } => unit.min(*amount),
        };
        after.max(Decimal::ZERO)
    }

    fn describe(&self) -> String {
        match &self.discount {
            Discount::PercentOff(p) => format!("{}% off", p.normalize()),
            Discount::AmountOff { amount, currency } => {
                format!("{} {currency} off per unit", amount.normalize())
            }
            Discount::FixedPrice { amount, currency } => {
                format!("fixed price {} {currency}", amount.normalize())
            }
        }
    }
}

/// What kind of rule shaped a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RuleKind {
    PriceList,
    Promotion,
}

/// One rule applied to a price, with its effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppliedRule {
    pub kind: RuleKind,
    pub id: i64,
    /// The list's or promotion's code.
    pub code: String,
    pub name: String,
    /// What the rule did, for people: "COMPANY list acme-contract, tier from 25 units".
    pub effect: String,
    /// Change of the unit price: the list price itself for a list, negative for discounts.
    pub unit_amount: Decimal,
}

/// The tier of the winning list that set the list price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PriceTier {
    pub list_id: i64,
    pub list_code: String,
    pub scope: PriceScope,
    pub min_quantity: i32,
    pub unit_price: Decimal,
}

/// A resolved price and why it is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PriceBreakdown {
    pub currency: String,
    /// The winning list's unit price for the quantity (exact, up to 4 decimals).
    pub list_unit_price: Decimal,
    /// The unit price after promotions (exact; never rounded).
    pub unit_price: Decimal,
    pub quantity: i32,
    /// `list_unit_price × quantity`, rounded once to the currency's minor unit.
    pub list_line_total: Decimal,
    /// `unit_price × quantity`, rounded once to the currency's minor unit.
    pub line_total: Decimal,
    pub tier: PriceTier,
    pub applied_rules: Vec<AppliedRule>,
}

impl PriceBreakdown {
    /// What promotions took off the line (≥ 0).
    pub fn discount_total(&self) -> Decimal {
        self.list_line_total - self.line_total
    }
}

/// Why a price cannot be given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("quantity must be at least 1, got {0}")]
    InvalidQuantity(i32),
    #[error("no price in {currency} for this variant on this channel")]
    NoPrice { currency: String },
    #[error(
        "quantity {quantity} breaks the quantity rule of list {list_code}: {}",
        describe_rule(rule)
    )]
    QuantityRule {
        quantity: i32,
        list_code: String,
        rule: QuantityRule,
        nearest_below: Option<i32>,
        nearest_above: Option<i32>,
    },
}

fn describe_rule(rule: &QuantityRule) -> String {
    let mut text = format!("at least {}", rule.min_quantity);
    if let Some(max) = rule.max_quantity {
        text.push_str(&format!(", at most {max}"));
    }
    if rule.increment > 1 {
        text.push_str(&format!(", in steps of {}", rule.increment));
    }
    text
}

/// Everything resolution looks at for one variant.
#[derive(Clone, Copy, Debug)]
pub struct PriceCandidates<'a> {
    pub lists: &'a [PriceListInfo],
    /// This variant's entries, in any list.
    pub entries: &'a [PriceEntry],
    /// This variant's quantity rules, in any list.
    pub rules: &'a [QuantityRule],
    pub promotions: &'a [PromotionInfo],
}

/// Digits after the decimal point of an ISO-4217 currency's minor unit.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// Rounds an amount to the currency's minor unit, half away from zero.
pub fn round_to_minor_unit(amount: Decimal, currency: &str) -> Decimal {
    amount.round_dp_with_strategy(
        minor_unit_digits(currency),
        RoundingStrategy::MidpointAwayFromZero,
    )
}

fn in_window(
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    from.is_none_or(|from| from <= now) && until.is_none_or(|until| now < until)
}

/// The winning list and tier for `quantity`, among lists that apply to the viewer.
fn list_price<'a>(
    candidates: &PriceCandidates<'a>,
    quantity: i32,
    viewer: &PriceViewer,
    now: DateTime<Utc>,
) -> Option<(&'a PriceListInfo, &'a PriceEntry)> {
    candidates
        .entries
        .iter()
        .filter(|entry| entry.min_quantity <= quantity)
        .filter_map(|entry| {
            let list = candidates.lists.iter().find(|l| l.id == entry.list_id)?;
            list.applies(viewer, now).then_some((list, entry))
        })
        // Most specific level, then priority, then the lower list id; within the list the
        // highest tier; a duplicated tier resolves to its lower amount.
        .min_by_key(|(list, entry)| {
            (
                Reverse(list.scope.level()),
                Reverse(list.priority),
                list.id,
                Reverse(entry.min_quantity),
                entry.amount,
            )
        })
}

/// Resolves the price of `quantity` units of `item` for `viewer` at `now`.
pub fn resolve_price(
    item: &PricedItem,
    quantity: i32,
    viewer: &PriceViewer,
    now: DateTime<Utc>,
    candidates: &PriceCandidates<'_>,
) -> Result<PriceBreakdown, PricingError> {
    if quantity < 1 {
        return Err(PricingError::InvalidQuantity(quantity));
    }
    let (list, entry) =
        list_price(candidates, quantity, viewer, now).ok_or_else(|| PricingError::NoPrice {
            currency: viewer.currency.clone(),
        })?;
    if let Some(rule) = candidates
        .rules
        .iter()
        .filter(|r| r.list_id == list.id)
        .min_by_key(|r| r.id)
        && !rule.allows(quantity)
    {
        let (nearest_below, nearest_above) = rule.nearest(quantity);
        return Err(PricingError::QuantityRule {
            quantity,
            list_code: list.code.clone(),
            rule: rule.clone(),
            nearest_below,
            nearest_above,
        });
    }
    let list_unit_price = entry.amount;
    let mut applied = vec![AppliedRule {
        kind: RuleKind::PriceList,
        id: list.id,
        code: list.code.clone(),
        name: list.name.clone(),
        effect: format!(
            "{} list price {} {} from {} unit{}",
            list.scope.name(),
            list_unit_price.normalize(),
            viewer.currency,
            entry.min_quantity,
            if entry.min_quantity == 1 { "" } else { "s" }
        ),
        unit_amount: list_unit_price,
    }];

    let mut promotions: Vec<&PromotionInfo> = candidates
        .promotions
        .iter()
        .filter(|p| p.applies(item, quantity, viewer, now))
        .collect();
    // Priority order (higher first), then id, whatever order the candidates came in.
    promotions.sort_by_key(|p| (Reverse(p.priority), p.id));
    let best_single = promotions
        .iter()
        .filter(|p| !p.stackable)
        .map(|p| (p.apply(list_unit_price), *p))
        .min_by_key(|(price, p)| (*price, Reverse(p.priority), p.id));
    let mut stacked_price = list_unit_price;
    let mut stacked = Vec::new();
    for promotion in promotions.iter().filter(|p| p.stackable) {
        let after = promotion.apply(stacked_price);
        stacked.push((*promotion, after - stacked_price));
        stacked_price = after;
    }
    let mut unit_price = list_unit_price;
    let chosen: Vec<(&PromotionInfo, Decimal)> = match best_single {
        Some((single_price, single)) if stacked.is_empty() || single_price <= stacked_price => {
            unit_price = single_price;
            vec![(single, single_price - list_unit_price)]
        }
        _ if !stacked.is_empty() => {
            unit_price = stacked_price;
            stacked
        }
        _ => Vec::new(),
    };
    for (promotion, change) in chosen {
        applied.push(AppliedRule {
            kind: RuleKind::Promotion,
            id: promotion.id,
            code: promotion.code.clone(),
            name: promotion.name.clone(),
            effect: format!(
                "{}: {} {} per unit",
                promotion.describe(),
                change.normalize(),
                viewer.currency
            ),
            unit_amount: change,
        });
    }
    let units = Decimal::from(quantity);
    Ok(PriceBreakdown {
        currency: viewer.currency.clone(),
        list_unit_price,
        unit_price,
        quantity,
        list_line_total: round_to_minor_unit(list_unit_price * units, &viewer.currency),
        line_total: round_to_minor_unit(unit_price * units, &viewer.currency),
        tier: PriceTier {
            list_id: list.id,
            list_code: list.code.clone(),
            scope: list.scope,
            min_quantity: entry.min_quantity,
            unit_price: list_unit_price,
        },
        applied_rules: applied,
    })
}

/// The volume breaks `viewer` gets: for each quantity where some applicable tier starts, the
/// list price from there, merged where nothing changes. Promotions are not part of tiers.
pub fn price_tiers(
    viewer: &PriceViewer,
    now: DateTime<Utc>,
    candidates: &PriceCandidates<'_>,
) -> Vec<PriceTier> {
    let mut starts: Vec<i32> = candidates
        .entries
        .iter()
        .filter(|e| {
            candidates
                .lists
                .iter()
                .any(|l| l.id == e.list_id && l.applies(viewer, now))
        })
        .map(|e| e.min_quantity.max(1))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let mut tiers: Vec<PriceTier> = Vec::new();
    for start in starts {
        let Some((list, entry)) = list_price(candidates, start, viewer, now) else {
            continue;
        };
        if tiers
            .last()
            .is_some_and(|t| t.list_id == list.id && t.unit_price == entry.amount)
        {
            continue;
        }
        tiers.push(PriceTier {
            list_id: list.id,
            list_code: list.code.clone(),
            scope: list.scope,
            min_quantity: start,
            unit_price: entry.amount,
        });
    }
    tiers
}

/// The quantity rule that governs `viewer`'s purchases of the variant: the one of the list
/// that prices its smallest tier.
pub fn governing_quantity_rule<'a>(
    viewer: &PriceViewer,
    now: DateTime<Utc>,
    candidates: &PriceCandidates<'a>,
) -> Option<&'a QuantityRule> {
    let smallest = candidates
        .entries
        .iter()
        .map(|e| e.min_quantity.max(1))
        .min()?;
    let (list, _) = list_price(candidates, smallest.max(1), viewer, now)?;
    candidates
        .rules
        .iter()
        .filter(|r| r.list_id == list.id)
        .min_by_key(|r| r.id)
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;

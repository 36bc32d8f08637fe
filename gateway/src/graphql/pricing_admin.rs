//! Admin mutations over prices: price lists, their entries (volume tiers), quantity rules and
//! promotions.
//!
//! Every mutation first checks that the viewer is an admin (`FORBIDDEN` otherwise, before any
//! SQL), then calls one core function of [`commerce_core::pricing::admin`], which validates
//! everything and writes in one transaction. Only once that transaction has committed is a
//! [`Event::PricesChanged`] published on the request's bus; a failed mutation publishes
//! nothing. Over HTTP no viewer is an admin until JWT viewers land (the gateway-edge issue):
//! for now these mutations are reachable in process only (`transport::execute_as`).
//!
//! Errors: invalid input, and a concurrent change that got there first (a code taken in the
//! meantime, a tier written by another call at the same moment), are `BAD_USER_INPUT` with
//! `extensions.field` naming the input; an unknown list or promotion is `NOT_FOUND`, and so
//! is an unknown SKU, which names its field too (`entries[3].sku`). Messages quote at most 64
//! characters of any input value.

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, MaybeUndefined, Object, Result,
};
use chrono::{DateTime, Utc};
use commerce_core::CoreError;
use commerce_core::entities::{price_list, price_list_entry, promotion, quantity_rule};
use commerce_core::pricing::admin::{
    self, DiscountKind as CoreDiscountKind, NewPriceList, NewPromotion, PriceChange,
    PriceEntryInput as CorePriceEntry, PriceListChanges, PromotionChanges,
    QuantityRuleInput as CoreQuantityRule,
};
use commerce_core::pricing::{PromotionTarget, load};

use super::ids::{Kind, decode_id, encode_id};
use super::pricing::{Money, PriceListScope};
use super::{RequestContext, request_context};
use crate::bus::Event;
use crate::errors::{ApiError, ApiResultExt};

// A quantity rule never asks for more units than a shopper may price.
const _: () = assert!(admin::MAX_RULE_QUANTITY == super::pricing::MAX_QUANTITY);

/// The admin mutations over prices and promotions.
#[derive(Default)]
pub struct PricingMutation;

/// The request's context, when the viewer is an admin; `FORBIDDEN` otherwise.
fn admin<'a>(ctx: &Context<'a>) -> Result<&'a RequestContext> {
    let context = request_context(ctx)?;
    if !context.viewer.admin {
        return Err(ApiError::Forbidden(
            "changing prices and promotions needs an admin viewer".into(),
        )
        .extend());
    }
    Ok(context)
}

/// A core result as a GraphQL one with its code, like [`ApiResultExt::api`]; a `NOT_FOUND`
/// for an input value that names nothing (an unknown SKU) carries `extensions.field` too.
fn admin_api<T>(result: Result<T, CoreError>) -> Result<T> {
    result.map_err(|err| {
        let field = admin::not_found_field(&err).map(str::to_owned);
        let error = ApiError::from(err).extend();
        match field {
            Some(field) => error.extend_with(|_, ext| ext.set("field", field)),
            None => error,
        }
    })
}

/// Announces a committed change.
fn publish(context: &RequestContext, change: PriceChange) {
    context.bus.publish(Event::PricesChanged {
        list_ids: change.list_ids,
        variant_ids: change.variant_ids,
        promotion_ids: change.promotion_ids,
    });
}

/// An optional input that may be explicitly `null`: absent keeps, `null` clears.
fn change_of<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(value) => Some(Some(value)),
    }
}

/// A new price list. Give at most one scope id (none: a base list for everyone).
#[derive(InputObject)]
pub struct CreatePriceListInput {
    /// Unique code, e.g. `summer-eur`.
    pub code: String,
    pub name: String,
    /// ISO-4217 code; a channel list must use its channel's currency.
    pub currency: String,
    /// For one channel (its row id).
    pub channel_id: Option<i64>,
    /// For one customer group (its row id).
    pub customer_group_id: Option<i64>,
    /// For one company (its row id).
    pub company_id: Option<i64>,
    /// For one customer (its row id).
    pub customer_id: Option<i64>,
    /// Higher wins among lists of the same scope level.
    #[graphql(default = 0)]
    pub priority: i32,
    pub valid_from: Option<DateTime<Utc>>,
    /// Must be after `validFrom`.
    pub valid_until: Option<DateTime<Utc>>,
    #[graphql(default = true)]
    pub active: bool,
}

/// Changes to a price list; absent fields keep their value, a `null` window bound removes it.
#[derive(InputObject)]
pub struct UpdatePriceListInput {
    pub name: Option<String>,
    pub priority: Option<i32>,
    pub valid_from: MaybeUndefined<DateTime<Utc>>,
    pub valid_until: MaybeUndefined<DateTime<Utc>>,
    pub active: Option<bool>,
}

/// One tier of a variant in a list: from `minQuantity` units, `amount` per unit.
#[derive(InputObject)]
pub struct PriceEntryInput {
    pub sku: String,
    #[graphql(default = 1)]
    pub min_quantity: i32,
    /// Zero or more, at most 4 decimals, in the list's currency.
    pub amount: Money,
}

/// Min, max and increment of a variant's quantity under a list.
#[derive(InputObject)]
pub struct QuantityRuleInput {
    pub sku: String,
    #[graphql(default = 1)]
    pub min_quantity: i32,
    /// At least `minQuantity`; absent for no maximum.
    pub max_quantity: Option<i32>,
    #[graphql(default = 1)]
    pub increment: i32,
}

/// What a promotion applies to.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PromotionTargetKind {
    /// Every variant.
    All,
    Variant,
    Product,
    /// The category and everything below it.
    Category,
}

/// How a promotion discounts a unit price.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DiscountKind {
    /// `value` percent off (0–100), in any currency.
    PercentOff,
    /// `value` off per unit, in `currency`.
    AmountOff,
    /// The unit price becomes `value` (when lower), in `currency`.
    FixedPrice,
}

impl From<DiscountKind> for CoreDiscountKind {
    fn from(kind: DiscountKind) -> Self {
        match kind {
            DiscountKind::PercentOff => Self::PercentOff,
            DiscountKind::AmountOff => Self::AmountOff,
            DiscountKind::FixedPrice => Self::FixedPrice,
        }
    }
}

/// A new promotion.
#[derive(InputObject)]
pub struct CreatePromotionInput {
    /// Unique code, e.g. `spring-sale`.
    pub code: String,
    pub name: String,
    /// Only on one channel (its row id).
    pub channel_id: Option<i64>,
    /// Only for one customer group (its row id).
    pub customer_group_id: Option<i64>,
    #[graphql(default_with = "PromotionTargetKind::All")]
    pub target: PromotionTargetKind,
    /// The `Variant`, `Product` or `Category` id the target names; absent for `ALL`.
    pub target_id: Option<ID>,
    pub discount: DiscountKind,
    /// Percent for `PERCENT_OFF`, else an amount in `currency`.
    pub value: Money,
    /// Required for amounts, absent for percentages.
    pub currency: Option<String>,
    #[graphql(default = 1)]
    pub min_quantity: i32,
    pub starts_at: Option<DateTime<Utc>>,
    /// Must be after `startsAt`.
    pub ends_at: Option<DateTime<Utc>>,
    #[graphql(default = false)]
    pub stackable: bool,
    #[graphql(default = 0)]
    pub priority: i32,
    #[graphql(default = true)]
    pub active: bool,
}

/// Changes to a promotion; absent fields keep their value, a `null` window bound removes it.
#[derive(InputObject)]
pub struct UpdatePromotionInput {
    pub starts_at: MaybeUndefined<DateTime<Utc>>,
    pub ends_at: MaybeUndefined<DateTime<Utc>>,
    pub active: Option<bool>,
    pub priority: Option<i32>,
    /// Checked against the promotion's discount kind.
    pub value: Option<Money>,
}

/// A price list as stored.
pub struct PriceList(price_list::Model);

#[Object]
impl PriceList {
    async fn id(&self) -> ID {
        encode_id(Kind::PriceList, self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn scope(&self) -> PriceListScope {
        load::list_scope(&self.0).into()
    }
    /// Row id of the channel, group, company or customer the list is for; null for `BASE`.
    async fn scope_id(&self) -> Option<i64> {
        self.0
            .customer_id
            .or(self.0.company_id)
            .or(self.0.customer_group_id)
            .or(self.0.channel_id)
    }
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    async fn valid_from(&self) -> Option<DateTime<Utc>> {
        self.0.valid_from
    }
    async fn valid_until(&self) -> Option<DateTime<Utc>> {
        self.0.valid_until
    }
    async fn active(&self) -> bool {
        self.0.active
    }
}

/// A tier of a variant in a price list.
pub struct PriceListEntry {
    entry: price_list_entry::Model,
    sku: String,
}

#[Object]
impl PriceListEntry {
    async fn price_list(&self) -> ID {
        encode_id(Kind::PriceList, self.entry.price_list_id)
    }
    async fn sku(&self) -> &str {
        &self.sku
    }
    async fn min_quantity(&self) -> i32 {
        self.entry.min_quantity
    }
    async fn amount(&self) -> Money {
        Money(self.entry.amount.amount())
    }
}

/// A quantity rule of a variant in a price list.
pub struct PriceListQuantityRule {
    rule: quantity_rule::Model,
    sku: String,
}

#[Object]
impl PriceListQuantityRule {
    async fn price_list(&self) -> ID {
        encode_id(Kind::PriceList, self.rule.price_list_id)
    }
    async fn sku(&self) -> &str {
        &self.sku
    }
    async fn min_quantity(&self) -> i32 {
        self.rule.min_quantity
    }
    async fn max_quantity(&self) -> Option<i32> {
        self.rule.max_quantity
    }
    async fn increment(&self) -> i32 {
        self.rule.increment
    }
}

/// A promotion as stored.
pub struct Promotion(promotion::Model);

#[Object]
impl Promotion {
    async fn id(&self) -> ID {
        encode_id(Kind::Promotion, self.0.id)
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn channel_id(&self) -> Option<i64> {
        self.0.channel_id
    }
    async fn customer_group_id(&self) -> Option<i64> {
        self.0.customer_group_id
    }
    async fn target(&self) -> PromotionTargetKind {
        match self.0.target_kind.as_str() {
            "variant" => PromotionTargetKind::Variant,
            "product" => PromotionTargetKind::Product,
            "category" => PromotionTargetKind::Category,
            _ => PromotionTargetKind::All,
        }
    }
    /// The `Variant`, `Product` or `Category` id of the target; null for `ALL`.
    async fn target_id(&self) -> Option<ID> {
        let kind = match self.0.target_kind.as_str() {
            "variant" => Kind::Variant,
            "product" => Kind::Product,
            "category" => Kind::Category,
            _ => return None,
        };
        self.0.target_id.map(|id| encode_id(kind, id))
    }
    async fn discount(&self) -> Option<DiscountKind> {
        match CoreDiscountKind::parse(&self.0.discount_kind)? {
            CoreDiscountKind::PercentOff => Some(DiscountKind::PercentOff),
            CoreDiscountKind::AmountOff => Some(DiscountKind::AmountOff),
            CoreDiscountKind::FixedPrice => Some(DiscountKind::FixedPrice),
        }
    }
    async fn value(&self) -> Money {
        Money(self.0.value.amount())
    }
    async fn currency(&self) -> Option<&str> {
        self.0.currency.as_deref()
    }
    async fn min_quantity(&self) -> i32 {
        self.0.min_quantity
    }
    async fn starts_at(&self) -> Option<DateTime<Utc>> {
        self.0.starts_at
    }
    async fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.0.ends_at
    }
    async fn stackable(&self) -> bool {
        self.0.stackable
    }
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    async fn active(&self) -> bool {
        self.0.active
    }
}

#[Object]
impl PricingMutation {
    /// Creates a price list (admin only).
    async fn create_price_list(
        &self,
        ctx: &Context<'_>,
        input: CreatePriceListInput,
    ) -> Result<PriceList> {
        let context = admin(ctx)?;
        let new = NewPriceList {
            code: input.code,
            name: input.name,
            currency: input.currency,
            channel_id: input.channel_id,
            customer_group_id: input.customer_group_id,
            company_id: input.company_id,
            customer_id: input.customer_id,
            priority: input.priority,
            valid_from: input.valid_from,
            valid_until: input.valid_until,
            active: input.active,
        };
        let (list, change) = admin_api(admin::create_price_list(&context.db, new).await)?;
        publish(context, change);
        Ok(PriceList(list))
    }

    /// Changes a price list's name, priority, window or active flag (admin only).
    async fn update_price_list(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePriceListInput,
    ) -> Result<PriceList> {
        let context = admin(ctx)?;
        let list_id = decode_id(Kind::PriceList, &id, "id").api()?;
        let changes = PriceListChanges {
            name: input.name,
            priority: input.priority,
            valid_from: change_of(input.valid_from),
            valid_until: change_of(input.valid_until),
            active: input.active,
        };
        let (list, change) =
            admin_api(admin::update_price_list(&context.db, list_id, changes).await)?;
        publish(context, change);
        Ok(PriceList(list))
    }

    /// Adds or replaces tiers of a list, one per (SKU, min quantity); all or none are saved.
    /// Within a list a variant's tiers must not rise in price as the min quantity grows
    /// (admin only).
    async fn set_price_entries(
        &self,
        ctx: &Context<'_>,
        price_list: ID,
        entries: Vec<PriceEntryInput>,
    ) -> Result<Vec<PriceListEntry>> {
        let context = admin(ctx)?;
        let list_id = decode_id(Kind::PriceList, &price_list, "priceList").api()?;
        let entries: Vec<CorePriceEntry> = entries
            .into_iter()
            .map(|entry| CorePriceEntry {
                sku: entry.sku,
                min_quantity: entry.min_quantity,
                amount: entry.amount.0,
            })
            .collect();
        let skus: Vec<String> = entries.iter().map(|e| e.sku.clone()).collect();
        let (saved, change) =
            admin_api(admin::set_price_entries(&context.db, list_id, entries).await)?;
        publish(context, change);
        Ok(saved
            .into_iter()
            .zip(skus)
            .map(|(entry, sku)| PriceListEntry { entry, sku })
            .collect())
    }

    /// Removes one tier of a variant from a list; returns it (admin only).
    async fn remove_price_entry(
        &self,
        ctx: &Context<'_>,
        price_list: ID,
        sku: String,
        #[graphql(default = 1)] min_quantity: i32,
    ) -> Result<PriceListEntry> {
        let context = admin(ctx)?;
        let list_id = decode_id(Kind::PriceList, &price_list, "priceList").api()?;
        let (entry, change) =
            admin_api(admin::remove_price_entry(&context.db, list_id, &sku, min_quantity).await)?;
        publish(context, change);
        Ok(PriceListEntry { entry, sku })
    }

    /// Sets the quantity rule of a variant in a list, replacing any (admin only).
    async fn set_quantity_rule(
        &self,
        ctx: &Context<'_>,
        price_list: ID,
        input: QuantityRuleInput,
    ) -> Result<PriceListQuantityRule> {
        let context = admin(ctx)?;
        let list_id = decode_id(Kind::PriceList, &price_list, "priceList").api()?;
        let sku = input.sku.clone();
        let rule = CoreQuantityRule {
            sku: input.sku,
            min_quantity: input.min_quantity,
            max_quantity: input.max_quantity,
            increment: input.increment,
        };
        let (rule, change) = admin_api(admin::set_quantity_rule(&context.db, list_id, rule).await)?;
        publish(context, change);
        Ok(PriceListQuantityRule { rule, sku })
    }

    /// Removes the quantity rule of a variant in a list; returns it (admin only).
    async fn remove_quantity_rule(
        &self,
        ctx: &Context<'_>,
        price_list: ID,
        sku: String,
    ) -> Result<PriceListQuantityRule> {
        let context = admin(ctx)?;
        let list_id = decode_id(Kind::PriceList, &price_list, "priceList").api()?;
        let (rule, change) =
            admin_api(admin::remove_quantity_rule(&context.db, list_id, &sku).await)?;
        publish(context, change);
        Ok(PriceListQuantityRule { rule, sku })
    }

    /// Creates a promotion (admin only).
    async fn create_promotion(
        &self,
        ctx: &Context<'_>,
        input: CreatePromotionInput,
    ) -> Result<Promotion> {
        let context = admin(ctx)?;
        let field = "input.targetId";
        let target = match (input.target, &input.target_id) {
            (PromotionTargetKind::All, None) => PromotionTarget::All,
            (PromotionTargetKind::All, Some(_)) => {
                return Err(
                    ApiError::bad_input(field, "an ALL promotion names no target").extend(),
                );
            }
            (_, None) => {
                return Err(ApiError::bad_input(
                    field,
                    "give the id of the variant, product or category the promotion is for",
                )
                .extend());
            }
            (PromotionTargetKind::Variant, Some(id)) => {
                PromotionTarget::Variant(decode_id(Kind::Variant, id, field).api()?)
            }
            (PromotionTargetKind::Product, Some(id)) => {
                PromotionTarget::Product(decode_id(Kind::Product, id, field).api()?)
            }
            (PromotionTargetKind::Category, Some(id)) => {
                PromotionTarget::Category(decode_id(Kind::Category, id, field).api()?)
            }
        };
        let new = NewPromotion {
            code: input.code,
            name: input.name,
            channel_id: input.channel_id,
            customer_group_id: input.customer_group_id,
            target,
            discount: input.discount.into(),
            value: input.value.0,
            currency: input.currency,
            min_quantity: input.min_quantity,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            stackable: input.stackable,
            priority: input.priority,
            active: input.active,
        };
        let (promotion, change) = admin_api(admin::create_promotion(&context.db, new).await)?;
        publish(context, change);
        Ok(Promotion(promotion))
    }

    /// Changes a promotion's window, active flag, priority or value (admin only).
    async fn update_promotion(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePromotionInput,
    ) -> Result<Promotion> {
        let context = admin(ctx)?;
        let promotion_id = decode_id(Kind::Promotion, &id, "id").api()?;
        let changes = PromotionChanges {
            starts_at: change_of(input.starts_at),
            ends_at: change_of(input.ends_at),
            active: input.active,
            priority: input.priority,
            value: input.value.map(|value| value.0),
        };
        let (promotion, change) =
            admin_api(admin::update_promotion(&context.db, promotion_id, changes).await)?;
        publish(context, change);
        Ok(Promotion(promotion))
    }
}

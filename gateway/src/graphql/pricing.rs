//! Prices for the request's viewer: `Variant.price`, `Variant.priceTiers`,
//! `Variant.quantityRule` and `priceQuote`. Resolvers load candidates through the request's
//! pricing session and loader, then call the core's pure `resolve_price`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, InputValueError, InputValueResult, Object,
    Scalar, ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, Utc};
use commerce_core::catalog;
use commerce_core::entities::variant;
use commerce_core::pricing::load::{self, PriceInputs as _, VariantPriceData};
use commerce_core::pricing::{
    self as core_pricing, PriceBreakdown, PriceCandidates, PriceListInfo, PriceScope, PriceViewer,
    PricedItem, PricingError, PromotionInfo, RuleKind,
};
use rust_decimal::Decimal;
use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;

use super::catalog::{CategoryTree, ProductsById, Variant};
use super::ids::{Kind, encode_id};
use super::{RequestLoader, request_context, request_data};
use crate::errors::{ApiError, ApiResultExt, code};

/// Most lines one quote may carry.
pub const MAX_QUOTE_LINES: usize = 100;
/// Largest quantity one line may ask for.
pub const MAX_QUANTITY: i32 = 1_000_000;

/// An exact decimal number, sent and received as a string (`"19.99"`), never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money(pub Decimal);

#[Scalar(name = "Decimal")]
/// An exact decimal number as a string, e.g. `"19.99"` or `"0.1234"`; never a float.
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_decimal(text).map(Money).ok_or_else(|| {
                let shown: String = text.chars().take(40).collect();
                InputValueError::custom(format!(
                    "{shown:?} is not a plain decimal such as \"19.99\" (digits, an optional \
                     leading -, an optional . and fraction; at most 28 digits)"
                ))
            }),
            _ => Err(InputValueError::custom(
                "send decimals as strings, e.g. \"19.99\"",
            )),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

impl Money {
    /// A total in `currency`: exactly its minor unit's digits (`"208.20"`, `"0.00"`).
    pub fn total(amount: Decimal, currency: &str) -> Self {
        let mut amount = core_pricing::round_to_minor_unit(amount, currency);
        amount.rescale(core_pricing::minor_unit_digits(currency));
        Money(amount)
    }

    /// A unit price in `currency`: at least its minor unit's digits, more when the price has
    /// them (`"15.00"`, `"16.9915"`).
    pub fn unit(amount: Decimal, currency: &str) -> Self {
        let mut amount = amount.normalize();
        let digits = core_pricing::minor_unit_digits(currency);
        if amount.scale() < digits {
            amount.rescale(digits);
        }
        Money(amount)
    }
}

/// A plain decimal (`-?digits(.digits)?`), parsed exactly: no exponent, sign `+`, spaces or
/// underscores, and never rounded (a value with more digits than a `Decimal` holds is refused,
/// not silently rounded to zero).
fn parse_decimal(text: &str) -> Option<Decimal> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return None;
    }
    Decimal::from_str_exact(text).ok()
}

/// The per-request pricing inputs that do not depend on the variant: the viewer, the instant
/// of the prices, and the lists and promotions that may apply (each loaded at most once).
pub struct PricingSession {
    db: DatabaseConnection,
    read: Option<Arc<crate::read_path::ReadModel>>,
    pub viewer: PriceViewer,
    pub now: DateTime<Utc>,
    lists: OnceCell<Arc<Vec<PriceListInfo>>>,
    promotions: OnceCell<Arc<Vec<PromotionInfo>>>,
}

impl PricingSession {
    pub fn new(
        db: DatabaseConnection,
        read: Option<Arc<crate::read_path::ReadModel>>,
        viewer: PriceViewer,
    ) -> Self {
        Self {
            db,
            read,
            viewer,
            now: Utc::now(),
            lists: OnceCell::new(),
            promotions: OnceCell::new(),
        }
    }

    /// Where the session reads its rows.
    fn reads(&self) -> crate::read_path::model::Reads<'_> {
        crate::read_path::model::Reads {
            model: self.read.as_deref(),
            db: &self.db,
        }
    }

    pub async fn lists(&self) -> Result<&Arc<Vec<PriceListInfo>>, ApiError> {
        self.lists
            .get_or_try_init(|| async { Ok(self.reads().viewer_lists(&self.viewer).await?) })
            .await
    }

    pub async fn promotions(&self) -> Result<&Arc<Vec<PromotionInfo>>, ApiError> {
        self.promotions
            .get_or_try_init(|| async {
                Ok(self
                    .reads()
                    .channel_promotions(self.viewer.channel_id)
                    .await?)
            })
            .await
    }
}

/// Loads the price entries and quantity rules of many variants in the viewer's lists.
pub struct PriceDataByVariant {
    pub db: DatabaseConnection,
    pub read: Option<Arc<crate::read_path::ReadModel>>,
    pub session: Arc<PricingSession>,
}

impl Loader<i64> for PriceDataByVariant {
    type Value = VariantPriceData;
    type Error = ApiError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let lists = self.session.lists().await?;
        let list_ids: Vec<i64> = lists.iter().map(|l| l.id).collect();
        let reads = crate::read_path::model::Reads {
            model: self.read.as_deref(),
            db: &self.db,
        };
        let mut data = reads.variant_price_data(&list_ids, keys).await?;
        // Every key gets a value, so a variant without prices is cached as such.
        for key in keys {
            data.entry(*key).or_default();
        }
        Ok(data)
    }
}

/// Everything needed to price one variant.
struct Priceable {
    item: PricedItem,
    data: VariantPriceData,
    lists: Arc<Vec<PriceListInfo>>,
    promotions: Arc<Vec<PromotionInfo>>,
}

impl Priceable {
    fn candidates(&self) -> PriceCandidates<'_> {
        PriceCandidates {
            lists: &self.lists,
            entries: &self.data.entries,
            rules: &self.data.rules,
            promotions: &self.promotions,
        }
    }
}

fn session<'a>(ctx: &Context<'a>) -> Result<&'a Arc<PricingSession>, ApiError> {
    request_data::<Arc<PricingSession>>(ctx)
}

/// Loads what pricing `variant` needs, through the request's loaders.
async fn priceable(ctx: &Context<'_>, variant: &variant::Model) -> Result<Priceable, ApiError> {
    let session = session(ctx)?;
    let data = request_data::<RequestLoader<PriceDataByVariant>>(ctx)?
        .load_one(variant.id)
        .await?
        .unwrap_or_default();
    let product = request_data::<RequestLoader<ProductsById>>(ctx)?
        .load_one(variant.product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("product not listed on this channel".into()))?;
    let tree = CategoryTree::of(ctx).await?;
    Ok(Priceable {
        item: PricedItem {
            variant_id: variant.id,
            product_id: product.id,
            category_path: load::category_path(tree, product.category_id),
        },
        data,
        lists: session.lists().await?.clone(),
        promotions: session.promotions().await?.clone(),
    })
}

/// The smallest quantity the viewer may buy of the variant (1 unless a quantity rule says more).
fn smallest_quantity(session: &PricingSession, priceable: &Priceable) -> i32 {
    core_pricing::resolve::governing_quantity_rule(
        &session.viewer,
        session.now,
        &priceable.candidates(),
    )
    .map_or(1, |rule| rule.min_quantity.max(1))
}

/// Prices `quantity` (or the smallest allowed) of a variant for the viewer.
pub(crate) async fn price_of(
    ctx: &Context<'_>,
    variant: &variant::Model,
    quantity: Option<i32>,
    field: &str,
) -> async_graphql::Result<Price> {
    let session = session(ctx).api()?;
    let priceable = priceable(ctx, variant).await.api()?;
    let quantity = match quantity {
        Some(q) => q,
        None => smallest_quantity(session, &priceable),
    };
    check_quantity(quantity, field).api()?;
    core_pricing::resolve_price(
        &priceable.item,
        quantity,
        &session.viewer,
        session.now,
        &priceable.candidates(),
    )
    .map(Price)
    .map_err(|err| pricing_error(err, &variant.sku, field))
}

pub(crate) async fn tiers_of(
    ctx: &Context<'_>,
    variant: &variant::Model,
) -> async_graphql::Result<Vec<PriceTier>> {
    let session = session(ctx).api()?;
    let priceable = priceable(ctx, variant).await.api()?;
    Ok(
        core_pricing::price_tiers(&session.viewer, session.now, &priceable.candidates())
            .into_iter()
            .map(PriceTier)
            .collect(),
    )
}

pub(crate) async fn quantity_rule_of(
    ctx: &Context<'_>,
    variant: &variant::Model,
) -> async_graphql::Result<Option<QuantityRule>> {
    let session = session(ctx).api()?;
    let priceable = priceable(ctx, variant).await.api()?;
    let rule = core_pricing::resolve::governing_quantity_rule(
        &session.viewer,
        session.now,
        &priceable.candidates(),
    );
    Ok(rule.map(|rule| {
        let list_code = priceable
            .lists
            .iter()
            .find(|l| l.id == rule.list_id)
            .map(|l| l.code.clone())
            .unwrap_or_default();
        QuantityRule {
            min_quantity: rule.min_quantity,
            max_quantity: rule.max_quantity,
            increment: rule.increment,
            price_list: list_code,
        }
    }))
}

fn check_quantity(quantity: i32, field: &str) -> Result<(), ApiError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(ApiError::bad_input(
            field,
            format!("must be between 1 and {MAX_QUANTITY}, got {quantity}"),
        ));
    }
    Ok(())
}

/// A pricing failure as the client sees it: `QUANTITY_RULE_VIOLATION` names the rule and the
/// nearest valid quantities.
pub(crate) fn pricing_error(err: PricingError, sku: &str, field: &str) -> async_graphql::Error {
    match &err {
        PricingError::QuantityRule {
            quantity,
            list_code,
            rule,
            nearest_below,
            nearest_above,
        } => {
            let nearest: Vec<String> = nearest_below
                .iter()
                .chain(nearest_above.iter())
                .map(i32::to_string)
                .collect();
            let message = format!(
                "{sku}: {err}; nearest valid quantities: {}",
                if nearest.is_empty() {
                    "none".to_owned()
                } else {
                    nearest.join(" or ")
                }
            );
            let (quantity, list_code, rule) = (*quantity, list_code.clone(), rule.clone());
            let (below, above) = (*nearest_below, *nearest_above);
            async_graphql::Error::new(message).extend_with(move |_, ext| {
                ext.set("code", code::QUANTITY_RULE_VIOLATION);
                ext.set("field", field);
                ext.set("sku", sku);
                ext.set("quantity", quantity);
                ext.set("priceList", list_code.as_str());
                ext.set("minQuantity", rule.min_quantity);
                // Every key is there; `null` where it does not apply.
                let or_null = |v: Option<i32>| v.map_or(Value::Null, Value::from);
                ext.set("maxQuantity", or_null(rule.max_quantity));
                ext.set("increment", rule.increment);
                ext.set("nearestBelow", or_null(below));
                ext.set("nearestAbove", or_null(above));
            })
        }
        PricingError::InvalidQuantity(_) => ApiError::bad_input(field, err.to_string()).extend(),
        PricingError::NoPrice { .. } => ApiError::NotFound(format!("{sku}: {err}")).extend(),
    }
}

/// A price for the viewer, with every rule that shaped it.
pub struct Price(pub PriceBreakdown);

#[Object]
impl Price {
    /// ISO-4217 code of every amount here.
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// Units priced.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// Unit price from the winning price list and tier, before promotions (up to 4 decimals).
    async fn list_unit_price(&self) -> Money {
        Money::unit(self.0.list_unit_price, &self.0.currency)
    }
    /// Unit price after promotions, exact (never rounded).
    async fn unit_price(&self) -> Money {
        Money::unit(self.0.unit_price, &self.0.currency)
    }
    /// `listUnitPrice × quantity`, rounded once to the currency's minor unit.
    async fn list_line_total(&self) -> Money {
        Money::total(self.0.list_line_total, &self.0.currency)
    }
    /// What promotions took off the line: `listLineTotal − lineTotal`.
    async fn discount_total(&self) -> Money {
        Money::total(self.0.discount_total(), &self.0.currency)
    }
    /// `unitPrice × quantity`, rounded once to the currency's minor unit (half away from zero).
    async fn line_total(&self) -> Money {
        Money::total(self.0.line_total, &self.0.currency)
    }
    /// The price-list tier that set the list price.
    async fn tier(&self) -> PriceTier {
        PriceTier(self.0.tier.clone())
    }
    /// Every rule applied, in order: the price list first, then promotions.
    async fn applied_rules(&self) -> Vec<AppliedRule> {
        self.0
            .applied_rules
            .iter()
            .cloned()
            .map(AppliedRule)
            .collect()
    }
}

/// Whom a price list is for.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PriceListScope {
    Base,
    Channel,
    Group,
    Company,
    Customer,
}

impl From<PriceScope> for PriceListScope {
    fn from(scope: PriceScope) -> Self {
        match scope {
            PriceScope::Base => Self::Base,
            PriceScope::Channel(_) => Self::Channel,
            PriceScope::Group(_) => Self::Group,
            PriceScope::Company(_) => Self::Company,
            PriceScope::Customer(_) => Self::Customer,
        }
    }
}

/// A volume break: from `minQuantity` units, `unitPrice` each (before promotions).
pub struct PriceTier(pub core_pricing::PriceTier);

#[Object]
impl PriceTier {
    async fn min_quantity(&self) -> i32 {
        self.0.min_quantity
    }
    async fn unit_price(&self) -> Money {
        Money(self.0.unit_price.normalize())
    }
    /// Code of the price list the tier belongs to.
    async fn price_list(&self) -> &str {
        &self.0.list_code
    }
    async fn scope(&self) -> PriceListScope {
        self.0.scope.into()
    }
}

/// Kind of rule in a price explanation.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PriceRuleKind {
    PriceList,
    Promotion,
}

/// One rule applied to a price and what it did.
pub struct AppliedRule(core_pricing::AppliedRule);

#[Object]
impl AppliedRule {
    async fn kind(&self) -> PriceRuleKind {
        match self.0.kind {
            RuleKind::PriceList => PriceRuleKind::PriceList,
            RuleKind::Promotion => PriceRuleKind::Promotion,
        }
    }
    async fn id(&self) -> ID {
        match self.0.kind {
            RuleKind::PriceList => encode_id(Kind::PriceList, self.0.id),
            RuleKind::Promotion => encode_id(Kind::Promotion, self.0.id),
        }
    }
    /// The list's or promotion's code.
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What the rule did, for people.
    async fn effect(&self) -> &str {
        &self.0.effect
    }
    /// Change of the unit price: the list price itself for a list, negative for a discount.
    async fn unit_amount(&self) -> Money {
        Money(self.0.unit_amount.normalize())
    }
}

/// Quantities the viewer may buy of a variant (B2B: e.g. cases of 5, at least 10).
#[derive(SimpleObject)]
pub struct QuantityRule {
    pub min_quantity: i32,
    pub max_quantity: Option<i32>,
    /// Allowed quantities are `minQuantity + k × increment`.
    pub increment: i32,
    /// Code of the price list that sets the rule.
    pub price_list: String,
}

/// One line to quote.
#[derive(InputObject)]
pub struct QuoteLineInput {
    pub sku: String,
    pub quantity: i32,
}

/// A priced cart or B2B quote.
pub struct Quote {
    currency: String,
    lines: Vec<QuoteLine>,
}

/// One priced line of a quote.
pub struct QuoteLine {
    variant: variant::Model,
    price: PriceBreakdown,
}

#[Object]
impl QuoteLine {
    async fn sku(&self) -> &str {
        &self.variant.sku
    }
    async fn quantity(&self) -> i32 {
        self.price.quantity
    }
    async fn variant(&self) -> Variant {
        Variant(self.variant.clone())
    }
    async fn price(&self) -> Price {
        Price(self.price.clone())
    }
}

#[Object]
impl Quote {
    async fn currency(&self) -> &str {
        &self.currency
    }
    async fn lines(&self) -> &[QuoteLine] {
        &self.lines
    }
    /// Sum of the lines at list prices (each line rounded once).
    async fn subtotal(&self) -> Money {
        Money::total(
            self.lines.iter().map(|l| l.price.list_line_total).sum(),
            &self.currency,
        )
    }
    /// What promotions took off, over all lines.
    async fn discount_total(&self) -> Money {
        Money::total(
            self.lines.iter().map(|l| l.price.discount_total()).sum(),
            &self.currency,
        )
    }
    /// What the viewer pays for the lines: `subtotal − discountTotal`.
    async fn total(&self) -> Money {
        Money::total(
            self.lines.iter().map(|l| l.price.line_total).sum(),
            &self.currency,
        )
    }
}

#[derive(Default)]
pub struct PricingQuery;

#[Object]
impl PricingQuery {
    /// Prices lines for the request's viewer (a cart, or a B2B quote), with every rule
    /// applied. Quantity rules are enforced: a line that breaks one is refused with
    /// `QUANTITY_RULE_VIOLATION`, naming the rule and the nearest valid quantities.
    async fn price_quote(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "1 to 100 lines, each SKU once.")] lines: Vec<QuoteLineInput>,
    ) -> async_graphql::Result<Quote> {
        if lines.is_empty() || lines.len() > MAX_QUOTE_LINES {
            return Err(ApiError::bad_input(
                "lines",
                format!("give 1 to {MAX_QUOTE_LINES} lines, got {}", lines.len()),
            ))
            .api();
        }
        let mut seen = HashSet::new();
        for (i, line) in lines.iter().enumerate() {
            let sku = line.sku.trim();
            if sku.is_empty() || sku.chars().count() > catalog::MAX_SKU_LEN {
                return Err(ApiError::bad_input(
                    format!("lines[{i}].sku"),
                    format!("a SKU is 1 to {} characters", catalog::MAX_SKU_LEN),
                ))
                .api();
            }
            if !seen.insert(sku) {
                return Err(ApiError::bad_input(
                    format!("lines[{i}].sku"),
                    format!("{sku} appears twice; put its whole quantity on one line"),
                ))
                .api();
            }
            check_quantity(line.quantity, &format!("lines[{i}].quantity")).api()?;
        }
        let rc = request_context(ctx)?;
        let skus: Vec<String> = lines.iter().map(|l| l.sku.trim().to_owned()).collect();
        let variants = catalog::visible_variants_by_skus(&rc.db, rc.channel.channel.id, &skus)
            .await
            .api()?;
        let by_sku: HashMap<&str, &variant::Model> =
            variants.iter().map(|v| (v.sku.as_str(), v)).collect();
        for (i, sku) in skus.iter().enumerate() {
            if !by_sku.contains_key(sku.as_str()) {
                let field = format!("lines[{i}].sku");
                let shown: String = sku.chars().take(64).collect();
                let message = format!("{field}: no variant {shown} on this channel");
                return Err(
                    async_graphql::Error::new(message).extend_with(move |_, ext| {
                        ext.set("code", code::NOT_FOUND);
                        ext.set("field", field.as_str());
                    }),
                );
            }
        }
        // Load every line's candidates in one batch before resolving any.
        let ids: Vec<i64> = variants.iter().map(|v| v.id).collect();
        let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
        request_data::<RequestLoader<PriceDataByVariant>>(ctx)
            .api()?
            .load_many(ids)
            .await
            .api()?;
        request_data::<RequestLoader<ProductsById>>(ctx)
            .api()?
            .load_many(product_ids)
            .await
            .api()?;
        let mut priced = Vec::with_capacity(lines.len());
        for (i, (line, sku)) in lines.iter().zip(&skus).enumerate() {
            let variant = by_sku[sku.as_str()];
            let price = price_of(
                ctx,
                variant,
                Some(line.quantity),
                &format!("lines[{i}].quantity"),
            )
            .await?;
            priced.push(QuoteLine {
                variant: variant.clone(),
                price: price.0,
            });
        }
        Ok(Quote {
            currency: session(ctx).api()?.viewer.currency.clone(),
            lines: priced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn decimals_are_plain_and_exact() {
        for ok in ["19.99", "0", "-0", "0.0001", "-5.5", "1234567.1234"] {
            assert_eq!(parse_decimal(ok), Some(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "",
            " 19.99",
            "19.99 ",
            "1e10",
            "1E2",
            "1_000",
            "+5",
            ".5",
            "5.",
            "NaN",
            "inf",
            "0.000000000000000000000000000001",
            "1.000000000000000000000000000001",
            "--1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}

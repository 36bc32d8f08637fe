//! Loading pricing candidates: the viewer's lists and the channel's promotions once per
//! request, and the entries and quantity rules of many variants in one statement each, so a
//! page of 50 variants costs what a page of 10 does.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::resolve::{
    Discount, PriceEntry, PriceListInfo, PriceScope, PriceViewer, PromotionInfo, PromotionTarget,
    QuantityRule,
};
use crate::CoreError;
use crate::entities::{customer, price_list, price_list_entry, promotion, quantity_rule};

/// The scope of a stored list; the schema allows at most one scope column per list.
pub fn list_scope(list: &price_list::Model) -> PriceScope {
    match (
        list.customer_id,
        list.company_id,
        list.customer_group_id,
        list.channel_id,
    ) {
        (Some(id), _, _, _) => PriceScope::Customer(id),
        (_, Some(id), _, _) => PriceScope::Company(id),
        (_, _, Some(id), _) => PriceScope::Group(id),
        (_, _, _, Some(id)) => PriceScope::Channel(id),
        _ => PriceScope::Base,
    }
}

/// A stored list as resolution sees it.
pub fn list_info(list: price_list::Model) -> PriceListInfo {
    PriceListInfo {
        scope: list_scope(&list),
        id: list.id,
        code: list.code,
        name: list.name,
        currency: list.currency,
        priority: list.priority,
        valid_from: list.valid_from,
        valid_until: list.valid_until,
        active: list.active,
    }
}

/// A stored promotion as resolution sees it; `None` for a kind this build does not know.
pub fn promotion_info(p: promotion::Model) -> Option<PromotionInfo> {
    let value: Decimal = p.value.into();
    let currency = p.currency.clone().unwrap_or_default();
    let discount = match p.discount_kind.as_str() {
        "percent_off" => Discount::PercentOff(value),
        "amount_off" => Discount::AmountOff {
            amount: value,
            currency,
        },
        "fixed_price" => Discount::FixedPrice {
            amount: value,
            currency,
        },
        _ => return None,
    };
    let target = match (p.target_kind.as_str(), p.target_id) {
        ("all", _) => PromotionTarget::All,
        ("variant", Some(id)) => PromotionTarget::Variant(id),
        ("product", Some(id)) => PromotionTarget::Product(id),
        ("category", Some(id)) => PromotionTarget::Category(id),
        _ => return None,
    };
    Some(PromotionInfo {
        id: p.id,
        code: p.code,
        name: p.name,
        channel_id: p.channel_id,
        group_id: p.customer_group_id,
        target,
        discount,
        min_quantity: p.min_quantity,
        starts_at: p.starts_at,
        ends_at: p.ends_at,
        stackable: p.stackable,
        priority: p.priority,
        active: p.active,
    })
}

/// The active lists in the viewer's currency that may apply to the viewer (windows are
/// checked at resolution time, against the instant of the price).
pub async fn viewer_lists(
    db: &impl ConnectionTrait,
    viewer: &PriceViewer,
) -> Result<Vec<PriceListInfo>, CoreError> {
    let scoped = |column: price_list::Column, id: Option<i64>| match id {
        Some(id) => Condition::any().add(column.is_null()).add(column.eq(id)),
        None => Condition::all().add(column.is_null()),
    };
    let lists = price_list::Entity::find()
        .filter(price_list::Column::Active.eq(true))
        .filter(price_list::Column::Currency.eq(viewer.currency.as_str()))
        .filter(scoped(
            price_list::Column::ChannelId,
            Some(viewer.channel_id),
        ))
        .filter(scoped(price_list::Column::CustomerGroupId, viewer.group_id))
        .filter(scoped(price_list::Column::CompanyId, viewer.company_id))
        .filter(scoped(price_list::Column::CustomerId, viewer.customer_id))
        .order_by_asc(price_list::Column::Id)
        .all(db)
        .await?;
    Ok(lists.into_iter().map(list_info).collect())
}

/// The active promotions that may apply on the viewer's channel.
pub async fn channel_promotions(
    db: &impl ConnectionTrait,
    channel_id: i64,
) -> Result<Vec<PromotionInfo>, CoreError> {
    let promotions = promotion::Entity::find()
        .filter(promotion::Column::Active.eq(true))
        .filter(
            Condition::any()
                .add(promotion::Column::ChannelId.is_null())
                .add(promotion::Column::ChannelId.eq(channel_id)),
        )
        .order_by_asc(promotion::Column::Id)
        .all(db)
        .await?;
    Ok(promotions.into_iter().filter_map(promotion_info).collect())
}

/// The first instant after `now` at which an active price list or promotion opens or closes
/// its window (`None`: no window edge ahead), compared in Rust (SQLite keeps timestamps as
/// text). Resolved prices and list-price orders computed
/// at `now` stay true until then, unless a change is published.
pub async fn next_price_change(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CoreError> {
    let lists = price_list::Entity::find()
        .filter(price_list::Column::Active.eq(true))
        .filter(
            Condition::any()
                .add(price_list::Column::ValidFrom.is_not_null())
                .add(price_list::Column::ValidUntil.is_not_null()),
        )
        .all(db)
        .await?;
    let promotions = promotion::Entity::find()
        .filter(promotion::Column::Active.eq(true))
        .filter(
            Condition::any()
                .add(promotion::Column::StartsAt.is_not_null())
                .add(promotion::Column::EndsAt.is_not_null()),
        )
        .all(db)
        .await?;
    let edges = lists
        .iter()
        .flat_map(|l| [l.valid_from, l.valid_until])
        .chain(promotions.iter().flat_map(|p| [p.starts_at, p.ends_at]));
    Ok(edges.flatten().filter(|edge| *edge > now).min())
}

/// What one variant's price depends on besides lists and promotions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VariantPriceData {
    pub entries: Vec<PriceEntry>,
    pub rules: Vec<QuantityRule>,
}

/// Entries and quantity rules of `variant_ids` in `list_ids`: two statements for any number
/// of variants.
pub async fn variant_price_data(
    db: &impl ConnectionTrait,
    list_ids: &[i64],
    variant_ids: &[i64],
) -> Result<HashMap<i64, VariantPriceData>, CoreError> {
    let mut out: HashMap<i64, VariantPriceData> = HashMap::new();
    if list_ids.is_empty() || variant_ids.is_empty() {
        return Ok(out);
    }
    let entries = price_list_entry::Entity::find()
        .filter(price_list_entry::Column::PriceListId.is_in(list_ids.iter().copied()))
        .filter(price_list_entry::Column::VariantId.is_in(variant_ids.iter().copied()))
        .all(db)
        .await?;
    for entry in entries {
        out.entry(entry.variant_id)
            .or_default()
            .entries
            .push(PriceEntry {
                list_id: entry.price_list_id,
                min_quantity: entry.min_quantity,
                amount: entry.amount.into(),
            });
    }
    let rules = quantity_rule::Entity::find()
        .filter(quantity_rule::Column::PriceListId.is_in(list_ids.iter().copied()))
        .filter(quantity_rule::Column::VariantId.is_in(variant_ids.iter().copied()))
        .all(db)
        .await?;
    for rule in rules {
        out.entry(rule.variant_id)
            .or_default()
            .rules
            .push(QuantityRule {
                id: rule.id,
                list_id: rule.price_list_id,
                min_quantity: rule.min_quantity,
                max_quantity: rule.max_quantity,
                increment: rule.increment,
            });
    }
    Ok(out)
}

/// The customer with `email`, if there is one (what a token names).
pub async fn find_customer_by_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<customer::Model>, CoreError> {
    match customer_by_email(db, email).await {
        Ok(found) => Ok(Some(found)),
        Err(CoreError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The pricing identity of a customer: their company and group.
pub async fn customer_by_email(
    db: &impl ConnectionTrait,
    email: &str,
) -> Result<customer::Model, CoreError> {
    customer::Entity::find()
        .filter(customer::Column::Email.eq(email.trim().to_ascii_lowercase()))
        .one(db)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "customer",
            key: email.to_owned(),
        })
}

/// Ancestors of a category, itself first (promotions on a category cover its subtree).
pub fn category_path(categories: &[crate::entities::category::Model], id: i64) -> Vec<i64> {
    let mut path = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        if path.contains(&id) {
            break; // a corrupt tree with a cycle must not loop forever
        }
        path.push(id);
        next = categories
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.parent_id);
    }
    path
}

/// The rows an order is priced from: its variants and their products (visible on the
/// channel), the viewer's lists, the channel's promotions, the entries and quantity rules of
/// variants, and the category tree. [`FromDatabase`] reads them; a caller that keeps the same
/// rows current (the gateway's read model) passes its own, so placing an order does not read
/// again what a catalog page has just read.
pub trait PriceInputs: Sync {
    fn viewer_lists(
        &self,
        viewer: &PriceViewer,
    ) -> impl Future<Output = Result<std::sync::Arc<Vec<PriceListInfo>>, CoreError>> + Send;

    fn channel_promotions(
        &self,
        channel_id: i64,
    ) -> impl Future<Output = Result<std::sync::Arc<Vec<PromotionInfo>>, CoreError>> + Send;

    fn variant_price_data(
        &self,
        list_ids: &[i64],
        variant_ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, VariantPriceData>, CoreError>> + Send;

    fn categories(
        &self,
    ) -> impl Future<
        Output = Result<std::sync::Arc<Vec<crate::entities::category::Model>>, CoreError>,
    > + Send;

    /// The variants among `skus` whose products are visible on the channel
    /// ([`crate::catalog::visible_variants_by_skus`]).
    fn visible_variants(
        &self,
        channel_id: i64,
        skus: &[String],
    ) -> impl Future<Output = Result<Vec<crate::entities::variant::Model>, CoreError>> + Send;

    /// The products among `ids` visible on the channel
    /// ([`crate::catalog::visible_products_by_ids`]).
    fn visible_products(
        &self,
        channel_id: i64,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<crate::entities::product::Model>, CoreError>> + Send;
}

/// Pricing's rows, read from the database.
pub struct FromDatabase<'a, C>(pub &'a C);

impl<C: ConnectionTrait + Sync> PriceInputs for FromDatabase<'_, C> {
    async fn viewer_lists(
        &self,
        viewer: &PriceViewer,
    ) -> Result<std::sync::Arc<Vec<PriceListInfo>>, CoreError> {
        viewer_lists(self.0, viewer).await.map(std::sync::Arc::new)
    }

    async fn channel_promotions(
        &self,
        channel_id: i64,
    ) -> Result<std::sync::Arc<Vec<PromotionInfo>>, CoreError> {
        channel_promotions(self.0, channel_id)
            .await
            .map(std::sync::Arc::new)
    }

    async fn variant_price_data(
        &self,
        list_ids: &[i64],
        variant_ids: &[i64],
    ) -> Result<HashMap<i64, VariantPriceData>, CoreError> {
        variant_price_data(self.0, list_ids, variant_ids).await
    }

    async fn categories(
        &self,
    ) -> Result<std::sync::Arc<Vec<crate::entities::category::Model>>, CoreError> {
        crate::catalog::list_categories(self.0)
            .await
            .map(std::sync::Arc::new)
    }

    async fn visible_variants(
        &self,
        channel_id: i64,
        skus: &[String],
    ) -> Result<Vec<crate::entities::variant::Model>, CoreError> {
        crate::catalog::visible_variants_by_skus(self.0, channel_id, skus).await
    }

    async fn visible_products(
        &self,
        channel_id: i64,
        ids: &[i64],
    ) -> Result<Vec<crate::entities::product::Model>, CoreError> {
        crate::catalog::visible_products_by_ids(self.0, channel_id, ids).await
    }
}

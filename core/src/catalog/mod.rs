//! Catalog reads: products as a channel sees them, their variants, and the category tree.
//!
//! A product is visible on a channel when it is `active` and the channel lists it
//! (`channel_product`). Every read here applies that rule; nothing else decides visibility.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, NullOrdering, Order, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait,
    Select, Value,
};

use crate::CoreError;
use crate::entities::{category, channel_product, product, variant};

/// Most SKUs one `skus` filter may name.
pub const MAX_FILTER_SKUS: usize = 100;
/// Most attribute conditions one filter may carry.
pub const MAX_FILTER_ATTRIBUTES: usize = 10;
/// Longest accepted search text, in characters.
pub const MAX_SEARCH_LEN: usize = 100;
/// Longest accepted SKU or attribute value in a filter, in characters.
pub const MAX_FILTER_VALUE_LEN: usize = 200;
/// Longest accepted SKU anywhere (`variant(sku:)`, `filter.skus`), in characters.
pub const MAX_SKU_LEN: usize = 200;
/// Longest accepted product slug, in characters.
pub const MAX_SLUG_LEN: usize = 200;

/// Refuses a text longer than `max` characters before it reaches any SQL, naming `field`.
/// Counting stops at `max + 1`, so a 1 MB argument costs no more than a short one.
pub fn check_len(field: &str, text: &str, max: usize) -> Result<(), CoreError> {
    if text.chars().nth(max).is_some() {
        return Err(CoreError::invalid(
            field,
            format!("at most {max} characters, got {}", text.chars().count()),
        ));
    }
    Ok(())
}

/// Narrows a product listing; every condition given must hold.
#[derive(Clone, Debug, Default)]
pub struct ProductFilter {
    /// Products in this category or any category below it.
    pub category_id: Option<i64>,
    /// Case-insensitive substring of the product name.
    pub search: Option<String>,
    /// Products having a variant with one of these SKUs.
    pub skus: Vec<String>,
    /// Products whose attribute `key` equals `value`.
    pub attributes: Vec<AttributeFilter>,
}

/// One attribute condition: `attributes[key] == value` (compared as text).
#[derive(Clone, Debug)]
pub struct AttributeFilter {
    pub key: String,
    pub value: String,
}

/// The order of a product listing. Every order ends with the product id, so it is total and
/// pages never overlap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProductSort {
    /// By id: the stable default.
    #[default]
    Id,
    /// By name in character-code order (the same on SQLite and PostgreSQL), then id.
    Name,
    /// By list price, cheapest first; unpriced products last, then by id. A product's list
    /// price is the lowest over its variants of the unit price an anonymous viewer of the
    /// channel gets for one unit, before promotions (contract lists play no part).
    PriceAsc,
    /// By list price, dearest first; unpriced products last, then by id.
    PriceDesc,
}

/// Where a product stands in its listing's order: a page continues after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductCursor {
    pub id: i64,
    pub key: SortKey,
}

/// The sort key of a product besides its id, one kind per [`ProductSort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// [`ProductSort::Id`]: the id alone.
    Id,
    /// [`ProductSort::Name`].
    Name(String),
    /// Either price order: the product's list price in ten-thousandths of the channel's
    /// currency (the stored scale of amounts), `None` when it has none.
    Price(Option<i64>),
}

impl SortKey {
    /// Whether this key belongs to listings in `sort` order.
    pub fn fits(&self, sort: ProductSort) -> bool {
        matches!(
            (self, sort),
            (Self::Id, ProductSort::Id)
                | (Self::Name(_), ProductSort::Name)
                | (
                    Self::Price(_),
                    ProductSort::PriceAsc | ProductSort::PriceDesc
                )
        )
    }
}

/// One page of products in the requested order, where each stands (for cursors), and
/// whether more follow.
#[derive(Clone, Debug)]
pub struct ProductPage {
    pub products: Vec<product::Model>,
    /// One per product, in the same order.
    pub cursors: Vec<ProductCursor>,
    pub has_next_page: bool,
}

/// How a single product is looked up.
#[derive(Clone, Debug)]
pub enum ProductKey {
    Id(i64),
    Slug(String),
}

/// The visibility rule as a query: active products the channel lists.
fn visible_products(channel_id: i64) -> Select<product::Entity> {
    product::Entity::find()
        .filter(product::Column::Status.eq("active"))
        .filter(
            product::Column::Id.in_subquery(
                Query::select()
                    .column(channel_product::Column::ProductId)
                    .from(channel_product::Entity)
                    .and_where(channel_product::Column::ChannelId.eq(channel_id))
                    .take(),
            ),
        )
}

/// Applies `filter` to the visible products of a channel, validating it first.
async fn filtered_products(
    db: &DatabaseConnection,
    channel_id: i64,
    filter: &ProductFilter,
) -> Result<Select<product::Entity>, CoreError> {
    let mut select = visible_products(channel_id);
    if let Some(search) = &filter.search {
        let search = search.trim();
        if search.is_empty() {
            return Err(CoreError::invalid("filter.search", "must not be blank"));
        }
        if search.chars().count() > MAX_SEARCH_LEN {
            return Err(CoreError::invalid(
                "filter.search",
                format!("at most {MAX_SEARCH_LEN} characters"),
            ));
        }
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        select = select.filter(
            Expr::expr(Func::lower(Expr::col(product::Column::Name)))
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if !filter.skus.is_empty() {
        if filter.skus.len() > MAX_FILTER_SKUS {
            return Err(CoreError::invalid(
                "filter.skus",
                format!("at most {MAX_FILTER_SKUS} SKUs"),
            ));
        }
        for sku in &filter.skus {
            check_len("filter.skus", sku, MAX_SKU_LEN)?;
        }
        select = select.filter(
            product::Column::Id.in_subquery(
                Query::select()
                    .column(variant::Column::ProductId)
                    .from(variant::Entity)
                    .and_where(variant::Column::Sku.is_in(filter.skus.iter().cloned()))
                    .take(),
            ),
        );
    }
    if filter.attributes.len() > MAX_FILTER_ATTRIBUTES {
        return Err(CoreError::invalid(
            "filter.attributes",
            format!("at most {MAX_FILTER_ATTRIBUTES} conditions"),
        ));
    }
    let mut attributes = Condition::all();
    for attribute in &filter.attributes {
        attributes = attributes.add(attribute_equals(db.get_database_backend(), attribute)?);
    }
    // The only statement here, once every condition above has been checked.
    if let Some(category_id) = filter.category_id {
        let categories = list_categories(db).await?;
        select = select
            .filter(product::Column::CategoryId.is_in(category_subtree(&categories, category_id)));
    }
    Ok(select.filter(attributes))
}

/// `attributes ->> key = value`, spelled for the backend; key and value travel as bind parameters.
fn attribute_equals(backend: DbBackend, attribute: &AttributeFilter) -> Result<Expr, CoreError> {
    let key = &attribute.key;
    let valid = !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(CoreError::invalid(
            "filter.attributes.key",
            format!("{key:?} must be 1-64 letters, digits or underscores"),
        ));
    }
    if attribute.value.chars().count() > MAX_FILTER_VALUE_LEN {
        return Err(CoreError::invalid(
            "filter.attributes.value",
            format!("at most {MAX_FILTER_VALUE_LEN} characters"),
        ));
    }
    let value = attribute.value.clone();
    Ok(match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            "(\"product\".\"attributes\" ->> $1) = $2",
            [key.clone(), value],
        ),
        _ => Expr::cust_with_values(
            "CAST(json_extract(\"product\".\"attributes\", ?) AS TEXT) = ?",
            [format!("$.\"{key}\""), value],
        ),
    })
}

fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Ids of `root` and every category below it; empty when `root` does not exist.
pub fn category_subtree(categories: &[category::Model], root: i64) -> Vec<i64> {
    if !categories.iter().any(|c| c.id == root) {
        return Vec::new();
    }
    let mut children: HashMap<i64, Vec<i64>> = HashMap::new();
    for category in categories {
        if let Some(parent) = category.parent_id {
            children.entry(parent).or_default().push(category.id);
        }
    }
    let mut subtree = vec![root];
    let mut next = 0;
    while next < subtree.len() {
        for kid in children.get(&subtree[next]).cloned().unwrap_or_default() {
            // A corrupt tree with a cycle must not loop forever.
            if !subtree.contains(&kid) {
                subtree.push(kid);
            }
        }
        next += 1;
    }
    subtree
}

/// Up to `first` visible products after `after`, in `sort` order.
#[tracing::instrument(skip(db, filter))]
pub async fn list_products(
    db: &DatabaseConnection,
    channel_id: i64,
    filter: &ProductFilter,
    sort: ProductSort,
    after: Option<&ProductCursor>,
    first: u64,
) -> Result<ProductPage, CoreError> {
    if first == 0 {
        return Err(CoreError::invalid("first", "must be at least 1"));
    }
    if let Some(after) = after
        && !after.key.fits(sort)
    {
        return Err(CoreError::invalid(
            "after",
            "the cursor comes from a listing in another order",
        ));
    }
    let backend = db.get_database_backend();
    let select = filtered_products(db, channel_id, filter).await?;
    let id = || Expr::col((product::Entity, product::Column::Id));
    let rows: Vec<(product::Model, SortKey)> = match sort {
        ProductSort::Id => {
            let mut select = select;
            if let Some(after) = after {
                select = select.filter(id().gt(after.id));
            }
            select
                .order_by_asc(product::Column::Id)
                .limit(first + 1)
                .all(db)
                .await?
                .into_iter()
                .map(|p| (p, SortKey::Id))
                .collect()
        }
        ProductSort::Name => {
            let name = || name_key(backend);
            let mut select = select;
            if let Some(ProductCursor {
                id: after_id,
                key: SortKey::Name(after_name),
            }) = after
            {
                select = select.filter(
                    Condition::any().add(name().gt(after_name.as_str())).add(
                        Condition::all()
                            .add(name().eq(after_name.as_str()))
                            .add(id().gt(*after_id)),
                    ),
                );
            }
            select
                .order_by(name(), Order::Asc)
                .order_by_asc(product::Column::Id)
                .limit(first + 1)
                .all(db)
                .await?
                .into_iter()
                .map(|p| {
                    let key = SortKey::Name(p.name.clone());
                    (p, key)
                })
                .collect()
        }
        ProductSort::PriceAsc | ProductSort::PriceDesc => {
            // One instant for every use of the price in the statement.
            let now = Utc::now();
            let price = || list_price_sql(backend, channel_id, now);
            let ascending = sort == ProductSort::PriceAsc;
            let mut select = select;
            if let Some(ProductCursor {
                id: after_id,
                key: SortKey::Price(after_price),
            }) = after
            {
                // Priced products come first in both directions, unpriced ones by id last.
                let tie = Condition::all().add(id().gt(*after_id));
                select = select.filter(match after_price {
                    Some(amount) => Condition::any()
                        .add(if ascending {
                            price().gt(*amount)
                        } else {
                            price().lt(*amount)
                        })
                        .add(tie.add(price().eq(*amount)))
                        .add(price().is_null()),
                    None => tie.add(price().is_null()),
                });
            }
            let order = if ascending { Order::Asc } else { Order::Desc };
            select
                .expr_as(price(), SORT_PRICE)
                .order_by_with_nulls(price(), order, NullOrdering::Last)
                .order_by_asc(product::Column::Id)
                .limit(first + 1)
                .into_model::<PricedProduct>()
                .all(db)
                .await?
                .into_iter()
                .map(|row| (row.product, SortKey::Price(row.price)))
                .collect()
        }
    };
    let has_next_page = rows.len() as u64 > first;
    let (products, cursors) = rows
        .into_iter()
        .take(first as usize)
        .map(|(product, key)| {
            let cursor = ProductCursor {
                id: product.id,
                key,
            };
            (product, cursor)
        })
        .unzip();
    Ok(ProductPage {
        products,
        cursors,
        has_next_page,
    })
}

/// The product name as sorted: character-code order on both backends (PostgreSQL would
/// otherwise use the database's collation, SQLite compares bytes).
fn name_key(backend: DbBackend) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust("\"product\".\"name\" COLLATE \"C\""),
        _ => Expr::col((product::Entity, product::Column::Name)),
    }
}

/// Alias of the list price column in price-sorted listings.
const SORT_PRICE: &str = "sort_price";

/// A product with its list price, as a price-sorted listing reads it.
struct PricedProduct {
    product: product::Model,
    price: Option<i64>,
}

impl FromQueryResult for PricedProduct {
    fn from_query_result(res: &QueryResult, pre: &str) -> Result<Self, DbErr> {
        Ok(Self {
            product: product::Model::from_query_result(res, pre)?,
            price: res.try_get(pre, SORT_PRICE)?,
        })
    }
}

/// The list price of the outer query's `"product"` on a channel at `now`, in ten-thousandths
/// (the stored scale of amounts), NULL when it has none: the lowest over its variants of the
/// unit price an anonymous viewer of the channel gets for one unit before promotions. For a
/// variant that is the `min_quantity = 1` entry of the winning list among the active lists
/// in the channel's currency, inside their validity window, scoped to the channel or to no
/// one: the channel's own lists before unscoped ones, then the higher priority, then the
/// lower list id (the rule of [`crate::pricing::resolve`] for an anonymous viewer).
/// Group, company and customer lists (contracts) and promotions play no part.
fn list_price_sql(backend: DbBackend, channel_id: i64, now: DateTime<Utc>) -> Expr {
    // SQLite keeps timestamps as text: compare them as instants, whatever their spelling.
    let (channel, from_ok, until_ok) = match backend {
        DbBackend::Postgres => ("$1", "l.valid_from <= $2", "l.valid_until > $2"),
        _ => (
            "?",
            "julianday(l.valid_from) <= julianday(?)",
            "julianday(l.valid_until) > julianday(?)",
        ),
    };
    let sql = format!(
        "(SELECT MIN((\
            SELECT e.amount FROM price_list_entry e \
            JOIN price_list l ON l.id = e.price_list_id \
            JOIN channel c ON c.id = {channel} AND c.currency = l.currency \
            WHERE e.variant_id = v.id AND e.min_quantity = 1 AND l.active \
            AND (l.channel_id IS NULL OR l.channel_id = c.id) \
            AND l.customer_group_id IS NULL AND l.company_id IS NULL AND l.customer_id IS NULL \
            AND (l.valid_from IS NULL OR {from_ok}) \
            AND (l.valid_until IS NULL OR {until_ok}) \
            ORDER BY l.channel_id IS NULL, l.priority DESC, l.id, e.amount \
            LIMIT 1)) \
        FROM variant v WHERE v.product_id = \"product\".\"id\")"
    );
    let values: Vec<Value> = match backend {
        DbBackend::Postgres => vec![channel_id.into(), now.into()],
        // `?` placeholders take their values in order of appearance.
        _ => vec![channel_id.into(), now.into(), now.into()],
    };
    Expr::cust_with_values(sql, values)
}

/// How many visible products match `filter`.
pub async fn count_products(
    db: &DatabaseConnection,
    channel_id: i64,
    filter: &ProductFilter,
) -> Result<u64, CoreError> {
    Ok(filtered_products(db, channel_id, filter)
        .await?
        .count(db)
        .await?)
}

/// One visible product by id or slug; `None` when it does not exist or the channel hides it.
pub async fn find_visible_product(
    db: &DatabaseConnection,
    channel_id: i64,
    key: &ProductKey,
) -> Result<Option<product::Model>, CoreError> {
    if let ProductKey::Slug(slug) = key {
        check_len("slug", slug, MAX_SLUG_LEN)?;
    }
    let select = visible_products(channel_id);
    let select = match key {
        ProductKey::Id(id) => select.filter(product::Column::Id.eq(*id)),
        ProductKey::Slug(slug) => select.filter(product::Column::Slug.eq(slug.as_str())),
    };
    Ok(select.one(db).await?)
}

/// The visible products among `ids`, in any order.
pub async fn visible_products_by_ids(
    db: &impl ConnectionTrait,
    channel_id: i64,
    ids: &[i64],
) -> Result<Vec<product::Model>, CoreError> {
    Ok(visible_products(channel_id)
        .filter(product::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// Every variant of the given products, by product then position.
pub async fn variants_of_products(
    db: &impl ConnectionTrait,
    product_ids: &[i64],
) -> Result<Vec<variant::Model>, CoreError> {
    Ok(variant::Entity::find()
        .filter(variant::Column::ProductId.is_in(product_ids.iter().copied()))
        .order_by_asc(variant::Column::ProductId)
        .order_by_asc(variant::Column::Position)
        .order_by_asc(variant::Column::Id)
        .all(db)
        .await?)
}

/// The variant with `sku` when its product is visible on the channel.
pub async fn find_visible_variant(
    db: &DatabaseConnection,
    channel_id: i64,
    sku: &str,
) -> Result<Option<variant::Model>, CoreError> {
    check_len("sku", sku, MAX_SKU_LEN)?;
    let Some(variant) = variant::Entity::find()
        .filter(variant::Column::Sku.eq(sku))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let visible = find_visible_product(db, channel_id, &ProductKey::Id(variant.product_id))
        .await?
        .is_some();
    Ok(visible.then_some(variant))
}

/// The variants with these SKUs whose products are visible on the channel, in one statement.
pub async fn visible_variants_by_skus(
    db: &impl ConnectionTrait,
    channel_id: i64,
    skus: &[String],
) -> Result<Vec<variant::Model>, CoreError> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    Ok(variant::Entity::find()
        .filter(variant::Column::Sku.is_in(skus.iter().cloned()))
        .filter(
            variant::Column::ProductId.in_subquery(
                visible_products(channel_id)
                    .select_only()
                    .column(product::Column::Id)
                    .into_query(),
            ),
        )
        .all(db)
        .await?)
}

/// The whole category tree, ordered by parent, position and name.
pub async fn list_categories(db: &impl ConnectionTrait) -> Result<Vec<category::Model>, CoreError> {
    Ok(category::Entity::find()
        .order_by_asc(category::Column::Position)
        .order_by_asc(category::Column::Name)
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(id: i64, parent_id: Option<i64>) -> category::Model {
        let now = chrono::Utc::now();
        category::Model {
            id,
            parent_id,
            slug: format!("c{id}"),
            name: format!("C{id}"),
            position: 0,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn subtree_holds_root_and_all_descendants_only() {
        let tree = [
            category(1, None),
            category(2, Some(1)),
            category(3, Some(2)),
            category(4, None),
        ];
        let mut subtree = category_subtree(&tree, 1);
        subtree.sort();
        assert_eq!(subtree, vec![1, 2, 3]);
        assert_eq!(category_subtree(&tree, 4), vec![4]);
        assert!(category_subtree(&tree, 99).is_empty());
    }

    #[test]
    fn long_skus_and_slugs_are_refused_naming_their_argument() {
        assert!(check_len("sku", &"x".repeat(MAX_SKU_LEN), MAX_SKU_LEN).is_ok());
        // Characters, not bytes: 200 two-byte characters fit.
        assert!(check_len("slug", &"é".repeat(MAX_SLUG_LEN), MAX_SLUG_LEN).is_ok());
        for (field, len) in [("sku", 201), ("filter.skus", 10_000), ("slug", 201)] {
            let err = check_len(field, &"x".repeat(len), 200).unwrap_err();
            assert!(
                matches!(err, CoreError::InvalidInput { field: ref named, ref reason }
                    if named == field && reason.contains("at most 200")),
                "{err}"
            );
        }
    }

    #[test]
    fn like_wildcards_in_search_text_are_literal() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn attribute_keys_are_restricted_to_safe_names() {
        let bad = AttributeFilter {
            key: "a') OR 1=1 --".into(),
            value: "x".into(),
        };
        let err = attribute_equals(DbBackend::Sqlite, &bad).unwrap_err();
        assert!(
            matches!(err, CoreError::InvalidInput { ref field, .. } if field == "filter.attributes.key")
        );
        let good = AttributeFilter {
            key: "material".into(),
            value: "cotton".into(),
        };
        assert!(attribute_equals(DbBackend::Postgres, &good).is_ok());
    }

    #[test]
    fn sort_keys_fit_their_own_orders_only() {
        let keys = [
            SortKey::Id,
            SortKey::Name("Tee".into()),
            SortKey::Price(Some(199_900)),
            SortKey::Price(None),
        ];
        let fitting = |key: &SortKey| {
            [
                ProductSort::Id,
                ProductSort::Name,
                ProductSort::PriceAsc,
                ProductSort::PriceDesc,
            ]
            .into_iter()
            .filter(|&sort| key.fits(sort))
            .collect::<Vec<_>>()
        };
        assert_eq!(fitting(&keys[0]), [ProductSort::Id]);
        assert_eq!(fitting(&keys[1]), [ProductSort::Name]);
        for key in &keys[2..] {
            assert_eq!(
                fitting(key),
                [ProductSort::PriceAsc, ProductSort::PriceDesc]
            );
        }
    }

    #[test]
    fn the_list_price_binds_every_placeholder_on_both_backends() {
        use sea_orm::sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
        let now = chrono::Utc::now();
        let select = |backend| {
            Query::select()
                .expr(list_price_sql(backend, 7, now))
                .from(product::Entity)
                .and_where(list_price_sql(backend, 7, now).gt(100))
                .to_owned()
        };
        let (sql, values) = select(DbBackend::Postgres).build(PostgresQueryBuilder);
        // Each use of a numbered placeholder becomes a parameter of its own: three per
        // expression (channel, now, now), then 100.
        assert_eq!(values.0.len(), 7, "{sql}");
        assert!(
            sql.contains("l.valid_until > $3") && sql.ends_with("> $7"),
            "{sql}"
        );
        let (sql, values) = select(DbBackend::Sqlite).build(SqliteQueryBuilder);
        assert_eq!(values.0.len(), 7, "{sql}");
        assert_eq!(sql.matches('?').count(), 7, "{sql}");
        assert!(
            sql.contains("julianday(l.valid_from) <= julianday(?)"),
            "{sql}"
        );
    }
}

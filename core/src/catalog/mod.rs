//! Catalog reads: products as a channel sees them, their variants, and the category tree.
//!
//! A product is visible on a channel when it is `active` and the channel lists it
//! (`channel_product`). Every read here applies that rule; nothing else decides visibility.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
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

/// One page of products in id order, and whether more follow.
#[derive(Clone, Debug)]
pub struct ProductPage {
    pub products: Vec<product::Model>,
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
    if let Some(category_id) = filter.category_id {
        let categories = list_categories(db).await?;
        select = select
            .filter(product::Column::CategoryId.is_in(category_subtree(&categories, category_id)));
    }
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

/// Up to `first` visible products after product id `after`, in id order (stable for cursors).
#[tracing::instrument(skip(db, filter))]
pub async fn list_products(
    db: &DatabaseConnection,
    channel_id: i64,
    filter: &ProductFilter,
    after: Option<i64>,
    first: u64,
) -> Result<ProductPage, CoreError> {
    if first == 0 {
        return Err(CoreError::invalid("first", "must be at least 1"));
    }
    let mut select = filtered_products(db, channel_id, filter).await?;
    if let Some(after) = after {
        select = select.filter(product::Column::Id.gt(after));
    }
    let mut products = select
        .order_by_asc(product::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    let has_next_page = products.len() as u64 > first;
    products.truncate(first as usize);
    Ok(ProductPage {
        products,
        has_next_page,
    })
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
    let select = visible_products(channel_id);
    let select = match key {
        ProductKey::Id(id) => select.filter(product::Column::Id.eq(*id)),
        ProductKey::Slug(slug) => select.filter(product::Column::Slug.eq(slug.as_str())),
    };
    Ok(select.one(db).await?)
}

/// The visible products among `ids`, in any order.
pub async fn visible_products_by_ids(
    db: &DatabaseConnection,
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
}

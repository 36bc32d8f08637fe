//! Catalog types: products (as a Relay connection), variants and categories.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use commerce_core::catalog::{self, AttributeFilter, ProductFilter, ProductKey};
use commerce_core::entities::{category, product, variant};
use sea_orm::DatabaseConnection;
use tokio::sync::OnceCell;

use super::ids::{Kind, decode_cursor, decode_id, encode_cursor, encode_id};
use super::inventory::{Availability, StockByVariant, StockLevel};
use super::pricing::PriceDataByVariant;
use super::{RequestLoader, request_context, request_data};
use crate::errors::{ApiError, ApiResultExt};
use crate::read_path::ReadModel;
use crate::read_path::model::Reads;

#[derive(Default)]
pub struct CatalogQuery;

/// Narrows `products`; every condition given must hold.
#[derive(InputObject, Default)]
pub struct ProductFilterInput {
    /// Products in this category or any category below it.
    pub category_id: Option<ID>,
    /// Case-insensitive substring of the product name.
    pub search: Option<String>,
    /// Products having a variant with one of these SKUs (at most 100).
    pub skus: Option<Vec<String>>,
    /// Products whose attribute `key` equals `value` (at most 10 conditions).
    pub attributes: Option<Vec<AttributeFilterInput>>,
}

/// One attribute condition: the product's attribute `key` equals `value`.
#[derive(InputObject)]
pub struct AttributeFilterInput {
    pub key: String,
    pub value: String,
}

impl ProductFilterInput {
    fn into_core(self) -> Result<ProductFilter, ApiError> {
        let category_id = self
            .category_id
            .map(|id| decode_id(Kind::Category, &id, "filter.categoryId"))
            .transpose()?;
        Ok(ProductFilter {
            category_id,
            search: self.search,
            skus: self.skus.unwrap_or_default(),
            attributes: self
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|a| AttributeFilter {
                    key: a.key,
                    value: a.value,
                })
                .collect(),
        })
    }
}

/// The order of `products`; every order ends with the product id, so it is stable and pages
/// never overlap. The price orders use the channel's list price: for each variant, the unit
/// price an anonymous shopper on the channel pays for one unit (the channel's own price list
/// before the base list, then the list's priority), and for a product the lowest over its
/// variants. Contract prices (customer, company and group lists) and promotions are not part
/// of the sort. Products without a price come last in both directions.
#[derive(Enum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[graphql(remote = "commerce_core::catalog::ProductSort")]
pub enum ProductSort {
    /// By id (the default).
    #[default]
    Id,
    /// By name in character-code order, then id.
    Name,
    /// Cheapest list price first, then id; products without a price last.
    PriceAsc,
    /// Dearest list price first, then id; products without a price last.
    PriceDesc,
}

#[Object]
impl CatalogQuery {
    /// Products listed on the request's channel, in a stable order (by id unless `sort` says
    /// otherwise), as a Relay connection.
    async fn products(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size; defaults to 20, at most 100.")] first: Option<i32>,
        #[graphql(
            desc = "The `endCursor` of the previous page, fetched with the same `sort`; a cursor from another order is refused."
        )]
        after: Option<String>,
        filter: Option<ProductFilterInput>,
        #[graphql(desc = "The order of the products; defaults to `ID`.", default)]
        sort: ProductSort,
    ) -> async_graphql::Result<ProductConnection> {
        let rc = request_context(ctx)?;
        let first = first.unwrap_or(rc.config.default_page_size as i32);
        let max = rc.config.max_page_size;
        if first < 1 || first as u64 > max {
            return Err(ApiError::bad_input(
                "first",
                format!("must be between 1 and {max}, got {first}"),
            ))
            .api();
        }
        let sort = catalog::ProductSort::from(sort);
        let after = after
            .as_deref()
            .map(|c| decode_cursor(sort, c, "after"))
            .transpose()
            .api()?;
        let filter = filter.unwrap_or_default().into_core().api()?;
        let channel_id = rc.channel.channel.id;
        let page = rc
            .reads()
            .page(channel_id, &filter, sort, after.as_ref(), first as u64)
            .await
            .api()?;
        rc.tag(|tags| {
            tags.products(page.products.iter().map(|p| p.id));
            if matches!(
                sort,
                catalog::ProductSort::PriceAsc | catalog::ProductSort::PriceDesc
            ) {
                tags.price_sorted();
            }
        });
        prime_page_loaders(ctx, &page.products).await.api()?;
        Ok(ProductConnection {
            cursors: page
                .cursors
                .iter()
                .map(|cursor| encode_cursor(sort, cursor))
                .collect(),
            products: page.products.clone(),
            has_next_page: page.has_next_page,
            has_previous_page: after.is_some(),
            filter,
        })
    }

    /// One product by `id` or by `slug` (give exactly one); null when the channel does not list it.
    async fn product(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        slug: Option<String>,
    ) -> async_graphql::Result<Option<Product>> {
        let key = match (id, slug) {
            (Some(id), None) => ProductKey::Id(decode_id(Kind::Product, &id, "id").api()?),
            (None, Some(slug)) => ProductKey::Slug(slug),
            _ => return Err(ApiError::bad_input("id", "give exactly one of id and slug")).api(),
        };
        let rc = request_context(ctx)?;
        let channel_id = rc.channel.channel.id;
        let found = rc.reads().product(channel_id, &key).await.api()?;
        if let Some(product) = &found {
            rc.tag(|tags| tags.products([product.id]));
        }
        Ok(found.map(Product))
    }

    /// One variant by SKU; null when unknown or its product is not listed on the channel.
    async fn variant(
        &self,
        ctx: &Context<'_>,
        sku: String,
    ) -> async_graphql::Result<Option<Variant>> {
        let rc = request_context(ctx)?;
        let channel_id = rc.channel.channel.id;
        let found = rc.reads().variant_by_sku(channel_id, &sku).await.api()?;
        if let Some(variant) = &found {
            rc.tag(|tags| {
                tags.products([variant.product_id]);
                tags.variant(variant.id);
            });
        }
        Ok(found.map(Variant))
    }

    /// The whole category tree, flat; follow `parent` and `children` to walk it.
    async fn categories(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Category>> {
        let tree = CategoryTree::of(ctx).await.api()?;
        Ok(tree.iter().cloned().map(Category).collect())
    }
}

/// Catalog administration.
#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    /// Tells every gateway instance that catalog rows (products, variants, listings,
    /// categories, channels, locations or customers) changed outside this API, for example by
    /// an import or a direct database edit: each instance drops its read model and cached
    /// responses and reads them again from the database. Admin only. Answers `true` once this
    /// instance has dropped them and the announcement is on its way to the others.
    async fn announce_catalog_change(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let rc = request_context(ctx)?;
        if !rc.viewer.admin {
            return Err(ApiError::Forbidden(
                "announcing a catalog change needs an admin token".into(),
            ))
            .api();
        }
        rc.bus.publish(crate::bus::Event::CatalogChanged);
        Ok(true)
    }
}

/// A page of products.
pub struct ProductConnection {
    products: Vec<product::Model>,
    /// The cursor of each product, in the same order.
    cursors: Vec<String>,
    has_next_page: bool,
    has_previous_page: bool,
    filter: ProductFilter,
}

#[Object]
impl ProductConnection {
    async fn edges(&self) -> Vec<ProductEdge> {
        self.products
            .iter()
            .zip(&self.cursors)
            .map(|(p, cursor)| ProductEdge {
                cursor: cursor.clone(),
                node: Product(p.clone()),
            })
            .collect()
    }

    /// The products of the page, without cursors.
    async fn nodes(&self) -> Vec<Product> {
        self.products.iter().cloned().map(Product).collect()
    }

    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
            start_cursor: self.cursors.first().cloned(),
            end_cursor: self.cursors.last().cloned(),
        }
    }

    /// How many products match the filter on this channel, over all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let rc = request_context(ctx)?;
        let channel_id = rc.channel.channel.id;
        rc.reads().count(channel_id, &self.filter).await.api()
    }
}

#[derive(SimpleObject)]
pub struct ProductEdge {
    /// Pass as `after` to continue after this product.
    cursor: String,
    node: Product,
}

/// Relay page information.
#[derive(SimpleObject)]
pub struct PageInfo {
    has_next_page: bool,
    /// True when the page was requested with `after`.
    has_previous_page: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
}

/// A product with its variants.
pub struct Product(pub product::Model);

/// A free-form product attribute such as brand or material.
#[derive(SimpleObject)]
pub struct ProductAttribute {
    key: String,
    value: String,
}

#[Object]
impl Product {
    async fn id(&self) -> ID {
        encode_id(Kind::Product, self.0.id)
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// Attributes in key order; non-string values are shown as JSON text.
    async fn attributes(&self) -> Vec<ProductAttribute> {
        json_pairs(&self.0.attributes)
            .into_iter()
            .map(|(key, value)| ProductAttribute { key, value })
            .collect()
    }
    async fn category(&self, ctx: &Context<'_>) -> async_graphql::Result<Category> {
        let tree = CategoryTree::of(ctx).await.api()?;
        tree.iter()
            .find(|c| c.id == self.0.category_id)
            .cloned()
            .map(Category)
            .ok_or(ApiError::Internal)
            .api()
    }
    /// The product's variants in display order.
    async fn variants(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Variant>> {
        let loader = request_data::<RequestLoader<VariantsByProduct>>(ctx).api()?;
        let variants = loader.load_one(self.0.id).await.api()?.unwrap_or_default();
        Ok(variants.iter().cloned().map(Variant).collect())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A purchasable variant, identified by its SKU.
pub struct Variant(pub variant::Model);

/// One option of a variant, such as size M or colour Navy.
#[derive(SimpleObject)]
pub struct VariantOption {
    name: String,
    value: String,
}

#[Object]
impl Variant {
    async fn id(&self) -> ID {
        encode_id(Kind::Variant, self.0.id)
    }
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn options(&self) -> Vec<VariantOption> {
        json_pairs(&self.0.option_values)
            .into_iter()
            .map(|(name, value)| VariantOption { name, value })
            .collect()
    }
    async fn weight_grams(&self) -> i32 {
        self.0.weight_grams
    }
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Product> {
        let loader = request_data::<RequestLoader<ProductsById>>(ctx).api()?;
        let product = loader.load_one(self.0.product_id).await.api()?;
        product
            .map(Product)
            .ok_or_else(|| ApiError::NotFound("product not listed on this channel".into()))
            .api()
    }
    /// Availability on the request's channel: exact quantities for POS and B2B; web and mobile
    /// show a status, with a quantity only when stock is low ("2 left").
    async fn availability(&self, ctx: &Context<'_>) -> async_graphql::Result<Availability> {
        request_context(ctx)?.tag(|tags| tags.variant(self.0.id));
        Availability::of_variant(ctx, self.0.id).await
    }
    /// The price of `quantity` units for the request's viewer (customer, company and group
    /// prices, volume tiers and promotions applied), with the rules that made it. Without
    /// `quantity`: the smallest quantity the viewer may buy (1 unless a quantity rule says
    /// more). A quantity that breaks a quantity rule is refused with `QUANTITY_RULE_VIOLATION`;
    /// a variant with no price in the channel's currency is `null` with `NOT_FOUND`. (Nullable,
    /// so one unpriced variant never blanks a whole catalog page.)
    async fn price(
        &self,
        ctx: &Context<'_>,
        quantity: Option<i32>,
    ) -> async_graphql::Result<Option<super::pricing::Price>> {
        request_context(ctx)?.tag(|tags| tags.priced(self.0.id));
        super::pricing::price_of(ctx, &self.0, quantity, "quantity")
            .await
            .map(Some)
    }
    /// The volume breaks this viewer gets, smallest quantity first (list prices, before
    /// promotions).
    async fn price_tiers(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<super::pricing::PriceTier>> {
        request_context(ctx)?.tag(|tags| tags.priced(self.0.id));
        super::pricing::tiers_of(ctx, &self.0).await
    }
    /// The quantities this viewer may buy (min, max, increment), when a rule limits them.
    async fn quantity_rule(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::pricing::QuantityRule>> {
        request_context(ctx)?.tag(|tags| tags.priced(self.0.id));
        super::pricing::quantity_rule_of(ctx, &self.0).await
    }
    /// Exact stock per location feeding the channel: for POS clerks on `pos` and for admins
    /// (for anyone else null with a `FORBIDDEN` error).
    async fn stock_levels(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<StockLevel>>> {
        request_context(ctx)?.tag(|tags| tags.variant(self.0.id));
        StockLevel::of_variant(ctx, self.0.id).await.map(Some)
    }
}

/// A node of the category tree.
pub struct Category(pub category::Model);

#[Object]
impl Category {
    async fn id(&self) -> ID {
        encode_id(Kind::Category, self.0.id)
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn parent(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Category>> {
        let Some(parent_id) = self.0.parent_id else {
            return Ok(None);
        };
        let tree = CategoryTree::of(ctx).await.api()?;
        Ok(tree
            .iter()
            .find(|c| c.id == parent_id)
            .cloned()
            .map(Category))
    }
    async fn children(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Category>> {
        let tree = CategoryTree::of(ctx).await.api()?;
        Ok(tree
            .iter()
            .filter(|c| c.parent_id == Some(self.0.id))
            .cloned()
            .map(Category)
            .collect())
    }
}

/// `(key, text)` pairs of a JSON object, in key order.
fn json_pairs(value: &serde_json::Value) -> Vec<(String, String)> {
    let Some(object) = value.as_object() else {
        return Vec::new();
    };
    let mut pairs: Vec<(String, String)> = object
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// Loads what the selection will ask of a page's products, one statement per kind, into the
/// request's loaders. DataLoader batching alone is timer-based (keys registered within 1 ms
/// share a batch), so on a slow or busy host a large page could split into several batches;
/// priming makes a page cost the same statements whatever its size or the host's speed.
pub(crate) async fn prime_page_loaders(
    ctx: &Context<'_>,
    products: &[product::Model],
) -> Result<(), ApiError> {
    let look = ctx.look_ahead();
    let nodes = [look.field("edges").field("node"), look.field("nodes")];
    let variants_field: Vec<_> = nodes
        .iter()
        .map(|n| n.field("variants"))
        .filter(|v| v.exists())
        .collect();
    if products.is_empty() || variants_field.is_empty() {
        return Ok(());
    }
    let product_ids: Vec<i64> = products.iter().map(|p| p.id).collect();
    let by_product = prime_list_loader::<VariantsByProduct, _>(ctx, &product_ids).await?;
    let variant_ids: Vec<i64> = by_product
        .values()
        .flat_map(|variants| variants.iter())
        .map(|v| v.id)
        .collect();
    if variants_field.iter().any(|v| v.field("product").exists()) {
        let page = products.iter().map(|p| (p.id, p.clone()));
        request_data::<RequestLoader<ProductsById>>(ctx)?
            .feed_many(page)
            .await;
    }
    if variants_field
        .iter()
        .any(|v| v.field("availability").exists() || v.field("stockLevels").exists())
    {
        // One answer per variant (out of stock when it has no level): no key is left over.
        let loader = request_data::<RequestLoader<StockByVariant>>(ctx)?;
        let loaded = loader.loader().load(&variant_ids).await?;
        loader.feed_many(loaded).await;
    }
    let priced = variants_field.iter().any(|v| {
        v.field("price").exists()
            || v.field("priceTiers").exists()
            || v.field("quantityRule").exists()
    });
    if priced {
        // Pricing needs each variant's product (for its category) and the price data.
        let page = products.iter().map(|p| (p.id, p.clone()));
        request_data::<RequestLoader<ProductsById>>(ctx)?
            .feed_many(page)
            .await;
        let loader = request_data::<RequestLoader<PriceDataByVariant>>(ctx)?;
        let loaded = loader.loader().load(&variant_ids).await?;
        loader.feed_many(loaded).await;
    }
    Ok(())
}

/// Runs a list loader once for all `keys` and feeds every key into the request's cache, an
/// empty list for keys without rows, so none of them reaches the timer-based batch later.
async fn prime_list_loader<T, V>(
    ctx: &Context<'_>,
    keys: &[i64],
) -> Result<HashMap<i64, Arc<Vec<V>>>, ApiError>
where
    T: Loader<i64, Value = Arc<Vec<V>>, Error = ApiError>,
    V: Send + Sync + 'static,
{
    let loader = request_data::<RequestLoader<T>>(ctx)?;
    let loaded = loader.loader().load(keys).await?;
    let all = keys
        .iter()
        .map(|key| (*key, loaded.get(key).cloned().unwrap_or_default()));
    loader.feed_many(all).await;
    Ok(loaded)
}

/// Loads the variants of many products in one statement.
pub struct VariantsByProduct {
    pub db: DatabaseConnection,
    pub read: Option<Arc<ReadModel>>,
}

impl Loader<i64> for VariantsByProduct {
    /// Shared, not copied, between the loader's cache and its readers.
    type Value = Arc<Vec<variant::Model>>;
    type Error = ApiError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let reads = Reads {
            model: self.read.as_deref(),
            db: &self.db,
        };
        Ok(reads.variants_of_products(keys).await?)
    }
}

/// Loads many products visible on one channel in one statement.
pub struct ProductsById {
    pub db: DatabaseConnection,
    pub read: Option<Arc<ReadModel>>,
    pub channel_id: i64,
}

impl Loader<i64> for ProductsById {
    type Value = product::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let reads = Reads {
            model: self.read.as_deref(),
            db: &self.db,
        };
        let products = reads.products_by_ids(self.channel_id, keys).await?;
        Ok(products.into_iter().map(|p| (p.id, p)).collect())
    }
}

/// The category tree, loaded at most once per request (it is small and every product needs it).
pub struct CategoryTree {
    db: DatabaseConnection,
    read: Option<Arc<ReadModel>>,
    tree: OnceCell<Arc<Vec<category::Model>>>,
}

impl CategoryTree {
    pub fn new(db: DatabaseConnection, read: Option<Arc<ReadModel>>) -> Self {
        Self {
            db,
            read,
            tree: OnceCell::new(),
        }
    }

    /// The request's tree, loaded on first use.
    pub async fn of<'a>(ctx: &Context<'a>) -> Result<&'a Arc<Vec<category::Model>>, ApiError> {
        request_data::<CategoryTree>(ctx)?.get().await
    }

    pub async fn get(&self) -> Result<&Arc<Vec<category::Model>>, ApiError> {
        self.tree
            .get_or_try_init(|| async {
                let reads = Reads {
                    model: self.read.as_deref(),
                    db: &self.db,
                };
                Ok(reads.categories().await?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::json_pairs;
    use serde_json::json;

    #[test]
    fn attributes_are_sorted_text_pairs() {
        let pairs = json_pairs(&json!({"material": "wool", "brand": "Contoso", "layers": 2}));
        assert_eq!(
            pairs,
            vec![
                ("brand".into(), "Contoso".into()),
                ("layers".into(), "2".into()),
                ("material".into(), "wool".into())
            ]
        );
        assert!(json_pairs(&json!([1, 2])).is_empty());
    }
}

//! The read model: what storefront reads need, in memory, kept by events.
//!
//! Why memos of the core's answers and not one immutable snapshot of the catalog: the core's
//! SQL stays the one definition of what a page, a filter, a sort or a visible product is, so
//! the read model can never disagree with the database about them; each part is bounded by a
//! number of entries (least recently used out), so memory does not grow with the catalog; and
//! an event drops or patches exactly what it touches instead of rebuilding a snapshot.
//!
//! Stock levels are patched in place by stock events when the event's version is the next
//! one; an older version is ignored and a gap (a missed event) drops the variant's entry, so
//! it is read again from the database, never served stale. Answers that a clock edge changes
//! (list-price orders, when a price list or promotion opens or closes) end at that edge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use commerce_core::CoreError;
use commerce_core::catalog::{self, ProductFilter, ProductKey, ProductPage, ProductSort};
use commerce_core::channels::{self, ChannelPolicy};
use commerce_core::entities::{category, customer, product, variant};
use commerce_core::inventory::StockRows;
use commerce_core::pricing::load::{self, VariantPriceData};
use commerce_core::pricing::{PriceListInfo, PriceViewer, PromotionInfo};
use sea_orm::DatabaseConnection;

use super::memo::Memo;
use crate::bus::{Event, LevelState};
use crate::config::ReadPathConfig;

/// Every channel, by code.
#[derive(Debug, Default)]
pub struct Channels {
    pub by_code: HashMap<String, Arc<ChannelPolicy>>,
    /// Every code, sorted (for the "known channels" of an unknown-channel refusal).
    pub codes: Vec<String>,
}

/// A page of `products`: the listing's arguments on one channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    channel_id: i64,
    /// Ordered by list price: it ends when prices change.
    by_price: bool,
    /// Sort, size, cursor and filter, spelled once.
    arguments: String,
}

impl PageKey {
    pub fn new(
        channel_id: i64,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<&catalog::ProductCursor>,
        first: u64,
    ) -> Self {
        Self {
            channel_id,
            by_price: matches!(sort, ProductSort::PriceAsc | ProductSort::PriceDesc),
            arguments: format!("{sort:?}|{first}|{after:?}|{filter:?}"),
        }
    }
}

/// Whose price lists: the pricing identity of a viewer.
type ViewerKey = (i64, String, Option<i64>, Option<i64>, Option<i64>);

fn viewer_key(viewer: &PriceViewer) -> ViewerKey {
    (
        viewer.channel_id,
        viewer.currency.clone(),
        viewer.customer_id,
        viewer.company_id,
        viewer.group_id,
    )
}

/// The in-memory read model of one gateway.
pub struct ReadModel {
    channels: Memo<(), Arc<Channels>>,
    categories: Memo<(), Arc<Vec<category::Model>>>,
    pages: Memo<PageKey, Arc<ProductPage>>,
    counts: Memo<(i64, String), u64>,
    products: Memo<(i64, i64), Option<product::Model>>,
    products_by_slug: Memo<(i64, String), Option<product::Model>>,
    variants_by_sku: Memo<(i64, String), Option<variant::Model>>,
    variants: Memo<i64, Arc<Vec<variant::Model>>>,
    stock: Memo<i64, Arc<StockRows>>,
    lists: Memo<ViewerKey, Arc<Vec<PriceListInfo>>>,
    promotions: Memo<i64, Arc<Vec<PromotionInfo>>>,
    price_data: Memo<(Arc<[i64]>, i64), VariantPriceData>,
    /// When the next price list or promotion window opens or closes (`None`: none ahead).
    price_horizon: Memo<(), Option<DateTime<Utc>>>,
    /// Customers by the email a token names (`None`: no such customer). Customers change
    /// only outside the API, so only `CatalogChanged` (and a missed event) clears them.
    customers: Memo<String, Option<customer::Model>>,
}

/// Where `Memo::ticket`, a database read and `Memo::put` meet: the cached answer, or the
/// database's (kept unless a change came in between).
macro_rules! memoized {
    ($memo:expr, $key:expr, $load:expr) => {{
        let key = $key;
        match $memo.get(&key) {
            Some(hit) => {
                crate::metrics::read_model(true);
                Ok(hit)
            }
            None => {
                crate::metrics::read_model(false);
                let ticket = $memo.ticket();
                let loaded = $load;
                let loaded = loaded?;
                $memo.put(ticket, key, loaded.clone());
                Ok(loaded)
            }
        }
    }};
}

impl ReadModel {
    pub fn new(config: &ReadPathConfig) -> Self {
        let ttl = Duration::from_secs(config.ttl_secs);
        let n = config.max_entries;
        Self {
            channels: Memo::new(1, ttl),
            categories: Memo::new(1, ttl),
            pages: Memo::new(n, ttl),
            counts: Memo::new(n, ttl),
            products: Memo::new(n, ttl),
            products_by_slug: Memo::new(n, ttl),
            variants_by_sku: Memo::new(n, ttl),
            variants: Memo::new(n, ttl),
            stock: Memo::new(n, ttl),
            lists: Memo::new(n, ttl),
            promotions: Memo::new(n, ttl),
            price_data: Memo::new(n, ttl),
            price_horizon: Memo::new(1, ttl),
            customers: Memo::new(n, ttl),
        }
    }

    /// Loads what every request needs (channels, categories) at start.
    pub async fn warm(&self, db: &DatabaseConnection) -> Result<(), CoreError> {
        self.channels(db).await?;
        self.categories(db).await?;
        Ok(())
    }

    /// Every channel with its locations.
    pub async fn channels(&self, db: &DatabaseConnection) -> Result<Arc<Channels>, CoreError> {
        memoized!(
            self.channels,
            (),
            async {
                let all = channels::load_all_channel_policies(db).await?;
                let codes = all.iter().map(|p| p.channel.code.clone()).collect();
                let by_code = all
                    .into_iter()
                    .map(|p| (p.channel.code.clone(), Arc::new(p)))
                    .collect();
                Ok::<_, CoreError>(Arc::new(Channels { by_code, codes }))
            }
            .await
        )
    }

    /// The category tree.
    pub async fn categories(
        &self,
        db: &DatabaseConnection,
    ) -> Result<Arc<Vec<category::Model>>, CoreError> {
        memoized!(
            self.categories,
            (),
            catalog::list_categories(db).await.map(Arc::new)
        )
    }

    /// A page of products ([`catalog::list_products`]).
    pub async fn page(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<&catalog::ProductCursor>,
        first: u64,
    ) -> Result<Arc<ProductPage>, CoreError> {
        let key = PageKey::new(channel_id, filter, sort, after, first);
        if let Some(hit) = self.pages.get(&key) {
            crate::metrics::read_model(true);
            return Ok(hit);
        }
        crate::metrics::read_model(false);
        let ticket = self.pages.ticket();
        // A list-price order is true until the next price window edge.
        let until = if key.by_price {
            self.price_horizon_instant(db).await?
        } else {
            None
        };
        let page =
            Arc::new(catalog::list_products(db, channel_id, filter, sort, after, first).await?);
        self.pages.put_until(ticket, key, page.clone(), until);
        Ok(page)
    }

    /// How many products match ([`catalog::count_products`]).
    pub async fn count(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        filter: &ProductFilter,
    ) -> Result<u64, CoreError> {
        memoized!(
            self.counts,
            (channel_id, format!("{filter:?}")),
            catalog::count_products(db, channel_id, filter).await
        )
    }

    /// One visible product ([`catalog::find_visible_product`]).
    pub async fn product(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        key: &ProductKey,
    ) -> Result<Option<product::Model>, CoreError> {
        match key {
            ProductKey::Id(id) => memoized!(
                self.products,
                (channel_id, *id),
                catalog::find_visible_product(db, channel_id, key).await
            ),
            ProductKey::Slug(slug) => memoized!(
                self.products_by_slug,
                (channel_id, slug.clone()),
                catalog::find_visible_product(db, channel_id, key).await
            ),
        }
    }

    /// One variant whose product is visible ([`catalog::find_visible_variant`]).
    pub async fn variant_by_sku(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        sku: &str,
    ) -> Result<Option<variant::Model>, CoreError> {
        memoized!(
            self.variants_by_sku,
            (channel_id, sku.to_owned()),
            catalog::find_visible_variant(db, channel_id, sku).await
        )
    }

    /// The variants among `skus` whose products are visible
    /// ([`catalog::visible_variants_by_skus`]), the missing ones read in one statement.
    pub async fn variants_by_skus(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        skus: &[String],
    ) -> Result<Vec<variant::Model>, CoreError> {
        let (found, missing) = split_known(skus, |sku| {
            self.variants_by_sku.get(&(channel_id, sku.clone()))
        });
        let mut found: Vec<variant::Model> = found.into_iter().flatten().collect();
        if !missing.is_empty() {
            let ticket = self.variants_by_sku.ticket();
            let loaded = catalog::visible_variants_by_skus(db, channel_id, &missing).await?;
            for sku in missing {
                let model = loaded.iter().find(|v| v.sku == sku).cloned();
                self.variants_by_sku.put(ticket, (channel_id, sku), model);
            }
            found.extend(loaded);
        }
        Ok(found)
    }

    /// The customer a token names ([`load::find_customer_by_email`]).
    pub async fn customer(
        &self,
        db: &DatabaseConnection,
        email: &str,
    ) -> Result<Option<customer::Model>, CoreError> {
        memoized!(
            self.customers,
            email.to_owned(),
            load::find_customer_by_email(db, email).await
        )
    }

    /// The visible products among `ids` ([`catalog::visible_products_by_ids`]), the missing
    /// ones read in one statement.
    pub async fn products_by_ids(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
        ids: &[i64],
    ) -> Result<Vec<product::Model>, CoreError> {
        let (mut found, missing) = split_known(ids, |id| self.products.get(&(channel_id, *id)));
        let mut found: Vec<product::Model> = found.drain(..).flatten().collect();
        if !missing.is_empty() {
            let ticket = self.products.ticket();
            let loaded = catalog::visible_products_by_ids(db, channel_id, &missing).await?;
            for id in &missing {
                let model = loaded.iter().find(|p| p.id == *id).cloned();
                self.products.put(ticket, (channel_id, *id), model);
            }
            found.extend(loaded);
        }
        Ok(found)
    }

    /// The variants of each product ([`catalog::variants_of_products`]), in display order.
    pub async fn variants_of_products(
        &self,
        db: &DatabaseConnection,
        product_ids: &[i64],
    ) -> Result<HashMap<i64, Arc<Vec<variant::Model>>>, CoreError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for &id in product_ids {
            match self.variants.get(&id) {
                Some(variants) => {
                    out.insert(id, variants);
                }
                None => missing.push(id),
            }
        }
        crate::metrics::read_model(missing.is_empty());
        if !missing.is_empty() {
            let ticket = self.variants.ticket();
            let mut grouped: HashMap<i64, Vec<variant::Model>> =
                missing.iter().map(|id| (*id, Vec::new())).collect();
            for variant in catalog::variants_of_products(db, &missing).await? {
                grouped.entry(variant.product_id).or_default().push(variant);
            }
            for (id, variants) in grouped {
                let variants = Arc::new(variants);
                self.variants.put(ticket, id, variants.clone());
                out.insert(id, variants);
            }
        }
        Ok(out)
    }

    /// The stock rows of each variant ([`commerce_core::inventory::stock_rows`]): its levels
    /// at every location and its holds; every variant gets an answer.
    pub async fn stock_rows(
        &self,
        db: &DatabaseConnection,
        variant_ids: &[i64],
    ) -> Result<HashMap<i64, Arc<StockRows>>, CoreError> {
        let mut out = HashMap::with_capacity(variant_ids.len());
        let mut missing = Vec::new();
        for &id in variant_ids {
            match self.stock.get(&id) {
                Some(kept) => {
                    out.insert(id, kept);
                }
                None => missing.push(id),
            }
        }
        crate::metrics::read_model(missing.is_empty());
        if !missing.is_empty() {
            let ticket = self.stock.ticket();
            let loaded = commerce_core::inventory::stock_rows(db, &missing).await?;
            for (id, rows) in per_variant(&missing, loaded) {
                let rows = Arc::new(rows);
                self.stock.put(ticket, id, rows.clone());
                out.insert(id, rows);
            }
        }
        Ok(out)
    }

    /// The viewer's price lists ([`load::viewer_lists`]).
    pub async fn lists(
        &self,
        db: &DatabaseConnection,
        viewer: &PriceViewer,
    ) -> Result<Arc<Vec<PriceListInfo>>, CoreError> {
        memoized!(
            self.lists,
            viewer_key(viewer),
            load::viewer_lists(db, viewer).await.map(Arc::new)
        )
    }

    /// The channel's promotions ([`load::channel_promotions`]).
    pub async fn promotions(
        &self,
        db: &DatabaseConnection,
        channel_id: i64,
    ) -> Result<Arc<Vec<PromotionInfo>>, CoreError> {
        memoized!(
            self.promotions,
            channel_id,
            load::channel_promotions(db, channel_id).await.map(Arc::new)
        )
    }

    /// Price entries and quantity rules of variants in `list_ids`
    /// ([`load::variant_price_data`]); every variant gets an answer.
    pub async fn price_data(
        &self,
        db: &DatabaseConnection,
        list_ids: &[i64],
        variant_ids: &[i64],
    ) -> Result<HashMap<i64, VariantPriceData>, CoreError> {
        let lists: Arc<[i64]> = list_ids.into();
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for &id in variant_ids {
            match self.price_data.get(&(lists.clone(), id)) {
                Some(data) => {
                    out.insert(id, data);
                }
                None => missing.push(id),
            }
        }
        crate::metrics::read_model(missing.is_empty());
        if !missing.is_empty() {
            let ticket = self.price_data.ticket();
            let mut loaded = load::variant_price_data(db, list_ids, &missing).await?;
            for id in missing {
                let data = loaded.remove(&id).unwrap_or_default();
                self.price_data
                    .put(ticket, (lists.clone(), id), data.clone());
                out.insert(id, data);
            }
        }
        Ok(out)
    }

    /// When the next price window opens or closes, as an instant of this process's clock.
    pub async fn price_horizon_instant(
        &self,
        db: &DatabaseConnection,
    ) -> Result<Option<Instant>, CoreError> {
        // An edge that has passed is not the next one: read the one after it.
        if let Some(Some(edge)) = self.price_horizon.get(&())
            && edge <= Utc::now()
        {
            self.price_horizon.remove(&());
        }
        let edge: Result<Option<DateTime<Utc>>, CoreError> = memoized!(
            self.price_horizon,
            (),
            load::next_price_change(db, Utc::now()).await
        );
        let edge = edge?;
        Ok(edge.map(until_instant))
    }

    /// Applies one committed change (called by the bus before the change's mutation answers).
    pub fn apply(&self, event: &Event) {
        match event {
            Event::StockChanged { levels } => {
                for level in levels {
                    self.stock
                        .patch(&level.variant_id, |rows| patch_level(rows, level));
                }
            }
            Event::StockHoldsChanged { variant_ids } => {
                for id in variant_ids {
                    self.stock.remove(id);
                }
            }
            Event::PricesChanged { variant_ids, .. } => {
                // Lists and promotions are few: read again whole. Entries of the named
                // variants only, unless the change names none (a list-wide change).
                self.lists.clear();
                self.promotions.clear();
                self.price_horizon.clear();
                self.pages.remove_where(|key| key.by_price);
                if variant_ids.is_empty() {
                    self.price_data.clear();
                } else {
                    self.price_data
                        .remove_where(|(_, variant)| variant_ids.contains(variant));
                }
            }
            Event::CatalogChanged | Event::EventsMissed => self.clear(),
            Event::OrderStatusChanged { .. } => {}
        }
    }

    /// Forgets everything (it is read again on use).
    pub fn clear(&self) {
        self.channels.clear();
        self.categories.clear();
        self.pages.clear();
        self.counts.clear();
        self.products.clear();
        self.products_by_slug.clear();
        self.variants_by_sku.clear();
        self.variants.clear();
        self.stock.clear();
        self.lists.clear();
        self.promotions.clear();
        self.price_data.clear();
        self.price_horizon.clear();
        self.customers.clear();
    }

    /// Entries kept per part, for `/metrics`.
    pub fn sizes(&self) -> [(&'static str, usize); 14] {
        [
            ("channels", self.channels.len()),
            ("categories", self.categories.len()),
            ("pages", self.pages.len()),
            ("counts", self.counts.len()),
            ("products", self.products.len()),
            ("products_by_slug", self.products_by_slug.len()),
            ("variants_by_sku", self.variants_by_sku.len()),
            ("variants", self.variants.len()),
            ("stock", self.stock.len()),
            ("price_lists", self.lists.len()),
            ("promotions", self.promotions.len()),
            ("price_data", self.price_data.len()),
            ("price_horizon", self.price_horizon.len()),
            ("customers", self.customers.len()),
        ]
    }
}

/// Where a request reads the catalog: the read model when it may use it, else the database
/// (the same core functions the read model remembers). Every resolver and loader reads
/// through it, so the choice is made here once.
#[derive(Clone, Copy)]
pub struct Reads<'a> {
    pub model: Option<&'a ReadModel>,
    pub db: &'a DatabaseConnection,
}

impl Reads<'_> {
    /// A page of products ([`catalog::list_products`]).
    pub async fn page(
        &self,
        channel_id: i64,
        filter: &ProductFilter,
        sort: ProductSort,
        after: Option<&catalog::ProductCursor>,
        first: u64,
    ) -> Result<Arc<ProductPage>, CoreError> {
        match self.model {
            Some(model) => {
                model
                    .page(self.db, channel_id, filter, sort, after, first)
                    .await
            }
            None => catalog::list_products(self.db, channel_id, filter, sort, after, first)
                .await
                .map(Arc::new),
        }
    }

    /// How many products match ([`catalog::count_products`]).
    pub async fn count(&self, channel_id: i64, filter: &ProductFilter) -> Result<u64, CoreError> {
        match self.model {
            Some(model) => model.count(self.db, channel_id, filter).await,
            None => catalog::count_products(self.db, channel_id, filter).await,
        }
    }

    /// One visible product ([`catalog::find_visible_product`]).
    pub async fn product(
        &self,
        channel_id: i64,
        key: &ProductKey,
    ) -> Result<Option<product::Model>, CoreError> {
        match self.model {
            Some(model) => model.product(self.db, channel_id, key).await,
            None => catalog::find_visible_product(self.db, channel_id, key).await,
        }
    }

    /// One variant whose product is visible ([`catalog::find_visible_variant`]).
    pub async fn variant_by_sku(
        &self,
        channel_id: i64,
        sku: &str,
    ) -> Result<Option<variant::Model>, CoreError> {
        match self.model {
            Some(model) => model.variant_by_sku(self.db, channel_id, sku).await,
            None => catalog::find_visible_variant(self.db, channel_id, sku).await,
        }
    }

    /// The visible products among `ids` ([`catalog::visible_products_by_ids`]).
    pub async fn products_by_ids(
        &self,
        channel_id: i64,
        ids: &[i64],
    ) -> Result<Vec<product::Model>, CoreError> {
        match self.model {
            Some(model) => model.products_by_ids(self.db, channel_id, ids).await,
            None => catalog::visible_products_by_ids(self.db, channel_id, ids).await,
        }
    }

    /// The variants of each product, in display order; every product gets an answer.
    pub async fn variants_of_products(
        &self,
        product_ids: &[i64],
    ) -> Result<HashMap<i64, Arc<Vec<variant::Model>>>, CoreError> {
        if let Some(model) = self.model {
            return model.variants_of_products(self.db, product_ids).await;
        }
        let mut grouped: HashMap<i64, Vec<variant::Model>> =
            product_ids.iter().map(|id| (*id, Vec::new())).collect();
        for variant in catalog::variants_of_products(self.db, product_ids).await? {
            grouped.entry(variant.product_id).or_default().push(variant);
        }
        Ok(grouped
            .into_iter()
            .map(|(id, variants)| (id, Arc::new(variants)))
            .collect())
    }

    /// Each variant's stock levels (every location) and holds; every variant gets an answer.
    pub async fn stock_rows(
        &self,
        variant_ids: &[i64],
    ) -> Result<HashMap<i64, Arc<StockRows>>, CoreError> {
        if let Some(model) = self.model {
            return model.stock_rows(self.db, variant_ids).await;
        }
        let loaded = commerce_core::inventory::stock_rows(self.db, variant_ids).await?;
        Ok(per_variant(variant_ids, loaded)
            .into_iter()
            .map(|(id, rows)| (id, Arc::new(rows)))
            .collect())
    }

    /// The category tree ([`catalog::list_categories`]).
    pub async fn categories(&self) -> Result<Arc<Vec<category::Model>>, CoreError> {
        match self.model {
            Some(model) => model.categories(self.db).await,
            None => catalog::list_categories(self.db).await.map(Arc::new),
        }
    }

    /// The customer a token names ([`load::find_customer_by_email`]).
    pub async fn customer(&self, email: &str) -> Result<Option<customer::Model>, CoreError> {
        match self.model {
            Some(model) => model.customer(self.db, email).await,
            None => load::find_customer_by_email(self.db, email).await,
        }
    }
}

/// Pricing's rows for the core's order pricing, through the same choice.
impl load::PriceInputs for Reads<'_> {
    async fn viewer_lists(
        &self,
        viewer: &PriceViewer,
    ) -> Result<Arc<Vec<PriceListInfo>>, CoreError> {
        match self.model {
            Some(model) => model.lists(self.db, viewer).await,
            None => load::viewer_lists(self.db, viewer).await.map(Arc::new),
        }
    }

    async fn channel_promotions(
        &self,
        channel_id: i64,
    ) -> Result<Arc<Vec<PromotionInfo>>, CoreError> {
        match self.model {
            Some(model) => model.promotions(self.db, channel_id).await,
            None => load::channel_promotions(self.db, channel_id)
                .await
                .map(Arc::new),
        }
    }

    async fn variant_price_data(
        &self,
        list_ids: &[i64],
        variant_ids: &[i64],
    ) -> Result<HashMap<i64, VariantPriceData>, CoreError> {
        match self.model {
            Some(model) => model.price_data(self.db, list_ids, variant_ids).await,
            None => load::variant_price_data(self.db, list_ids, variant_ids).await,
        }
    }

    async fn categories(&self) -> Result<Arc<Vec<category::Model>>, CoreError> {
        Reads::categories(self).await
    }

    async fn visible_variants(
        &self,
        channel_id: i64,
        skus: &[String],
    ) -> Result<Vec<variant::Model>, CoreError> {
        match self.model {
            Some(model) => model.variants_by_skus(self.db, channel_id, skus).await,
            None => catalog::visible_variants_by_skus(self.db, channel_id, skus).await,
        }
    }

    async fn visible_products(
        &self,
        channel_id: i64,
        ids: &[i64],
    ) -> Result<Vec<product::Model>, CoreError> {
        self.products_by_ids(channel_id, ids).await
    }
}

/// Stock rows split by variant, an entry (maybe empty) for each of `variant_ids`.
fn per_variant(variant_ids: &[i64], loaded: StockRows) -> HashMap<i64, StockRows> {
    let mut own: HashMap<i64, StockRows> = variant_ids
        .iter()
        .map(|id| (*id, StockRows::default()))
        .collect();
    for level in loaded.levels {
        if let Some(rows) = own.get_mut(&level.variant_id) {
            rows.levels.push(level);
        }
    }
    for hold in loaded.holds {
        if let Some(rows) = own.get_mut(&hold.variant_id) {
            rows.holds.push(hold);
        }
    }
    own
}

/// The kept values for `keys` and the keys not kept.
fn split_known<K: Clone, V>(keys: &[K], get: impl Fn(&K) -> Option<V>) -> (Vec<V>, Vec<K>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for key in keys {
        match get(key) {
            Some(value) => found.push(value),
            None => missing.push(key.clone()),
        }
    }
    crate::metrics::read_model(missing.is_empty());
    (found, missing)
}

/// Brings a variant's kept stock up to `level`'s version: applied when it is the next
/// version, ignored when already seen; anything else (a missed event, a level not kept yet)
/// is not patchable and the entry is dropped.
fn patch_level(rows: &mut Arc<StockRows>, level: &LevelState) -> bool {
    let Some(index) = rows
        .levels
        .iter()
        .position(|l| l.location_id == level.location_id)
    else {
        return false;
    };
    let kept = rows.levels[index].version;
    if kept >= level.version {
        return true;
    }
    if kept + 1 != level.version {
        return false;
    }
    let kept = &mut Arc::make_mut(rows).levels[index];
    kept.on_hand = level.on_hand;
    kept.reserved = level.reserved;
    kept.version = level.version;
    true
}

/// When the next price window opens or closes, read from the database (for a gateway without
/// the read model).
pub async fn price_horizon(db: &DatabaseConnection) -> Result<Option<Instant>, CoreError> {
    Ok(load::next_price_change(db, Utc::now())
        .await?
        .map(until_instant))
}

/// `at` on this process's monotonic clock (now when it has passed).
fn until_instant(at: DateTime<Utc>) -> Instant {
    let ahead = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + ahead
}

#[cfg(test)]
mod tests {
    use super::*;
    use commerce_core::entities::stock_level;

    fn level(location_id: i64, on_hand: i32, version: i64) -> stock_level::Model {
        stock_level::Model {
            id: location_id,
            variant_id: 1,
            location_id,
            on_hand,
            reserved: 0,
            version,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn event(location_id: i64, on_hand: i32, version: i64) -> LevelState {
        LevelState {
            variant_id: 1,
            location_id,
            on_hand,
            reserved: 0,
            version,
            sequence: 0,
        }
    }

    #[test]
    fn stock_is_patched_by_the_next_version_and_dropped_on_a_gap() {
        let mut rows = Arc::new(StockRows {
            levels: vec![level(7, 10, 3)],
            holds: Vec::new(),
        });
        assert!(patch_level(&mut rows, &event(7, 9, 4)));
        assert_eq!((rows.levels[0].on_hand, rows.levels[0].version), (9, 4));
        assert!(
            patch_level(&mut rows, &event(7, 5, 2)),
            "an old event is ignored"
        );
        assert_eq!(rows.levels[0].on_hand, 9);
        assert!(
            !patch_level(&mut rows, &event(7, 1, 6)),
            "version 5 was missed"
        );
        assert!(!patch_level(&mut rows, &event(8, 1, 1)), "a level not kept");
    }
}

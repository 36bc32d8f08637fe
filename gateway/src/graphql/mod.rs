//! The GraphQL schema: one file per domain, merged into one `Query` and one `Mutation`.
//!
//! Resolvers parse input, call a core service and shape the answer; every list field loads
//! through a per-request DataLoader so a page costs the same number of SQL statements
//! whatever its size.

pub mod catalog;
pub mod channels;
pub mod ids;
pub mod inventory;
pub mod inventory_admin;
pub mod orders;
pub mod pricing;
pub mod pricing_admin;
pub mod stock_events;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, MergedObject, MergedSubscription, Schema};
use commerce_core::channels::ChannelPolicy;
use commerce_core::entities::customer;
use commerce_core::pricing::PriceViewer;
use sea_orm::DatabaseConnection;

use crate::config::GraphqlConfig;
use crate::errors;

/// The executable schema served at `/graphql`.
pub type GatewaySchema = Schema<Query, Mutation, Subscription>;

/// Every root query field.
#[derive(MergedObject, Default)]
pub struct Query(
    catalog::CatalogQuery,
    orders::OrderQuery,
    inventory::InventoryQuery,
    channels::ChannelQuery,
    pricing::PricingQuery,
);

/// Every root mutation field.
#[derive(MergedObject, Default)]
pub struct Mutation(
    catalog::CatalogMutation,
    pricing_admin::PricingMutation,
    inventory_admin::InventoryMutation,
    orders::OrderMutation,
);

/// Every root subscription field (served over `/graphql/ws` and `multipart/mixed`).
#[derive(MergedSubscription, Default)]
pub struct Subscription(stock_events::StockSubscription, orders::OrderSubscription);

/// Builds the schema with the configured shape limits. It holds no connection: per-request
/// data ([`RequestContext`] and the loaders) travels with each request.
pub fn build_schema(config: &GraphqlConfig) -> GatewaySchema {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(config.max_depth)
    .finish()
}

/// What every resolver of one request shares: the database, the channel it runs on and who
/// is asking.
pub struct RequestContext {
    pub db: DatabaseConnection,
    pub channel: Arc<ChannelPolicy>,
    pub config: Arc<GraphqlConfig>,
    pub viewer: Viewer,
    /// Where committed changes are announced.
    pub bus: crate::bus::EventBus,
    /// SKU names shared by the gateway's stock subscriptions.
    pub sku_names: stock_events::SkuNames,
    /// The request's idempotency key (the `Idempotency-Key` header or an input's
    /// `idempotencyKey`), for mutations that require one.
    pub idempotency_key: Option<String>,
    /// The in-memory read model, when this request may use it ([`crate::read_path`]).
    pub read: Option<Arc<crate::read_path::ReadModel>>,
    /// What the response shows, when it may be cached.
    pub tags: Option<Arc<crate::read_path::TagCollector>>,
    /// Where `placeOrder` places its order (PostgreSQL; `None`: placed alone).
    pub order_batches: Option<Arc<crate::order_batches::OrderBatches>>,
}

/// Who is asking, beyond the channel: anonymous, or what a verified token says
/// ([`crate::auth`]). No request header other than `Authorization` can claim an identity.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    /// The token's subject; `None` for anonymous viewers.
    pub subject: Option<String>,
    /// The token's role; `None` for anonymous viewers.
    pub role: Option<crate::auth::Role>,
    /// The signed-in customer, whose company and group decide their prices.
    pub customer: Option<customer::Model>,
    /// The store a POS clerk is bound to.
    pub store_id: Option<i64>,
    /// May change prices, promotions and quantity rules (role `admin`).
    pub admin: bool,
}

impl Viewer {
    /// The pricing identity of this viewer on `channel`.
    pub fn price_viewer(&self, channel: &ChannelPolicy) -> PriceViewer {
        PriceViewer {
            channel_id: channel.channel.id,
            currency: channel.channel.currency.clone(),
            customer_id: self.customer.as_ref().map(|c| c.id),
            company_id: self.customer.as_ref().and_then(|c| c.company_id),
            group_id: self.customer.as_ref().and_then(|c| c.group_id),
        }
    }
}

impl RequestContext {
    /// Where this request reads the catalog (the read model when it may, else the database).
    pub(crate) fn reads(&self) -> crate::read_path::model::Reads<'_> {
        crate::read_path::model::Reads {
            model: self.read.as_deref(),
            db: &self.db,
        }
    }

    /// Records what the response shows, when it may be cached.
    pub(crate) fn tag(&self, record: impl FnOnce(&crate::read_path::TagCollector)) {
        if let Some(tags) = &self.tags {
            record(tags);
        }
    }

    /// The request's data: this context plus fresh DataLoaders (no cross-request caching, so
    /// a request never sees another's stale rows).
    pub fn into_request_data(self, request: async_graphql::Request) -> async_graphql::Request {
        let db = self.db.clone();
        let channel_id = self.channel.channel.id;
        let read = self.read.clone();
        let session = Arc::new(pricing::PricingSession::new(
            db.clone(),
            read.clone(),
            self.viewer.price_viewer(&self.channel),
        ));
        request
            .data(loader(pricing::PriceDataByVariant {
                db: db.clone(),
                read: read.clone(),
                session: session.clone(),
            }))
            .data(session)
            .data(loader(catalog::VariantsByProduct {
                db: db.clone(),
                read: read.clone(),
            }))
            .data(loader(catalog::ProductsById {
                db: db.clone(),
                read: read.clone(),
                channel_id,
            }))
            .data(loader(inventory::StockByVariant {
                db: db.clone(),
                read: read.clone(),
                channel: self.channel.clone(),
            }))
            .data(catalog::CategoryTree::new(db, read))
            .data(self)
    }
}

/// A per-request loader with a cache, so the connection resolver can prime it
/// ([`catalog::prime_page_loaders`]) and repeated keys load once. Its batches run in tasks of
/// their own inside the request's scope and span ([`crate::metrics::spawn_in_request`]): their
/// SQL statements count for the request, and their logs carry its request id.
fn loader<T>(inner: T) -> DataLoader<T, HashMapCache> {
    DataLoader::with_cache(
        inner,
        crate::metrics::spawn_in_request,
        HashMapCache::default(),
    )
}

/// A request's loader of `T`.
pub(crate) type RequestLoader<T> = DataLoader<T, HashMapCache>;

/// The request context; present on every request the transport executes. Its absence is a
/// bug of ours: `INTERNAL` (logged), never a panic.
pub(crate) fn request_context<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a RequestContext> {
    errors::ApiResultExt::api(request_data::<RequestContext>(ctx))
}

/// Request data of type `T` ([`RequestContext::into_request_data`] puts it there), or
/// [`errors::ApiError::Internal`] with a log line naming the type when it is missing.
pub(crate) fn request_data<'a, T: std::any::Any + Send + Sync>(
    ctx: &Context<'a>,
) -> Result<&'a T, errors::ApiError> {
    ctx.data::<T>().map_err(|_| {
        tracing::error!(
            data = std::any::type_name::<T>(),
            "request data missing from the GraphQL context"
        );
        errors::ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request executed without its data (a bug of ours, never a client's doing) answers
    /// `INTERNAL` errors on the fields that need it: no resolver panics.
    #[tokio::test]
    async fn missing_request_data_is_internal_not_a_panic() {
        let schema = build_schema(&GraphqlConfig::default());
        let response = schema
            .execute(
                "{ channel { code } stockLocations { code } variant(sku: \"TS-0001-M\") { sku } \
                 categories { id } products(first: 1) { totalCount } }",
            )
            .await;
        assert!(!response.errors.is_empty(), "{response:?}");
        for error in &response.errors {
            let code = error.extensions.as_ref().and_then(|e| e.get("code"));
            assert_eq!(
                code,
                Some(&async_graphql::Value::from(errors::code::INTERNAL)),
                "{error:?}"
            );
            assert_eq!(error.message, "internal error");
        }
    }
}

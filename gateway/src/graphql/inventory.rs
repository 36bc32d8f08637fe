//! Stock types: channel availability, per-location stock levels and stock locations.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use commerce_core::channels::{ChannelLocation, ChannelPolicy};
use commerce_core::entities::stock_location;
use commerce_core::inventory::{
    self, ChannelAvailability, StockStatus as CoreStockStatus, StockView,
};
use sea_orm::DatabaseConnection;

use super::ids::{Kind, encode_id};
use super::{RequestLoader, request_context, request_data};
use crate::errors::{ApiError, ApiResultExt};
use crate::shaping::StockVisibility;

#[derive(Default)]
pub struct InventoryQuery;

#[Object]
impl InventoryQuery {
    /// The stock locations feeding the request's channel, highest priority first.
    async fn stock_locations(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<StockLocation>> {
        Ok(request_context(ctx)?
            .channel
            .locations
            .iter()
            .map(StockLocation::from)
            .collect())
    }
}

/// The coarse stock picture.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockStatus {
    InStock,
    LowStock,
    OutOfStock,
}

impl From<CoreStockStatus> for StockStatus {
    fn from(status: CoreStockStatus) -> Self {
        match status {
            CoreStockStatus::InStock => Self::InStock,
            CoreStockStatus::LowStock => Self::LowStock,
            CoreStockStatus::OutOfStock => Self::OutOfStock,
        }
    }
}

/// How much of a variant the request's channel can sell.
#[derive(SimpleObject)]
pub struct Availability {
    status: StockStatus,
    /// Units available to this channel: always for POS and B2B, for web and mobile only when
    /// stock is low.
    quantity: Option<i64>,
}

impl Availability {
    /// The core's channel availability of the variant (holds of other channels and the
    /// channel's safety stock respected; the same figure reservations are checked against),
    /// shown through the channel's stock view.
    pub(crate) async fn of_variant(
        ctx: &Context<'_>,
        variant_id: i64,
    ) -> async_graphql::Result<Self> {
        let seen = load_stock(ctx, variant_id).await?;
        Ok(Self {
            status: seen.status.into(),
            quantity: seen.quantity,
        })
    }
}

/// Exact stock of one variant at one location.
#[derive(SimpleObject)]
pub struct StockLevel {
    location: StockLocation,
    on_hand: i32,
    reserved: i32,
    /// on hand minus reserved, never negative.
    available: i64,
}

impl StockLevel {
    pub(crate) async fn of_variant(
        ctx: &Context<'_>,
        variant_id: i64,
    ) -> async_graphql::Result<Vec<Self>> {
        let rc = request_context(ctx)?;
        // Exact stock per location: admins anywhere, POS clerks on a per-location channel.
        let per_location =
            StockVisibility::for_channel(&rc.channel.channel.code) == StockVisibility::PerLocation;
        let clerk = rc.viewer.role == Some(crate::auth::Role::PosClerk);
        if !(rc.viewer.admin || (per_location && clerk)) {
            return Err(ApiError::Forbidden(if per_location {
                "per-location stock needs a pos_clerk or admin token".to_owned()
            } else {
                format!(
                    "per-location stock is not visible on channel {} (it needs a pos_clerk token on pos, or an admin token)",
                    rc.channel.channel.code
                )
            }))
            .api();
        }
        let seen = load_stock(ctx, variant_id).await?;
        Ok(rc
            .channel
            .locations
            .iter()
            .filter_map(|feed| {
                let level = seen
                    .locations
                    .iter()
                    .find(|l| l.location_id == feed.location.id)?;
                Some(Self {
                    location: StockLocation::from(feed),
                    on_hand: level.on_hand,
                    reserved: level.reserved,
                    available: level.available,
                })
            })
            .collect())
    }
}

async fn load_stock(
    ctx: &Context<'_>,
    variant_id: i64,
) -> async_graphql::Result<ChannelAvailability> {
    let loader = request_data::<RequestLoader<StockByVariant>>(ctx).api()?;
    loader
        .load_one(variant_id)
        .await
        .api()?
        .ok_or(ApiError::Internal)
        .api()
}

/// Kind of stock location.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationKind {
    Warehouse,
    Store,
    Dropship,
}

/// A place that holds stock.
#[derive(SimpleObject)]
pub struct StockLocation {
    id: ID,
    /// Stable code such as `WH-EAST` or `STORE-DOWNTOWN`.
    code: String,
    name: String,
    kind: LocationKind,
    region: String,
    latitude: f64,
    longitude: f64,
    /// Hours from order to dispatch.
    handling_hours: i32,
    /// Local time (HH:MM) after which orders ship the next day.
    cutoff_time: String,
    /// Priority for the request's channel (1 is tried first).
    priority: i32,
}

impl From<&ChannelLocation> for StockLocation {
    fn from(feed: &ChannelLocation) -> Self {
        let l: &stock_location::Model = &feed.location;
        Self {
            id: encode_id(Kind::StockLocation, l.id),
            code: l.code.clone(),
            name: l.name.clone(),
            kind: match l.kind.as_str() {
                "store" => LocationKind::Store,
                "dropship" => LocationKind::Dropship,
                _ => LocationKind::Warehouse,
            },
            region: l.region.clone(),
            latitude: l.latitude,
            longitude: l.longitude,
            handling_hours: l.handling_hours,
            cutoff_time: l.cutoff_time.clone(),
            priority: feed.priority,
        }
    }
}

/// Loads the channel availability of many variants in one batch: their stock levels (at
/// every location, so other channels' location-less holds are covered exactly) and their
/// holds (two statements, or none from the read model), through the core's
/// [`inventory::channel_availability`] rule.
pub struct StockByVariant {
    pub db: DatabaseConnection,
    pub read: Option<Arc<crate::read_path::ReadModel>>,
    pub channel: Arc<ChannelPolicy>,
}

impl Loader<i64> for StockByVariant {
    type Value = ChannelAvailability;
    type Error = ApiError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let view = match StockVisibility::for_channel(&self.channel.channel.code) {
            StockVisibility::Coarse => StockView::Coarse,
            StockVisibility::Exact => StockView::Exact,
            StockVisibility::PerLocation => StockView::PerLocation,
        };
        // Each variant's rows (every location, holds): from the read model or the database.
        let reads = crate::read_path::model::Reads {
            model: self.read.as_deref(),
            db: &self.db,
        };
        let rows = reads.stock_rows(keys).await?;
        Ok(rows
            .iter()
            .map(|(&id, rows)| {
                let seen = inventory::channel_availability(
                    &self.channel,
                    view,
                    id,
                    &rows.levels,
                    &rows.holds,
                );
                (id, seen)
            })
            .collect())
    }
}

//! `channel` table: a sales channel (web, mobile, pos, b2b) with its currency and stock policy.

use sea_orm::entity::prelude::*;

/// A sales channel (web, mobile, pos, b2b) with its currency and stock policy.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "channel")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub code: String,
    pub name: String,
    pub currency: String,
    pub safety_stock: i32,
    pub low_stock_threshold: i32,
    pub routing_policy: String,
    /// How a reservation picks locations: `priority`, `highest_stock` or `nearest`.
    pub allocation_strategy: String,
    /// Lifetime of the channel's reservations in seconds; 0 makes them hard holds (no expiry).
    pub reservation_ttl_seconds: i32,
    /// Location kinds that may fulfil the channel's orders, comma-separated
    /// (`warehouse,store`).
    pub eligible_location_kinds: String,
    /// Service levels the channel offers, comma-separated (`standard,express,same_day`).
    pub service_levels: String,
    /// Most shipments one order may be split into.
    pub max_shipments: i32,
    /// Whether orders may take more than is in stock (the rest ships later).
    pub backorders: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

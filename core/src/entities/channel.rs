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
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

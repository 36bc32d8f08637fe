//! `orders` table: an order placed on a channel.

use crate::money::StoredAmount;
use sea_orm::entity::prelude::*;

/// An order placed on a channel.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub number: String,
    pub channel_id: i64,
    pub customer_id: Option<i64>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub status: String,
    pub currency: String,
    pub subtotal: StoredAmount,
    pub discount_total: StoredAmount,
    pub total: StoredAmount,
    pub service_level: String,
    #[sea_orm(column_type = "Json", nullable)]
    pub shipping_address: Option<Json>,
    pub pickup_location_id: Option<i64>,
    /// The order's id in the system it came from (a marketplace, an offline POS); unique per
    /// channel.
    pub external_ref: Option<String>,
    /// Channel-specific fields, kept as given (a size-bounded JSON object).
    #[sea_orm(column_type = "Json", nullable)]
    pub extensions: Option<Json>,
    pub note: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

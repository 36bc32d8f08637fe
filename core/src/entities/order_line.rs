//! `order_line` table: one line of an order with its price breakdown.

use crate::money::StoredAmount;
use sea_orm::entity::prelude::*;

/// One line of an order with its price breakdown.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "order_line")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_id: i64,
    pub variant_id: i64,
    pub sku: String,
    pub quantity: i32,
    pub unit_price: StoredAmount,
    pub line_total: StoredAmount,
    #[sea_orm(column_type = "Json")]
    pub price_breakdown: Json,
    /// Units returned so far.
    pub returned_quantity: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

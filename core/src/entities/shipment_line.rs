//! `shipment_line` table: quantity of an order line in a shipment.

use sea_orm::entity::prelude::*;

/// Quantity of an order line in a shipment.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "shipment_line")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub shipment_id: i64,
    pub order_line_id: i64,
    pub quantity: i32,
    pub backordered: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `shipment` table: a fulfillment group: lines shipped from one location.

use sea_orm::entity::prelude::*;

/// A fulfillment group: lines shipped from one location.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "shipment")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_id: i64,
    pub location_id: i64,
    pub service_level: String,
    pub status: String,
    #[sea_orm(column_type = "Json", nullable)]
    pub decision: Option<Json>,
    /// The day the routing promised it ships.
    pub promised_ship_date: Option<Date>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

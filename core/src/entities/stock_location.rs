//! `stock_location` table: a warehouse, store or drop-shipper that holds stock.

use sea_orm::entity::prelude::*;

/// A warehouse, store or drop-shipper that holds stock.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_location")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub code: String,
    pub name: String,
    pub kind: String,
    pub region: String,
    pub latitude: f64,
    pub longitude: f64,
    pub handling_hours: i32,
    pub cutoff_time: String,
    /// The IANA time zone its cut-off time is read in (e.g. `America/New_York`).
    pub time_zone: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

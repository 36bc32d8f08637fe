//! `stock_level` table: stock of one variant at one location.

use sea_orm::entity::prelude::*;

/// Stock of one variant at one location.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_level")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub variant_id: i64,
    pub location_id: i64,
    pub on_hand: i32,
    pub reserved: i32,
    /// Bumped by every change to the row, in the same UPDATE; stock events carry it.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

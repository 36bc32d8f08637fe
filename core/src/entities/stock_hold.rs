//! `stock_hold` table: units of a variant kept for one channel, that other channels cannot reserve.

use sea_orm::entity::prelude::*;

/// Units of a variant kept for one channel, at one location or (no location) anywhere.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_hold")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The channel the units are kept for.
    pub channel_id: i64,
    /// The variant held.
    pub variant_id: i64,
    /// The location the units are kept at; `None` keeps them across all locations.
    pub location_id: Option<i64>,
    /// Units kept (more than zero; a removed hold is deleted).
    pub quantity: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

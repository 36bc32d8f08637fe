//! `reservation` table: stock held for an order or a cart until it is consumed, released or expires.

use sea_orm::entity::prelude::*;

/// Stock held for an order or a cart until it is consumed, released or expires.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "reservation")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub variant_id: i64,
    pub location_id: i64,
    pub channel_id: i64,
    pub quantity: i32,
    pub owner_kind: String,
    pub owner_ref: String,
    pub expires_at: Option<DateTimeUtc>,
    pub state: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

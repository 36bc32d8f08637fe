//! `inventory_movement` table: one append-only ledger entry; its id is the stock event sequence number.

use sea_orm::entity::prelude::*;

/// One append-only ledger entry; its id is the stock event sequence number.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "inventory_movement")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub variant_id: i64,
    pub location_id: i64,
    pub kind: String,
    pub on_hand_delta: i32,
    pub reserved_delta: i32,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

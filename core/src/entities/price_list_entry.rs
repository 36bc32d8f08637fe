//! `price_list_entry` table: a variant's price in a list from a minimum quantity (volume tiers).

use crate::money::StoredAmount;
use sea_orm::entity::prelude::*;

/// A variant's price in a list from a minimum quantity (volume tiers).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "price_list_entry")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub price_list_id: i64,
    pub variant_id: i64,
    pub min_quantity: i32,
    pub amount: StoredAmount,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

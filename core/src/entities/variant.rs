//! `variant` table: a purchasable variant of a product, identified by its unique SKU.

use sea_orm::entity::prelude::*;

/// A purchasable variant of a product, identified by its unique SKU.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "variant")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub product_id: i64,
    pub sku: String,
    pub name: String,
    #[sea_orm(column_type = "Json")]
    pub option_values: Json,
    pub weight_grams: i32,
    pub position: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `price_list` table: a list of prices with an optional scope (channel, group, company, customer).

use sea_orm::entity::prelude::*;

/// A list of prices with an optional scope (channel, group, company, customer).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "price_list")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub code: String,
    pub name: String,
    pub currency: String,
    pub channel_id: Option<i64>,
    pub customer_group_id: Option<i64>,
    pub company_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub priority: i32,
    pub valid_from: Option<DateTimeUtc>,
    pub valid_until: Option<DateTimeUtc>,
    pub active: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `promotion` table: a discount rule with scope, target, window and stacking behaviour.

use crate::money::StoredAmount;
use sea_orm::entity::prelude::*;

/// A discount rule with scope, target, window and stacking behaviour.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "promotion")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub code: String,
    pub name: String,
    pub channel_id: Option<i64>,
    pub customer_group_id: Option<i64>,
    pub target_kind: String,
    pub target_id: Option<i64>,
    pub discount_kind: String,
    /// Percent (15 is 15%) for `percent_off`, else an amount in `currency`.
    pub value: StoredAmount,
    /// The currency of an `amount_off` / `fixed_price` value (required for those);
    /// `None` for `percent_off`, which applies in any currency.
    pub currency: Option<String>,
    pub min_quantity: i32,
    pub starts_at: Option<DateTimeUtc>,
    pub ends_at: Option<DateTimeUtc>,
    pub stackable: bool,
    pub priority: i32,
    pub active: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

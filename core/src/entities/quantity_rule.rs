//! `quantity_rule` table: the minimum, maximum and increment a price list imposes on the
//! quantity of one variant (e.g. copy paper in cases of 5, at least 10, on the B2B list).

use sea_orm::entity::prelude::*;

/// Min, max and increment of a variant's quantity under a price list (one per list and variant).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "quantity_rule")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub price_list_id: i64,
    pub variant_id: i64,
    /// At least 1.
    pub min_quantity: i32,
    /// `None`: no maximum; otherwise at least `min_quantity`.
    pub max_quantity: Option<i32>,
    /// Allowed quantities are `min_quantity + k × increment`; at least 1.
    pub increment: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

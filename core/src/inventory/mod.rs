//! Inventory: stock levels, channel availability and (in later issues) reservations.

mod availability;

pub use availability::{StockStatus, channel_available, location_available, stock_status};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use crate::CoreError;
use crate::entities::stock_level;

/// Stock levels of the given variants at the given locations.
pub async fn stock_levels_for_variants(
    db: &DatabaseConnection,
    variant_ids: &[i64],
    location_ids: &[i64],
) -> Result<Vec<stock_level::Model>, CoreError> {
    Ok(stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.is_in(variant_ids.iter().copied()))
        .filter(stock_level::Column::LocationId.is_in(location_ids.iter().copied()))
        .order_by_asc(stock_level::Column::VariantId)
        .order_by_asc(stock_level::Column::LocationId)
        .all(db)
        .await?)
}

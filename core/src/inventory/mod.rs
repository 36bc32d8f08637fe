//! Inventory: stock levels, channel availability, holds and reservations (DESIGN.md §4, §5,
//! §7). The pure rules live in [`availability`] and [`allocation`]; [`service`] applies
//! them to the database, one write transaction per change, ledger included.

pub mod allocation;
pub mod availability;
pub mod replay;
pub mod service;

pub use allocation::{AllocationStrategy, Candidate, GeoPoint, allocate};
pub use availability::{
    ChannelAvailability, LocationAvailability, StockStatus, StockView, channel_availability,
    channel_available, location_available, stock_status,
};
pub use service::{
    Adjustment, Lifetime, Owner, OwnerKind, ReserveRequest, Reserved, StockChange, StockIn,
    StockRows, Swept, Transfer, adjust, availability_for_variants, commit_reservation,
    extend_reservation, holds_for_variants, load_policy_by_id, receive, release, release_expired,
    reservations_of, reserve, return_stock, set_hold, stock_rows, transfer,
};

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

//! What a stock subscriber that reconnects has missed: the current state of every watched level
//! whose version is above the one the subscriber holds, with the ledger sequence number of the
//! level's last movement (the same figures a live `StockChanged` event carries).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::CoreError;
use crate::entities::{inventory_movement, stock_level, variant};

/// A stock level as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelNow {
    pub variant_id: i64,
    pub location_id: i64,
    pub on_hand: i32,
    pub reserved: i32,
    pub version: i64,
    /// The id of the level's last `inventory_movement` (0 when it has none).
    pub sequence: i64,
}

/// The levels of `variant_ids` (every variant when `None`) at `location_ids` whose version is
/// not `held[(variant, location)]` (above it: it moved since; below it: the client holds a
/// version this database never had, e.g. after a restore, and must take the current state),
/// and every level not in `held` (so an empty `held` is a full snapshot), in (variant, location) order. At most `limit` levels:
/// `Ok(None)` when more moved (the subscriber should refetch instead).
pub async fn levels_since(
    db: &DatabaseConnection,
    variant_ids: Option<&[i64]>,
    location_ids: &[i64],
    held: &HashMap<(i64, i64), i64>,
    limit: usize,
) -> Result<Option<Vec<LevelNow>>, CoreError> {
    let mut query = stock_level::Entity::find()
        .filter(stock_level::Column::LocationId.is_in(location_ids.iter().copied()));
    if let Some(variant_ids) = variant_ids {
        query = query.filter(stock_level::Column::VariantId.is_in(variant_ids.iter().copied()));
    }
    let moved: Vec<stock_level::Model> = query
        .order_by_asc(stock_level::Column::VariantId)
        .order_by_asc(stock_level::Column::LocationId)
        .all(db)
        .await?
        .into_iter()
        .filter(|level| {
            held.get(&(level.variant_id, level.location_id))
                .is_none_or(|&version| level.version != version)
        })
        .collect();
    if moved.len() > limit {
        return Ok(None);
    }
    let sequences = last_movements(db, &moved).await?;
    Ok(Some(
        moved
            .into_iter()
            .map(|level| LevelNow {
                sequence: sequences
                    .get(&(level.variant_id, level.location_id))
                    .copied()
                    .unwrap_or(0),
                variant_id: level.variant_id,
                location_id: level.location_id,
                on_hand: level.on_hand,
                reserved: level.reserved,
                version: level.version,
            })
            .collect(),
    ))
}

/// The id of the last movement of each level.
async fn last_movements(
    db: &DatabaseConnection,
    levels: &[stock_level::Model],
) -> Result<HashMap<(i64, i64), i64>, CoreError> {
    if levels.is_empty() {
        return Ok(HashMap::new());
    }
    let mut variants: Vec<i64> = levels.iter().map(|l| l.variant_id).collect();
    variants.sort_unstable();
    variants.dedup();
    let mut locations: Vec<i64> = levels.iter().map(|l| l.location_id).collect();
    locations.sort_unstable();
    locations.dedup();
    let rows: Vec<(i64, i64, Option<i64>)> = inventory_movement::Entity::find()
        .select_only()
        .column(inventory_movement::Column::VariantId)
        .column(inventory_movement::Column::LocationId)
        .expr(Func::max(Expr::col(inventory_movement::Column::Id)))
        .filter(inventory_movement::Column::VariantId.is_in(variants))
        .filter(inventory_movement::Column::LocationId.is_in(locations))
        .group_by(inventory_movement::Column::VariantId)
        .group_by(inventory_movement::Column::LocationId)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(variant, location, last)| Some(((variant, location), last?)))
        .collect())
}

/// The SKUs of the given variants.
pub async fn skus_of(
    db: &DatabaseConnection,
    variant_ids: &[i64],
) -> Result<HashMap<i64, String>, CoreError> {
    if variant_ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(variant::Entity::find()
        .select_only()
        .column(variant::Column::Id)
        .column(variant::Column::Sku)
        .filter(variant::Column::Id.is_in(variant_ids.iter().copied()))
        .into_tuple::<(i64, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

/// The variants of the given SKUs; `Err(NotFound)` names the first unknown one.
pub async fn variants_by_skus(
    db: &DatabaseConnection,
    skus: &[String],
) -> Result<HashMap<String, i64>, CoreError> {
    let found: HashMap<String, i64> = variant::Entity::find()
        .select_only()
        .column(variant::Column::Sku)
        .column(variant::Column::Id)
        .filter(variant::Column::Sku.is_in(skus.iter().cloned()))
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    if let Some(unknown) = skus.iter().find(|sku| !found.contains_key(*sku)) {
        return Err(CoreError::NotFound {
            entity: "variant",
            key: unknown.clone(),
        });
    }
    Ok(found)
}

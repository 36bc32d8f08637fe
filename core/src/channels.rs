//! Channels and the stock locations that feed them.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use crate::CoreError;
use crate::entities::{channel, channel_location, stock_location};

/// A channel with the locations feeding it, in priority order: everything a request on that
/// channel needs to decide visibility and availability.
#[derive(Clone, Debug)]
pub struct ChannelPolicy {
    pub channel: channel::Model,
    pub locations: Vec<ChannelLocation>,
}

/// One location feeding a channel.
#[derive(Clone, Debug)]
pub struct ChannelLocation {
    pub location: stock_location::Model,
    pub priority: i32,
}

impl ChannelPolicy {
    /// Ids of the locations feeding the channel, highest priority first.
    pub fn location_ids(&self) -> Vec<i64> {
        self.locations.iter().map(|l| l.location.id).collect()
    }
}

/// Loads the channel with `code` and its locations; an unknown code is `NotFound`.
#[tracing::instrument(skip(db))]
pub async fn load_channel_policy(
    db: &DatabaseConnection,
    code: &str,
) -> Result<ChannelPolicy, CoreError> {
    let channel = channel::Entity::find()
        .filter(channel::Column::Code.eq(code))
        .one(db)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "channel",
            key: code.to_owned(),
        })?;
    let links = channel_location::Entity::find()
        .filter(channel_location::Column::ChannelId.eq(channel.id))
        .order_by_asc(channel_location::Column::Priority)
        .all(db)
        .await?;
    let mut by_id: HashMap<i64, stock_location::Model> = stock_location::Entity::find()
        .filter(stock_location::Column::Id.is_in(links.iter().map(|l| l.location_id)))
        .all(db)
        .await?
        .into_iter()
        .map(|location| (location.id, location))
        .collect();
    let locations = links
        .into_iter()
        .filter_map(|link| {
            let location = by_id.remove(&link.location_id)?;
            Some(ChannelLocation {
                location,
                priority: link.priority,
            })
        })
        .collect();
    Ok(ChannelPolicy { channel, locations })
}

/// Every channel with its locations (three statements for any number of channels), ordered
/// by code: what the gateway's read model keeps in memory.
pub async fn load_all_channel_policies(
    db: &DatabaseConnection,
) -> Result<Vec<ChannelPolicy>, CoreError> {
    let channels = list_channels(db).await?;
    let links = channel_location::Entity::find()
        .order_by_asc(channel_location::Column::Priority)
        .order_by_asc(channel_location::Column::LocationId)
        .all(db)
        .await?;
    let by_id: HashMap<i64, stock_location::Model> = stock_location::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|location| (location.id, location))
        .collect();
    Ok(channels
        .into_iter()
        .map(|channel| {
            let locations = links
                .iter()
                .filter(|link| link.channel_id == channel.id)
                .filter_map(|link| {
                    Some(ChannelLocation {
                        location: by_id.get(&link.location_id)?.clone(),
                        priority: link.priority,
                    })
                })
                .collect();
            ChannelPolicy { channel, locations }
        })
        .collect())
}

/// Every channel, ordered by code.
pub async fn list_channels(db: &DatabaseConnection) -> Result<Vec<channel::Model>, CoreError> {
    Ok(channel::Entity::find()
        .order_by_asc(channel::Column::Code)
        .all(db)
        .await?)
}

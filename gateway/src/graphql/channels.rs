//! The channel a request runs on.

use async_graphql::{Context, Object, SimpleObject};

use super::inventory::StockLocation;
use super::request_context;

#[derive(Default)]
pub struct ChannelQuery;

/// A sales channel.
#[derive(SimpleObject)]
pub struct Channel {
    /// `web`, `mobile`, `pos` or `b2b`.
    code: String,
    name: String,
    /// ISO-4217 currency of the channel's prices.
    currency: String,
    /// Locations feeding the channel, highest priority first.
    locations: Vec<StockLocation>,
}

#[Object]
impl ChannelQuery {
    /// The channel this request runs on (from the `X-Channel` header, default `web`).
    async fn channel(&self, ctx: &Context<'_>) -> async_graphql::Result<Channel> {
        let policy = &request_context(ctx)?.channel;
        Ok(Channel {
            code: policy.channel.code.clone(),
            name: policy.channel.name.clone(),
            currency: policy.channel.currency.clone(),
            locations: policy.locations.iter().map(StockLocation::from).collect(),
        })
    }
}

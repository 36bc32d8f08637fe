//! Availability rules (DESIGN.md §5, §7) as pure functions: over plain numbers, and over a
//! channel's policy, the stock levels of a variant and the per-channel holds on it.

use std::collections::HashMap;

use crate::channels::ChannelPolicy;
use crate::entities::{stock_hold, stock_level};

/// Unreserved units at one location; never negative.
pub fn location_available(on_hand: i32, reserved: i32) -> i64 {
    (i64::from(on_hand) - i64::from(reserved)).max(0)
}

/// A channel's availability: the sum over its locations of (on_hand − reserved), minus the
/// channel's safety stock, never below zero. `levels` are `(on_hand, reserved)` pairs.
pub fn channel_available(levels: impl IntoIterator<Item = (i32, i32)>, safety_stock: i32) -> i64 {
    let total: i64 = levels
        .into_iter()
        .map(|(on_hand, reserved)| location_available(on_hand, reserved))
        .sum();
    (total - i64::from(safety_stock.max(0))).max(0)
}

/// The coarse view shown to storefront shoppers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockStatus {
    /// More than the channel's low-stock threshold.
    InStock,
    /// At or under the threshold, but some.
    LowStock,
    /// Nothing the channel can sell.
    OutOfStock,
}

/// Classifies an available quantity: low when at or under the channel's threshold.
pub fn stock_status(available: i64, low_stock_threshold: i32) -> StockStatus {
    if available <= 0 {
        StockStatus::OutOfStock
    } else if available <= i64::from(low_stock_threshold) {
        StockStatus::LowStock
    } else {
        StockStatus::InStock
    }
}

/// How much of the stock picture a channel's viewers see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockView {
    /// A status, and a quantity only when stock is low ("3 left"): web and mobile shoppers.
    Coarse,
    /// The exact available quantity: B2B buyers planning large orders.
    Exact,
    /// Exact quantities per location: POS terminals.
    PerLocation,
}

impl StockView {
    /// The view of a channel, as the gateway decides it today: `pos` per location, `b2b`
    /// exact, every other channel coarse.
    pub fn for_channel(code: &str) -> Self {
        match code {
            "pos" => Self::PerLocation,
            "b2b" => Self::Exact,
            _ => Self::Coarse,
        }
    }
}

/// One location's stock of a variant, as one channel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationAvailability {
    /// The stock location.
    pub location_id: i64,
    /// Units physically there.
    pub on_hand: i32,
    /// Units reserved there.
    pub reserved: i32,
    /// on_hand − reserved, never negative (what the gateway shows as `available`).
    pub available: i64,
    /// Units kept there for other channels by location holds.
    pub held_for_others: i64,
    /// What this channel may reserve there: `available` minus `held_for_others`, never negative.
    pub sellable: i64,
    /// The level's version (bumped by every change).
    pub version: i64,
}

/// A variant's availability for one channel: the one answer the resolvers show and that
/// reservations are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelAvailability {
    /// The variant.
    pub variant_id: i64,
    /// Units the channel can sell: the sellable units at its locations (capped by what the
    /// other channels' location-less holds leave), minus its safety stock, never negative.
    pub available: i64,
    /// The coarse status of `available` under the channel's low-stock threshold.
    pub status: StockStatus,
    /// `available` when the view shows it (coarse views only when stock is low).
    pub quantity: Option<i64>,
    /// The channel's locations that have a level for the variant, highest priority first.
    pub locations: Vec<LocationAvailability>,
}

/// Sellable units of `variant_id` for the channel of `policy` at every location holding a
/// level of it (not only the channel's): on_hand − reserved − location holds of other
/// channels, never negative. Also returns the other channels' location-less holds.
pub(crate) fn sellable_by_location(
    channel_id: i64,
    variant_id: i64,
    levels: &[stock_level::Model],
    holds: &[stock_hold::Model],
) -> (HashMap<i64, (i64, i64)>, i64) {
    let mut held_at: HashMap<i64, i64> = HashMap::new();
    let mut held_anywhere = 0_i64;
    for hold in holds
        .iter()
        .filter(|h| h.variant_id == variant_id && h.channel_id != channel_id)
    {
        let quantity = i64::from(hold.quantity.max(0));
        match hold.location_id {
            Some(location) => *held_at.entry(location).or_default() += quantity,
            None => held_anywhere += quantity,
        }
    }
    let sellable = levels
        .iter()
        .filter(|l| l.variant_id == variant_id)
        .map(|l| {
            let held = held_at.get(&l.location_id).copied().unwrap_or(0);
            let free = location_available(l.on_hand, l.reserved);
            (l.location_id, ((free - held).max(0), held))
        })
        .collect();
    (sellable, held_anywhere)
}

/// The availability of `variant_id` for the channel of `policy`, shown through `view`.
///
/// `levels` are the variant's stock levels (levels of other variants are ignored). Levels at
/// locations outside the channel only matter when other channels hold stock without a
/// location: such holds are covered first by what lies beyond the channel's reach, so pass
/// every level of the variant for the exact figure (passing only the channel's levels gives
/// a figure that is never higher). `holds` are the stock holds on the variant; the channel's
/// own holds never reduce its availability. Without holds the result is
/// [`channel_available`] over the channel's levels and [`stock_status`] of it, and a coarse
/// view shows the quantity only when stock is low.
pub fn channel_availability(
    policy: &ChannelPolicy,
    view: StockView,
    variant_id: i64,
    levels: &[stock_level::Model],
    holds: &[stock_hold::Model],
) -> ChannelAvailability {
    let channel = &policy.channel;
    let (sellable, held_anywhere) = sellable_by_location(channel.id, variant_id, levels, holds);
    let mut locations = Vec::new();
    let mut in_reach = 0_i64;
    for feed in &policy.locations {
        let Some(level) = levels
            .iter()
            .find(|l| l.variant_id == variant_id && l.location_id == feed.location.id)
        else {
            continue;
        };
        let (can_sell, held) = sellable[&level.location_id];
        in_reach += can_sell;
        locations.push(LocationAvailability {
            location_id: level.location_id,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: location_available(level.on_hand, level.reserved),
            held_for_others: held,
            sellable: can_sell,
            version: level.version,
        });
    }
    let everywhere: i64 = sellable.values().map(|(can_sell, _)| can_sell).sum();
    let pool = in_reach.min((everywhere - held_anywhere).max(0));
    let available = (pool - i64::from(channel.safety_stock.max(0))).max(0);
    let status = stock_status(available, channel.low_stock_threshold);
    let shown = match view {
        StockView::Coarse => status == StockStatus::LowStock,
        StockView::Exact | StockView::PerLocation => true,
    };
    ChannelAvailability {
        variant_id,
        available,
        status,
        quantity: shown.then_some(available),
        locations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_unreserved_stock_then_removes_safety_stock() {
        assert_eq!(channel_available([(10, 2), (5, 0)], 3), 10);
        assert_eq!(channel_available([(10, 2), (5, 0)], 0), 13);
    }

    #[test]
    fn never_negative_even_with_inconsistent_rows_or_large_safety_stock() {
        assert_eq!(
            channel_available([(2, 5), (1, 0)], 0),
            1,
            "an over-reserved row counts as zero"
        );
        assert_eq!(channel_available([(3, 0)], 10), 0);
        assert_eq!(channel_available(std::iter::empty(), 0), 0);
    }

    #[test]
    fn classifies_by_threshold() {
        assert_eq!(stock_status(0, 5), StockStatus::OutOfStock);
        assert_eq!(stock_status(1, 5), StockStatus::LowStock);
        assert_eq!(stock_status(5, 5), StockStatus::LowStock);
        assert_eq!(stock_status(6, 5), StockStatus::InStock);
    }

    fn policy(safety_stock: i32, low_stock_threshold: i32, locations: &[i64]) -> ChannelPolicy {
        use crate::channels::ChannelLocation;
        use crate::entities::{channel, stock_location};
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        ChannelPolicy {
            channel: channel::Model {
                id: 1,
                code: "web".into(),
                name: "Web".into(),
                currency: "USD".into(),
                safety_stock,
                low_stock_threshold,
                routing_policy: "fewest_shipments".into(),
                allocation_strategy: "priority".into(),
                reservation_ttl_seconds: 900,
                eligible_location_kinds: "warehouse,store".into(),
                service_levels: "standard".into(),
                max_shipments: 3,
                backorders: false,
                created_at: at,
                updated_at: at,
            },
            locations: locations
                .iter()
                .enumerate()
                .map(|(i, &id)| ChannelLocation {
                    location: stock_location::Model {
                        id,
                        code: format!("L{id}"),
                        name: format!("L{id}"),
                        kind: "warehouse".into(),
                        region: "us".into(),
                        latitude: 0.0,
                        longitude: 0.0,
                        handling_hours: 24,
                        cutoff_time: "15:00".into(),
                        time_zone: "UTC".into(),
                        created_at: at,
                        updated_at: at,
                    },
                    priority: i as i32 + 1,
                })
                .collect(),
        }
    }

    fn level(location_id: i64, on_hand: i32, reserved: i32) -> stock_level::Model {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        stock_level::Model {
            id: location_id,
            variant_id: 7,
            location_id,
            on_hand,
            reserved,
            version: 0,
            created_at: at,
            updated_at: at,
        }
    }

    fn hold(channel_id: i64, location_id: Option<i64>, quantity: i32) -> stock_hold::Model {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        stock_hold::Model {
            id: 0,
            channel_id,
            variant_id: 7,
            location_id,
            quantity,
            created_at: at,
            updated_at: at,
        }
    }

    proptest::proptest! {
        /// Without holds, the channel function gives what the gateway computes today.
        #[test]
        fn without_holds_it_matches_the_plain_rules(
            stock in proptest::collection::vec((0..50i32, 0..50i32), 0..4),
            safety in 0..10i32,
            threshold in 0..10i32,
        ) {
            let levels: Vec<_> = stock
                .iter()
                .enumerate()
                .map(|(i, &(on_hand, reserved))| level(i as i64 + 1, on_hand, reserved))
                .collect();
            let policy = policy(safety, threshold, &[1, 2, 3]);
            let mine: Vec<_> = levels.iter().filter(|l| l.location_id <= 3).collect();
            let expected = channel_available(mine.iter().map(|l| (l.on_hand, l.reserved)), safety);
            let status = stock_status(expected, threshold);
            for view in [StockView::Coarse, StockView::Exact, StockView::PerLocation] {
                let seen = channel_availability(&policy, view, 7, &levels, &[]);
                proptest::prop_assert_eq!(seen.available, expected);
                proptest::prop_assert_eq!(seen.status, status);
                let shown = view != StockView::Coarse || status == StockStatus::LowStock;
                proptest::prop_assert_eq!(seen.quantity, shown.then_some(expected));
                proptest::prop_assert_eq!(seen.locations.len(), mine.len());
            }
        }
    }

    #[test]
    fn holds_of_other_channels_are_kept_and_own_holds_are_not() {
        let policy = policy(0, 5, &[1, 2]);
        let levels = [level(1, 10, 2), level(2, 4, 0), level(3, 3, 0)];
        // Another channel holds 5 at location 1 and 4 anywhere; location 3 (not ours) covers
        // 3 of those 4.
        let holds = [hold(2, Some(1), 5), hold(2, None, 4), hold(1, Some(2), 4)];
        let seen = channel_availability(&policy, StockView::Exact, 7, &levels, &holds);
        assert_eq!(seen.locations[0].sellable, 3);
        assert_eq!(seen.locations[0].held_for_others, 5);
        assert_eq!(
            seen.locations[1].sellable, 4,
            "our own hold does not limit us"
        );
        assert_eq!(
            seen.available, 6,
            "3 + 4 in reach, 10 everywhere minus 4 held anywhere"
        );
        let only_ours = channel_availability(&policy, StockView::Exact, 7, &levels[..2], &holds);
        assert_eq!(
            only_ours.available, 3,
            "without the other level the figure is lower"
        );
    }
}

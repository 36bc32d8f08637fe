//! Domain events the gateway announces after a change has committed.
//!
//! For now the bus is in process: a [`tokio::sync::broadcast`] channel that every
//! subscriber of this gateway process hears. A Redis-backed bus, so that every gateway
//! instance hears every change, comes with the inventory issue; publishers and subscribers
//! keep this interface.

use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it misses some (it then gets
/// `RecvError::Lagged` and should reload what it caches).
pub const CAPACITY: usize = 1024;

/// Something that changed, published once its transaction has committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Prices may have changed: the price lists, the variants and the promotions touched
    /// (ids sorted; `variant_ids` empty when no variant in particular, e.g. a promotion on
    /// every variant).
    PricesChanged {
        list_ids: Vec<i64>,
        variant_ids: Vec<i64>,
        promotion_ids: Vec<i64>,
    },
    /// Stock levels changed (received, adjusted, transferred, reserved, released, swept):
    /// each level as it is after the change, with its new version and the ledger sequence
    /// number of the last movement behind it (for replaying from the ledger).
    StockChanged { levels: Vec<LevelState> },
}

/// One stock level after a change: `(variant, location)` with its counts and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelState {
    pub variant_id: i64,
    pub location_id: i64,
    pub on_hand: i32,
    pub reserved: i32,
    pub version: i64,
    /// The id of the last `inventory_movement` of this change at this level.
    pub sequence: i64,
}

impl Event {
    /// The event announcing a committed stock change (`None` when it changed no level:
    /// nothing to announce).
    pub fn stock_changed(change: &commerce_core::inventory::StockChange) -> Option<Self> {
        (!change.levels.is_empty()).then(|| Self::StockChanged {
            levels: change
                .levels
                .iter()
                .map(|l| LevelState {
                    variant_id: l.variant_id,
                    location_id: l.location_id,
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    version: l.version,
                    sequence: change
                        .movements
                        .iter()
                        .filter(|m| m.variant_id == l.variant_id && m.location_id == l.location_id)
                        .map(|m| m.id)
                        .max()
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }
}

/// The in-process event bus; cloning it gives another handle on the same channel.
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus holding up to [`CAPACITY`] events per subscriber.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Announces `event` to every current subscriber; returns how many there are (an event
    /// nobody listens to is dropped, which is not an error).
    pub fn publish(&self, event: Event) -> usize {
        tracing::debug!(?event, "publishing");
        self.sender.send(event).unwrap_or(0)
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_hear_events_published_after_they_subscribed() {
        let bus = EventBus::new();
        let event = Event::PricesChanged {
            list_ids: vec![1],
            variant_ids: vec![2, 3],
            promotion_ids: Vec::new(),
        };
        assert_eq!(bus.publish(event.clone()), 0, "nobody listens yet");
        let mut first = bus.subscribe();
        let mut second = bus.clone().subscribe();
        assert_eq!(bus.publish(event.clone()), 2);
        assert_eq!(first.recv().await.unwrap(), event);
        assert_eq!(second.recv().await.unwrap(), event);
        assert!(first.try_recv().is_err());
    }
}

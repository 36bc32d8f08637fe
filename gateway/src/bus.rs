//! Domain events the gateway announces after a change has committed.
//!
//! Every subscriber of this process hears events through a [`tokio::sync::broadcast`]
//! channel. In cluster mode (`REDIS_URL`) the bus also sends each event on the Redis pub/sub
//! channel `<limits.redis_key_prefix>events` (`gateway:events`), and a background task per
//! gateway forwards the events of the other instances into its own broadcast channel, so a
//! change committed through instance A reaches a subscriber connected to instance B. Each
//! event is delivered locally at once and travels tagged with the publishing instance's random
//! id, so an instance never hears its own events twice.
//!
//! Redis never fails a publish: while it is unreachable, events still reach this instance's
//! subscribers, the other instances miss them, and a warning is logged (at most one line per
//! [`WARN_EVERY`]). The subscriber task reconnects with backoff; events published while it
//! was disconnected are not replayed: instead the bus announces [`Event::EventsMissed`] (to this
//! instance's subscribers when its subscription comes back; to every instance when a publisher
//! that had to drop events can publish again), and subscribers reload what they keep, as after
//! a lag.

mod redis_link;

use tokio::sync::broadcast;

pub use redis_link::{BusTask, WARN_EVERY, WIRE_VERSION};

/// How many events a slow subscriber may fall behind before it misses some (it then gets
/// `RecvError::Lagged` and should reload what it caches).
pub const CAPACITY: usize = 1024;

/// Something that changed, published once its transaction has committed. On the wire (Redis)
/// it is JSON tagged by `type` (`"PricesChanged"`, `"StockChanged"`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type")]
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
    /// Events may have been lost: the link to the other instances was down (this instance's
    /// Redis subscription reconnected, or an instance could not publish for a while). Whoever
    /// keeps state from events reloads it; stock subscribers get a `REFETCH` event.
    EventsMissed,
    /// An order's status changed (placed, shipped, delivered, cancelled, returned).
    OrderStatusChanged { order_id: i64, status: String },
}

/// One stock level after a change: `(variant, location)` with its counts and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The event bus; cloning it gives another handle on the same channel (and Redis link).
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    /// Cluster mode: where events go to the other instances.
    redis: Option<redis_link::Outbox>,
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
        Self {
            sender,
            redis: None,
        }
    }

    /// Announces `event` to every current subscriber of this process and, in cluster mode,
    /// queues it for the other instances (without waiting for Redis); returns how many local
    /// subscribers there are (an event nobody listens to is dropped, which is not an error).
    pub fn publish(&self, event: Event) -> usize {
        tracing::debug!(?event, "publishing");
        if let Some(redis) = &self.redis {
            redis.send(&event);
        }
        self.sender.send(event).unwrap_or(0)
    }

    /// The Redis pub/sub channel events travel on, in cluster mode.
    pub fn redis_channel(&self) -> Option<&str> {
        self.redis.as_ref().map(redis_link::Outbox::channel)
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

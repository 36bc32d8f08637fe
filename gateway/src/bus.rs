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
//! In-memory state derived from events (a read model, a response cache) registers an
//! *applier* with [`EventBus::on_event`]: a cheap callback run synchronously, in registration
//! order, before an event reaches the broadcast channel: inside [`EventBus::publish`] (so the
//! state has applied a local change when `publish` returns), and in the subscriber task for
//! each event of another instance and each [`Event::EventsMissed`] the bus generates.
//!
//! Freshness across instances: in cluster mode every message is numbered by one Redis
//! sequence, `<channel>:seq`, incremented in the same script that publishes it (so numbers
//! follow the order of the messages). Each instance records the highest number it has
//! applied; [`EventBus::is_current`] compares it with the sequence in Redis, and says whether
//! every event committed anywhere before the call has been applied here (readers fall back to
//! the database when not). A writer awaits [`EventBus::flushed`] before answering, so the
//! sequence has moved before its client can read through another instance. A gap in the
//! numbers (messages lost) is announced as [`Event::EventsMissed`] before the next event.
//!
//! Redis never fails a publish: while it is unreachable, events still reach this instance's
//! subscribers, the other instances miss them, and a warning is logged (at most one line per
//! [`WARN_EVERY`]). The subscriber task reconnects with backoff; events published while it
//! was disconnected are not replayed: instead the bus announces [`Event::EventsMissed`] (to this
//! instance's subscribers when its subscription comes back; to every instance when a publisher
//! that had to drop events can publish again), and subscribers reload what they keep, as after
//! a lag.

mod redis_link;

use std::sync::{Arc, PoisonError, RwLock};

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
    /// Holds of these variants changed (set, changed or removed): no stock level moved, but
    /// what channels can sell did.
    StockHoldsChanged { variant_ids: Vec<i64> },
    /// Catalog rows (products, variants, listings, categories, channels, locations,
    /// customers) changed outside the API's own events: whoever keeps them reloads.
    CatalogChanged,
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

/// A callback applying an event to in-memory state (see [`EventBus::on_event`]).
pub type Applier = Arc<dyn Fn(&Event) + Send + Sync>;

/// The appliers of a bus, shared by its clones and its subscriber task.
#[derive(Clone, Default)]
struct Appliers(Arc<RwLock<Arc<[Applier]>>>);

impl Appliers {
    fn add(&self, applier: Applier) {
        let mut list = self.0.write().unwrap_or_else(PoisonError::into_inner);
        *list = list.iter().cloned().chain([applier]).collect();
    }

    /// Runs every applier on `event`, in registration order, without holding the lock (an
    /// applier may register another).
    fn apply(&self, event: &Event) {
        let list = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for applier in list.iter() {
            applier(event);
        }
    }
}

impl std::fmt::Debug for Appliers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        write!(f, "Appliers({count})")
    }
}

/// The event bus; cloning it gives another handle on the same channel (and Redis link).
#[derive(Clone, Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    appliers: Appliers,
    /// Cluster mode: the link to the other instances.
    redis: Option<redis_link::Link>,
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
            appliers: Appliers::default(),
            redis: None,
        }
    }

    /// Registers `applier`, for every clone of this bus: from now on it is called with each
    /// event before any subscriber hears it (this process's events inside [`Self::publish`],
    /// the other instances' events and [`Event::EventsMissed`] in the subscriber task).
    /// Appliers run synchronously, in registration order, holding no lock of the bus: they must
    /// be cheap, must not block and must not panic.
    pub fn on_event(&self, applier: Applier) {
        self.appliers.add(applier);
    }

    /// Applies `event` (see [`Self::on_event`]), announces it to every current subscriber of
    /// this process and, in cluster mode, queues it for the other instances (without waiting
    /// for Redis); returns how many local subscribers there are (an event nobody listens to is
    /// dropped, which is not an error).
    pub fn publish(&self, event: Event) -> usize {
        tracing::debug!(?event, "publishing");
        self.appliers.apply(&event);
        if let Some(redis) = &self.redis {
            redis.send(&event);
        }
        self.sender.send(event).unwrap_or(0)
    }

    /// Whether every event committed anywhere before this call has already been applied here:
    /// always in-process; in cluster mode, when subscribed and the sequence in Redis is no
    /// further than the last message applied (`false` on any Redis error or a slow answer).
    pub async fn is_current(&self) -> bool {
        match &self.redis {
            Some(redis) => redis.is_current().await,
            None => true,
        }
    }

    /// Waits until the events queued for Redis through this bus before the call have been
    /// handed to Redis (or dropped, Redis being unreachable), at most a second; at once
    /// in-process. Awaited after a change, before answering, so that another instance asked
    /// next sees it in the sequence.
    pub async fn flushed(&self) {
        if let Some(redis) = &self.redis {
            redis.flushed().await;
        }
    }

    /// In cluster mode, whether Redis answers (a `PING`, at most 250 ms); `None` in-process.
    pub async fn redis_answers(&self) -> Option<bool> {
        match &self.redis {
            Some(redis) => Some(redis.answers().await),
            None => None,
        }
    }

    /// The Redis pub/sub channel events travel on, in cluster mode.
    pub fn redis_channel(&self) -> Option<&str> {
        self.redis.as_ref().map(redis_link::Link::channel)
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

    #[tokio::test]
    async fn appliers_apply_each_event_in_order_before_publish_returns() {
        let bus = EventBus::new();
        let applied: Arc<std::sync::Mutex<Vec<(u8, Event)>>> = Arc::default();
        for n in [1, 2] {
            let applied = applied.clone();
            bus.clone().on_event(Arc::new(move |event: &Event| {
                applied.lock().unwrap().push((n, event.clone()));
            }));
        }
        assert_eq!(format!("{bus:?}").matches("Appliers(2)").count(), 1);
        let event = Event::OrderStatusChanged {
            order_id: 7,
            status: "SHIPPED".to_owned(),
        };
        bus.publish(event.clone());
        assert_eq!(
            *applied.lock().unwrap(),
            vec![(1, event.clone()), (2, event)]
        );
        // In-process, nothing is ever in flight elsewhere.
        assert!(bus.is_current().await);
        tokio::time::timeout(std::time::Duration::from_millis(10), bus.flushed())
            .await
            .expect("nothing to flush");
    }
}

//! `stockChanged`: live stock for POS terminals and dashboards, resumable.
//!
//! A subscription listens to the event bus *before* it reads the database, then sends:
//! 1. with `since` (the versions the client holds), the current state of every watched level
//!    whose version differs from the one held (moved since; or a version this database never
//!    had, after a restore), and of every watched level it does not list (`CURRENT` events; so
//!    `since: []` is a full snapshot);
//! 2. then every change as it commits (`CHANGED`), on this instance or, in cluster mode, on any.
//!
//! Each level's events go out in version order and at most once: a live event whose version is
//! not above the last one sent for its level is dropped (it was replayed already). Changes can
//! reach the bus out of order (two writers of a level commit one after the other, but the
//! second may announce first): a change that comes ahead of a missing version waits up to
//! [`REORDER_WAIT`] for it, and then the versions go out in order; only a version that never
//! comes within the wait is skipped (the newer state goes out, the older one is dropped when it
//! comes). A subscriber that falls more than [`crate::bus::CAPACITY`] events
//! behind gets a `REFETCH` event (how many it missed) instead of a silent gap, and then carries
//! on live: it should reload its levels, or resubscribe with `since`. So does every subscriber
//! when the bus reports that events between instances were lost (Redis was unreachable).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use async_graphql::{Context, Enum, ErrorExtensions, ID, InputObject, SimpleObject, Subscription};
use commerce_core::CoreError;
use commerce_core::inventory::{location_available, replay};
use futures_util::Stream;
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::ids::{Kind, decode_id, encode_id};
use super::request_context;
use crate::bus::{Event, LevelState};
use crate::errors::{ApiError, ApiResultExt};
use crate::shaping::StockVisibility;

/// Most SKUs one subscription watches (omit `skus` to watch them all).
pub const MAX_SKUS: usize = 500;
/// Most levels `since` may list.
pub const MAX_SINCE: usize = 5_000;
/// Most levels replayed on subscribe; when more moved, one `REFETCH` event replaces them.
pub const MAX_REPLAY: usize = 5_000;
/// How long a change that came ahead of a level's missing version waits for it.
pub const REORDER_WAIT: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct StockSubscription;

/// A stock level the client holds, at the version it holds.
#[derive(InputObject)]
pub struct HeldStockVersion {
    pub sku: String,
    pub location_id: ID,
    pub version: i64,
}

/// What a stock event says.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockEventKind {
    /// The level's state when the subscription started: it moved since the version in `since`.
    Current,
    /// A change that has just committed.
    Changed,
    /// Events were missed (the subscriber fell behind): reload the watched levels, or
    /// resubscribe with `since`. The level fields are null.
    Refetch,
}

/// One stock level's state after a change. The level fields are null on `REFETCH` events.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct StockEvent {
    pub kind: StockEventKind,
    pub sku: Option<String>,
    pub variant_id: Option<ID>,
    pub location_id: Option<ID>,
    /// The location's code.
    pub location: Option<String>,
    pub on_hand: Option<i32>,
    pub reserved: Option<i32>,
    /// on hand minus reserved, never negative.
    pub available: Option<i64>,
    /// Grows by one with each change of this level: what `since` holds.
    pub version: Option<i64>,
    /// The ledger sequence number (`inventory_movement` id) of the level's last movement.
    pub sequence: Option<i64>,
    /// `REFETCH`: how many events were missed, when known.
    pub missed: Option<i64>,
}

impl StockEvent {
    fn level(kind: StockEventKind, sku: String, location: &str, level: LevelState) -> Self {
        Self {
            kind,
            sku: Some(sku),
            variant_id: Some(encode_id(Kind::Variant, level.variant_id)),
            location_id: Some(encode_id(Kind::StockLocation, level.location_id)),
            location: Some(location.to_owned()),
            on_hand: Some(level.on_hand),
            reserved: Some(level.reserved),
            available: Some(location_available(level.on_hand, level.reserved)),
            version: Some(level.version),
            sequence: Some(level.sequence),
            missed: None,
        }
    }

    fn refetch(missed: Option<u64>) -> Self {
        Self {
            kind: StockEventKind::Refetch,
            sku: None,
            variant_id: None,
            location_id: None,
            location: None,
            on_hand: None,
            reserved: None,
            available: None,
            version: None,
            sequence: None,
            missed: missed.map(|n| n.min(i64::MAX as u64) as i64),
        }
    }
}

#[Subscription]
impl StockSubscription {
    /// Stock level changes of the channel's locations (or of `locationId`), for the SKUs in
    /// `skus` (all when omitted). With `since`, first the current state of every watched level
    /// that moved since the versions held, then live changes: nothing missed, nothing twice.
    /// Needs an admin token, or a pos_clerk token on a per-location channel (pos).
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        skus: Option<Vec<String>>,
        location_id: Option<ID>,
        since: Option<Vec<HeldStockVersion>>,
    ) -> async_graphql::Result<impl Stream<Item = StockEvent> + use<>> {
        let rc = request_context(ctx)?;
        let per_location =
            StockVisibility::for_channel(&rc.channel.channel.code) == StockVisibility::PerLocation;
        let clerk = rc.viewer.role == Some(crate::auth::Role::PosClerk);
        if !(rc.viewer.admin || (per_location && clerk)) {
            return Err(ApiError::Forbidden(
                "stockChanged shows exact stock per location: it needs an admin token, or a pos_clerk token on channel pos".to_owned(),
            ))
            .api();
        }
        if skus.as_ref().is_some_and(|s| s.len() > MAX_SKUS) {
            return Err(ApiError::bad_input(
                "skus",
                format!("at most {MAX_SKUS} SKUs; omit `skus` to watch every SKU"),
            ))
            .api();
        }
        if since.as_ref().is_some_and(|s| s.len() > MAX_SINCE) {
            return Err(ApiError::bad_input(
                "since",
                format!("at most {MAX_SINCE} levels"),
            ))
            .api();
        }
        // The watched locations: the channel's, or the one asked for if it is one of them.
        let mut locations: HashMap<i64, String> = rc
            .channel
            .locations
            .iter()
            .map(|l| (l.location.id, l.location.code.clone()))
            .collect();
        if let Some(id) = &location_id {
            let id = decode_id(Kind::StockLocation, id, "locationId").api()?;
            let Some(code) = locations.remove(&id) else {
                return Err(ApiError::bad_input(
                    "locationId",
                    format!(
                        "the location does not feed channel {}; its locations are listed by stockLocations",
                        rc.channel.channel.code
                    ),
                ))
                .api();
            };
            locations = HashMap::from([(id, code)]);
        }
        // Listen first, read second: a change committed in between is in both, and the
        // version check sends it once.
        let events = rc.bus.subscribe();
        let db = rc.db.clone();
        let sku_of = rc.sku_names.clone();
        let variants = match &skus {
            None => None,
            Some(skus) => {
                let found = replay::variants_by_skus(&db, skus)
                    .await
                    .map_err(|err| match err {
                        CoreError::NotFound { key, .. } => unknown_sku(&key, "skus"),
                        err => ApiError::from(err).extend(),
                    })?;
                let ids: HashSet<i64> = found.values().copied().collect();
                sku_of.extend(found.into_iter().map(|(sku, id)| (id, sku)));
                Some(ids)
            }
        };
        let mut watch = Watch {
            events,
            db,
            variants,
            locations,
            sent: HashMap::new(),
            sku_of,
            queue: VecDeque::new(),
            ahead: HashMap::new(),
        };
        if let Some(since) = since {
            watch.replay(since).await?;
        }
        let live = futures_util::stream::unfold(watch, Watch::next);
        // A shared subscription's hub first renders the REFETCH event its lagging members get.
        let probe = ctx
            .data_opt::<crate::transport::RefetchProbe>()
            .map(|_| StockEvent::refetch(None));
        Ok(futures_util::StreamExt::chain(
            futures_util::stream::iter(probe),
            live,
        ))
    }
}

/// `NOT_FOUND` for a SKU that does not exist, as the stock mutations answer it.
fn unknown_sku(sku: &str, field: &str) -> async_graphql::Error {
    let shown: String = sku.chars().take(64).collect();
    ApiError::NotFound(format!("SKU {shown:?} not found"))
        .extend()
        .extend_with(|_, ext| ext.set("field", field))
}

/// The SKUs of variants, shared by every stock subscription of a gateway: an event names its
/// variants by id, and a thousand dashboards watching every SKU must not each look the same
/// SKU up. SKUs never change once a variant exists, so entries never go stale; the map is
/// emptied when it reaches [`SkuNames::CAPACITY`] entries.
#[derive(Clone, Debug, Default)]
pub struct SkuNames(std::sync::Arc<std::sync::Mutex<HashMap<i64, String>>>);

impl SkuNames {
    /// Most SKUs kept.
    pub const CAPACITY: usize = 100_000;

    fn get(&self, variant_id: i64) -> Option<String> {
        self.lock().get(&variant_id).cloned()
    }

    fn extend(&self, names: impl IntoIterator<Item = (i64, String)>) {
        let mut map = self.lock();
        for (id, sku) in names {
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
            map.insert(id, sku);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One subscription's state.
struct Watch {
    events: broadcast::Receiver<Event>,
    db: DatabaseConnection,
    /// The watched variants; `None`: all.
    variants: Option<HashSet<i64>>,
    /// The watched locations and their codes.
    locations: HashMap<i64, String>,
    /// The last version sent per (variant, location).
    sent: HashMap<(i64, i64), i64>,
    /// The gateway's shared SKU names.
    sku_of: SkuNames,
    queue: VecDeque<StockEvent>,
    /// Changes that came ahead of a missing version, per level: until when they wait, and the
    /// changes by version.
    ahead: HashMap<(i64, i64), (Instant, BTreeMap<i64, LevelState>)>,
}

impl Watch {
    /// Queues the current state of every watched level above the version the client holds.
    async fn replay(&mut self, since: Vec<HeldStockVersion>) -> async_graphql::Result<()> {
        let skus: Vec<String> = since.iter().map(|h| h.sku.clone()).collect();
        let by_sku = replay::variants_by_skus(&self.db, &skus)
            .await
            .map_err(|err| match err {
                CoreError::NotFound { key, .. } => unknown_sku(&key, "since"),
                err => ApiError::from(err).extend(),
            })?;
        let mut held = HashMap::new();
        for (index, level) in since.iter().enumerate() {
            let location = decode_id(
                Kind::StockLocation,
                &level.location_id,
                &format!("since[{index}].locationId"),
            )
            .api()?;
            held.insert((by_sku[&level.sku], location), level.version);
        }

        let variants: Option<Vec<i64>> =
            self.variants.as_ref().map(|v| v.iter().copied().collect());
        let locations: Vec<i64> = self.locations.keys().copied().collect();
        let moved =
            replay::levels_since(&self.db, variants.as_deref(), &locations, &held, MAX_REPLAY)
                .await
                .map_err(ApiError::from)
                .api()?;
        let Some(moved) = moved else {
            self.queue.push_back(StockEvent::refetch(None));
            return Ok(());
        };
        // A level the client holds at its current version counts as sent: a change it has not
        // seen that comes ahead of another it has not seen waits for it, as it would for a
        // change this subscription sent. (A level that moved is sent as it is now.)
        let moved_levels: HashSet<(i64, i64)> = moved
            .iter()
            .map(|l| (l.variant_id, l.location_id))
            .collect();
        for (&key, &version) in &held {
            if self.locations.contains_key(&key.1) && !moved_levels.contains(&key) {
                self.sent.insert(key, version);
            }
        }
        let states: Vec<LevelState> = moved
            .into_iter()
            .map(|l| LevelState {
                variant_id: l.variant_id,
                location_id: l.location_id,
                on_hand: l.on_hand,
                reserved: l.reserved,
                version: l.version,
                sequence: l.sequence,
            })
            .collect();
        self.queue_levels(StockEventKind::Current, states).await;
        Ok(())
    }

    /// The next event to send: queued ones first, then the bus's (and the changes whose wait
    /// for a missing version is over).
    async fn next(mut self) -> Option<(StockEvent, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((event, self));
            }
            let received = match self.ahead.values().map(|(until, _)| *until).min() {
                Some(until) => tokio::select! {
                    received = self.events.recv() => Some(received),
                    () = tokio::time::sleep_until(until) => None,
                },
                None => Some(self.events.recv().await),
            };
            match received {
                None => self.release_ahead(Some(Instant::now())),
                Some(Ok(Event::StockChanged { levels })) => {
                    self.queue_levels(StockEventKind::Changed, levels).await;
                }
                Some(Ok(Event::EventsMissed)) => {
                    self.release_ahead(None);
                    self.queue.push_back(StockEvent::refetch(None));
                }
                Some(Ok(
                    Event::PricesChanged { .. }
                    | Event::OrderStatusChanged { .. }
                    | Event::StockHoldsChanged { .. }
                    | Event::CatalogChanged,
                )) => {}
                Some(Err(RecvError::Lagged(missed))) => {
                    self.release_ahead(None);
                    self.queue.push_back(StockEvent::refetch(Some(missed)));
                }
                Some(Err(RecvError::Closed)) => return None,
            }
        }
    }

    /// Sends the changes that waited for a missing version, in version order: those whose wait
    /// ended by `now`, or all (`None`).
    fn release_ahead(&mut self, now: Option<Instant>) {
        let due: Vec<(i64, i64)> = self
            .ahead
            .iter()
            .filter(|(_, (until, _))| now.is_none_or(|now| *until <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            if let Some((_, waiting)) = self.ahead.remove(&key) {
                for level in waiting.into_values() {
                    self.send_level(StockEventKind::Changed, level);
                }
            }
        }
    }

    /// Queues `level` to be sent (it is newer than what was sent for it).
    fn send_level(&mut self, kind: StockEventKind, level: LevelState) {
        let key = (level.variant_id, level.location_id);
        if self
            .sent
            .get(&key)
            .is_some_and(|&sent| level.version <= sent)
        {
            return;
        }
        self.sent.insert(key, level.version);
        let sku = self.sku_of.get(level.variant_id).unwrap_or_default();
        let location = &self.locations[&level.location_id];
        self.queue
            .push_back(StockEvent::level(kind, sku, location, level));
    }

    /// Queues the watched levels among `levels` that are newer than what was sent.
    async fn queue_levels(&mut self, kind: StockEventKind, levels: Vec<LevelState>) {
        let fresh: Vec<LevelState> = levels
            .into_iter()
            .filter(|l| {
                self.locations.contains_key(&l.location_id)
                    && self
                        .variants
                        .as_ref()
                        .is_none_or(|v| v.contains(&l.variant_id))
                    && self
                        .sent
                        .get(&(l.variant_id, l.location_id))
                        .is_none_or(|&sent| l.version > sent)
            })
            .collect();
        let mut unknown: Vec<i64> = fresh
            .iter()
            .map(|l| l.variant_id)
            .filter(|id| self.sku_of.get(*id).is_none())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            match replay::skus_of(&self.db, &unknown).await {
                Ok(found) => self.sku_of.extend(found),
                Err(err) => {
                    // Without the SKUs the events cannot be named: tell the client to reload.
                    tracing::warn!(error = %err, "loading the SKUs of stock events failed");
                    self.queue.push_back(StockEvent::refetch(None));
                    return;
                }
            }
        }
        for level in fresh {
            let key = (level.variant_id, level.location_id);
            let missing = self
                .sent
                .get(&key)
                .is_some_and(|&sent| level.version > sent + 1);
            if kind == StockEventKind::Changed && missing {
                // Ahead of a version still on its way: wait for it.
                let (_, waiting) = self
                    .ahead
                    .entry(key)
                    .or_insert_with(|| (Instant::now() + REORDER_WAIT, BTreeMap::new()));
                waiting.insert(level.version, level);
                continue;
            }
            self.send_level(kind, level);
            // The changes that waited for this one follow, as far as they run on unbroken.
            while let Some((_, waiting)) = self.ahead.get_mut(&key) {
                let next = self.sent.get(&key).map_or(i64::MAX, |&sent| sent + 1);
                waiting.retain(|&version, _| version >= next);
                let Some(level) = waiting.remove(&next) else {
                    match waiting.is_empty() {
                        true => {
                            self.ahead.remove(&key);
                        }
                        // The rest waits for the next missing version, a whole wait again.
                        false => {
                            if let Some(entry) = self.ahead.get_mut(&key) {
                                entry.0 = Instant::now() + REORDER_WAIT;
                            }
                        }
                    }
                    break;
                };
                self.send_level(kind, level);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(variant_id: i64, location_id: i64, version: i64) -> LevelState {
        LevelState {
            variant_id,
            location_id,
            on_hand: 10,
            reserved: 1,
            version,
            sequence: version * 10,
        }
    }

    /// A watch of variant 1 at location 7 on a bus of `capacity` events; no database (the SKU
    /// is known already).
    fn watch(capacity: usize) -> (broadcast::Sender<Event>, Watch) {
        let (sender, events) = broadcast::channel(capacity);
        let watch = Watch {
            events,
            db: DatabaseConnection::default(),
            variants: Some(HashSet::from([1])),
            locations: HashMap::from([(7, "WH-EAST".to_owned())]),
            sent: HashMap::new(),
            sku_of: {
                let names = SkuNames::default();
                names.extend([(1, "TS-0001-M".to_owned())]);
                names
            },
            queue: VecDeque::new(),
            ahead: HashMap::new(),
        };
        (sender, watch)
    }

    fn changed(levels: Vec<LevelState>) -> Event {
        Event::StockChanged { levels }
    }

    #[tokio::test]
    async fn watched_levels_go_out_once_in_version_order() {
        let (bus, watch) = watch(16);
        bus.send(changed(vec![
            level(1, 7, 1),
            level(2, 7, 1),
            level(1, 8, 1),
        ]))
        .unwrap();
        // Version 3 announced before version 2 waits for it; a repeat is dropped.
        bus.send(changed(vec![level(1, 7, 3)])).unwrap();
        bus.send(changed(vec![level(1, 7, 2)])).unwrap();
        bus.send(changed(vec![level(1, 7, 3)])).unwrap();
        bus.send(changed(vec![level(1, 7, 4)])).unwrap();
        let (first, mut watch) = watch.next().await.unwrap();
        assert_eq!(first.kind, StockEventKind::Changed);
        assert_eq!(first.sku.as_deref(), Some("TS-0001-M"));
        assert_eq!(first.location.as_deref(), Some("WH-EAST"));
        assert_eq!((first.version, first.available), (Some(1), Some(9)));
        for version in 2..=4 {
            let (event, next) = watch.next().await.unwrap();
            assert_eq!(event.version, Some(version));
            watch = next;
        }
        // Version 6 without 5: it goes out once its wait is over, and a late 5 is dropped.
        bus.send(changed(vec![level(1, 7, 6)])).unwrap();
        let (event, watch) = watch.next().await.unwrap();
        assert_eq!(event.version, Some(6));
        bus.send(changed(vec![level(1, 7, 5)])).unwrap();
        bus.send(changed(vec![level(1, 7, 7)])).unwrap();
        let (event, _watch) = watch.next().await.unwrap();
        assert_eq!(event.version, Some(7));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_refetch_then_goes_on() {
        let (bus, watch) = watch(2);
        for version in 1..=5 {
            bus.send(changed(vec![level(1, 7, version)])).unwrap();
        }
        let (refetch, watch) = watch.next().await.unwrap();
        assert_eq!(refetch.kind, StockEventKind::Refetch);
        assert_eq!(refetch.missed, Some(3));
        assert_eq!(refetch.version, None);
        let (next, watch) = watch.next().await.unwrap();
        assert_eq!(
            (next.kind, next.version),
            (StockEventKind::Changed, Some(4))
        );
        let (last, _) = watch.next().await.unwrap();
        assert_eq!(last.version, Some(5));
    }
}

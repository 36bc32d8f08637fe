//! The bus in cluster mode: events to and from the other instances through Redis pub/sub.
//!
//! Publishing queues the event for one publisher task (so the events of this instance reach
//! Redis in the order they were published, and a request never waits for Redis); a
//! subscriber task holds a dedicated pub/sub connection and forwards the events of the other
//! instances into the local broadcast channel. Both stop with [`BusTask::stop`].
//!
//! The sequence: the publisher sends each message with one Lua script that `INCR`s
//! `<channel>:seq` and `PUBLISH`es the message with that number spliced in as `seq`, so the
//! numbers are the order of the messages. The subscriber task keeps `applied`, the highest
//! number it has heard (its own messages included, which it does not deliver again). After
//! each (re)subscription it reads the sequence with `GET`, then pings its pub/sub connection
//! and delivers what arrived before the answer (messages published between `SUBSCRIBE` and
//! `GET`, numbered at most the count read), and only then counts as subscribed. A message
//! numbered beyond `applied + 1` means some were lost: [`Event::EventsMissed`] is delivered
//! before it.
//!
//! Freshness: [`Link::is_current`] is "subscribed, and `GET <channel>:seq` ≤ `applied`": any
//! message numbered before the call was then applied here (or announced missed). Flushing:
//! the outbox counts the messages it queued, the publisher those it finished (sent or
//! dropped); [`Link::flushed`] waits for the second count to reach the first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub, PubSubStream};
use redis::{AsyncCommands, Client, Msg, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Appliers, CAPACITY, Event, EventBus};
use crate::limits::RedisConnectError;
use crate::server::redact;

/// The version tag of the wire format; messages with another version are skipped (with a
/// warning), so instances of different releases can run side by side. Version 2: messages
/// are numbered (`seq`).
pub const WIRE_VERSION: u32 = 2;
/// At most one warning line per kind (publishing, subscribing, decoding) in this interval;
/// the failures in between are counted in the next line.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// How long the start waits for the subscription, one PUBLISH for an answer, and
/// [`Link::flushed`] for the publisher.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`Link::is_current`] waits for the sequence (it runs once per read request; a
/// slower Redis sends reads to the database).
const FRESHNESS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed PUBLISH, events are not sent for this long (they are dropped, counted):
/// a Redis that is down does not make the queue wait a timeout per event.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);
/// After dropped events, how often the publisher tries to tell the others they missed some.
const MISSED_RETRY: Duration = Duration::from_millis(250);
/// Backoff of the subscriber's reconnections: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A silent pub/sub connection is pinged this often (a half-open one is noticed).
const PING_EVERY: Duration = Duration::from_secs(15);
/// On stop, the queued events are still sent within this time.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Numbers and sends one message atomically: `INCR KEYS[1]` (the sequence), then `PUBLISH`
/// on channel `ARGV[1]` of the JSON object `ARGV[2]` with `"seq":<n>` spliced in first;
/// returns the number.
const PUBLISH_NUMBERED: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], '{"seq":' .. string.format('%d', n) .. ',' .. string.sub(ARGV[2], 2))
return n
"#;

/// One event on the wire: `{"seq":7,"v":2,"origin":"<instance id>","event":{"type":…}}`.
/// This instance encodes it without `seq`; the publishing script adds it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    #[serde(default, skip_serializing_if = "is_unnumbered")]
    seq: u64,
    v: u32,
    origin: String,
    event: Event,
}

fn is_unnumbered(seq: &u64) -> bool {
    *seq == 0
}

/// Only the version, read first so that a newer format is recognised as such.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

/// Encodes an event as this instance's message (not numbered yet).
fn encode(origin: &str, event: &Event) -> String {
    serde_json::to_string(&Envelope {
        seq: 0,
        v: WIRE_VERSION,
        origin: origin.to_owned(),
        event: event.clone(),
    })
    .expect("events serialize")
}

/// What a received message means.
#[derive(Debug, PartialEq)]
enum Decoded {
    /// Message `seq`: an event of another instance.
    Foreign { seq: u64, event: Event },
    /// Message `seq`: one of this instance's own (already delivered locally).
    Own { seq: u64 },
    /// A message of another wire version.
    OtherVersion(u32),
}

fn decode(own: &str, payload: &[u8]) -> Result<Decoded, serde_json::Error> {
    let Version { v } = serde_json::from_slice(payload)?;
    if v != WIRE_VERSION {
        return Ok(Decoded::OtherVersion(v));
    }
    let Envelope {
        seq, origin, event, ..
    } = serde_json::from_slice(payload)?;
    Ok(if origin == own {
        Decoded::Own { seq }
    } else {
        Decoded::Foreign { seq, event }
    })
}

/// A warning at most once per [`WARN_EVERY`], with the count of those not logged.
struct Throttled {
    last: Mutex<Option<Instant>>,
    unreported: AtomicU64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: Mutex::new(None),
            unreported: AtomicU64::new(0),
        }
    }

    /// `Some(failures not logged since the last line)` when this one is to be logged.
    fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.unreported.swap(0, Ordering::Relaxed))
    }
}

/// The bus's side of the link to Redis, shared by every clone of the bus: the outbox of the
/// publisher task, and what the subscriber task has applied.
#[derive(Clone)]
pub(super) struct Link {
    queue: mpsc::Sender<String>,
    /// How many messages were queued so far; locked while queueing, so that the count and
    /// the order of the queue agree.
    queued: Arc<Mutex<u64>>,
    /// How many queued messages the publisher has finished (sent or dropped).
    finished: watch::Receiver<u64>,
    origin: Arc<str>,
    channel: Arc<str>,
    /// `<channel>:seq`, the number of the last message sent on the channel.
    seq_key: Arc<str>,
    url: Arc<str>,
    full: Arc<Throttled>,
    /// Set when the queue was full and an event was dropped: the publisher then tells the
    /// other instances they missed events.
    overflowed: Arc<AtomicBool>,
    /// The highest message number the subscriber task has heard (and applied).
    applied: Arc<AtomicU64>,
    /// Whether the subscriber task is subscribed (and has caught up with the sequence).
    subscribed: Arc<AtomicBool>,
    /// Reads the sequence (a short response timeout).
    reader: ConnectionManager,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .field("channel", &self.channel)
            .field("origin", &self.origin)
            .field("applied", &self.applied)
            .field("subscribed", &self.subscribed)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Queues `event` for Redis; a full queue (Redis slow or down) drops it with a warning.
    pub(super) fn send(&self, event: &Event) {
        let message = encode(&self.origin, event);
        {
            let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
            if self.queue.try_send(message).is_ok() {
                *queued += 1;
                return;
            }
        }
        self.overflowed.store(true, Ordering::Relaxed);
        if let Some(unreported) = self.full.admit() {
            tracing::warn!(
                redis = %self.url,
                channel = %self.channel,
                unreported,
                "the queue of events for Redis is full: an event reached this instance's \
                 subscribers only"
            );
        }
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether Redis answers a `PING` in time (for readiness).
    pub(super) async fn answers(&self) -> bool {
        let mut reader = self.reader.clone();
        let pong = tokio::time::timeout(
            FRESHNESS_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut reader),
        )
        .await;
        matches!(pong, Ok(Ok(_)))
    }

    /// Subscribed, and no message numbered beyond the last one applied here.
    pub(super) async fn is_current(&self) -> bool {
        if !self.subscribed.load(Ordering::Acquire) {
            return false;
        }
        let mut reader = self.reader.clone();
        let remote = tokio::time::timeout(
            FRESHNESS_TIMEOUT,
            reader.get::<_, Option<u64>>(&*self.seq_key),
        )
        .await;
        match remote {
            Ok(Ok(remote)) => remote.unwrap_or(0) <= self.applied.load(Ordering::Acquire),
            Ok(Err(_)) | Err(_) => false,
        }
    }

    /// Waits (at most [`CALL_TIMEOUT`]) until the publisher has finished every message queued
    /// before the call; at once when the publisher has stopped.
    pub(super) async fn flushed(&self) {
        let target = *self.queued.lock().unwrap_or_else(PoisonError::into_inner);
        let mut finished = self.finished.clone();
        let _ = tokio::time::timeout(CALL_TIMEOUT, finished.wait_for(|done| *done >= target)).await;
    }
}

/// The background tasks of a bus in cluster mode.
pub struct BusTask {
    stop: watch::Sender<bool>,
    publisher: JoinHandle<()>,
    subscriber: JoinHandle<()>,
}

impl std::fmt::Debug for BusTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusTask").finish_non_exhaustive()
    }
}

impl BusTask {
    /// Stops subscribing, sends what is still queued (within a bound), and waits for both
    /// tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.subscriber.await;
        let _ = self.publisher.await;
    }
}

impl EventBus {
    /// A bus shared through Redis pub/sub `channel`: subscribes (within a second) before it
    /// returns, so events published by other instances from then on are heard. Start-up fails
    /// when Redis cannot be reached (the URL's password redacted in the error).
    pub async fn connect(url: &str, channel: &str) -> Result<(Self, BusTask), RedisConnectError> {
        let client = open(url)?;
        let fail = |problem: String| RedisConnectError {
            url: redact(url),
            problem,
        };
        let pubsub = match tokio::time::timeout(
            crate::limits::redis::CONNECT_TIMEOUT,
            subscribe(&client, channel),
        )
        .await
        {
            Err(_) => return Err(fail("no answer to SUBSCRIBE in time".to_owned())),
            Ok(Err(err)) => {
                return Err(fail(if err.is_connection_refusal() {
                    format!("{err}; is Redis running and listening there?")
                } else {
                    err.to_string()
                }));
            }
            Ok(Ok(pubsub)) => pubsub,
        };
        Self::with_redis(client, url, channel, Some(pubsub))
    }

    /// A bus shared through Redis that connects in the background (also when Redis is down:
    /// events then reach this process's subscribers only). Its first subscription is announced
    /// as [`Event::EventsMissed`]: state loaded before it may have missed events.
    pub fn connect_lazily(url: &str, channel: &str) -> Result<(Self, BusTask), RedisConnectError> {
        let client = open(url)?;
        Self::with_redis(client, url, channel, None)
    }

    fn with_redis(
        client: Client,
        url: &str,
        channel: &str,
        pubsub: Option<PubSub>,
    ) -> Result<(Self, BusTask), RedisConnectError> {
        let manager = |response_timeout: Duration| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CALL_TIMEOUT))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(CALL_TIMEOUT);
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|err| {
                RedisConnectError {
                    url: redact(url),
                    problem: err.to_string(),
                }
            })
        };
        let connection = manager(CALL_TIMEOUT)?;
        let reader = manager(FRESHNESS_TIMEOUT)?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let (queue, queued) = mpsc::channel(CAPACITY);
        let (finished_sender, finished) = watch::channel(0);
        let (stop, stopped) = watch::channel(false);
        let origin: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let seq_key: Arc<str> = format!("{channel}:seq").into();
        let channel: Arc<str> = channel.into();
        let url: Arc<str> = redact(url).into();
        let overflowed = Arc::new(AtomicBool::new(false));
        let appliers = Appliers::default();
        let applied = Arc::new(AtomicU64::new(0));
        let subscribed = Arc::new(AtomicBool::new(false));
        let publisher = tokio::spawn(publish_queued(
            connection,
            queued,
            Publisher {
                origin: origin.clone(),
                overflowed: overflowed.clone(),
                finished: finished_sender,
                seq_key: seq_key.clone(),
                channel: channel.clone(),
                url: url.clone(),
            },
            stopped.clone(),
        ));
        let lost = pubsub.is_none();
        let subscriber = tokio::spawn(forward_foreign(
            pubsub,
            Subscriber {
                client,
                reader: reader.clone(),
                inbox: Inbox {
                    sender: sender.clone(),
                    appliers: appliers.clone(),
                    applied: applied.clone(),
                },
                subscribed: subscribed.clone(),
                origin: origin.clone(),
                channel: channel.clone(),
                seq_key: seq_key.clone(),
                url: url.clone(),
                decode_warnings: Throttled::new(),
                backoff: BACKOFF_FIRST,
                lost,
            },
            stopped,
        ));
        let bus = Self {
            sender,
            appliers,
            redis: Some(Link {
                queue,
                queued: Arc::default(),
                finished,
                origin,
                channel,
                seq_key,
                url,
                full: Arc::new(Throttled::new()),
                overflowed,
                applied,
                subscribed,
                reader,
            }),
        };
        Ok((
            bus,
            BusTask {
                stop,
                publisher,
                subscriber,
            },
        ))
    }
}

fn open(url: &str) -> Result<Client, RedisConnectError> {
    Client::open(url).map_err(|err| RedisConnectError {
        url: redact(url),
        problem: format!("not a Redis URL: {err}"),
    })
}

/// Resolves once the tasks are to stop (also when their [`BusTask`] was dropped).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// A pub/sub connection subscribed to `channel`.
async fn subscribe(client: &Client, channel: &str) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// What the publisher task needs besides its connection and queue.
struct Publisher {
    /// The instance's id.
    origin: Arc<str>,
    /// Raised by the outbox when it dropped an event.
    overflowed: Arc<AtomicBool>,
    /// The count of queued messages finished, for [`Link::flushed`].
    finished: watch::Sender<u64>,
    seq_key: Arc<str>,
    channel: Arc<str>,
    url: Arc<str>,
}

/// Sends the queued messages in order, numbered, until stopped (then what is queued, within
/// [`DRAIN_TIMEOUT`]).
async fn publish_queued(
    mut connection: ConnectionManager,
    mut queued: mpsc::Receiver<String>,
    publisher: Publisher,
    mut stopped: watch::Receiver<bool>,
) {
    let Publisher {
        origin,
        overflowed,
        finished,
        seq_key,
        channel,
        url,
    } = publisher;
    let script = Script::new(PUBLISH_NUMBERED);
    let warnings = Throttled::new();
    let missed = encode(&origin, &Event::EventsMissed);
    let publish_once = async |connection: &mut ConnectionManager, message: &str| {
        let published = tokio::time::timeout(
            CALL_TIMEOUT,
            script
                .key(&*seq_key)
                .arg(&*channel)
                .arg(message)
                .invoke_async::<u64>(connection),
        )
        .await;
        match published {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err((err.to_string(), true)),
            Err(_) => Err(("no answer in time".to_owned(), false)),
        }
    };
    // A connection that died while idle fails its first call (a broken pipe) and reconnects:
    // one immediate retry, so a quiet hour does not cost the next event.
    let publish = async |connection: &mut ConnectionManager, message: &str| match publish_once(
        connection, message,
    )
    .await
    {
        Err((_, true)) => publish_once(connection, message)
            .await
            .map_err(|(problem, _)| problem),
        other => other.map_err(|(problem, _)| problem),
    };
    let mut state = PublishState::default();
    let send = async |state: &mut PublishState,
                      connection: &mut ConnectionManager,
                      message: String| {
        if state
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            state.dropped = true;
            if let Some(unreported) = warnings.admit() {
                tracing::warn!(redis = %url, channel = %channel, unreported, "Redis is unreachable: an event reached this instance's subscribers only");
            }
            return;
        }
        if overflowed.swap(false, Ordering::Relaxed) {
            state.dropped = true;
        }
        if state.dropped && publish(connection, &missed).await.is_ok() {
            state.dropped = false;
        }
        let Err(problem) = publish(connection, &message).await else {
            state.paused_until = None;
            return;
        };
        state.paused_until = Some(Instant::now() + PUBLISH_PAUSE);
        state.dropped = true;
        if let Some(unreported) = warnings.admit() {
            tracing::warn!(redis = %url, channel = %channel, unreported, error = %problem, "publishing an event to Redis failed: it reached this instance's subscribers only");
        }
    };
    // After a dropped event the others are told they missed some as soon as Redis answers,
    // not only before this instance's next event: until then they cannot know.
    let mut retry = tokio::time::interval(MISSED_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let owing = state.dropped || overflowed.load(Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = stop_requested(&mut stopped) => break,
            message = queued.recv() => match message {
                Some(message) => {
                    send(&mut state, &mut connection, message).await;
                    finished.send_modify(|done| *done += 1);
                }
                None => return,
            },
            _ = retry.tick(), if owing => {
                if publish(&mut connection, &missed).await.is_ok() {
                    overflowed.store(false, Ordering::Relaxed);
                    state = PublishState::default();
                    tracing::info!(channel = %channel, "Redis answers again: the other instances were told they missed events");
                }
            }
        }
    }
    let drain = async {
        while let Ok(message) = queued.try_recv() {
            send(&mut state, &mut connection, message).await;
            finished.send_modify(|done| *done += 1);
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// The publisher's memory of failures.
#[derive(Default)]
struct PublishState {
    /// Events are not sent until then (Redis just failed).
    paused_until: Option<Instant>,
    /// Events were dropped: the others must be told before anything else.
    dropped: bool,
}

/// Where the subscriber task delivers: this instance's appliers, then its broadcast channel.
struct Inbox {
    sender: broadcast::Sender<Event>,
    appliers: Appliers,
    /// The highest message number heard; raised once the message is applied.
    applied: Arc<AtomicU64>,
}

impl Inbox {
    fn deliver(&self, event: Event) {
        self.appliers.apply(&event);
        let _ = self.sender.send(event);
    }

    /// Message number `seq` arrived, with the event to deliver (none for this instance's
    /// own). A number beyond the next one means messages were lost: that is delivered first.
    /// The count moves once the event is applied, before subscribers hear it (a subscriber
    /// that heard it finds the bus current).
    fn heard(&self, seq: u64, event: Option<Event>) {
        let applied = self.applied.load(Ordering::Acquire);
        if seq > applied + 1 {
            tracing::info!(
                applied,
                seq,
                "a gap in the event sequence: subscribers are told to reload"
            );
            self.deliver(Event::EventsMissed);
        }
        if let Some(event) = &event {
            tracing::debug!(?event, seq, "event from another instance");
            self.appliers.apply(event);
        }
        // Numbers at most `applied` were published between SUBSCRIBE and GET: delivered, but
        // the count does not move back.
        self.applied.fetch_max(seq, Ordering::AcqRel);
        if let Some(event) = event {
            let _ = self.sender.send(event);
        }
    }
}

/// The subscriber task's state across its reconnections.
struct Subscriber {
    client: Client,
    /// Reads the sequence after each subscription.
    reader: ConnectionManager,
    inbox: Inbox,
    subscribed: Arc<AtomicBool>,
    origin: Arc<str>,
    channel: Arc<str>,
    seq_key: Arc<str>,
    url: Arc<str>,
    decode_warnings: Throttled,
    backoff: Duration,
    /// Set while events may have been lost: the subscription was lost, or never made yet by a
    /// lazily connected bus. The next subscription announces [`Event::EventsMissed`].
    lost: bool,
}

impl Subscriber {
    /// Follows a fresh subscription until it fails (`Some(problem)`) or the task is to stop
    /// (`None`): catches up with the sequence, then delivers each message.
    async fn follow(
        &mut self,
        pubsub: PubSub,
        stopped: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let (mut sink, mut messages) = pubsub.split();
        let mut reader = self.reader.clone();
        let count = tokio::select! {
            _ = stop_requested(stopped) => return None,
            count = tokio::time::timeout(CALL_TIMEOUT, reader.get::<_, Option<u64>>(&*self.seq_key)) => count,
        };
        let count = match count {
            Ok(Ok(count)) => count.unwrap_or(0),
            Ok(Err(err)) => return Some(format!("reading {}: {err}", self.seq_key)),
            Err(_) => return Some(format!("no answer to GET {} in time", self.seq_key)),
        };
        if std::mem::take(&mut self.lost) {
            tracing::info!(channel = %self.channel, "subscribed to the events of other instances again; subscribers are told to reload");
            self.inbox.deliver(Event::EventsMissed);
        }
        // Not `max`: the count only moves back when Redis lost its data, and then the
        // subscription was lost too (announced just above).
        self.inbox.applied.store(count, Ordering::Release);
        // The messages numbered up to `count` since SUBSCRIBE arrive before the answer to a
        // PING sent now: deliver them before counting as subscribed (and current).
        match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Some(err.to_string()),
            Err(_) => return Some("no answer to PING in time".to_owned()),
        }
        if let Some(problem) = self.deliver_buffered(&mut messages) {
            return Some(problem);
        }
        self.backoff = BACKOFF_FIRST;
        self.subscribed.store(true, Ordering::Release);
        let mut pings = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                _ = stop_requested(stopped) => return None,
                message = messages.next() => {
                    let Some(message) = message else {
                        return Some("the connection was closed".to_owned());
                    };
                    self.receive(&message);
                }
                _ = pings.tick() => {
                    match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Some(err.to_string()),
                        Err(_) => return Some("no answer to PING in time".to_owned()),
                    }
                }
            }
        }
    }

    /// Delivers the messages already received, without waiting.
    fn deliver_buffered(&self, messages: &mut PubSubStream) -> Option<String> {
        while let Some(message) = messages.next().now_or_never() {
            let Some(message) = message else {
                return Some("the connection was closed".to_owned());
            };
            self.receive(&message);
        }
        None
    }

    fn receive(&self, message: &Msg) {
        match decode(&self.origin, message.get_payload_bytes()) {
            Ok(Decoded::Foreign { seq, event }) => self.inbox.heard(seq, Some(event)),
            Ok(Decoded::Own { seq }) => self.inbox.heard(seq, None),
            Ok(Decoded::OtherVersion(v)) => {
                if let Some(unreported) = self.decode_warnings.admit() {
                    tracing::warn!(channel = %self.channel, version = v, unreported, "skipped an event of another wire version (expected {WIRE_VERSION})");
                }
            }
            Err(err) => {
                if let Some(unreported) = self.decode_warnings.admit() {
                    tracing::warn!(channel = %self.channel, error = %err, unreported, "skipped a message that is not an event");
                }
            }
        }
    }
}

/// Holds a subscription to the channel (reconnecting with backoff) and delivers the events of
/// other instances, until stopped.
async fn forward_foreign(
    mut pubsub: Option<PubSub>,
    mut subscriber: Subscriber,
    mut stopped: watch::Receiver<bool>,
) {
    let connection_warnings = Throttled::new();
    loop {
        let connected = match pubsub.take() {
            Some(pubsub) => Ok(pubsub),
            None => tokio::select! {
                _ = stop_requested(&mut stopped) => return,
                connected = tokio::time::timeout(crate::limits::redis::CONNECT_TIMEOUT, subscribe(&subscriber.client, &subscriber.channel)) => match connected {
                    Ok(result) => result.map_err(|err| err.to_string()),
                    Err(_) => Err("no answer in time".to_owned()),
                },
            },
        };
        let problem = match connected {
            Ok(pubsub) => subscriber.follow(pubsub, &mut stopped).await,
            Err(problem) => Some(problem),
        };
        subscriber.subscribed.store(false, Ordering::Release);
        let Some(problem) = problem else {
            return;
        };
        subscriber.lost = true;
        let backoff = subscriber.backoff;
        if let Some(unreported) = connection_warnings.admit() {
            tracing::warn!(redis = %subscriber.url, channel = %subscriber.channel, error = %problem, unreported, retry_in = ?backoff, "not subscribed to the events of other instances; reconnecting");
        }
        tokio::select! {
            _ = stop_requested(&mut stopped) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        subscriber.backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LevelState;

    fn events() -> Vec<Event> {
        vec![
            Event::PricesChanged {
                list_ids: vec![1, 2],
                variant_ids: vec![],
                promotion_ids: vec![7],
            },
            Event::StockChanged {
                levels: vec![LevelState {
                    variant_id: 3,
                    location_id: 4,
                    on_hand: -5,
                    reserved: 6,
                    version: i64::MAX,
                    sequence: 8,
                }],
            },
        ]
    }

    /// The message as the publishing script sends it: numbered `seq`.
    fn numbered(seq: u64, message: &str) -> String {
        format!("{{\"seq\":{seq},{}", &message[1..])
    }

    #[test]
    fn events_keep_their_content_on_the_wire() {
        for (seq, event) in (1..).zip(events()) {
            let message = encode("a", &event);
            let value: serde_json::Value = serde_json::from_str(&message).unwrap();
            assert_eq!(value["v"], WIRE_VERSION, "{message}");
            assert_eq!(value["origin"], "a", "{message}");
            assert!(value["event"]["type"].is_string(), "{message}");
            assert!(value.get("seq").is_none(), "numbered by Redis: {message}");
            let message = numbered(seq, &message);
            assert_eq!(
                decode("b", message.as_bytes()).unwrap(),
                Decoded::Foreign {
                    seq,
                    event: event.clone()
                }
            );
            assert_eq!(
                decode("a", message.as_bytes()).unwrap(),
                Decoded::Own { seq }
            );
        }
        assert_eq!(
            decode(
                "b",
                br#"{"v":1,"origin":"a","event":{"type":"EventsMissed"}}"#
            )
            .unwrap(),
            Decoded::OtherVersion(1)
        );
        assert_eq!(
            decode(
                "b",
                br#"{"seq":5,"v":3,"origin":"a","event":{"type":"New"}}"#
            )
            .unwrap(),
            Decoded::OtherVersion(3)
        );
        assert!(decode("b", b"not json").is_err());
        assert!(
            decode(
                "b",
                br#"{"seq":5,"v":2,"origin":"a","event":{"type":"New"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn warnings_are_throttled() {
        let throttled = Throttled::new();
        assert_eq!(throttled.admit(), Some(0));
        assert_eq!(throttled.admit(), None);
        assert_eq!(throttled.admit(), None);
        assert_eq!(throttled.unreported.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn an_unreachable_redis_still_delivers_locally() {
        let (bus, task) = EventBus::connect_lazily("redis://:s3cret@127.0.0.1:1", "x:events")
            .expect("a Redis URL");
        assert_eq!(bus.redis_channel(), Some("x:events"));
        assert!(!format!("{bus:?}").contains("s3cret"));
        let mut local = bus.subscribe();
        for event in events() {
            assert_eq!(bus.publish(event.clone()), 1);
            let heard = tokio::time::timeout(Duration::from_secs(5), local.recv())
                .await
                .expect("delivered at once")
                .unwrap();
            assert_eq!(heard, event);
        }
        tokio::time::timeout(Duration::from_secs(10), task.stop())
            .await
            .expect("the tasks stop");
        assert!(local.try_recv().is_err(), "each event once");
        let err = EventBus::connect("redis://:s3cret@127.0.0.1:1", "x:events")
            .await
            .expect_err("nothing listens on port 1")
            .to_string();
        assert!(err.contains("redis://:***@127.0.0.1:1"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    /// Two buses on one Redis channel, as two instances: each event once on each.
    #[tokio::test]
    async fn two_buses_sharing_redis_hear_each_event_once() {
        let Some(url) = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            eprintln!("skipped: needs TEST_REDIS_URL (Redis)");
            return;
        };
        let channel = format!("test:{}:events", uuid::Uuid::new_v4().simple());
        let (a, a_task) = EventBus::connect(&url, &channel).await.unwrap();
        let (b, b_task) = EventBus::connect(&url, &channel).await.unwrap();
        let mut on_a = a.subscribe();
        let mut on_b = b.subscribe();
        let wait = Duration::from_secs(5);
        for event in events() {
            assert_eq!(a.publish(event.clone()), 1);
            let heard = tokio::time::timeout(wait, on_b.recv()).await.unwrap();
            assert_eq!(heard.unwrap(), event);
            assert_eq!(on_a.recv().await.unwrap(), event);
        }
        // A marker the other way: anything A heard twice would arrive before it.
        let marker = Event::PricesChanged {
            list_ids: vec![99],
            variant_ids: vec![],
            promotion_ids: vec![],
        };
        b.publish(marker.clone());
        let heard = tokio::time::timeout(wait, on_a.recv()).await.unwrap();
        assert_eq!(heard.unwrap(), marker, "A heard its own event twice");
        assert_eq!(on_b.recv().await.unwrap(), marker);
        a_task.stop().await;
        b_task.stop().await;
        assert!(on_a.try_recv().is_err() && on_b.try_recv().is_err());
    }

    fn test_redis_url() -> Option<String> {
        let url = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty());
        if url.is_none() {
            eprintln!("skipped: needs TEST_REDIS_URL (Redis)");
        }
        url
    }

    fn fresh_channel() -> String {
        format!("test:{}:events", uuid::Uuid::new_v4().simple())
    }

    /// An applier recording every event it is given.
    fn recorder(bus: &EventBus) -> Arc<Mutex<Vec<Event>>> {
        let applied: Arc<Mutex<Vec<Event>>> = Arc::default();
        let record = applied.clone();
        bus.on_event(Arc::new(move |event: &Event| {
            record.lock().unwrap().push(event.clone());
        }));
        applied
    }

    /// Polls until `bus` says it is current (it has subscribed and caught up).
    async fn until_current(bus: &EventBus) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !bus.is_current().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the bus catches up with the sequence");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_never_current_and_flushes_in_bounded_time() {
        let (bus, task) =
            EventBus::connect_lazily("redis://127.0.0.1:1", "x:events").expect("a Redis URL");
        let applied = recorder(&bus);
        for event in events() {
            bus.publish(event);
        }
        assert_eq!(*applied.lock().unwrap(), events(), "applied at once");
        let started = Instant::now();
        bus.flushed().await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert!(!bus.is_current().await);
        tokio::time::timeout(Duration::from_secs(10), task.stop())
            .await
            .expect("the tasks stop");
        let started = Instant::now();
        bus.clone().flushed().await;
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "publisher stopped"
        );
    }

    /// Appliers run at publish on the publishing instance, and before the broadcast on the
    /// others; an instance does not apply its own events twice.
    #[tokio::test]
    async fn appliers_see_each_event_before_subscribers_do() {
        let Some(url) = test_redis_url() else { return };
        let channel = fresh_channel();
        let (a, a_task) = EventBus::connect(&url, &channel).await.unwrap();
        let (b, b_task) = EventBus::connect(&url, &channel).await.unwrap();
        let on_a = recorder(&a);
        let on_b = recorder(&b);
        // The broadcast of B, checked against B's appliers when each event is heard.
        let mut heard_on_b = b.subscribe();
        let applied_when_heard = tokio::spawn({
            let on_b = on_b.clone();
            async move {
                let mut seen = Vec::new();
                for _ in 0..events().len() {
                    let event = heard_on_b.recv().await.unwrap();
                    seen.push((event, on_b.lock().unwrap().clone()));
                }
                seen
            }
        });
        for event in events() {
            a.publish(event.clone());
            assert_eq!(on_a.lock().unwrap().last(), Some(&event));
        }
        let seen = tokio::time::timeout(Duration::from_secs(5), applied_when_heard)
            .await
            .unwrap()
            .unwrap();
        for (n, (event, applied)) in seen.into_iter().enumerate() {
            assert_eq!(event, events()[n]);
            assert!(
                applied.starts_with(&events()[..=n]),
                "applied before broadcast: {applied:?}"
            );
        }
        // A's own messages come back from Redis: a marker from B arrives after them.
        let marker = Event::PricesChanged {
            list_ids: vec![99],
            variant_ids: vec![],
            promotion_ids: vec![],
        };
        let mut heard_on_a = a.subscribe();
        b.publish(marker.clone());
        let heard = tokio::time::timeout(Duration::from_secs(5), heard_on_a.recv()).await;
        assert_eq!(heard.unwrap().unwrap(), marker);
        let mut expected = events();
        expected.push(marker);
        assert_eq!(*on_a.lock().unwrap(), expected, "each event applied once");
        assert_eq!(*on_b.lock().unwrap(), expected);
        a_task.stop().await;
        b_task.stop().await;
    }

    /// After A's change is flushed, B is not current until it has applied it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bus_is_current_once_it_applied_what_others_flushed() {
        let Some(url) = test_redis_url() else { return };
        let channel = fresh_channel();
        let (a, a_task) = EventBus::connect(&url, &channel).await.unwrap();
        let (b, b_task) = EventBus::connect(&url, &channel).await.unwrap();
        until_current(&a).await;
        until_current(&b).await;
        // B's applier holds the event until released: B has heard it but not applied it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let (arrived, mut arrival) = mpsc::unbounded_channel::<()>();
        b.on_event(Arc::new(move |_: &Event| {
            let _ = arrived.send(());
            // Off the runtime's worker meanwhile: its other tasks move to another thread.
            tokio::task::block_in_place(|| {
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(5));
            });
        }));
        let mut on_b = b.subscribe();
        let event = events().remove(0);
        a.publish(event.clone());
        a.flushed().await;
        assert!(!b.is_current().await, "the event is not applied on B yet");
        tokio::time::timeout(Duration::from_secs(5), arrival.recv())
            .await
            .expect("B hears the event");
        assert!(!b.is_current().await, "B is applying it");
        release.send(()).unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(5), on_b.recv()).await;
        assert_eq!(heard.unwrap().unwrap(), event);
        assert!(b.is_current().await, "B applied it");
        // A's own message came back too.
        until_current(&a).await;
        a_task.stop().await;
        b_task.stop().await;
        assert!(!b.is_current().await, "not subscribed any more");
    }

    /// Numbers skipped in the sequence are announced before the next event; a late message
    /// (numbered at most what was applied) is delivered without moving the count back.
    #[tokio::test]
    async fn a_gap_in_the_sequence_is_announced_first() {
        let Some(url) = test_redis_url() else { return };
        let channel = fresh_channel();
        let (a, a_task) = EventBus::connect(&url, &channel).await.unwrap();
        let (b, b_task) = EventBus::connect(&url, &channel).await.unwrap();
        until_current(&b).await;
        let applied = recorder(&b);
        let mut on_b = b.subscribe();
        let next = async |on_b: &mut broadcast::Receiver<Event>| {
            tokio::time::timeout(Duration::from_secs(5), on_b.recv())
                .await
                .expect("an event")
                .unwrap()
        };
        let mut raw = Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let seq_key = format!("{channel}:seq");
        // Messages 1 and 2 lost (never published), then A's.
        let _: u64 = raw.incr(&seq_key, 2).await.unwrap();
        assert!(!b.is_current().await, "the sequence moved past B");
        let event = events().remove(0);
        a.publish(event.clone());
        assert_eq!(next(&mut on_b).await, Event::EventsMissed);
        assert_eq!(next(&mut on_b).await, event);
        assert_eq!(
            *applied.lock().unwrap(),
            [Event::EventsMissed, event.clone()]
        );
        assert!(b.is_current().await);
        // A stray message far ahead, from an instance nobody knows.
        let far = events().remove(1);
        let message = numbered(1000, &encode("elsewhere", &far));
        let _: i64 = raw.publish(&channel, message).await.unwrap();
        assert_eq!(next(&mut on_b).await, Event::EventsMissed);
        assert_eq!(next(&mut on_b).await, far);
        // A late one: delivered, and 1000 stays the count (1001 is no gap).
        let late = Event::OrderStatusChanged {
            order_id: 1,
            status: "LATE".to_owned(),
        };
        let _: i64 = raw
            .publish(&channel, numbered(1, &encode("elsewhere", &late)))
            .await
            .unwrap();
        assert_eq!(next(&mut on_b).await, late);
        raw.set::<_, _, ()>(&seq_key, 1000).await.unwrap();
        a.publish(event.clone());
        assert_eq!(next(&mut on_b).await, event, "no gap after 1000");
        a_task.stop().await;
        b_task.stop().await;
        let _: i64 = raw.del(&seq_key).await.unwrap();
    }

    /// A TCP proxy to Redis whose connections can be cut, as a network failure would.
    struct Proxy {
        url: String,
        connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
        accept: JoinHandle<()>,
    }

    impl Proxy {
        async fn to(redis_url: &str) -> Self {
            let rest = redis_url.trim_start_matches("redis://");
            let target = rest
                .rsplit_once('@')
                .map_or(rest, |(_, host)| host)
                .split('/')
                .next()
                .unwrap()
                .to_owned();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = redis_url.replacen(&target, &listener.local_addr().unwrap().to_string(), 1);
            let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
            let list = connections.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    list.lock().unwrap().push(forward.abort_handle());
                }
            });
            Self {
                url,
                connections,
                accept,
            }
        }

        fn cut(&self) {
            for connection in self.connections.lock().unwrap().drain(..) {
                connection.abort();
            }
        }
    }

    /// A subscription whose connection is cut comes back by itself.
    #[tokio::test]
    async fn the_subscriber_reconnects_after_its_connection_is_cut() {
        let Some(url) = std::env::var("TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            eprintln!("skipped: needs TEST_REDIS_URL (Redis)");
            return;
        };
        let proxy = Proxy::to(&url).await;
        let channel = format!("test:{}:events", uuid::Uuid::new_v4().simple());
        let (a, a_task) = EventBus::connect(&proxy.url, &channel).await.unwrap();
        let (b, b_task) = EventBus::connect(&url, &channel).await.unwrap();
        let mut on_a = a.subscribe();
        proxy.cut();
        // Probes from B until one reaches A again (those sent before A resubscribed are lost).
        let heard = tokio::time::timeout(Duration::from_secs(15), async {
            for n in 0.. {
                let probe = Event::PricesChanged {
                    list_ids: vec![n],
                    variant_ids: vec![],
                    promotion_ids: vec![],
                };
                b.publish(probe.clone());
                if let Ok(heard) =
                    tokio::time::timeout(Duration::from_millis(200), on_a.recv()).await
                {
                    return heard.unwrap();
                }
            }
            unreachable!()
        })
        .await
        .expect("A subscribed again");
        // Its subscribers are told first that events were lost while it was away.
        assert_eq!(heard, Event::EventsMissed);
        let probe = Event::PricesChanged {
            list_ids: vec![-1],
            variant_ids: vec![],
            promotion_ids: vec![],
        };
        b.publish(probe.clone());
        let heard = loop {
            let heard = tokio::time::timeout(Duration::from_secs(5), on_a.recv())
                .await
                .expect("the probes go on")
                .unwrap();
            if heard == probe {
                break heard;
            }
        };
        assert_eq!(heard, probe);
        assert!(
            !proxy.connections.lock().unwrap().is_empty(),
            "heard without a new connection"
        );
        // A's own publisher reconnected too: B hears A again.
        let mut on_b = b.subscribe();
        let event = events().remove(1);
        let heard = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                a.publish(event.clone());
                // A publish that failed while the connection was cut is followed, once Redis
                // answers, by the news that events were lost.
                if let Ok(heard) =
                    tokio::time::timeout(Duration::from_millis(200), on_b.recv()).await
                    && heard.as_ref().unwrap() != &Event::EventsMissed
                {
                    return heard.unwrap();
                }
            }
        })
        .await
        .expect("A publishes again");
        assert_eq!(heard, event);
        a_task.stop().await;
        b_task.stop().await;
        proxy.accept.abort();
    }
}

//! The bus in cluster mode: events to and from the other instances through Redis pub/sub.
//!
//! Publishing queues the event for one publisher task (so the events of this instance reach
//! Redis in the order they were published, and a request never waits for Redis); a
//! subscriber task holds a dedicated pub/sub connection and forwards the events of the other
//! instances into the local broadcast channel. Both stop with [`BusTask::stop`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::{AsyncCommands, Client};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{CAPACITY, Event, EventBus};
use crate::limits::RedisConnectError;
use crate::server::redact;

/// The version tag of the wire format; messages with another version are skipped (with a
/// warning), so instances of different releases can run side by side.
pub const WIRE_VERSION: u32 = 1;
/// At most one warning line per kind (publishing, subscribing, decoding) in this interval;
/// the failures in between are counted in the next line.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// How long the start waits for the subscription, and one PUBLISH for an answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed PUBLISH, events are not sent for this long (they are dropped, counted):
/// a Redis that is down does not make the queue wait a timeout per event.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);
/// Backoff of the subscriber's reconnections: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A silent pub/sub connection is pinged this often (a half-open one is noticed).
const PING_EVERY: Duration = Duration::from_secs(15);
/// On stop, the queued events are still sent within this time.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One event on the wire: `{"v":1,"origin":"<instance id>","event":{"type":…}}`.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    origin: String,
    event: Event,
}

/// Only the version, read first so that a newer format is recognised as such.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

/// Encodes an event as this instance's message.
fn encode(origin: &str, event: &Event) -> String {
    serde_json::to_string(&Envelope {
        v: WIRE_VERSION,
        origin: origin.to_owned(),
        event: event.clone(),
    })
    .expect("events serialize")
}

/// What a received message means.
#[derive(Debug, PartialEq)]
enum Decoded {
    /// An event of another instance.
    Foreign(Event),
    /// One of this instance's own (already delivered locally).
    Own,
    /// A message of another wire version.
    OtherVersion(u32),
}

fn decode(own: &str, payload: &[u8]) -> Result<Decoded, serde_json::Error> {
    let Version { v } = serde_json::from_slice(payload)?;
    if v != WIRE_VERSION {
        return Ok(Decoded::OtherVersion(v));
    }
    let envelope: Envelope = serde_json::from_slice(payload)?;
    Ok(if envelope.origin == own {
        Decoded::Own
    } else {
        Decoded::Foreign(envelope.event)
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

/// The publishing side, shared by every clone of the bus.
#[derive(Clone)]
pub(super) struct Outbox {
    queue: mpsc::Sender<String>,
    origin: Arc<str>,
    channel: Arc<str>,
    url: Arc<str>,
    full: Arc<Throttled>,
    /// Set when the queue was full and an event was dropped: the publisher then tells the
    /// other instances they missed events.
    overflowed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("url", &self.url)
            .field("channel", &self.channel)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Queues `event` for Redis; a full queue (Redis slow or down) drops it with a warning.
    pub(super) fn send(&self, event: &Event) {
        if self.queue.try_send(encode(&self.origin, event)).is_err() {
            self.overflowed.store(true, Ordering::Relaxed);
        } else {
            return;
        }
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
    /// events then reach this process's subscribers only).
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(CALL_TIMEOUT);
        let connection =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|err| {
                RedisConnectError {
                    url: redact(url),
                    problem: err.to_string(),
                }
            })?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let (queue, queued) = mpsc::channel(CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let origin: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let channel: Arc<str> = channel.into();
        let url: Arc<str> = redact(url).into();
        let overflowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let publisher = tokio::spawn(publish_queued(
            connection,
            queued,
            Published {
                origin: origin.clone(),
                overflowed: overflowed.clone(),
            },
            channel.clone(),
            url.clone(),
            stopped.clone(),
        ));
        let subscriber = tokio::spawn(forward_foreign(
            client,
            pubsub,
            sender.clone(),
            origin.clone(),
            channel.clone(),
            url.clone(),
            stopped,
        ));
        let bus = Self {
            sender,
            redis: Some(Outbox {
                queue,
                origin,
                channel,
                url,
                full: Arc::new(Throttled::new()),
                overflowed,
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

/// Sends the queued messages in order until stopped (then what is queued, within
/// [`DRAIN_TIMEOUT`]).
/// Who publishes: the instance's id, and the flag its outbox raises when it dropped an event.
struct Published {
    origin: Arc<str>,
    overflowed: Arc<std::sync::atomic::AtomicBool>,
}

async fn publish_queued(
    mut connection: ConnectionManager,
    mut queued: mpsc::Receiver<String>,
    published_by: Published,
    channel: Arc<str>,
    url: Arc<str>,
    mut stopped: watch::Receiver<bool>,
) {
    let warnings = Throttled::new();
    let mut paused_until: Option<Instant> = None;
    // Events this instance could not send: once Redis answers again, the others are told they
    // missed some (before the next event, so they reload first).
    let mut dropped = false;
    let missed = encode(&published_by.origin, &Event::EventsMissed);
    let mut send = async |connection: &mut ConnectionManager, message: String| {
        if paused_until.is_some_and(|until| Instant::now() < until) {
            dropped = true;
            if let Some(unreported) = warnings.admit() {
                tracing::warn!(redis = %url, channel = %channel, unreported, "Redis is unreachable: an event reached this instance's subscribers only");
            }
            return;
        }
        if published_by.overflowed.swap(false, Ordering::Relaxed) {
            dropped = true;
        }
        if dropped {
            let told = tokio::time::timeout(
                CALL_TIMEOUT,
                connection.publish::<_, _, i64>(&*channel, missed.clone()),
            )
            .await;
            if matches!(told, Ok(Ok(_))) {
                dropped = false;
            }
        }
        let published = tokio::time::timeout(
            CALL_TIMEOUT,
            connection.publish::<_, _, i64>(&*channel, message),
        )
        .await;
        let problem = match published {
            Ok(Ok(_)) => {
                paused_until = None;
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        paused_until = Some(Instant::now() + PUBLISH_PAUSE);
        dropped = true;
        if let Some(unreported) = warnings.admit() {
            tracing::warn!(redis = %url, channel = %channel, unreported, error = %problem, "publishing an event to Redis failed: it reached this instance's subscribers only");
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop_requested(&mut stopped) => break,
            message = queued.recv() => match message {
                Some(message) => send(&mut connection, message).await,
                None => return,
            },
        }
    }
    let drain = async {
        while let Ok(message) = queued.try_recv() {
            send(&mut connection, message).await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// Holds a subscription to `channel` (reconnecting with backoff) and forwards the events of
/// other instances into `sender`, until stopped.
async fn forward_foreign(
    client: Client,
    mut pubsub: Option<PubSub>,
    sender: broadcast::Sender<Event>,
    origin: Arc<str>,
    channel: Arc<str>,
    url: Arc<str>,
    mut stopped: watch::Receiver<bool>,
) {
    let connection_warnings = Throttled::new();
    let decode_warnings = Throttled::new();
    let mut backoff = BACKOFF_FIRST;
    // Set once the subscription has been lost: events published meanwhile never arrive.
    let mut lost = false;
    loop {
        let connected = match pubsub.take() {
            Some(pubsub) => Ok(pubsub),
            None => tokio::select! {
                _ = stop_requested(&mut stopped) => return,
                connected = tokio::time::timeout(crate::limits::redis::CONNECT_TIMEOUT, subscribe(&client, &channel)) => match connected {
                    Ok(result) => result.map_err(|err| err.to_string()),
                    Err(_) => Err("no answer in time".to_owned()),
                },
            },
        };
        let problem = match connected {
            Ok(pubsub) => {
                backoff = BACKOFF_FIRST;
                if std::mem::take(&mut lost) {
                    tracing::info!(channel = %channel, "subscribed to the events of other instances again; subscribers are told to reload");
                    let _ = sender.send(Event::EventsMissed);
                }
                let (mut sink, mut messages) = pubsub.split();
                let mut pings = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
                loop {
                    tokio::select! {
                        _ = stop_requested(&mut stopped) => return,
                        message = messages.next() => {
                            let Some(message) = message else {
                                break "the connection was closed".to_owned();
                            };
                            match decode(&origin, message.get_payload_bytes()) {
                                Ok(Decoded::Foreign(event)) => {
                                    tracing::debug!(?event, "event from another instance");
                                    let _ = sender.send(event);
                                }
                                Ok(Decoded::Own) => {}
                                Ok(Decoded::OtherVersion(v)) => {
                                    if let Some(unreported) = decode_warnings.admit() {
                                        tracing::warn!(channel = %channel, version = v, unreported, "skipped an event of another wire version (expected {WIRE_VERSION})");
                                    }
                                }
                                Err(err) => {
                                    if let Some(unreported) = decode_warnings.admit() {
                                        tracing::warn!(channel = %channel, error = %err, unreported, "skipped a message that is not an event");
                                    }
                                }
                            }
                        }
                        _ = pings.tick() => {
                            match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(err)) => break err.to_string(),
                                Err(_) => break "no answer to PING in time".to_owned(),
                            }
                        }
                    }
                }
            }
            Err(problem) => problem,
        };
        lost = true;
        if let Some(unreported) = connection_warnings.admit() {
            tracing::warn!(redis = %url, channel = %channel, error = %problem, unreported, retry_in = ?backoff, "not subscribed to the events of other instances; reconnecting");
        }
        tokio::select! {
            _ = stop_requested(&mut stopped) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
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

    #[test]
    fn events_keep_their_content_on_the_wire() {
        for event in events() {
            let message = encode("a", &event);
            let value: serde_json::Value = serde_json::from_str(&message).unwrap();
            assert_eq!(value["v"], WIRE_VERSION, "{message}");
            assert_eq!(value["origin"], "a", "{message}");
            assert!(value["event"]["type"].is_string(), "{message}");
            assert_eq!(
                decode("b", message.as_bytes()).unwrap(),
                Decoded::Foreign(event.clone())
            );
            assert_eq!(decode("a", message.as_bytes()).unwrap(), Decoded::Own);
        }
        assert_eq!(
            decode("b", br#"{"v":2,"origin":"a","event":{"type":"New"}}"#).unwrap(),
            Decoded::OtherVersion(2)
        );
        assert!(decode("b", b"not json").is_err());
        assert!(decode("b", br#"{"v":1,"origin":"a","event":{"type":"New"}}"#).is_err());
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

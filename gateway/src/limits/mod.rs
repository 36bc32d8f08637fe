//! Per-channel rate limits and query-cost budgets, per (channel, client).
//!
//! Module map:
//! - this module: [`Limits`], the API the transport calls ([`Limits::check_request`] before
//!   a request runs, [`Limits::charge_cost`] with an operation's computed cost,
//!   [`Limits::budget`] and [`Limits::max_cost_per_operation`]); [`ClientKey`] (who a bucket
//!   belongs to), [`ClientIp`] (the peer address extractor), [`Limited`], [`Budget`], and
//!   [`Clock`] (real, or manual in tests)
//! - [`config`]: `[limits]`, quotas per channel with their defaults and validation
//! - [`memory`]: the in-process buckets (`governor` GCRA per channel quota; a sharded map of
//!   leaky cost buckets), which evict idle keys
//! - [`redis`]: the same buckets as atomic Lua scripts in Redis (cluster mode, `REDIS_URL`)
//!
//! In cluster mode a Redis error never fails a request: the check falls back to the
//! in-process buckets for [`REDIS_RETRY_AFTER`], with at most one warning per
//! [`WARN_EVERY`] in the log.

pub mod config;
pub mod memory;
pub mod redis;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde::Serialize;

pub use self::config::{ChannelQuota, LimitsConfig};
pub use self::redis::{RedisConnectError, RedisStore};

/// How long the buckets stay in process after a Redis error before Redis is tried again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning about Redis errors per this interval (the others are counted).
pub const WARN_EVERY: Duration = Duration::from_secs(30);

/// A request or a charge over the limit: answered with 429, `Retry-After` and
/// `RATE_LIMITED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// When the same request would fit again.
    pub retry_after: Duration,
    /// For the client: which limit, and its quota.
    pub reason: String,
}

impl Limited {
    /// `Retry-After` in whole seconds: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; retry after {} s",
            self.reason,
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Limited {}

/// A client's cost budget on a channel, for `extensions.cost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The bucket's capacity (`cost_bucket`).
    pub max: u64,
    /// Points left now (rounded down).
    pub remaining: u64,
    /// Points restored per second (`cost_restore_per_second`).
    pub restore_rate: u64,
}

/// Whose bucket: `sub:<token subject>` for a signed-in viewer, else `ip:<address>` (IPv6
/// addresses by their /64 network, which one host usually holds whole). The prefixes keep a
/// subject from ever naming an address's bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(String);

impl ClientKey {
    /// The bucket of a token's subject.
    pub fn subject(subject: &str) -> Self {
        Self(format!("sub:{subject}"))
    }

    /// The bucket of an address.
    pub fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(format!("ip:{v4}")),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(format!("ip:{v4}")),
                None => {
                    let network = Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1));
                    Self(format!("ip:{network}/64"))
                }
            },
        }
    }

    /// The subject when there is one, else the address (`ip:unknown` without one, which
    /// only happens when the server runs without peer addresses, as in unit tests).
    pub fn of(subject: Option<&str>, ip: Option<IpAddr>) -> Self {
        match (subject, ip) {
            (Some(subject), _) => Self::subject(subject),
            (None, Some(ip)) => Self::ip(ip),
            (None, None) => Self("ip:unknown".to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The peer's IP address, from axum's `ConnectInfo<SocketAddr>` (the server is served with
/// `into_make_service_with_connect_info`); `None` without it. Never rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// The buckets' time: monotonic, or moved by hand in tests. With a manual clock the Redis
/// scripts use its time too (else they use Redis's own).
#[derive(Clone, Debug)]
pub struct Clock {
    start: Instant,
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// Real, monotonic time.
    pub fn monotonic() -> Self {
        Self {
            start: Instant::now(),
            manual: None,
        }
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        Self {
            start: Instant::now(),
            manual: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward; a monotonic one is left alone.
    pub fn advance(&self, by: Duration) {
        if let Some(nanos) = &self.manual {
            nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    /// Time since the clock was made.
    pub fn now(&self) -> Duration {
        match &self.manual {
            Some(nanos) => Duration::from_nanos(nanos.load(Ordering::SeqCst)),
            None => self.start.elapsed(),
        }
    }

    fn manual_now(&self) -> Option<Duration> {
        self.manual.as_ref().map(|_| self.now())
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Clock::now(self)
    }
}

/// Rate limits and cost budgets of every channel, in process or shared in Redis.
pub struct Limits {
    config: LimitsConfig,
    rate: memory::RateBuckets,
    cost: memory::CostBuckets,
    redis: Option<RedisStore>,
    clock: Clock,
    /// Clock time (µs) before which Redis is not tried again after an error.
    redis_retry_at: AtomicU64,
    /// Clock time (µs) of the last warning, plus one (0: never warned).
    warned_at: AtomicU64,
    /// Redis errors since the last warning.
    unreported: AtomicU64,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("enabled", &self.config.enabled)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Buckets in this process only.
    pub fn in_process(config: &LimitsConfig) -> Self {
        Self::new(config, None, Clock::monotonic())
    }

    /// Buckets in Redis when `redis` is given (falling back to this process's on errors).
    pub fn new(config: &LimitsConfig, redis: Option<RedisStore>, clock: Clock) -> Self {
        Self {
            config: config.clone(),
            rate: memory::RateBuckets::new(config, clock.clone()),
            cost: memory::CostBuckets::new(clock.clone()),
            redis,
            clock,
            redis_retry_at: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    /// Rate limits and cost budgets apply (`false` with `GATEWAY_LIMITS=off`).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The shared store, in cluster mode.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// The quotas of a channel (its own, else `[limits.default]`).
    pub fn quota(&self, channel: &str) -> &ChannelQuota {
        self.config.quota(channel)
    }

    /// The bucket name of a claimed channel: itself when it has a quota of its own, else
    /// `default`, so clients cannot get fresh buckets by naming channels that do not exist.
    pub fn bucket_channel<'a>(&self, channel: &'a str) -> &'a str {
        if self.config.channels.contains_key(channel) {
            channel
        } else {
            "default"
        }
    }

    /// The most one operation may cost on `channel` (applies even when limits are off).
    pub fn max_cost_per_operation(&self, channel: &str) -> u64 {
        self.quota(channel).max_cost_per_operation
    }

    /// Counts one request of `client` on `channel` against the channel's request rate.
    pub async fn check_request(&self, channel: &str, client: &ClientKey) -> Result<(), Limited> {
        if !self.config.enabled {
            return Ok(());
        }
        let quota = self.quota(channel);
        let shared = match self.usable_redis() {
            Some(redis) => {
                let call =
                    redis.check_rate(channel, client.as_str(), quota, self.clock.manual_now());
                self.settle(tokio::time::timeout(redis::CALL_TIMEOUT, call).await)
            }
            None => None,
        };
        let checked = match shared {
            Some(checked) => checked,
            None => self.rate.check(channel, client.as_str()),
        };
        checked.map_err(|wait| Limited {
            retry_after: wait,
            reason: format!(
                "too many requests: channel {channel} allows {} request{} per second, in bursts \
                 of up to {}, per client",
                quota.requests_per_second,
                if quota.requests_per_second == 1 {
                    ""
                } else {
                    "s"
                },
                quota.burst
            ),
        })
    }

    /// Takes `cost` points from the cost bucket of `client` on `channel`, or refuses when the
    /// bucket does not hold them (nothing is taken then). `Ok`: the budget left, for
    /// `extensions.cost`. With limits off, nothing is counted and the budget is always full.
    /// Check [`Limits::max_cost_per_operation`] first: a cost above the bucket's capacity
    /// could never be charged.
    pub async fn charge_cost(
        &self,
        channel: &str,
        client: &ClientKey,
        cost: u64,
    ) -> Result<Budget, Limited> {
        let quota = self.quota(channel);
        if !self.config.enabled {
            return Ok(budget(quota, quota.cost_bucket as f64));
        }
        if cost > quota.cost_bucket {
            return Err(Limited {
                retry_after: Duration::from_secs(
                    quota.cost_bucket / quota.cost_restore_per_second.max(1),
                ),
                reason: format!(
                    "the operation costs {cost} points, more than channel {channel}'s cost \
                     budget of {} points can ever hold",
                    quota.cost_bucket
                ),
            });
        }
        self.cost_bucket(channel, client, quota, cost)
            .await
            .map(|left| budget(quota, left))
            .map_err(|short| Limited {
                retry_after: short.wait,
                reason: format!(
                    "query cost budget exceeded: the operation costs {cost} points and {} of \
                     {} remain on channel {channel}, restoring {} per second",
                    short.available.floor() as u64,
                    quota.cost_bucket,
                    quota.cost_restore_per_second
                ),
            })
    }

    /// The budget `client` has left on `channel`, without charging anything.
    pub async fn budget(&self, channel: &str, client: &ClientKey) -> Budget {
        let quota = self.quota(channel);
        if !self.config.enabled {
            return budget(quota, quota.cost_bucket as f64);
        }
        let left = self
            .cost_bucket(channel, client, quota, 0)
            .await
            .unwrap_or_else(|short| short.available);
        budget(quota, left)
    }

    async fn cost_bucket(
        &self,
        channel: &str,
        client: &ClientKey,
        quota: &ChannelQuota,
        cost: u64,
    ) -> Result<f64, memory::Short> {
        if let Some(redis) = self.usable_redis() {
            let call = redis.charge(
                channel,
                client.as_str(),
                quota,
                cost,
                self.clock.manual_now(),
            );
            let charged = tokio::time::timeout(redis::CALL_TIMEOUT, call).await;
            if let Some(charged) = self.settle(charged) {
                return charged.map_err(|(wait, available)| memory::Short { wait, available });
            }
        }
        self.cost
            .charge(&format!("{channel}|{client}"), quota, cost)
    }

    /// Redis, unless it failed less than [`REDIS_RETRY_AFTER`] ago.
    fn usable_redis(&self) -> Option<&RedisStore> {
        let redis = self.redis.as_ref()?;
        let now = self.clock.now().as_micros() as u64;
        (now >= self.redis_retry_at.load(Ordering::Relaxed)).then_some(redis)
    }

    /// The answer of a Redis call, or `None` after an error or a timeout: then the next
    /// [`REDIS_RETRY_AFTER`] stay in process, and the error is logged unless one was logged
    /// in the last [`WARN_EVERY`].
    fn settle<T>(
        &self,
        outcome: Result<Result<T, ::redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let error = match outcome {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {} ms", redis::CALL_TIMEOUT.as_millis()),
        };
        let now = self.clock.now().as_micros() as u64;
        self.redis_retry_at.store(
            now + REDIS_RETRY_AFTER.as_micros() as u64,
            Ordering::Relaxed,
        );
        let unreported = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let warned = self.warned_at.load(Ordering::Relaxed);
        let due = warned == 0 || now + 1 >= warned + WARN_EVERY.as_micros() as u64;
        if due
            && self
                .warned_at
                .compare_exchange(warned, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unreported.store(0, Ordering::Relaxed);
            tracing::warn!(
                redis = %self.redis.as_ref().map_or("", |r| r.url()),
                error = %error,
                errors = unreported,
                "Redis is unavailable for rate limits and cost budgets: counting in this \
                 process until it answers again (at most one such warning every {} s)",
                WARN_EVERY.as_secs()
            );
        }
        None
    }

    /// Redis errors not yet reported in a warning (for tests).
    pub fn unreported_redis_errors(&self) -> u64 {
        self.unreported.load(Ordering::Relaxed)
    }
}

fn budget(quota: &ChannelQuota, available: f64) -> Budget {
    Budget {
        max: quota.cost_bucket,
        remaining: available.max(0.0).floor() as u64,
        restore_rate: quota.cost_restore_per_second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tight(rps: u32, burst: u32, bucket: u64, restore: u64) -> LimitsConfig {
        let mut config = LimitsConfig::default();
        let web = config.channels.get_mut("web").unwrap();
        web.requests_per_second = rps;
        web.burst = burst;
        web.cost_bucket = bucket;
        web.cost_restore_per_second = restore;
        web.max_cost_per_operation = bucket;
        config
    }

    #[test]
    fn client_keys_cannot_collide() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(ClientKey::ip(ip).as_str(), "ip:10.0.0.1");
        assert_eq!(ClientKey::subject("10.0.0.1").as_str(), "sub:10.0.0.1");
        assert_ne!(ClientKey::subject("ip:10.0.0.1"), ClientKey::ip(ip));
        assert_eq!(
            ClientKey::of(Some("shopper@example.com"), Some(ip)).as_str(),
            "sub:shopper@example.com"
        );
        assert_eq!(ClientKey::of(None, None).as_str(), "ip:unknown");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ClientKey::ip(mapped), ClientKey::ip(ip));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::ip(a).as_str(), "ip:2001:db8:1:2::/64");
        assert_eq!(ClientKey::ip(a), ClientKey::ip(b));
        assert_ne!(ClientKey::ip(a), ClientKey::ip(c));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let limited = |ms| Limited {
            retry_after: Duration::from_millis(ms),
            reason: String::new(),
        };
        assert_eq!(limited(0).retry_after_secs(), 1);
        assert_eq!(limited(1).retry_after_secs(), 1);
        assert_eq!(limited(1000).retry_after_secs(), 1);
        assert_eq!(limited(1001).retry_after_secs(), 2);
    }

    #[tokio::test]
    async fn requests_burst_then_are_refused_then_recover() {
        let clock = Clock::manual();
        let limits = Limits::new(&tight(2, 3, 1000, 50), None, clock.clone());
        let client = ClientKey::subject("a");
        for _ in 0..3 {
            limits.check_request("web", &client).await.unwrap();
        }
        let limited = limits.check_request("web", &client).await.unwrap_err();
        assert_eq!(limited.retry_after, Duration::from_millis(500));
        assert_eq!(limited.retry_after_secs(), 1);
        assert!(
            limited.reason.contains("2 requests per second"),
            "{limited}"
        );
        clock.advance(limited.retry_after);
        limits.check_request("web", &client).await.unwrap();
        limits
            .check_request("web", &ClientKey::subject("b"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn costs_are_charged_refused_and_restored() {
        let clock = Clock::manual();
        let limits = Limits::new(&tight(100, 100, 1000, 50), None, clock.clone());
        let client = ClientKey::subject("a");
        let full = Budget {
            max: 1000,
            remaining: 1000,
            restore_rate: 50,
        };
        assert_eq!(limits.budget("web", &client).await, full);
        let left = limits.charge_cost("web", &client, 700).await.unwrap();
        assert_eq!(left.remaining, 300);
        let limited = limits.charge_cost("web", &client, 400).await.unwrap_err();
        assert_eq!(limited.retry_after, Duration::from_secs(2));
        assert!(limited.reason.contains("300 of 1000 remain"), "{limited}");
        assert_eq!(limits.budget("web", &client).await.remaining, 300);
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            limits
                .charge_cost("web", &client, 400)
                .await
                .unwrap()
                .remaining,
            0
        );
        assert!(limits.charge_cost("web", &client, 1001).await.is_err());
        assert_eq!(limits.max_cost_per_operation("web"), 1000);
        assert_eq!(limits.max_cost_per_operation("pos"), 5000);
    }

    #[tokio::test]
    async fn off_lets_everything_through_but_keeps_the_operation_maximum() {
        let mut config = tight(1, 1, 10, 1);
        config.enabled = false;
        let limits = Limits::new(&config, None, Clock::manual());
        let client = ClientKey::subject("a");
        for _ in 0..10 {
            limits.check_request("web", &client).await.unwrap();
            assert_eq!(
                limits
                    .charge_cost("web", &client, 10)
                    .await
                    .unwrap()
                    .remaining,
                10
            );
        }
        assert_eq!(limits.max_cost_per_operation("web"), 10);
    }

    #[tokio::test]
    async fn an_unreachable_redis_degrades_to_the_process_buckets() {
        let clock = Clock::manual();
        let redis = RedisStore::connect_lazily("redis://127.0.0.1:1", "unreachable:").unwrap();
        let limits = Limits::new(&tight(1, 2, 100, 10), Some(redis), clock.clone());
        let client = ClientKey::subject("a");
        limits.check_request("web", &client).await.unwrap();
        assert_eq!(limits.unreported_redis_errors(), 0, "the first error warns");
        // While Redis is skipped the process's buckets count, so the limit still holds.
        limits.check_request("web", &client).await.unwrap();
        assert!(limits.check_request("web", &client).await.is_err());
        assert_eq!(
            limits
                .charge_cost("web", &client, 60)
                .await
                .unwrap()
                .remaining,
            40
        );
        assert!(limits.charge_cost("web", &client, 60).await.is_err());
        // After the retry pause Redis is tried again; its error is counted, not logged.
        clock.advance(REDIS_RETRY_AFTER);
        assert!(limits.check_request("web", &client).await.is_ok());
        assert_eq!(limits.unreported_redis_errors(), 1);
    }

    /// Redis tests need `TEST_REDIS_URL`; each uses keys of its own and removes them.
    mod with_redis {
        use super::*;

        async fn store() -> Option<RedisStore> {
            let Some(url) = std::env::var("TEST_REDIS_URL")
                .ok()
                .filter(|u| !u.is_empty())
            else {
                eprintln!("skipped: TEST_REDIS_URL is unset");
                return None;
            };
            let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
            Some(
                RedisStore::connect(&url, &prefix)
                    .await
                    .expect("TEST_REDIS_URL must be reachable"),
            )
        }

        async fn clean(store: &RedisStore) {
            store.remove_all_keys().await.expect("removing test keys");
        }

        #[tokio::test]
        async fn requests_burst_then_are_refused_then_recover() {
            let Some(store) = store().await else { return };
            let clock = Clock::manual();
            clock.advance(Duration::from_secs(1_000_000));
            let limits = Limits::new(&tight(2, 3, 1000, 50), Some(store.clone()), clock.clone());
            let client = ClientKey::subject("a");
            for _ in 0..3 {
                limits.check_request("web", &client).await.unwrap();
            }
            let limited = limits.check_request("web", &client).await.unwrap_err();
            assert_eq!(limited.retry_after, Duration::from_millis(500));
            clock.advance(Duration::from_millis(499));
            assert!(limits.check_request("web", &client).await.is_err());
            clock.advance(Duration::from_millis(1));
            limits.check_request("web", &client).await.unwrap();
            limits
                .check_request("web", &ClientKey::subject("b"))
                .await
                .unwrap();
            limits
                .check_request("kiosk", &ClientKey::subject("a"))
                .await
                .unwrap();
            assert_eq!(limits.unreported_redis_errors(), 0);
            assert!(store.remove_all_keys().await.unwrap() >= 3);
            assert_eq!(store.remove_all_keys().await.unwrap(), 0);
        }

        #[tokio::test]
        async fn costs_are_charged_refused_and_restored() {
            let Some(store) = store().await else { return };
            let clock = Clock::manual();
            clock.advance(Duration::from_secs(1_000_000));
            let limits = Limits::new(
                &tight(100, 100, 1000, 50),
                Some(store.clone()),
                clock.clone(),
            );
            let client = ClientKey::subject("a");
            assert_eq!(limits.budget("web", &client).await.remaining, 1000);
            assert_eq!(
                limits
                    .charge_cost("web", &client, 700)
                    .await
                    .unwrap()
                    .remaining,
                300
            );
            let limited = limits.charge_cost("web", &client, 400).await.unwrap_err();
            assert_eq!(limited.retry_after, Duration::from_secs(2));
            assert_eq!(limits.budget("web", &client).await.remaining, 300);
            clock.advance(Duration::from_secs(1));
            assert_eq!(limits.budget("web", &client).await.remaining, 350);
            clock.advance(Duration::from_secs(1));
            assert_eq!(
                limits
                    .charge_cost("web", &client, 400)
                    .await
                    .unwrap()
                    .remaining,
                0
            );
            clock.advance(Duration::from_secs(3600));
            assert_eq!(limits.budget("web", &client).await.remaining, 1000);
            assert_eq!(limits.unreported_redis_errors(), 0);
            clean(&store).await;
        }

        #[tokio::test]
        async fn keys_expire_once_their_bucket_is_fresh_again() {
            let Some(store) = store().await else { return };
            let limits = Limits::new(
                &tight(1000, 1, 1000, 1000),
                Some(store.clone()),
                Clock::monotonic(),
            );
            let client = ClientKey::subject("a");
            limits.check_request("web", &client).await.unwrap();
            limits.charge_cost("web", &client, 1).await.unwrap();
            // Both keys carry an expiry (the bucket is fresh again after 1 ms; plus a second
            // of slack).
            let mut connection = redis_connection().await;
            let prefix = store_prefix(&store);
            for key in [
                format!("{prefix}rl:web:sub:a"),
                format!("{prefix}cost:web:sub:a"),
            ] {
                let ttl: i64 = ::redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                assert!((1..=1100).contains(&ttl), "{key}: {ttl}");
            }
            clean(&store).await;
        }

        #[tokio::test]
        async fn two_instances_on_one_redis_share_one_limit() {
            let Some(store) = store().await else { return };
            let clock = Clock::manual();
            clock.advance(Duration::from_secs(1_000_000));
            let config = tight(1, 4, 100, 1);
            let a = Limits::new(&config, Some(store.clone()), clock.clone());
            let b = Limits::new(&config, Some(store.clone()), clock.clone());
            let client = ClientKey::ip("10.1.2.3".parse().unwrap());
            let mut refused = 0;
            for i in 0..5 {
                let limits = if i % 2 == 0 { &a } else { &b };
                if limits.check_request("web", &client).await.is_err() {
                    refused += 1;
                }
            }
            assert_eq!(
                refused, 1,
                "5 requests through A and B against a burst of 4"
            );
            // Cost budgets are shared too.
            a.charge_cost("web", &client, 60).await.unwrap();
            assert!(b.charge_cost("web", &client, 60).await.is_err());
            assert_eq!(b.budget("web", &client).await.remaining, 40);
            clean(&store).await;
        }

        fn store_prefix(store: &RedisStore) -> String {
            store.prefix().to_owned()
        }

        async fn redis_connection() -> ::redis::aio::MultiplexedConnection {
            let url = std::env::var("TEST_REDIS_URL").unwrap();
            ::redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }
    }
}

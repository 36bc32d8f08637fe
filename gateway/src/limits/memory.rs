//! The in-process buckets: one instance's view, also the fallback while Redis is away.
//!
//! - [`RateBuckets`]: a `governor` keyed GCRA limiter per channel quota (plus one for
//!   channels without a quota of their own), keyed by client.
//! - [`CostBuckets`]: leaky buckets of cost points in a sharded map.
//!
//! Memory stays bounded: keys whose bucket is back to its fresh state (full, or with no
//! pending requests) are dropped by a sweep every [`SWEEP_EVERY`] operations, and a cost
//! shard that still holds more than [`MAX_COST_KEYS_PER_SHARD`] keys after a sweep drops the
//! ones closest to full.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::Clock;
use super::config::{ChannelQuota, LimitsConfig};

/// Operations between two sweeps of idle keys.
pub const SWEEP_EVERY: u64 = 1024;
/// Shards of the cost map (a key's shard is its hash).
const COST_SHARDS: usize = 16;
/// Keys one cost shard may hold after its sweep (about 32 MB over all shards).
pub const MAX_COST_KEYS_PER_SHARD: usize = 16_384;

type KeyedLimiter = RateLimiter<String, HashMapStateStore<String>, Clock, NoOpMiddleware<Duration>>;

/// Request-rate buckets per (channel, client).
pub struct RateBuckets {
    channels: HashMap<String, KeyedLimiter>,
    /// Channels without a quota of their own, keyed by `channel|client`.
    other: KeyedLimiter,
    clock: Clock,
    checks: AtomicU64,
}

fn quota(quota: &ChannelQuota) -> Quota {
    let rate = NonZeroU32::new(quota.requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(quota.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl RateBuckets {
    pub fn new(config: &LimitsConfig, clock: Clock) -> Self {
        let limiter = |q: &ChannelQuota| RateLimiter::hashmap_with_clock(quota(q), clock.clone());
        Self {
            channels: config
                .channels
                .iter()
                .map(|(code, q)| (code.clone(), limiter(q)))
                .collect(),
            other: limiter(&config.default),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request from the bucket of (channel, client); `Err` holds the wait until
    /// the next one fits.
    pub fn check(&self, channel: &str, client: &str) -> Result<(), Duration> {
        if (self.checks.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
        let (limiter, key) = match self.channels.get(channel) {
            Some(limiter) => (limiter, client.to_owned()),
            None => (&self.other, format!("{channel}|{client}")),
        };
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the keys whose bucket is as good as new.
    pub fn sweep(&self) {
        for limiter in self.channels.values().chain([&self.other]) {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.channels
            .values()
            .chain([&self.other])
            .map(RateLimiter::len)
            .sum()
    }
}

/// A cost bucket's level at a time.
#[derive(Clone, Copy, Debug)]
struct Level {
    available: f64,
    at: Duration,
    /// When it is full again (and so indistinguishable from a fresh bucket).
    full_at: Duration,
}

#[derive(Default)]
struct Shard {
    levels: HashMap<String, Level>,
    operations: u64,
}

/// Leaky buckets of query-cost points per (channel, client): each holds up to
/// `cost_bucket` points and regains `cost_restore_per_second`; an operation takes its cost.
pub struct CostBuckets {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    clock: Clock,
}

/// A charge the bucket could not cover: the wait until it could, and what it holds now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Short {
    pub wait: Duration,
    pub available: f64,
}

impl CostBuckets {
    pub fn new(clock: Clock) -> Self {
        Self {
            shards: (0..COST_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            clock,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) % COST_SHARDS as u64) as usize]
    }

    /// Takes `cost` points from the bucket of `key` when it holds them (`cost` 0 only
    /// reads it); `Ok` holds what is left.
    pub fn charge(&self, key: &str, quota: &ChannelQuota, cost: u64) -> Result<f64, Short> {
        let now = self.clock.now();
        let capacity = quota.cost_bucket as f64;
        let rate = quota.cost_restore_per_second.max(1) as f64;
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        shard.operations += 1;
        if shard.operations.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut shard.levels, now);
        }
        let available = shard.levels.get(key).map_or(capacity, |level| {
            let restored = now.saturating_sub(level.at).as_secs_f64() * rate;
            (level.available + restored).min(capacity)
        });
        let cost = cost as f64;
        if cost > available {
            return Err(Short {
                wait: Duration::from_secs_f64((cost - available) / rate),
                available,
            });
        }
        if cost > 0.0 {
            let left = available - cost;
            let full_at = now + Duration::from_secs_f64((capacity - left) / rate);
            shard.levels.insert(
                key.to_owned(),
                Level {
                    available: left,
                    at: now,
                    full_at,
                },
            );
            if shard.levels.len() > MAX_COST_KEYS_PER_SHARD {
                sweep(&mut shard.levels, now);
                bound(&mut shard.levels);
            }
            return Ok(left);
        }
        Ok(available)
    }

    /// Drops the buckets that are full again.
    pub fn sweep(&self) {
        let now = self.clock.now();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            sweep(&mut shard.levels, now);
        }
    }

    /// Buckets held (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).levels.len())
            .sum()
    }
}

fn sweep(levels: &mut HashMap<String, Level>, now: Duration) {
    levels.retain(|_, level| level.full_at > now);
    if levels.capacity() > 4 * levels.len().max(64) {
        levels.shrink_to_fit();
    }
}

/// Still too many keys: forget the buckets closest to full (the least generous outcome for
/// nobody but the ones nearly restored anyway).
fn bound(levels: &mut HashMap<String, Level>) {
    let excess = levels.len().saturating_sub(MAX_COST_KEYS_PER_SHARD * 3 / 4);
    if excess == 0 {
        return;
    }
    let mut by_full_at: Vec<(Duration, String)> = levels
        .iter()
        .map(|(key, level)| (level.full_at, key.clone()))
        .collect();
    by_full_at.select_nth_unstable_by_key(excess - 1, |(full_at, _)| *full_at);
    for (_, key) in by_full_at.into_iter().take(excess) {
        levels.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rps: u32, burst: u32) -> LimitsConfig {
        let mut config = LimitsConfig::default();
        let web = config.channels.get_mut("web").unwrap();
        web.requests_per_second = rps;
        web.burst = burst;
        config
    }

    #[test]
    fn a_burst_then_refusal_then_recovery() {
        let clock = Clock::manual();
        let buckets = RateBuckets::new(&config(2, 3), clock.clone());
        for _ in 0..3 {
            buckets.check("web", "ip:10.0.0.1").unwrap();
        }
        let wait = buckets.check("web", "ip:10.0.0.1").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        clock.advance(Duration::from_millis(499));
        assert!(buckets.check("web", "ip:10.0.0.1").is_err());
        clock.advance(Duration::from_millis(1));
        buckets.check("web", "ip:10.0.0.1").unwrap();
        assert!(buckets.check("web", "ip:10.0.0.1").is_err());
        // Idle long enough, the whole burst is back.
        clock.advance(Duration::from_secs(2));
        for _ in 0..3 {
            buckets.check("web", "ip:10.0.0.1").unwrap();
        }
        assert!(buckets.check("web", "ip:10.0.0.1").is_err());
    }

    #[test]
    fn clients_and_channels_have_buckets_of_their_own() {
        let clock = Clock::manual();
        let buckets = RateBuckets::new(&config(1, 1), clock);
        buckets.check("web", "sub:a").unwrap();
        assert!(buckets.check("web", "sub:a").is_err());
        buckets.check("web", "sub:b").unwrap();
        buckets.check("web", "ip:10.0.0.1").unwrap();
        // Another channel's quota, and channels without one share the default quota but
        // not their buckets.
        buckets.check("mobile", "sub:a").unwrap();
        buckets.check("kiosk", "sub:a").unwrap();
        buckets.check("lobby", "sub:a").unwrap();
    }

    #[test]
    fn idle_rate_keys_are_dropped() {
        let clock = Clock::manual();
        let buckets = RateBuckets::new(&config(10, 5), clock.clone());
        for i in 0..100 {
            buckets.check("web", &format!("ip:10.0.0.{i}")).unwrap();
        }
        assert_eq!(buckets.keys(), 100);
        buckets.sweep();
        assert_eq!(buckets.keys(), 100, "recent keys stay");
        clock.advance(Duration::from_secs(1));
        buckets.sweep();
        assert_eq!(buckets.keys(), 0);
        // The sweep also runs by itself every SWEEP_EVERY checks.
        for i in 0..SWEEP_EVERY {
            if i == SWEEP_EVERY / 2 {
                clock.advance(Duration::from_secs(1));
            }
            buckets.check("web", &format!("sub:{i}")).unwrap();
        }
        assert!(buckets.keys() < SWEEP_EVERY as usize, "{}", buckets.keys());
    }

    fn cost_quota(bucket: u64, restore: u64) -> ChannelQuota {
        ChannelQuota {
            cost_bucket: bucket,
            cost_restore_per_second: restore,
            max_cost_per_operation: bucket,
            ..ChannelQuota::default()
        }
    }

    #[test]
    fn cost_buckets_charge_refuse_and_restore() {
        let clock = Clock::manual();
        let buckets = CostBuckets::new(clock.clone());
        let quota = cost_quota(1000, 50);
        assert_eq!(buckets.charge("web|sub:a", &quota, 0), Ok(1000.0));
        assert_eq!(buckets.charge("web|sub:a", &quota, 600), Ok(400.0));
        assert_eq!(buckets.charge("web|sub:a", &quota, 400), Ok(0.0));
        let short = buckets.charge("web|sub:a", &quota, 100).unwrap_err();
        assert_eq!(short.wait, Duration::from_secs(2));
        assert_eq!(short.available, 0.0);
        clock.advance(Duration::from_secs(1));
        let short = buckets.charge("web|sub:a", &quota, 100).unwrap_err();
        assert_eq!(short.wait, Duration::from_secs(1));
        assert_eq!(buckets.charge("web|sub:a", &quota, 0), Ok(50.0));
        clock.advance(Duration::from_secs(1));
        assert_eq!(buckets.charge("web|sub:a", &quota, 100), Ok(0.0));
        // Another client's bucket is full; restoring stops at the capacity.
        assert_eq!(buckets.charge("web|sub:b", &quota, 1), Ok(999.0));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(buckets.charge("web|sub:a", &quota, 0), Ok(1000.0));
    }

    #[test]
    fn full_cost_buckets_are_dropped() {
        let clock = Clock::manual();
        let buckets = CostBuckets::new(clock.clone());
        let quota = cost_quota(100, 10);
        for i in 0..50 {
            buckets.charge(&format!("web|ip:{i}"), &quota, 10).unwrap();
        }
        buckets.charge("web|ip:big", &quota, 100).unwrap();
        assert_eq!(buckets.keys(), 51);
        clock.advance(Duration::from_secs(1));
        buckets.sweep();
        assert_eq!(
            buckets.keys(),
            1,
            "only the emptied bucket is still refilling"
        );
        clock.advance(Duration::from_secs(9));
        buckets.sweep();
        assert_eq!(buckets.keys(), 0);
    }

    #[test]
    fn a_crowded_shard_keeps_its_bound() {
        let mut levels = HashMap::new();
        for i in 0..(MAX_COST_KEYS_PER_SHARD + 10) {
            let at = Duration::from_secs(i as u64);
            levels.insert(
                format!("k{i}"),
                Level {
                    available: 0.0,
                    at,
                    full_at: at + Duration::from_secs(100_000),
                },
            );
        }
        bound(&mut levels);
        assert_eq!(levels.len(), MAX_COST_KEYS_PER_SHARD * 3 / 4);
        assert!(levels.contains_key(&format!("k{}", MAX_COST_KEYS_PER_SHARD + 9)));
        assert!(!levels.contains_key("k0"));
    }
}

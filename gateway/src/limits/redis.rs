//! The buckets in Redis (cluster mode): every instance checks the same keys, so N instances
//! enforce one limit. Each check is one atomic Lua script on one key; keys expire once their
//! bucket is as good as new, so Redis holds only active clients.
//!
//! Time is Redis's own (`TIME`), so instances with skewed clocks still agree; tests pass a
//! manual clock's time instead.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use super::config::ChannelQuota;
use crate::server::redact;

/// How long the start may wait for Redis to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for one bucket script before it falls back to the in-process
/// buckets.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// GCRA, as `governor` runs it: a bucket is its theoretical arrival time (TAT, µs). A request
/// at `now` fits when `now >= TAT - tau`; it moves TAT to `max(TAT, now) + interval`.
/// KEYS[1]: the bucket. ARGV: interval (µs), tau (µs) = interval × (burst − 1), now (µs, or
/// "" for Redis's clock). Returns 0 when the request fits, else the µs to wait.
const RATE_SCRIPT: &str = r"
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local earliest = tat - tau
if now < earliest then
  return earliest - now
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
  'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
";

/// A leaky bucket of cost points: `available` at time `at` (µs), regaining `rate` per second
/// up to `capacity`. KEYS[1]: the bucket. ARGV: capacity, rate, cost (0 only reads), now (µs,
/// or "" for Redis's clock). Returns {1, available after the charge, 0} or, when the bucket
/// does not hold `cost`, {0, available, µs until it does}; nothing is written then.
const COST_SCRIPT: &str = r"
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local state = redis.call('HMGET', KEYS[1], 'available', 'at')
local available = capacity
if state[1] and state[2] then
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end
  available = math.min(capacity, tonumber(state[1]) + elapsed * rate / 1000000)
end
if cost > available then
  return {0, string.format('%.6f', available),
    string.format('%.0f', math.ceil((cost - available) * 1000000 / rate))}
end
if cost > 0 then
  available = available - cost
  redis.call('HSET', KEYS[1], 'available', string.format('%.6f', available),
    'at', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - available) * 1000 / rate) + 1000)
end
return {1, string.format('%.6f', available), '0'}
";

/// Why Redis could not be used at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}: {problem}")]
pub struct RedisConnectError {
    /// The URL with its password redacted.
    pub url: String,
    /// The cause, with a hint.
    pub problem: String,
}

/// The bucket scripts over one reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    url: String,
    rate: Script,
    cost: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisStore {
    /// Connects (and pings) within [`CONNECT_TIMEOUT`]; keys start with `prefix`. Later,
    /// lost connections are re-established in the background.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisConnectError> {
        let fail = |problem: String| RedisConnectError {
            url: redact(url),
            problem,
        };
        let client = Client::open(url).map_err(|err| fail(format!("not a Redis URL: {err}")))?;
        let probe = async {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(CONNECT_TIMEOUT));
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {} s; check the host and port, and that no firewall drops \
                     the connection",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(err)) => return Err(fail(explain(&err))),
            Ok(Ok(_)) => {}
        }
        Self::lazy(client, url, prefix).map_err(|err| fail(explain(&err)))
    }

    /// A store that connects on first use (for tests of an unreachable Redis).
    pub fn connect_lazily(url: &str, prefix: &str) -> Result<Self, RedisConnectError> {
        let client = Client::open(url).map_err(|err| RedisConnectError {
            url: redact(url),
            problem: format!("not a Redis URL: {err}"),
        })?;
        Self::lazy(client, url, prefix).map_err(|err| RedisConnectError {
            url: redact(url),
            problem: explain(&err),
        })
    }

    fn lazy(client: Client, url: &str, prefix: &str) -> Result<Self, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            url: redact(url),
            rate: Script::new(RATE_SCRIPT),
            cost: Script::new(COST_SCRIPT),
        })
    }

    /// The prefix of this store's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<prefix>rl:<channel>:<client>`.
    fn rate_key(&self, channel: &str, client: &str) -> String {
        format!("{}rl:{channel}:{client}", self.prefix)
    }

    /// `<prefix>cost:<channel>:<client>`.
    fn cost_key(&self, channel: &str, client: &str) -> String {
        format!("{}cost:{channel}:{client}", self.prefix)
    }

    /// Takes one request from the rate bucket; `Ok(Err(wait))` when it is empty.
    pub async fn check_rate(
        &self,
        channel: &str,
        client: &str,
        quota: &ChannelQuota,
        now: Option<Duration>,
    ) -> Result<Result<(), Duration>, RedisError> {
        let interval = (1_000_000 / u64::from(quota.requests_per_second.max(1))).max(1);
        let tau = interval * u64::from(quota.burst.max(1) - 1);
        let mut connection = self.connection.clone();
        let wait: i64 = self
            .rate
            .key(self.rate_key(channel, client))
            .arg(interval)
            .arg(tau)
            .arg(now_arg(now))
            .invoke_async(&mut connection)
            .await?;
        Ok(match wait {
            ..=0 => Ok(()),
            micros => Err(Duration::from_micros(micros as u64)),
        })
    }

    /// Takes `cost` points from the cost bucket (`cost` 0 only reads it): `Ok(Ok(left))`, or
    /// `Ok(Err((wait, available)))` when the bucket does not hold them.
    pub async fn charge(
        &self,
        channel: &str,
        client: &str,
        quota: &ChannelQuota,
        cost: u64,
        now: Option<Duration>,
    ) -> Result<Result<f64, (Duration, f64)>, RedisError> {
        let mut connection = self.connection.clone();
        let (charged, available, wait): (i64, String, String) = self
            .cost
            .key(self.cost_key(channel, client))
            .arg(quota.cost_bucket)
            .arg(quota.cost_restore_per_second.max(1))
            .arg(cost)
            .arg(now_arg(now))
            .invoke_async(&mut connection)
            .await?;
        let available: f64 = available.parse().unwrap_or(0.0);
        if charged == 1 {
            return Ok(Ok(available));
        }
        let wait = Duration::from_micros(wait.parse::<f64>().unwrap_or(1e6).max(0.0) as u64);
        Ok(Err((wait, available)))
    }

    /// The query text stored for an automatic persisted query's hash.
    pub async fn apq_get(&self, hash: &str) -> Result<Option<String>, RedisError> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(format!("{}apq:{hash}", self.prefix))
            .query_async(&mut connection)
            .await
    }

    /// Stores an automatic persisted query for `ttl_secs`, shared by every instance.
    pub async fn apq_set(&self, hash: &str, query: &str, ttl_secs: u64) -> Result<(), RedisError> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(format!("{}apq:{hash}", self.prefix))
            .arg(query)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async(&mut connection)
            .await
    }

    /// Deletes every key under this store's prefix (tests clean up with it; also a way to
    /// reset all limits). Returns how many were deleted.
    pub async fn remove_all_keys(&self) -> Result<u64, RedisError> {
        let mut connection = self.connection.clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                removed += redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<u64>(&mut connection)
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// A manual clock's time for the scripts, or "" for Redis's own.
fn now_arg(now: Option<Duration>) -> String {
    now.map(|now| now.as_micros().to_string())
        .unwrap_or_default()
}

/// `*`, `?`, `[`, `]` and `\` in a key prefix match themselves in `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A Redis error at start, with a hint.
fn explain(err: &RedisError) -> String {
    if err.is_connection_refusal() {
        return format!("{err}; is Redis running and listening there?");
    }
    if err.is_timeout() {
        return format!(
            "{err}; check the host and port, and that no firewall drops the connection"
        );
    }
    match err.code() {
        Some("NOAUTH" | "WRONGPASS") => {
            format!("{err}; check the user name and password in the Redis URL")
        }
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_are_matched_literally() {
        assert_eq!(glob_escape("test:a*b?[c]\\"), "test:a\\*b\\?\\[c\\]\\\\");
        assert_eq!(now_arg(None), "");
        assert_eq!(now_arg(Some(Duration::from_millis(1500))), "1500000");
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_reported_with_its_redacted_url() {
        let started = std::time::Instant::now();
        let err = RedisStore::connect("redis://:s3cret@127.0.0.1:1/0", "x:")
            .await
            .expect_err("nothing listens on port 1");
        let message = err.to_string();
        assert!(started.elapsed() < Duration::from_secs(6));
        assert!(message.contains("redis://:***@127.0.0.1:1/0"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("is Redis running"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let err = RedisStore::connect("http://127.0.0.1:6379", "x:")
            .await
            .expect_err("not a Redis URL");
        assert!(err.to_string().contains("not a Redis URL"), "{err}");
    }
}

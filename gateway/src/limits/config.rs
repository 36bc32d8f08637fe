//! `[limits]`: request-rate quotas and query-cost budgets per channel.
//!
//! ```toml
//! [limits]
//! enabled = true                      # GATEWAY_LIMITS=off turns rate limits and budgets off
//! redis_key_prefix = "gateway:"
//!
//! [limits.channels.web]               # names only the keys it changes; the rest keep web's defaults
//! requests_per_second = 10
//! burst = 30
//! cost_bucket = 20000
//! cost_restore_per_second = 1000
//! max_cost_per_operation = 5000
//!
//! [limits.default]                    # channels without an entry of their own
//! requests_per_second = 5
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ConfigError;

/// `[limits]`: rate limits and cost budgets per (channel, client).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Request-rate limits and cost budgets on (`true`) or off. `GATEWAY_LIMITS=off` (env)
    /// sets it to `false`; the per-operation maximum cost applies either way.
    pub enabled: bool,
    /// Prefix of every key the limits keep in Redis (cluster mode): rate buckets are
    /// `<prefix>rl:<channel>:<client>`, cost buckets `<prefix>cost:<channel>:<client>`.
    pub redis_key_prefix: String,
    /// The quotas of channels that have no entry under `[limits.channels]`.
    pub default: ChannelQuota,
    /// Quotas per channel code (`[limits.channels.web]`, …). An entry overrides only the keys
    /// it names: the others keep that channel's built-in defaults (for a channel without
    /// built-in defaults, those of the built-in `[limits.default]`).
    #[serde(deserialize_with = "channels_over_defaults")]
    pub channels: BTreeMap<String, ChannelQuota>,
}

/// The quotas of one channel, each counted per client (the token's subject, else the IP).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelQuota {
    /// Sustained requests per second a client may send (GCRA: one request every
    /// `1 / requests_per_second` seconds once the burst is spent).
    pub requests_per_second: u32,
    /// Requests a client may send at once, after being idle for a while.
    pub burst: u32,
    /// Capacity of a client's query-cost bucket, in cost points (Shopify-style leaky bucket).
    pub cost_bucket: u64,
    /// Cost points restored to the bucket per second.
    pub cost_restore_per_second: u64,
    /// The most one operation may cost; costlier ones are refused before they run. Applies
    /// even with `enabled = false`. At most `cost_bucket`.
    pub max_cost_per_operation: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_key_prefix: "gateway:".to_owned(),
            default: ChannelQuota::default(),
            channels: default_channels(),
        }
    }
}

/// The built-in `[limits.default]`: a cautious quota for channels configured without one.
impl Default for ChannelQuota {
    fn default() -> Self {
        Self {
            requests_per_second: 5,
            burst: 10,
            cost_bucket: 10_000,
            cost_restore_per_second: 500,
            max_cost_per_operation: 2_500,
        }
    }
}

/// The built-in quotas of the four channels.
///
/// - `web` and `mobile`: one shopper (or, anonymous, one IP address, so a household or office
///   behind one address) loading pages; a page fires a handful of queries at once, hence the
///   burst. Shopify prices per app at 1,000 points restoring 50/s; a storefront page here costs
///   about 400 (20 products with variants, prices and availability; lists estimated at 5), so
///   a shopper gets 50 pages at once and 2–3 pages per second after that.
/// - `pos`: store terminals, busy at checkout and often several behind a store's address;
///   generous in both rate and cost.
/// - `b2b`: buyer portals send fewer but larger operations (quotes of up to 100 lines, big
///   catalog exports): a moderate rate with a larger cost bucket and per-operation maximum.
pub fn default_channels() -> BTreeMap<String, ChannelQuota> {
    let quota = |rps, burst, bucket, restore, max| ChannelQuota {
        requests_per_second: rps,
        burst,
        cost_bucket: bucket,
        cost_restore_per_second: restore,
        max_cost_per_operation: max,
    };
    BTreeMap::from([
        ("web".to_owned(), quota(10, 30, 20_000, 1_000, 5_000)),
        ("mobile".to_owned(), quota(10, 30, 20_000, 1_000, 5_000)),
        ("pos".to_owned(), quota(50, 100, 20_000, 1_000, 5_000)),
        ("b2b".to_owned(), quota(20, 40, 50_000, 2_000, 5_000)),
    ])
}

/// A `[limits.channels.<code>]` entry as written: only the keys it names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaPatch {
    requests_per_second: Option<u32>,
    burst: Option<u32>,
    cost_bucket: Option<u64>,
    cost_restore_per_second: Option<u64>,
    max_cost_per_operation: Option<u64>,
}

impl QuotaPatch {
    fn over(self, base: ChannelQuota) -> ChannelQuota {
        ChannelQuota {
            requests_per_second: self.requests_per_second.unwrap_or(base.requests_per_second),
            burst: self.burst.unwrap_or(base.burst),
            cost_bucket: self.cost_bucket.unwrap_or(base.cost_bucket),
            cost_restore_per_second: self
                .cost_restore_per_second
                .unwrap_or(base.cost_restore_per_second),
            max_cost_per_operation: self
                .max_cost_per_operation
                .unwrap_or(base.max_cost_per_operation),
        }
    }
}

/// `[limits.channels]` entries over the built-in channel quotas: channels the file does not
/// name keep theirs, and a named one keeps the keys it does not set.
fn channels_over_defaults<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, ChannelQuota>, D::Error> {
    let patches = BTreeMap::<String, QuotaPatch>::deserialize(deserializer)?;
    let mut channels = default_channels();
    for (code, patch) in patches {
        let base = channels.remove(&code).unwrap_or_default();
        channels.insert(code, patch.over(base));
    }
    Ok(channels)
}

impl LimitsConfig {
    /// The quota of a channel: its own entry, else `[limits.default]`.
    pub fn quota(&self, channel: &str) -> &ChannelQuota {
        self.channels.get(channel).unwrap_or(&self.default)
    }

    /// Checks every quota; the error names the key (`limits.channels.web.burst`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.default.validate("limits.default", "limits.default")?;
        for (code, quota) in &self.channels {
            let valid_code = !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_code {
                return Err(ConfigError::Invalid {
                    key: "limits.channels",
                    reason: format!(
                        "{code:?} is not a channel code (lowercase letters, digits, - and _)"
                    ),
                });
            }
            quota.validate("limits.channels", &format!("limits.channels.{code}"))?;
        }
        Ok(())
    }
}

impl ChannelQuota {
    fn validate(&self, key: &'static str, path: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key,
            reason: format!("`{path}.{field}` {reason}"),
        };
        if !(1..=1_000_000).contains(&self.requests_per_second) {
            return Err(invalid(
                "requests_per_second",
                format!("must be 1..=1000000, got {}", self.requests_per_second),
            ));
        }
        if !(1..=1_000_000).contains(&self.burst) {
            return Err(invalid(
                "burst",
                format!("must be 1..=1000000, got {}", self.burst),
            ));
        }
        if !(1..=1_000_000_000).contains(&self.cost_bucket) {
            return Err(invalid(
                "cost_bucket",
                format!("must be 1..=1000000000, got {}", self.cost_bucket),
            ));
        }
        if !(1..=self.cost_bucket).contains(&self.cost_restore_per_second) {
            return Err(invalid(
                "cost_restore_per_second",
                format!(
                    "must be 1..={} (its cost_bucket), got {}",
                    self.cost_bucket, self.cost_restore_per_second
                ),
            ));
        }
        if !(1..=self.cost_bucket).contains(&self.max_cost_per_operation) {
            return Err(invalid(
                "max_cost_per_operation",
                format!(
                    "must be 1..={} (its cost_bucket: a costlier operation could never be \
                     charged), got {}",
                    self.cost_bucket, self.max_cost_per_operation
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn defaults_cover_the_four_channels_and_are_valid() {
        let limits = LimitsConfig::default();
        limits.validate().unwrap();
        assert!(limits.enabled);
        for code in ["web", "mobile", "pos", "b2b"] {
            assert!(limits.channels.contains_key(code), "{code}");
        }
        assert_eq!(limits.quota("web").cost_bucket, 20_000);
        assert_eq!(limits.quota("web").cost_restore_per_second, 1_000);
        assert_eq!(limits.quota("kiosk"), &limits.default);
        assert!(limits.quota("pos").requests_per_second > limits.quota("web").requests_per_second);
        assert!(limits.quota("b2b").cost_bucket > limits.quota("web").cost_bucket);
    }

    #[test]
    fn a_channel_entry_overrides_only_the_keys_it_names() {
        let config: Config = toml::from_str(
            "[limits.channels.web]\nburst = 3\n[limits.channels.kiosk]\nrequests_per_second = 1\n\
             [limits.default]\ncost_bucket = 500\nmax_cost_per_operation = 500\n",
        )
        .unwrap();
        config.validate().unwrap();
        let limits = &config.limits;
        assert_eq!(limits.quota("web").burst, 3);
        assert_eq!(
            limits.quota("web").requests_per_second,
            default_channels()["web"].requests_per_second
        );
        assert_eq!(limits.quota("pos"), &default_channels()["pos"]);
        assert_eq!(limits.quota("kiosk").requests_per_second, 1);
        assert_eq!(limits.quota("kiosk").burst, ChannelQuota::default().burst);
        assert_eq!(limits.quota("unknown").cost_bucket, 500);
        assert_eq!(limits.quota("unknown").burst, 10);
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "[limits]\nrate = 3\n",
            "[limits.channels.web]\nburstt = 3\n",
            "[limits.default]\nrps = 3\n",
        ] {
            assert!(toml::from_str::<Config>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut limits = LimitsConfig::default();
        limits.channels.get_mut("web").unwrap().burst = 0;
        let message = limits.validate().unwrap_err().to_string();
        assert!(message.contains("`limits.channels.web.burst`"), "{message}");
        let mut limits = LimitsConfig::default();
        limits.default.max_cost_per_operation = limits.default.cost_bucket + 1;
        let message = limits.validate().unwrap_err().to_string();
        assert!(
            message.contains("`limits.default.max_cost_per_operation`"),
            "{message}"
        );
        let mut limits = LimitsConfig::default();
        limits
            .channels
            .get_mut("b2b")
            .unwrap()
            .cost_restore_per_second = 0;
        let message = limits.validate().unwrap_err().to_string();
        assert!(
            message.contains("`limits.channels.b2b.cost_restore_per_second`"),
            "{message}"
        );
        let mut limits = LimitsConfig::default();
        limits
            .channels
            .insert("Web".into(), ChannelQuota::default());
        let message = limits.validate().unwrap_err().to_string();
        assert!(message.contains("limits.channels"), "{message}");
    }
}

//! Typed configuration: defaults, then `gateway.toml` (`--config` / `GATEWAY_CONFIG`), then
//! environment variables and flags. Validated at start; errors name the key.

use std::net::SocketAddr;
use std::path::Path;

use commerce_core::db::DEFAULT_DATABASE_URL;
use serde::{Deserialize, Serialize};

/// The whole gateway configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on. Env `GATEWAY_LISTEN`, flag `--listen`.
    /// Port 0 picks a free port.
    pub listen: String,
    /// `sqlite://…` (embedded default) or `postgres://…` (cluster mode). Env `DATABASE_URL`.
    pub database_url: String,
    /// Limits of the GraphQL endpoint.
    pub graphql: GraphqlConfig,
    /// Limits of the HTTP layer.
    pub http: HttpConfig,
    /// Safelisted operations and automatic persisted queries.
    pub persisted: crate::shaping::persisted::PersistedConfig,
    /// How tokens are checked and minted (the HS256 secret comes from `GATEWAY_JWT_SECRET`,
    /// never from this file).
    pub auth: crate::auth::AuthConfig,
    /// The HS256 secret, from `GATEWAY_JWT_SECRET`; generated in demo mode when unset.
    #[serde(skip)]
    pub jwt_secret: Option<crate::auth::Secret>,
    /// Rate limits and query-cost budgets per channel (`GATEWAY_LIMITS=off` turns them off).
    pub limits: crate::limits::LimitsConfig,
    /// `redis://…`: cluster mode's shared rate limits and cost budgets, and the events
    /// between instances (pub/sub channel `<limits.redis_key_prefix>events`). Env `REDIS_URL`.
    /// Unset: every instance counts on its own and hears only its own events.
    pub redis_url: Option<String>,
    /// Browser origins allowed per channel (`[cors.channels.<code>] origins`).
    pub cors: crate::cors::CorsConfig,
    /// The reservation sweeper.
    pub inventory: InventoryConfig,
    /// Subscriptions over `/graphql/ws`.
    pub websocket: WebsocketConfig,
    /// Idempotency keys of mutations.
    pub idempotency: IdempotencyConfig,
    /// The in-memory read model and the response cache (`GATEWAY_READ_PATH=off` turns both
    /// off).
    pub read_path: ReadPathConfig,
}

/// `[read_path]`: what the storefront's reads are served from (DESIGN.md §8). Both parts are
/// kept current by the events of every change (on every instance in cluster mode) and are
/// never served when this instance may have missed one.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReadPathConfig {
    /// Keep channels, categories, product pages, variants, stock and price data in memory.
    pub read_model: bool,
    /// Cache whole anonymous query responses, dropped by exactly the events that touch them.
    pub response_cache: bool,
    /// Entries per part of the read model (pages, products, variants, stock, prices…), least
    /// recently used out first (100 to 10,000,000).
    pub max_entries: usize,
    /// Responses the cache keeps at most (100 to 10,000,000).
    pub cache_max_entries: usize,
    /// Bytes of response bodies the cache keeps at most (1 MiB to 16 GiB).
    pub cache_max_bytes: usize,
    /// Seconds an entry lives at most, a backstop only: events drop entries when they change
    /// (1 to 86,400).
    pub ttl_secs: u64,
}

impl Default for ReadPathConfig {
    fn default() -> Self {
        Self {
            read_model: true,
            response_cache: true,
            max_entries: 20_000,
            cache_max_entries: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            ttl_secs: 300,
        }
    }
}

/// `[idempotency]`: mutations sent with an `Idempotency-Key` header (or an `idempotencyKey`
/// input field) run once per key and viewer; repeats replay the stored response.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// Seconds a key (and its stored response) is kept; afterwards the key may be used again
    /// (60 to 2,592,000: one minute to 30 days).
    pub ttl_secs: u64,
    /// Seconds a repeat waits for the first request with its key to finish before it is
    /// answered `IDEMPOTENCY_IN_PROGRESS` (0 to 300, below `http.request_timeout_secs`).
    pub wait_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 86_400,
            wait_secs: 10,
        }
    }
}

/// `[websocket]`: the subscription socket at `/graphql/ws`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebsocketConfig {
    /// Seconds a new socket may take to send `connection_init`; then it is closed with 4408
    /// (1 to 300).
    pub connection_init_timeout_secs: u64,
    /// Operations one socket may run at once (1 to 10,000).
    pub max_operations: usize,
    /// Largest message a client may send, in bytes (1 KiB to 16 MiB).
    pub max_message_bytes: usize,
    /// Seconds between the server's keep-alive pings (and legacy `ka` messages); a socket
    /// that sends nothing, not even a pong, for three intervals is closed (5 to 3600). Also
    /// how long one message may take to be written to a client that stopped reading.
    pub keep_alive_secs: u64,
    /// Sockets open at once (1 to 1,000,000); more are refused with 503. Each holds one of
    /// `http.max_connections`, so keep it below that to leave room for HTTP requests.
    pub max_sockets: usize,
    /// Sockets open at once from one client address (1 to 1,000,000); more are refused
    /// with 429.
    pub max_sockets_per_client: usize,
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        Self {
            connection_init_timeout_secs: 10,
            max_operations: 100,
            max_message_bytes: 64 * 1024,
            keep_alive_secs: 15,
            max_sockets: 5_000,
            max_sockets_per_client: 200,
        }
    }
}

/// `[inventory]`: the background sweeper that releases expired reservations.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InventoryConfig {
    /// Seconds between two sweeps of expired reservations (1 to 3600).
    pub sweep_interval_secs: u64,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            sweep_interval_secs: 30,
        }
    }
}

/// `[graphql]`: query shape limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Page size when a connection's `first` is omitted.
    pub default_page_size: u64,
    /// Largest accepted `first`; larger values are a `BAD_USER_INPUT` error.
    pub max_page_size: u64,
    /// Deepest accepted selection nesting.
    pub max_depth: usize,
    /// Most field selections an operation may execute, fragments expanded where they are
    /// spread (checked before validation: a small document that expands to millions of
    /// fields is refused in microseconds).
    pub max_selections: u64,
    /// Most aliased fields an operation may execute.
    pub max_aliases: u64,
    /// Most fields at the root of an operation.
    pub max_root_fields: u64,
    /// Highest estimated cost of one operation (objects cost 1; connections multiply by
    /// `first`, other lists by 5). Over it: `QUERY_TOO_COMPLEX`, before any SQL.
    pub max_cost: u64,
    /// Per-channel overrides (`[graphql.channels.mobile] max_depth = 8`): each names only the
    /// limits it changes; the others keep the values above.
    pub channels: std::collections::BTreeMap<String, ChannelShaping>,
}

/// `[graphql.channels.<code>]`: a channel's own operation limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelShaping {
    pub default_page_size: Option<u64>,
    pub max_page_size: Option<u64>,
    pub max_depth: Option<usize>,
    pub max_selections: Option<u64>,
    pub max_aliases: Option<u64>,
    pub max_root_fields: Option<u64>,
    pub max_cost: Option<u64>,
}

impl GraphqlConfig {
    /// The limits of one channel: the global ones with the channel's overrides applied.
    pub fn for_channel(&self, channel: &str) -> GraphqlConfig {
        let mut config = GraphqlConfig {
            channels: Default::default(),
            ..self.clone()
        };
        if let Some(o) = self.channels.get(channel) {
            config.default_page_size = o.default_page_size.unwrap_or(config.default_page_size);
            config.max_page_size = o.max_page_size.unwrap_or(config.max_page_size);
            config.max_depth = o.max_depth.unwrap_or(config.max_depth);
            config.max_selections = o.max_selections.unwrap_or(config.max_selections);
            config.max_aliases = o.max_aliases.unwrap_or(config.max_aliases);
            config.max_root_fields = o.max_root_fields.unwrap_or(config.max_root_fields);
            config.max_cost = o.max_cost.unwrap_or(config.max_cost);
        }
        config
    }
}

/// `[http]`: transport limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Seconds a request may run before it is answered with 408. Also how long a response may
    /// wait for a client that does not read it before the connection is closed.
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's complete headers (timed from accept,
    /// or on a kept-alive connection from the first byte of its next request); then it is
    /// closed without an answer.
    pub header_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait idle for its next request; then it is closed.
    pub keep_alive_idle_secs: u64,
    /// Most client connections open at once. At the cap, a new connection closes the one idle
    /// (or sending headers) the longest; when all have a request running, new ones wait in
    /// the listen backlog. Lowered at start, with a warning, to the open-file limit
    /// (`ulimit -n`) less 128 descriptors kept in reserve.
    pub max_connections: usize,
    /// Largest response body sent, in bytes; a larger one is replaced by a
    /// `RESPONSE_TOO_LARGE` error (the operation ran, its result is not sent).
    pub max_response_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            graphql: GraphqlConfig::default(),
            http: HttpConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            persisted: crate::shaping::persisted::PersistedConfig::default(),
            jwt_secret: None,
            limits: crate::limits::LimitsConfig::default(),
            redis_url: None,
            cors: crate::cors::CorsConfig::default(),
            inventory: InventoryConfig::default(),
            websocket: WebsocketConfig::default(),
            idempotency: IdempotencyConfig::default(),
            read_path: ReadPathConfig::default(),
        }
    }
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            default_page_size: 20,
            max_page_size: 100,
            max_depth: 15,
            max_selections: 2_000,
            max_aliases: 30,
            max_root_fields: 20,
            max_cost: 5_000,
            channels: Default::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            keep_alive_idle_secs: 60,
            max_connections: 10_000,
            max_response_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: display,
            message: err.to_string(),
        })
    }

    /// The listen address as host and port: an IP address with a port (`127.0.0.1:8080`,
    /// `[::1]:8080`, `0.0.0.0:8080`) or a host name with a port (`localhost:8080`). Port 0
    /// picks a free port. Checked without resolving the name.
    pub fn listen_host_port(&self) -> Result<(String, u16), ConfigError> {
        if let Ok(addr) = self.listen.parse::<SocketAddr>() {
            return Ok((addr.ip().to_string(), addr.port()));
        }
        let invalid = |why: &str| ConfigError::Invalid {
            key: "listen",
            reason: format!(
                "{:?} is not an address like 127.0.0.1:8080 or localhost:8080 ({why})",
                self.listen
            ),
        };
        let (host, port) = self
            .listen
            .rsplit_once(':')
            .ok_or_else(|| invalid("no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_host {
            return Err(invalid("not a host name or IP address"));
        }
        Ok((host.to_owned(), port))
    }

    /// The addresses to listen on: the listen address, with a host name resolved (IPv4
    /// addresses first, so `localhost:8080` serves on 127.0.0.1 where both exist).
    pub async fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        if let Ok(addr) = self.listen.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let (host, port) = self.listen_host_port()?;
        let unresolved = |why: String| ConfigError::Invalid {
            key: "listen",
            reason: format!("cannot resolve the host of {:?}: {why}", self.listen),
        };
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| unresolved(err.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        addrs.sort_by_key(SocketAddr::is_ipv6);
        addrs.dedup();
        Ok(addrs)
    }

    /// Checks every value; the first problem found is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_host_port()?;
        let url = &self.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database_url",
                reason: "must start with sqlite:, postgres:// or postgresql://".into(),
            });
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("redis+unix://"))
        {
            return Err(ConfigError::Invalid {
                key: "redis_url",
                reason: format!(
                    "{} must start with redis:// (rediss:// needs TLS, which this build lacks)",
                    crate::server::redact(url)
                ),
            });
        }
        self.limits.validate()?;
        if !(1..=3600).contains(&self.inventory.sweep_interval_secs) {
            return Err(ConfigError::Invalid {
                key: "inventory.sweep_interval_secs",
                reason: "must be between 1 and 3600".into(),
            });
        }
        let ws = &self.websocket;
        for (key, value, range) in [
            (
                "websocket.connection_init_timeout_secs",
                ws.connection_init_timeout_secs,
                1..=300,
            ),
            (
                "websocket.max_operations",
                ws.max_operations as u64,
                1..=10_000,
            ),
            (
                "websocket.max_message_bytes",
                ws.max_message_bytes as u64,
                1024..=16 * 1024 * 1024,
            ),
            ("websocket.keep_alive_secs", ws.keep_alive_secs, 5..=3600),
            (
                "websocket.max_sockets",
                ws.max_sockets as u64,
                1..=1_000_000,
            ),
            (
                "websocket.max_sockets_per_client",
                ws.max_sockets_per_client as u64,
                1..=1_000_000,
            ),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be between {} and {}", range.start(), range.end()),
                });
            }
        }
        for (key, value) in [
            ("auth.issuer", &self.auth.issuer),
            ("auth.audience", &self.auth.audience),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must not be empty: tokens are checked against it".into(),
                });
            }
        }
        check_graphql(&self.graphql)?;
        for code in self.graphql.channels.keys() {
            check_graphql(&self.graphql.for_channel(code)).map_err(|err| match err {
                ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                    key,
                    reason: format!("{reason} (as set for [graphql.channels.{code}])"),
                },
                other => other,
            })?;
        }
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "http.max_body_bytes",
                reason: "must be at least 1024".into(),
            });
        }
        if self.http.max_response_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "http.max_response_bytes",
                reason: "must be at least 1024".into(),
            });
        }
        self.cors.validate()?;
        if self.http.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "http.request_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        for (key, value) in [
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("http.keep_alive_idle_secs", self.http.keep_alive_idle_secs),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be 1..=3600".into(),
                });
            }
        }
        if !(1..=1_000_000).contains(&self.http.max_connections) {
            return Err(ConfigError::Invalid {
                key: "http.max_connections",
                reason: "must be 1..=1000000 (and is lowered to what ulimit -n allows)".into(),
            });
        }
        self.check_idempotency()?;
        self.check_read_path()?;
        Ok(())
    }
}

impl Config {
    /// `[idempotency]`: a key lives one minute to 30 days; a repeat waits less than a request
    /// may take, so it gets its coded answer before the request timeout's 408.
    fn check_read_path(&self) -> Result<(), ConfigError> {
        let read = &self.read_path;
        let checks: [(&'static str, bool, &str); 4] = [
            (
                "read_path.max_entries",
                (100..=10_000_000).contains(&read.max_entries),
                "must be between 100 and 10000000",
            ),
            (
                "read_path.cache_max_entries",
                (100..=10_000_000).contains(&read.cache_max_entries),
                "must be between 100 and 10000000",
            ),
            (
                "read_path.cache_max_bytes",
                (1 << 20..=16 << 30).contains(&read.cache_max_bytes),
                "must be between 1048576 (1 MiB) and 17179869184 (16 GiB)",
            ),
            (
                "read_path.ttl_secs",
                (1..=86_400).contains(&read.ttl_secs),
                "must be between 1 and 86400",
            ),
        ];
        match checks.into_iter().find(|(_, ok, _)| !ok) {
            Some((key, _, reason)) => Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            }),
            None => Ok(()),
        }
    }

    fn check_idempotency(&self) -> Result<(), ConfigError> {
        let idempotency = &self.idempotency;
        if !(60..=30 * 86_400).contains(&idempotency.ttl_secs) {
            return Err(ConfigError::Invalid {
                key: "idempotency.ttl_secs",
                reason: "must be between 60 (one minute) and 2592000 (30 days)".into(),
            });
        }
        if idempotency.wait_secs > 300
            || idempotency.wait_secs >= self.http.request_timeout_secs.max(1)
        {
            return Err(ConfigError::Invalid {
                key: "idempotency.wait_secs",
                reason: format!(
                    "must be between 0 and 300 and below http.request_timeout_secs ({})",
                    self.http.request_timeout_secs
                ),
            });
        }
        Ok(())
    }
}

/// The rules every `[graphql]` (and per-channel) set of limits must follow.
fn check_graphql(g: &GraphqlConfig) -> Result<(), ConfigError> {
    if g.max_page_size == 0 || g.max_page_size > 1000 {
        return Err(ConfigError::Invalid {
            key: "graphql.max_page_size",
            reason: "must be 1..=1000".into(),
        });
    }
    if g.default_page_size == 0 || g.default_page_size > g.max_page_size {
        return Err(ConfigError::Invalid {
            key: "graphql.default_page_size",
            reason: format!("must be 1..={} (graphql.max_page_size)", g.max_page_size),
        });
    }
    for (key, value) in [
        ("graphql.max_selections", g.max_selections),
        ("graphql.max_root_fields", g.max_root_fields),
        ("graphql.max_cost", g.max_cost),
    ] {
        if value == 0 {
            return Err(ConfigError::Invalid {
                key,
                reason: "must be at least 1".into(),
            });
        }
    }
    if g.max_depth < 3 {
        return Err(ConfigError::Invalid {
            key: "graphql.max_depth",
            reason: "must be at least 3".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn channel_shaping_overrides_only_what_it_names() {
        let mut config = Config::default();
        config.graphql.channels.insert(
            "mobile".into(),
            ChannelShaping {
                max_depth: Some(8),
                ..Default::default()
            },
        );
        let mobile = config.graphql.for_channel("mobile");
        assert_eq!(mobile.max_depth, 8);
        assert_eq!(mobile.max_cost, config.graphql.max_cost);
        assert_eq!(config.graphql.for_channel("web").max_depth, 15);
        config.validate().unwrap();
        config.graphql.channels.get_mut("mobile").unwrap().max_depth = Some(1);
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("graphql.channels.mobile"), "{message}");
    }
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::default();
        config.validate().unwrap();
        assert!(config.database_url.starts_with("sqlite:"));
    }

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_refused() {
        let config: Config =
            toml::from_str("listen = \"0.0.0.0:9000\"\n[graphql]\nmax_page_size = 50\n").unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.graphql.max_page_size, 50);
        assert_eq!(config.graphql.default_page_size, 20);
        let err = toml::from_str::<Config>("[graphql]\nmax_pagesize = 5\n").unwrap_err();
        assert!(err.to_string().contains("max_pagesize"), "{err}");
    }

    #[test]
    fn the_websocket_section_is_read_and_validated() {
        let config: Config =
            toml::from_str("[websocket]\nmax_operations = 5\nkeep_alive_secs = 30\n").unwrap();
        assert_eq!(config.websocket.max_operations, 5);
        assert_eq!(config.websocket.keep_alive_secs, 30);
        assert_eq!(config.websocket.connection_init_timeout_secs, 10);
        config.validate().unwrap();
        let mut bad = Config::default();
        bad.websocket.connection_init_timeout_secs = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "websocket.connection_init_timeout_secs",
                ..
            })
        ));
        let mut bad = Config::default();
        bad.websocket.max_message_bytes = 10;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Invalid {
                key: "websocket.max_message_bytes",
                ..
            })
        ));
    }

    #[test]
    fn the_idempotency_section_is_read_and_validated() {
        let config: Config = toml::from_str("[idempotency]\nttl_secs = 3600\n").unwrap();
        assert_eq!(config.idempotency.ttl_secs, 3600);
        assert_eq!(config.idempotency.wait_secs, 10);
        config.validate().unwrap();
        assert!(toml::from_str::<Config>("[idempotency]\nttl = 5\n").is_err());
        for (ttl_secs, wait_secs, key) in [
            (59, 10, "idempotency.ttl_secs"),
            (30 * 86_400 + 1, 10, "idempotency.ttl_secs"),
            (3600, 301, "idempotency.wait_secs"),
            (3600, 30, "idempotency.wait_secs"),
        ] {
            let mut config = Config::default();
            config.idempotency.ttl_secs = ttl_secs;
            config.idempotency.wait_secs = wait_secs;
            match config.validate() {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{ttl_secs}/{wait_secs}: {other:?}"),
            }
        }
        let mut config = Config::default();
        config.idempotency.wait_secs = 0;
        config.validate().unwrap();
    }

    #[test]
    fn the_sweep_interval_is_read_and_validated() {
        let config: Config = toml::from_str("[inventory]\nsweep_interval_secs = 5\n").unwrap();
        assert_eq!(config.inventory.sweep_interval_secs, 5);
        config.validate().unwrap();
        for bad in [0, 3601] {
            let mut config = Config::default();
            config.inventory.sweep_interval_secs = bad;
            assert!(
                matches!(
                    config.validate(),
                    Err(ConfigError::Invalid {
                        key: "inventory.sweep_interval_secs",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = Config {
            listen: "nowhere".into(),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { key: "listen", .. })
        ));
        for bad in [
            "localhost",
            ":8080",
            "localhost:http",
            "127.0.0.1:70000",
            "a b:80",
        ] {
            config.listen = bad.into();
            assert!(
                matches!(
                    config.validate(),
                    Err(ConfigError::Invalid { key: "listen", .. })
                ),
                "{bad}"
            );
        }
        config.listen = "127.0.0.1:0".into();
        config.graphql.default_page_size = 500;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                key: "graphql.default_page_size",
                ..
            })
        ));
        config.graphql.default_page_size = 20;
        config.database_url = "mysql://x".into();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                key: "database_url",
                ..
            })
        ));
    }

    #[test]
    fn connection_limits_have_defaults_and_are_validated() {
        let config: Config = toml::from_str("[http]\nmax_connections = 3\n").unwrap();
        assert_eq!(config.http.max_connections, 3);
        assert_eq!(config.http.header_read_timeout_secs, 10);
        assert_eq!(config.http.keep_alive_idle_secs, 60);
        for (key, change) in [
            (
                "http.header_read_timeout_secs",
                (|http: &mut HttpConfig| http.header_read_timeout_secs = 0) as fn(&mut HttpConfig),
            ),
            ("http.keep_alive_idle_secs", |http| {
                http.keep_alive_idle_secs = 0
            }),
            ("http.max_connections", |http| http.max_connections = 0),
        ] {
            let mut config = Config::default();
            change(&mut config.http);
            match config.validate() {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn listen_accepts_host_names_and_port_zero() {
        let mut config = Config {
            listen: "localhost:0".into(),
            ..Config::default()
        };
        config.validate().unwrap();
        let addrs = config.listen_addrs().await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 0));
        assert!(addrs[0].is_ipv4() || addrs.iter().all(|a| a.is_ipv6()));
        config.listen = "localhost:8080".into();
        assert_eq!(
            config.listen_host_port().unwrap(),
            ("localhost".to_owned(), 8080)
        );
        config.listen = "[::1]:0".into();
        assert_eq!(
            config.listen_addrs().await.unwrap(),
            vec!["[::1]:0".parse().unwrap()]
        );
        config.listen = "0.0.0.0:8080".into();
        assert_eq!(
            config.listen_host_port().unwrap(),
            ("0.0.0.0".to_owned(), 8080)
        );
    }
}

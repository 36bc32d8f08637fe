//! The HTTP server: state, routes, middleware, start-up and graceful shutdown.
//!
//! Module map of the routes:
//! - `POST /graphql`, `GET /graphql`: [`crate::transport`] (GraphiQL for browsers on GET)
//! - `GET /graphql/assets/{file}`: [`crate::graphiql`], GraphiQL's embedded assets
//! - `GET /healthz`: the process is up
//! - `GET /readyz`: the database answers (and Redis, in cluster mode)
//! - `GET /metrics`: [`crate::metrics`], Prometheus text (process-wide series)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use commerce_core::demo::DemoSummary;
use commerce_core::{CoreError, db, demo};
use migrations::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Config, ConfigError, GraphqlConfig};
use crate::graphql::{GatewaySchema, build_schema};
use crate::transport::{self, ResponseMedia};

/// Shared by every handler: one allocation, so handing it to a handler or a middleware costs
/// one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub schema: GatewaySchema,
    pub db: DatabaseConnection,
    pub graphql_config: Arc<GraphqlConfig>,
    /// The operation limits of each channel with `[graphql.channels.<code>]` overrides.
    pub graphql_by_channel: Arc<std::collections::HashMap<String, Arc<GraphqlConfig>>>,
    /// SQL statements run since start (also the basis of the N+1 test).
    pub sql_statements: Arc<AtomicU64>,
    /// Domain events, published after their change committed.
    pub bus: crate::bus::EventBus,
    /// Checks (and in demo mode mints) the tokens that name viewers.
    pub auth: Arc<crate::auth::Authenticator>,
    /// Demo mode: introspection for every viewer (GraphiQL's docs); otherwise admins only.
    pub introspection_for_all: bool,
    /// Request-rate limits and query-cost budgets per (channel, client), in Redis in
    /// cluster mode.
    pub limits: Arc<crate::limits::Limits>,
    /// Safelisted operations per channel and automatic persisted queries.
    pub persisted: Arc<crate::shaping::persisted::PersistedOperations>,
    /// Largest response body sent (`http.max_response_bytes`); larger: `RESPONSE_TOO_LARGE`.
    pub max_response_bytes: usize,
    /// The browser origins allowed to call `/graphql` (`[cors]`; local ones in demo mode).
    pub cors: Arc<crate::cors::CorsPolicy>,
    /// The subscription socket's limits (`[websocket]`).
    pub websocket: crate::config::WebsocketConfig,
    /// SKU names shared by every stock subscription.
    pub sku_names: crate::graphql::stock_events::SkuNames,
    /// How long idempotency keys live and repeats wait (`[idempotency]`).
    pub idempotency: crate::idempotency::Settings,
    /// On PostgreSQL: idempotency records written in batches under load.
    pub idempotency_batches: Option<Arc<crate::idempotency::Batches>>,
    /// `placeOrder`'s batch writers (PostgreSQL only).
    pub order_batches: Option<Arc<crate::order_batches::OrderBatches>>,
    /// The sockets open at `/graphql/ws`, in all and per client address.
    pub sockets: Arc<crate::transport::Sockets>,
    /// The in-memory read model and the response cache (`[read_path]`), kept by the bus.
    pub read_path: Arc<crate::read_path::ReadPath>,
    /// Live subscriptions that share one execution ([`crate::transport::Fanout`]).
    pub fanout: crate::transport::Fanout,
    /// Turns `true` when the server stops: open subscriptions (sockets, multipart streams)
    /// end, so that clients reconnect to another instance and shutdown is not held up.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// Why the gateway could not start. Each message is one line that names what failed (with
/// the database URL's password redacted), the cause, and where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened; `problem` is the cause with a hint.
    #[error("cannot open the database {url}: {problem}")]
    Database {
        url: String,
        problem: String,
        error: Option<DbErr>,
    },
    #[error("cannot apply the migrations to the database {url}: {error}")]
    Migrate { url: String, error: DbErr },
    #[error("loading the demo data failed: {0}")]
    Demo(CoreError),
    /// The listen address cannot be bound (checked before the database is touched).
    #[error("cannot listen on {addr}: {error}; {hint}")]
    Bind {
        addr: String,
        error: std::io::Error,
        hint: &'static str,
    },
    /// The auth configuration or the JWT secret cannot be used.
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// `REDIS_URL` is set but Redis cannot be reached (its password redacted).
    #[error(transparent)]
    Redis(#[from] crate::limits::RedisConnectError),
    /// The safelisted operations cannot be loaded.
    #[error("persisted operations: {0}")]
    Operations(String),
}

impl From<CoreError> for StartError {
    fn from(err: CoreError) -> Self {
        Self::Demo(err)
    }
}

/// How long a PostgreSQL server may take to accept the first connection at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, counts statements and applies pending migrations. A PostgreSQL server that does
/// not answer within [`CONNECT_TIMEOUT`] is reported as such.
pub async fn open_database(url: &str) -> Result<(DatabaseConnection, Arc<AtomicU64>), StartError> {
    let database_error = |problem: String, error: Option<DbErr>| StartError::Database {
        url: redact(url),
        problem,
        error,
    };
    let connecting = db::connect(url);
    let connected = if url.starts_with("sqlite:") {
        connecting.await
    } else {
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                database_error(
                    format!(
                        "no answer within {} s; check the host and port, and that no firewall \
                         drops the connection",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    None,
                )
            })?
    };
    let mut connection =
        connected.map_err(|err| database_error(db::explain(url, &err), Some(err)))?;
    let counter = Arc::new(AtomicU64::new(0));
    let count = counter.clone();
    connection.set_metric_callback(move |info| {
        count.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count_sql_statement();
        tracing::trace!(target: "gateway::sql", elapsed = ?info.elapsed, failed = info.failed, sql = %info.statement);
    });
    Migrator::up(&connection, None)
        .await
        .map_err(|error| StartError::Migrate {
            url: redact(url),
            error,
        })?;
    Ok((connection, counter))
}

/// A URL for messages: a password, in the user info or as a `password=` parameter, becomes
/// `***`; a URL without one is unchanged. The user info ends at the last `@`, so a password
/// with unencoded `@`, `/`, `?` or `#` is hidden too.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (mut redacted, rest) = match url[scheme_end..].rfind('@') {
        Some(at) => {
            let at = scheme_end + at;
            let user_info = &url[scheme_end..at];
            let shown = match user_info.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => user_info.to_owned(),
            };
            (format!("{}{shown}", &url[..scheme_end]), &url[at..])
        }
        None => (url[..scheme_end].to_owned(), &url[scheme_end..]),
    };
    let Some((before_query, query)) = rest.split_once('?') else {
        redacted.push_str(rest);
        return redacted;
    };
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    redacted.push_str(before_query);
    redacted.push('?');
    redacted.push_str(&pairs.join("&"));
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

/// Binds the listen address (every resolved address is tried in turn).
async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    let addrs = config.listen_addrs().await?;
    let bind_error = |error: std::io::Error| {
        let hint = match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process uses this port: stop it, or choose another address with \
                 --listen ADDR or GATEWAY_LISTEN (e.g. --listen 127.0.0.1:8081)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose another address with --listen ADDR \
                 or GATEWAY_LISTEN (e.g. --listen 127.0.0.1:8080)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "this machine has no such address: choose another with --listen ADDR or \
                 GATEWAY_LISTEN (e.g. --listen 127.0.0.1:8080 or 0.0.0.0:8080)"
            }
            _ => "choose another address with --listen ADDR or GATEWAY_LISTEN",
        };
        StartError::Bind {
            addr: config.listen.clone(),
            error,
            hint,
        }
    };
    TcpListener::bind(&addrs[..]).await.map_err(bind_error)
}

/// The routes and middleware over a state.
pub fn router(state: AppState, config: &Config) -> Router {
    crate::metrics::install();
    Router::new()
        .route(
            "/graphql",
            get(transport::graphql_get).post(transport::graphql_post),
        )
        .route("/graphql/ws", get(transport::graphql_ws))
        .route("/graphql/assets/{file}", get(crate::graphiql::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            config.http.max_body_bytes,
            refuse_declared_oversize,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::custom(|_| internal_error()))
        .layer(middleware::map_response(coded_empty_errors))
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn_with_state(
            state.cors.clone(),
            crate::cors::layer,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Unknown routes.
async fn not_found() -> Response {
    coded_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; GraphQL is served at /graphql",
    )
}

/// A body whose `Content-Length` is over the limit is refused before any of it is read (a
/// chunked body is refused by the extractor as soon as it grows past the limit).
async fn refuse_declared_oversize(
    State(max_body_bytes): State<usize>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body_bytes as u64 => {
            // Read what the client still sends (bounded), so it gets this answer, not a reset.
            crate::connections::discard_in_background(request.into_body());
            let mut refused = coded_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BAD_REQUEST",
                &format!(
                    "the request body ({length} bytes) is over the limit of {max_body_bytes} \
                     bytes (http.max_body_bytes)"
                ),
            );
            refused.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            refused
        }
        _ => next.run(request).await,
    }
}

/// Errors produced below the handlers (405 from the router, 408 from the timeout) come with
/// an empty body; give them the same coded JSON shape as every other error.
async fn coded_empty_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.body().size_hint().exact() != Some(0)
    {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            ("METHOD_NOT_ALLOWED", "method not allowed on this route")
        }
        StatusCode::REQUEST_TIMEOUT => (
            "REQUEST_TIMEOUT",
            "the request took too long and was stopped",
        ),
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route"),
        _ if status.is_client_error() => ("BAD_REQUEST", "the request was refused"),
        _ => ("INTERNAL", "internal error"),
    };
    let mut coded = coded_error(status, code, message);
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            coded.headers_mut().insert(name.clone(), value.clone());
        }
    }
    coded
}

fn coded_error(status: StatusCode, code: &str, message: &str) -> Response {
    transport::request_error(status, ResponseMedia::Json, code, message)
}

/// A panic never reaches the client as anything but a coded error.
fn internal_error() -> Response {
    coded_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "internal error",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (database, redis) = tokio::join!(state.db.ping(), state.bus.redis_answers());
    if let Err(err) = &database {
        tracing::warn!(error = %err, "readiness check: the database does not answer");
    }
    if redis == Some(false) {
        tracing::warn!("readiness check: Redis does not answer");
    }
    let ready = database.is_ok() && redis != Some(false);
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": word(database.is_ok()),
    });
    if let Some(redis) = redis {
        body["redis"] = json!(word(redis));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A gateway serving in the background.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub state: AppState,
    /// What `--demo` loaded, when it loaded anything.
    pub demo: Option<DemoSummary>,
    /// Demo mode made up the HS256 secret (none was configured): tokens die with the process.
    pub generated_secret: bool,
    shutdown: oneshot::Sender<()>,
    /// Ends the open subscriptions ([`AppState::closing`]).
    closing: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// The reservation sweeper ([`sweep_reservations`]) and what stops it.
    sweeper_stop: oneshot::Sender<()>,
    sweeper: JoinHandle<()>,
    /// Cluster mode: the bus's Redis publisher and subscriber tasks.
    bus_task: Option<crate::bus::BusTask>,
}

impl Shared {
    /// The operation limits of `channel`.
    pub fn graphql_for(&self, channel: &str) -> &Arc<GraphqlConfig> {
        self.graphql_by_channel
            .get(channel)
            .unwrap_or(&self.graphql_config)
    }
}

impl RunningGateway {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SQL statements run so far.
    pub fn sql_statements(&self) -> u64 {
        self.state.sql_statements.load(Ordering::Relaxed)
    }

    /// Stops accepting, finishes in-flight requests, then closes the database: on SQLite the
    /// write-ahead log is checkpointed into the database file first, so the `.db` file alone
    /// holds all data afterwards.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.closing.send(true);
        let _ = self.shutdown.send(());
        let _ = self.sweeper_stop.send(());
        let served = self.task.await.unwrap_or(Ok(()));
        let _ = self.sweeper.await;
        // After the last events of in-flight requests and the sweeper were published.
        if let Some(bus_task) = self.bus_task {
            bus_task.stop().await;
        }
        let closed = db::close(&self.state.db).await;
        served?;
        closed.map_err(|err| std::io::Error::other(format!("closing the database: {err}")))
    }
}

/// Validates the configuration, binds the listen address (so a busy port is reported before
/// the database is touched), prepares the database (migrations; demo data when `demo`) and
/// serves in the background. Connections that arrive meanwhile wait in the listen backlog.
pub async fn start(config: Config, demo: bool) -> Result<RunningGateway, StartError> {
    config.validate()?;
    // Demo mode makes up a secret when none is set, so its printed dev tokens work.
    let generated_secret = match (&config.jwt_secret, demo) {
        (None, true) => Some(crate::auth::Secret::generate()),
        _ => None,
    };
    let auth = crate::auth::Authenticator::new(
        &config.auth,
        config.jwt_secret.as_ref().or(generated_secret.as_ref()),
    )?;
    let listener = bind(&config).await?;
    let addr = listener.local_addr().map_err(|error| StartError::Bind {
        addr: config.listen.clone(),
        error,
        hint: "choose another address with --listen ADDR or GATEWAY_LISTEN",
    })?;
    // Redis before the database: when it cannot be reached, nothing has been opened yet.
    let rate_limits = match &config.redis_url {
        Some(url) => crate::limits::Limits::new(
            &config.limits,
            Some(crate::limits::RedisStore::connect(url, &config.limits.redis_key_prefix).await?),
            crate::limits::Clock::monotonic(),
        ),
        None => crate::limits::Limits::in_process(&config.limits),
    };
    // Cluster mode: events travel to the other instances on `<redis_key_prefix>events`.
    let (bus, bus_task) = match &config.redis_url {
        Some(url) => {
            let channel = format!("{}events", config.limits.redis_key_prefix);
            let (bus, task) = crate::bus::EventBus::connect(url, &channel).await?;
            (bus, Some(task))
        }
        None => (crate::bus::EventBus::new(), None),
    };
    let persisted = crate::shaping::persisted::PersistedOperations::load(
        &config.persisted,
        rate_limits.redis().cloned(),
    )
    .map_err(StartError::Operations)?;
    for channel in &config.persisted.persisted_only_channels {
        let count = persisted.safelist_len(channel);
        if count == 0 {
            tracing::warn!(
                channel = %channel,
                dir = %config.persisted.operations_dir.display(),
                "channel {channel} runs persisted operations only, but its safelist is empty: every request on it will be refused (is [persisted] operations_dir right for this working directory?)"
            );
        } else {
            tracing::info!(channel = %channel, operations = count, "safelist loaded");
        }
    }
    let (db, sql_statements) = open_database(&config.database_url).await?;
    let demo_mode = demo;
    let demo = if demo {
        demo::seed_if_empty(&db).await?
    } else {
        None
    };
    // After the demo data: the read model starts from what the database holds now.
    let read_path = crate::read_path::ReadPath::new(&config.read_path, &bus);
    read_path.warm(&db).await?;
    let (closing, closing_signal) = tokio::sync::watch::channel(false);
    let idempotency_settings =
        crate::idempotency::Settings::new(&config.idempotency, config.http.request_timeout_secs);
    let idempotency_batches =
        (db.get_database_backend() == sea_orm::DbBackend::Postgres).then(|| {
            Arc::new(crate::idempotency::Batches::new(
                db.clone(),
                idempotency_settings.lifetime,
            ))
        });
    let order_batches = (db.get_database_backend() == sea_orm::DbBackend::Postgres).then(|| {
        Arc::new(crate::order_batches::OrderBatches::new(
            db.clone(),
            bus.clone(),
        ))
    });
    let state = AppState(Arc::new(Shared {
        schema: build_schema(&config.graphql),
        db,
        graphql_config: Arc::new(config.graphql.for_channel("")),
        graphql_by_channel: Arc::new(
            config
                .graphql
                .channels
                .keys()
                .map(|code| (code.clone(), Arc::new(config.graphql.for_channel(code))))
                .collect(),
        ),
        sql_statements,
        bus,
        auth: Arc::new(auth),
        introspection_for_all: demo_mode,
        limits: Arc::new(rate_limits),
        persisted: Arc::new(persisted),
        max_response_bytes: config.http.max_response_bytes,
        cors: Arc::new(crate::cors::CorsPolicy::new(&config.cors, demo_mode)),
        websocket: config.websocket.clone(),
        sku_names: Default::default(),
        idempotency: idempotency_settings,
        idempotency_batches,
        order_batches,
        sockets: Arc::default(),
        read_path,
        fanout: Default::default(),
        closing: closing_signal,
    }));
    let app = router(state.clone(), &config);
    let limits = crate::connections::Limits::from_config(&config.http);
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Peer addresses reach handlers as `ConnectInfo<SocketAddr>`.
        crate::connections::serve(listener, app, limits, async move {
            let _ = signal.await;
        })
        .await
    });
    let (sweeper_stop, stop_sweeping) = oneshot::channel::<()>();
    let sweeper = tokio::spawn(sweep_reservations(
        state.db.clone(),
        state.bus.clone(),
        std::time::Duration::from_secs(config.inventory.sweep_interval_secs),
        stop_sweeping,
    ));
    Ok(RunningGateway {
        addr,
        state,
        demo,
        generated_secret: generated_secret.is_some(),
        shutdown,
        closing,
        task,
        sweeper_stop,
        sweeper,
        bus_task,
    })
}

/// Every `interval` until `stop` fires (or its sender is dropped): releases the reservations
/// that have expired ([`commerce_core::inventory::release_expired`], a batch at a time) and
/// announces the released levels on the bus. A failed sweep is logged and retried at the next
/// tick.
async fn sweep_reservations(
    db: sea_orm::DatabaseConnection,
    bus: crate::bus::EventBus,
    interval: std::time::Duration,
    mut stop: oneshot::Receiver<()>,
) {
    use commerce_core::inventory::{release_expired, service::MAX_SWEEP};
    // The first sweep one interval after start, not at once.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        // Expired idempotency keys too (in batches; a failure waits for the next tick).
        if let Err(err) = commerce_core::idempotency::purge_expired(&db, chrono::Utc::now()).await {
            tracing::warn!(error = %err, "purging expired idempotency keys failed");
        }
        // Several batches when many expired at once; each is its own transaction.
        loop {
            match release_expired(&db, chrono::Utc::now(), MAX_SWEEP).await {
                Ok(swept) => {
                    if let Some(event) = crate::bus::Event::stock_changed(&swept.change) {
                        bus.publish(event);
                    }
                    if (swept.reservations.len() as u64) < MAX_SWEEP {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "sweeping expired reservations failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact("postgres://app:p@ss:w/rd@db/shop?sslmode=disable"),
            "postgres://app:***@db/shop?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://app:pa?ss#w/rd@db/shop"),
            "postgres://app:***@db/shop"
        );
        assert_eq!(
            redact("postgres://app@db/shop?password=s3cret&sslmode=require"),
            "postgres://app@db/shop?password=***&sslmode=require"
        );
        assert!(!redact("postgres://app:s3cret@db/x").contains("s3cret"));
    }

    #[test]
    fn urls_without_a_password_are_shown_as_given() {
        for url in [
            "postgres://app@db/x",
            "postgres://db:5432/x",
            "postgresql://app@db/x?sslmode=disable",
            "sqlite://data/commerce.db?mode=rwc",
            "sqlite::memory:",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[tokio::test]
    async fn a_busy_port_is_reported_with_the_flag_before_the_database_is_touched() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = std::env::temp_dir().join(format!("gateway-busy-port-{}", std::process::id()));
        let config = Config {
            listen: busy.local_addr().unwrap().to_string(),
            database_url: format!("sqlite://{}/x.db?mode=rwc", dir.display()),
            ..Config::default()
        };
        let err = start(config, false).await.err().expect("the port is busy");
        let message = err.to_string();
        assert!(matches!(err, StartError::Bind { .. }), "{message}");
        assert!(
            message.contains("--listen") && message.contains("GATEWAY_LISTEN"),
            "{message}"
        );
        assert!(!dir.exists(), "the database was opened before binding");
    }

    #[tokio::test]
    async fn a_closed_postgres_port_is_reported_quickly_with_its_cause() {
        let url = "postgres://app:s3cret@127.0.0.1:1/shop";
        let started = std::time::Instant::now();
        let err = open_database(url)
            .await
            .expect_err("nothing listens on port 1");
        let message = err.to_string();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        assert!(
            message.contains("postgres://app:***@127.0.0.1:1/shop"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("refused"), "{message}");
        assert!(message.contains("is PostgreSQL running"), "{message}");
    }

    #[tokio::test]
    async fn localhost_is_a_listen_address() {
        let config = Config {
            listen: "localhost:0".into(),
            database_url: "sqlite::memory:".into(),
            ..Config::default()
        };
        let running = start(config, false).await.expect("localhost:0 binds");
        assert!(running.addr.ip().is_loopback() && running.addr.port() != 0);
        let body = reqwest_free_get(running.addr, "/healthz").await;
        assert!(
            body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
            "{body}"
        );
        running.stop().await.unwrap();
    }

    /// A minimal HTTP/1.0 GET, enough to see the server answer.
    async fn reqwest_free_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}

//! Observability: Prometheus metrics at `GET /metrics`, and the per-request scope that SQL
//! statement counts and DataLoader batches share.
//!
//! The recorder is the `metrics` crate's process-wide one, a [`PrometheusRecorder`] rendered
//! by our own route (no exporter server). It is installed once per process ([`install`]);
//! every gateway in the process records into it and serves it.
//!
//! Each request runs inside a [`track`] scope (a Tokio task-local): the SQL statements it
//! runs are counted there (the database's metric callback calls [`count_sql_statement`]), and
//! the transport notes its channel and operation type as they become known. DataLoader
//! batches are spawned with [`spawn_in_request`], which carries the scope and the request's
//! tracing span (and so its request id) into the spawned task.
//!
//! Labels are bounded: `channel` is one of [`KNOWN_CHANNELS`], `other` (a channel of the
//! database outside that list) or `unknown` (refused before the channel was known); `code` is
//! one of the gateway's error codes or `other`; `status` is the HTTP status.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_graphql::parser::types::OperationType;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

/// GraphQL requests: `channel`, `operation_type`, `status`.
pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
/// Every `extensions.code` sent: `channel`, `code`.
pub const ERRORS_TOTAL: &str = "gateway_errors_total";
/// Time from the request's arrival to its response, in seconds: `channel`.
pub const REQUEST_DURATION_SECONDS: &str = "gateway_request_duration_seconds";
/// SQL statements one GraphQL request ran (DataLoader batches included): `channel`.
pub const SQL_STATEMENTS_PER_REQUEST: &str = "gateway_sql_statements_per_request";
/// Every SQL statement run: requests' and the background writers' (`placeOrder` and
/// idempotency batches, which no single request owns).
pub const SQL_STATEMENTS_TOTAL: &str = "gateway_sql_statements_total";
/// Orders in each batch `placeOrder` wrote on PostgreSQL.
pub const ORDER_BATCH_SIZE: &str = "gateway_order_batch_size";
/// Orders placed on their own after all: `reason` (`batch`: the batch did not place it,
/// `failed`: its batch failed, `lines`: more lines than a batch takes).
pub const ORDERS_PLACED_ALONE_TOTAL: &str = "gateway_orders_placed_alone_total";
/// Requests refused with `RATE_LIMITED`: `channel`, `kind` (`rate` or `cost`).
pub const RATE_LIMITED_TOTAL: &str = "gateway_rate_limited_total";
/// The requested cost of every admitted operation (what its cost budget is charged): `channel`.
pub const COST_SPENT_TOTAL: &str = "gateway_cost_spent_total";

/// WebSockets open at `/graphql/ws` (a gauge).
pub const WEBSOCKETS_OPEN: &str = "gateway_websockets_open";
/// Live subscriptions started: `shared` (`joined`: a running execution, `started`: a new one).
pub const SUBSCRIPTIONS_TOTAL: &str = "gateway_subscriptions_total";
/// Read-model lookups: `result` (`hit`: answered from memory, `miss`: read the database).
pub const READ_MODEL_LOOKUPS_TOTAL: &str = "gateway_read_model_lookups_total";
/// Entries the read model keeps (a gauge): `part`.
pub const READ_MODEL_ENTRIES: &str = "gateway_read_model_entries";
/// Requests that read the database because this instance may have missed an event.
pub const READ_PATH_BYPASSED_TOTAL: &str = "gateway_read_path_bypassed_total";
/// Response-cache lookups: `result` (`hit`, `not_modified`, `miss`, `stored`).
pub const RESPONSE_CACHE_TOTAL: &str = "gateway_response_cache_total";
/// Cached responses dropped by events.
pub const RESPONSE_CACHE_INVALIDATED_TOTAL: &str = "gateway_response_cache_invalidated_total";
/// Responses and bytes the cache keeps (gauges).
pub const RESPONSE_CACHE_ENTRIES: &str = "gateway_response_cache_entries";
pub const RESPONSE_CACHE_BYTES: &str = "gateway_response_cache_bytes";

/// Channels that get a label of their own.
pub const KNOWN_CHANNELS: [&str; 4] = ["web", "mobile", "pos", "b2b"];
/// The channel label of a request refused before its channel was known.
pub const UNKNOWN: &str = "unknown";
/// The label of a channel or code outside the known set.
pub const OTHER: &str = "other";

/// The error codes that get a label of their own: those of [`crate::errors::code`].
const CODES: &[&str] = &[
    "BAD_REQUEST",
    "BAD_USER_INPUT",
    "FORBIDDEN",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "IDEMPOTENCY_CONFLICT",
    "IDEMPOTENCY_IN_PROGRESS",
    "INTERNAL",
    "METHOD_NOT_ALLOWED",
    "NOT_ACCEPTABLE",
    "NOT_FOUND",
    "PERSISTED_QUERY_NOT_ALLOWED",
    "PERSISTED_QUERY_NOT_FOUND",
    "QUANTITY_RULE_VIOLATION",
    "QUERY_TOO_COMPLEX",
    "RATE_LIMITED",
    "REQUEST_TIMEOUT",
    "RESPONSE_TOO_LARGE",
    "UNAUTHENTICATED",
    "UNKNOWN_CHANNEL",
    "UNSUPPORTED_MEDIA_TYPE",
];

/// Request duration buckets: 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Statements-per-request buckets: 0 (refused up front) to 200.
const STATEMENT_BUCKETS: [f64; 12] = [
    0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 50.0, 100.0, 200.0,
];
const BATCH_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0];
/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The path whose requests are counted (other routes count only their error codes).
const GRAPHQL_PATH: &str = "/graphql";

/// The Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the process-wide recorder on first call (later calls, from other gateways of the
/// process, return the same handle). A thread folds histogram samples into their buckets
/// every few seconds, so memory stays flat between scrapes.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()),
                &DURATION_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(SQL_STATEMENTS_PER_REQUEST.to_owned()),
                    &STATEMENT_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(ORDER_BATCH_SIZE.to_owned()),
                    &BATCH_BUCKETS,
                )
            })
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(err) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %err, "another metrics recorder is installed; /metrics stays empty");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start the metrics upkeep thread; histograms fold at each scrape");
        }
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "GraphQL requests answered, by channel, operation type and HTTP status"
    );
    metrics::describe_counter!(ERRORS_TOTAL, "Errors sent, by channel and extensions.code");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer a GraphQL request"
    );
    metrics::describe_histogram!(
        SQL_STATEMENTS_PER_REQUEST,
        metrics::Unit::Count,
        "SQL statements run by one GraphQL request, DataLoader batches included"
    );
    metrics::describe_histogram!(
        ORDER_BATCH_SIZE,
        metrics::Unit::Count,
        "Orders in each batch placeOrder wrote (PostgreSQL)"
    );
    metrics::describe_counter!(
        ORDERS_PLACED_ALONE_TOTAL,
        "Orders placed on their own after all, by reason (batch, failed, lines)"
    );
    metrics::describe_counter!(
        SQL_STATEMENTS_TOTAL,
        "SQL statements run, by requests and by the batch writers"
    );
    metrics::describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused with RATE_LIMITED, by channel and kind (rate or cost)"
    );
    metrics::describe_counter!(
        COST_SPENT_TOTAL,
        "Requested cost of the admitted operations, charged to their cost budgets"
    );
    metrics::describe_gauge!(WEBSOCKETS_OPEN, "WebSockets open at /graphql/ws");
    metrics::describe_counter!(
        SUBSCRIPTIONS_TOTAL,
        "Shared stockChanged subscriptions: joined a running execution, or started one"
    );
    metrics::describe_counter!(
        READ_MODEL_LOOKUPS_TOTAL,
        "Read-model lookups answered from memory (hit) or the database (miss)"
    );
    metrics::describe_gauge!(READ_MODEL_ENTRIES, "Entries the read model keeps, by part");
    metrics::describe_counter!(
        READ_PATH_BYPASSED_TOTAL,
        "Requests that read the database because this instance may have missed an event"
    );
    metrics::describe_counter!(
        RESPONSE_CACHE_TOTAL,
        "Response-cache outcomes: hit, not_modified (304), miss, stored"
    );
    metrics::describe_counter!(
        RESPONSE_CACHE_INVALIDATED_TOTAL,
        "Cached responses dropped by stock, price and catalog events"
    );
    metrics::describe_gauge!(RESPONSE_CACHE_ENTRIES, "Responses the cache keeps");
    // These exist from the start at 0: a dashboard sees 0, not "no data".
    metrics::counter!(READ_PATH_BYPASSED_TOTAL).increment(0);
    metrics::counter!(RESPONSE_CACHE_INVALIDATED_TOTAL).increment(0);
    for result in ["hit", "not_modified", "miss", "stored"] {
        metrics::counter!(RESPONSE_CACHE_TOTAL, "result" => result).increment(0);
    }
    for result in ["hit", "miss"] {
        metrics::counter!(READ_MODEL_LOOKUPS_TOTAL, "result" => result).increment(0);
    }
    for shared in ["started", "joined"] {
        metrics::counter!(SUBSCRIPTIONS_TOTAL, "shared" => shared).increment(0);
    }
    metrics::describe_gauge!(
        RESPONSE_CACHE_BYTES,
        metrics::Unit::Bytes,
        "Bytes of responses the cache keeps"
    );
}

/// A shareable subscription joined a running execution (`true`) or started one.
pub fn subscription_shared(joined: bool) {
    metrics::counter!(SUBSCRIPTIONS_TOTAL, "shared" => if joined { "joined" } else { "started" })
        .increment(1);
}

/// A read-model lookup answered from memory (`hit`) or not.
pub fn read_model(hit: bool) {
    metrics::counter!(READ_MODEL_LOOKUPS_TOTAL, "result" => if hit { "hit" } else { "miss" })
        .increment(1);
}

/// Entries one part of the read model keeps.
pub fn read_model_entries(part: &'static str, entries: usize) {
    metrics::gauge!(READ_MODEL_ENTRIES, "part" => part).set(entries as f64);
}

/// A request read the database because this instance may have missed an event.
pub fn read_path_bypassed() {
    metrics::counter!(READ_PATH_BYPASSED_TOTAL).increment(1);
}

/// A response-cache outcome: `hit`, `not_modified`, `miss` or `stored`.
pub fn response_cache(result: &'static str) {
    metrics::counter!(RESPONSE_CACHE_TOTAL, "result" => result).increment(1);
}

/// Cached responses dropped by an event.
pub fn response_cache_invalidated(entries: u64) {
    metrics::counter!(RESPONSE_CACHE_INVALIDATED_TOTAL).increment(entries);
}

/// What the response cache keeps now.
pub fn response_cache_size(entries: usize, bytes: usize) {
    metrics::gauge!(RESPONSE_CACHE_ENTRIES).set(entries as f64);
    metrics::gauge!(RESPONSE_CACHE_BYTES).set(bytes as f64);
}

/// A WebSocket was accepted at `/graphql/ws`.
pub fn websocket_opened() {
    metrics::gauge!(WEBSOCKETS_OPEN).increment(1.0);
}

/// A WebSocket at `/graphql/ws` closed.
pub fn websocket_closed() {
    metrics::gauge!(WEBSOCKETS_OPEN).decrement(1.0);
}

/// `GET /metrics`: the process's metrics in the Prometheus text format.
pub async fn render(
    axum::extract::State(state): axum::extract::State<crate::server::AppState>,
) -> Response {
    state.read_path.report();
    let body = install().render();
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

/// What the scope of one request has learned so far.
#[derive(Default)]
pub struct RequestScope {
    sql_statements: AtomicU64,
    notes: Mutex<Notes>,
    /// Failures logged so far, by kind ([`crate::log_budget`]): a request logs a bounded
    /// number of lines.
    pub(crate) logs: crate::log_budget::RequestLogs,
}

#[derive(Clone, Copy)]
struct Notes {
    channel: &'static str,
    operation_type: &'static str,
}

impl Default for Notes {
    fn default() -> Self {
        Self {
            channel: UNKNOWN,
            operation_type: "none",
        }
    }
}

impl RequestScope {
    /// SQL statements run inside this scope so far.
    pub fn sql_statements(&self) -> u64 {
        self.sql_statements.load(Ordering::Relaxed)
    }

    fn notes(&self) -> Notes {
        *self.notes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, change: impl FnOnce(&mut Notes)) {
        change(&mut self.notes.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

tokio::task_local! {
    static REQUEST: Arc<RequestScope>;
}

/// Runs `future` inside `scope`: its SQL statements, and those of the DataLoader batches it
/// spawns with [`spawn_in_request`], are counted there.
pub async fn in_scope<F: Future>(scope: Arc<RequestScope>, future: F) -> F::Output {
    REQUEST.scope(scope, future).await
}

/// The scope of the running request, if any.
pub fn current_scope() -> Option<Arc<RequestScope>> {
    REQUEST.try_with(Arc::clone).ok()
}

/// Counts one SQL statement for the running request (no-op outside a request).
pub fn count_sql_statement() {
    metrics::counter!(SQL_STATEMENTS_TOTAL).increment(1);
    let _ = REQUEST.try_with(|scope| scope.sql_statements.fetch_add(1, Ordering::Relaxed));
}

/// The DataLoader spawner: the batch runs in its own task, inside the request's scope and
/// tracing span (so its statements count for the request and its logs carry the request id).
pub fn spawn_in_request<F>(task: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let span = tracing::Span::current();
    match current_scope() {
        Some(scope) => tokio::spawn(REQUEST.scope(scope, task).instrument(span)),
        None => tokio::spawn(task.instrument(span)),
    }
}

/// The middleware around every route: runs the request inside its scope, then records its
/// series (GraphQL requests only; error codes are counted for every route as they are sent).
pub async fn track(request: Request, next: Next) -> Response {
    let graphql = request.uri().path() == GRAPHQL_PATH;
    let started = Instant::now();
    let scope = Arc::new(RequestScope::default());
    let response = in_scope(scope.clone(), next.run(request)).await;
    if graphql {
        let notes = scope.notes();
        let channel = notes.channel;
        metrics::counter!(
            REQUESTS_TOTAL,
            "channel" => channel,
            "operation_type" => notes.operation_type,
            "status" => status_label(response.status().as_u16()),
        )
        .increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "channel" => channel)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(SQL_STATEMENTS_PER_REQUEST, "channel" => channel)
            .record(scope.sql_statements() as f64);
    }
    response
}

/// The status as a label: its three digits, without an allocation for the common ones.
fn status_label(status: u16) -> metrics::SharedString {
    match status {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        429 => "429".into(),
        _ => status.to_string().into(),
    }
}

/// The label of a channel code: itself when known, else `fallback`.
fn channel_label(code: &str, fallback: &'static str) -> &'static str {
    KNOWN_CHANNELS
        .iter()
        .find(|known| code.eq_ignore_ascii_case(known))
        .copied()
        .unwrap_or(fallback)
}

/// The channel a request claims (its `X-Channel` or its verified token's channel), before the
/// database confirmed it: labelled when it is a known channel, else still `unknown`.
pub fn claimed_channel(code: &str) {
    let label = channel_label(code, UNKNOWN);
    if let Some(scope) = current_scope() {
        scope.note(|notes| notes.channel = label);
    }
}

/// The channel the request runs on, as loaded from the database.
pub fn resolved_channel(code: &str) {
    let label = channel_label(code, OTHER);
    if let Some(scope) = current_scope() {
        scope.note(|notes| notes.channel = label);
    }
}

/// The type of the operation the request selected.
pub fn operation_type(ty: OperationType) {
    let label = match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    if let Some(scope) = current_scope() {
        scope.note(|notes| notes.operation_type = label);
    }
}

/// The channel label of the running request (`unknown` outside one).
fn current_channel() -> &'static str {
    current_scope().map_or(UNKNOWN, |scope| scope.notes().channel)
}

fn code_label(code: &str) -> &'static str {
    CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or(OTHER)
}

/// An `extensions.code` sent.
pub fn error_code(code: &str) {
    metrics::counter!(ERRORS_TOTAL, "channel" => current_channel(), "code" => code_label(code))
        .increment(1);
}

/// The codes of the errors of an executed response, as sent.
pub fn graphql_errors(errors: &[async_graphql::ServerError]) {
    for error in errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|extensions| extensions.get("code"));
        match code {
            Some(async_graphql::Value::String(code)) => error_code(code),
            Some(async_graphql::Value::Enum(code)) => error_code(code.as_str()),
            _ => error_code(OTHER),
        }
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The request rate (requests per second, burst).
    Rate,
    /// The query-cost budget.
    Cost,
}

/// A request refused with `RATE_LIMITED` by `kind`.
pub fn rate_limited(kind: LimitKind) {
    let kind = match kind {
        LimitKind::Rate => "rate",
        LimitKind::Cost => "cost",
    };
    metrics::counter!(RATE_LIMITED_TOTAL, "channel" => current_channel(), "kind" => kind)
        .increment(1);
}

/// An admitted operation's requested cost, charged to its budget.
pub fn cost_charged(cost: u64) {
    metrics::counter!(COST_SPENT_TOTAL, "channel" => current_channel()).increment(cost);
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
    use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

    /// A loader whose batch runs one SQL statement per key.
    struct Echo {
        db: DatabaseConnection,
    }

    impl Loader<u32> for Echo {
        type Value = u32;
        type Error = Arc<sea_orm::DbErr>;

        async fn load(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, Self::Error> {
            for _ in keys {
                select_one(&self.db).await;
            }
            Ok(keys.iter().map(|key| (*key, *key)).collect())
        }
    }

    async fn select_one(db: &DatabaseConnection) {
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT 1",
        ))
        .await
        .expect("SELECT 1");
    }

    /// What one request does: `direct` statements of its own, with yields between them so
    /// the other request interleaves, then a DataLoader batch of `batched` keys (a statement
    /// each) in a task the loader spawns.
    async fn request(db: DatabaseConnection, direct: u64, batched: u32) -> u64 {
        let scope = Arc::new(RequestScope::default());
        in_scope(scope.clone(), async {
            for _ in 0..direct {
                select_one(&db).await;
                tokio::task::yield_now().await;
            }
            let loader = DataLoader::with_cache(
                Echo { db: db.clone() },
                spawn_in_request,
                HashMapCache::default(),
            );
            let loaded = loader.load_many(0..batched).await.expect("loaded");
            assert_eq!(loaded.len(), batched as usize);
        })
        .await;
        scope.sql_statements()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_each_count_their_own_statements() {
        let dir = std::env::temp_dir().join(format!(
            "gateway-metrics-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/m.db?mode=rwc", dir.display());
        let (db, global) = crate::server::open_database(&url).await.expect("opens");
        let before = global.load(Ordering::Relaxed);
        // Statements outside any request count nowhere but in the global counter.
        select_one(&db).await;
        count_sql_statement();
        for _ in 0..3 {
            let (a, b) = tokio::join!(
                tokio::spawn(request(db.clone(), 3, 2)),
                tokio::spawn(request(db.clone(), 7, 4)),
            );
            assert_eq!(a.unwrap(), 3 + 2, "the first request's own statements");
            assert_eq!(b.unwrap(), 7 + 4, "the second request's own statements");
        }
        assert_eq!(
            global.load(Ordering::Relaxed) - before,
            1 + 3 * (5 + 11),
            "the global counter sees every statement"
        );
        let _ = db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn loader_batches_run_in_the_request_span() {
        use tracing::Instrument;
        let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("request", request_id = "r-1");
        let seen = async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            spawn_in_request(async move {
                let _ = tx.send(tracing::Span::current().id());
            });
            rx.await.unwrap()
        }
        .instrument(span.clone())
        .await;
        assert!(span.id().is_some());
        assert_eq!(seen, span.id(), "the batch task runs in the request's span");
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(channel_label("pos", UNKNOWN), "pos");
        assert_eq!(channel_label("WEB", UNKNOWN), "web");
        assert_eq!(channel_label("x-evil\u{1}", UNKNOWN), UNKNOWN);
        assert_eq!(channel_label("outlet", OTHER), OTHER);
        assert_eq!(code_label("QUERY_TOO_COMPLEX"), "QUERY_TOO_COMPLEX");
        assert_eq!(code_label("made up"), OTHER);
        assert_eq!(status_label(418).as_ref(), "418");
    }
}

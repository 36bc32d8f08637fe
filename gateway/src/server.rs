//! The HTTP server: state, routes, middleware, start-up and graceful shutdown.
//!
//! Module map of the routes:
//! - `POST /graphql`, `GET /graphql`: [`crate::transport`] (GraphiQL for browsers on GET)
//! - `GET /healthz`: the process is up
//! - `GET /readyz`: the database answers

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

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub schema: GatewaySchema,
    pub db: DatabaseConnection,
    pub graphql_config: Arc<GraphqlConfig>,
    /// SQL statements run since start (also the basis of the N+1 test).
    pub sql_statements: Arc<AtomicU64>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database {url}: {source}")]
    Database { url: String, source: DbErr },
    #[error("loading the demo data failed: {0}")]
    Demo(#[from] CoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Connects, counts statements and applies pending migrations.
pub async fn open_database(url: &str) -> Result<(DatabaseConnection, Arc<AtomicU64>), StartError> {
    let db_err = |source| StartError::Database {
        url: redact(url),
        source,
    };
    let mut connection = db::connect(url).await.map_err(db_err)?;
    let counter = Arc::new(AtomicU64::new(0));
    let count = counter.clone();
    connection.set_metric_callback(move |info| {
        count.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(target: "gateway::sql", elapsed = ?info.elapsed, failed = info.failed, sql = %info.statement);
    });
    Migrator::up(&connection, None).await.map_err(db_err)?;
    Ok((connection, counter))
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The routes and middleware over a state.
pub fn router(state: AppState, config: &Config) -> Router {
    Router::new()
        .route(
            "/graphql",
            get(transport::graphql_get).post(transport::graphql_post),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::custom(|_| internal_error()))
        .layer(middleware::map_response(coded_empty_errors))
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
    match state.db.ping().await {
        Ok(()) => Json(json!({ "status": "ready", "database": "ok" })).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unreachable" })),
            )
                .into_response()
        }
    }
}

/// A gateway serving in the background.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub state: AppState,
    /// What `--demo` loaded, when it loaded anything.
    pub demo: Option<DemoSummary>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
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

    /// Stops accepting, finishes in-flight requests, then returns.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Validates the configuration, prepares the database (migrations; demo data when `demo`),
/// binds and serves in the background.
pub async fn start(config: Config, demo: bool) -> Result<RunningGateway, StartError> {
    config.validate()?;
    let addr = config.listen_addr()?;
    let (db, sql_statements) = open_database(&config.database_url).await?;
    let demo = if demo {
        demo::seed_if_empty(&db).await?
    } else {
        None
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let state = AppState {
        schema: build_schema(&config.graphql),
        db,
        graphql_config: Arc::new(config.graphql.clone()),
        sql_statements,
    };
    let app = router(state.clone(), &config);
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.await;
            })
            .await
    });
    Ok(RunningGateway {
        addr,
        state,
        demo,
        shutdown,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(
            redact("sqlite://data/commerce.db?mode=rwc"),
            "sqlite://data/commerce.db?mode=rwc"
        );
    }
}

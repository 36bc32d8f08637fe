//! Test support for the black-box suite: fresh databases, a real gateway on 127.0.0.1:0,
//! and an HTTP client that speaks GraphQL to it.
//!
//! Every test runs against SQLite; when `TEST_DATABASE_URL` is set (as `.ci/run` does) the
//! same tests run against a fresh PostgreSQL database instead.
//!
//! Test databases clean up after themselves: a [`TestDatabase`] (a PostgreSQL database, or a
//! SQLite file with its `-wal` and `-shm` files) is removed when it is dropped, that is when
//! its test ends, unless the test failed: then its name is printed and it is kept for a look.
//! Names carry the test process's id (`e2e_<pid>_<uuid>`); the first test database of a run
//! removes what finished processes left behind (kept databases of failed tests, and the
//! database of the shared app, which lives until its process exits).

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};

use commerce_core::db::with_database_name;
use gateway::{Config, RunningGateway};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};

pub use reqwest::StatusCode;

/// The GraphQL-over-HTTP response media type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The PostgreSQL server to test against, when `TEST_DATABASE_URL` is set.
pub fn test_database_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The Redis server to test cluster mode against, when `TEST_REDIS_URL` is set.
pub fn test_redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A new name for a test database or file: `e2e_<pid>_<uuid>`.
fn new_name() -> String {
    format!(
        "e2e_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A fresh, empty database: a new PostgreSQL database when `TEST_DATABASE_URL` is set, else a
/// new SQLite file in the temp directory. Removed on drop unless the test failed.
pub struct TestDatabase {
    url: String,
    place: Place,
}

enum Place {
    Sqlite(TestFile),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    pub async fn create() -> Self {
        match test_database_url() {
            Some(base) => {
                let admin = admin_connect(&base)
                    .await
                    .expect("TEST_DATABASE_URL must be reachable");
                drop_stale_databases(&admin).await;
                let name = new_name();
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("creating a test database");
                let _ = admin.close().await;
                Self {
                    url: with_database_name(&base, &name),
                    place: Place::Postgres {
                        admin_url: base,
                        name,
                    },
                }
            }
            None => {
                static NOTICE: Once = Once::new();
                NOTICE.call_once(|| {
                    eprintln!("TEST_DATABASE_URL is unset: running against SQLite only");
                });
                let file = TestFile::new();
                Self {
                    url: file.sqlite_url(),
                    place: Place::Sqlite(file),
                }
            }
        }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The SQLite file, on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.place {
            Place::Sqlite(file) => Some(file.path()),
            Place::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A SQLite file removes itself (or is kept) as its `TestFile` drops.
        let Place::Postgres { admin_url, name } = &self.place else {
            return;
        };
        if std::thread::panicking() {
            eprintln!(
                "the test failed: kept its PostgreSQL database {name} ({}); the next test run removes it",
                gateway::server::redact(&self.url)
            );
            return;
        }
        if let Err(err) = drop_database_now(admin_url, name) {
            eprintln!("could not drop the test database {name}: {err}");
        }
    }
}

/// A SQLite file path of this test process in the temp directory (`e2e_<pid>_<uuid>.db`),
/// removed with its `-wal`, `-shm` and `-journal` files on drop unless the test failed.
pub struct TestFile {
    path: PathBuf,
}

impl TestFile {
    pub fn new() -> Self {
        static STALE: Once = Once::new();
        STALE.call_once(remove_stale_sqlite_files);
        Self {
            path: std::env::temp_dir().join(format!("{}.db", new_name())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `sqlite://<path>?mode=rwc`.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path.display())
    }
}

impl Default for TestFile {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the test failed: kept its SQLite file {}; the next test run removes it",
                self.path.display()
            );
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fresh, empty database URL (see [`TestDatabase`]). The database lives as long as the
/// calling test's runtime: it is removed when the test ends, or kept when the test failed.
pub async fn fresh_database_url() -> String {
    let database = TestDatabase::create().await;
    let url = database.url().to_owned();
    match tokio::runtime::Handle::try_current() {
        // The task is dropped, and the database with it, when the test's runtime shuts down.
        Ok(runtime) => {
            runtime.spawn(async move {
                let _database = database;
                std::future::pending::<()>().await;
            });
        }
        // Outside Tokio: left for the next run, which removes it once this process is gone.
        Err(_) => std::mem::forget(database),
    }
    url
}

async fn admin_connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .min_connections(0)
        .sqlx_logging(false);
    Database::connect(options).await
}

/// Drops a PostgreSQL database at once, from synchronous code (a `Drop`): on a thread of its
/// own with its own runtime, terminating any connection still open to it.
fn drop_database_now(admin_url: &str, name: &str) -> Result<(), String> {
    let admin_url = admin_url.to_owned();
    let name = name.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?;
        runtime.block_on(async {
            let admin = admin_connect(&admin_url)
                .await
                .map_err(|err| err.to_string())?;
            // `WITH (FORCE)` needs PostgreSQL 13; older servers drop once the test's
            // connections are gone.
            let force = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            let result = match force {
                Ok(_) => Ok(()),
                Err(_) => admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .await
                    .map(|_| ())
                    .map_err(|err| err.to_string()),
            };
            let _ = admin.close().await;
            result
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the dropping thread panicked".to_owned()))
}

/// The process id in a test database or file name (`e2e_<pid>_…`); `None` for names of the
/// older `e2e_<uuid>` form.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, _) = name.strip_prefix("e2e_")?.split_once('_')?;
    pid.parse().ok()
}

/// Whether the process that created a test database has exited (its databases are leftovers).
fn owner_is_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    if cfg!(target_os = "linux") {
        !Path::new("/proc").join(pid.to_string()).exists()
    } else {
        // Without /proc, a process's liveness is not known: leave its databases alone.
        false
    }
}

/// Databases of finished test processes: kept ones of failed tests and the shared app's.
/// A plain `DROP DATABASE` refuses a database anyone is connected to, which protects those of
/// test processes running right now (also ones whose pid is not visible from here).
async fn drop_stale_databases(admin: &DatabaseConnection) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let rows = admin
            .query_all_raw(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                "SELECT datname FROM pg_database WHERE datname LIKE 'e2e\\_%'",
            ))
            .await
            .unwrap_or_default();
        for row in rows {
            let Ok(name) = row.try_get::<String>("", "datname") else {
                continue;
            };
            if owner_pid(&name).is_none_or(owner_is_gone) {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .await;
            }
        }
    })
    .await;
}

/// SQLite files of finished test processes. Files of the older `e2e_<uuid>` form are removed
/// once an hour old.
fn remove_stale_sqlite_files() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("e2e_") && name.contains(".db")) {
            continue;
        }
        let stale = match owner_pid(&name) {
            Some(pid) => owner_is_gone(pid),
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600)),
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A gateway with the demo data on a fresh database, serving on a random port. Its database
/// is removed when it is dropped (kept when the test failed).
pub struct TestApp {
    pub gateway: RunningGateway,
    pub database_url: String,
    pub client: reqwest::Client,
    /// Dropped last: removes the database.
    pub database: TestDatabase,
}

/// Starts a gateway on a fresh database with the demo data.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a gateway on a fresh database with the demo data, after `configure` has changed its
/// configuration (the listen address and database URL are set already).
///
/// Rate limits and cost budgets start off (`limits.enabled = false`): the suite sends far more
/// requests from 127.0.0.1 than a client may; the tests of the limits turn them on.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create().await;
    let database_url = database.url().to_owned();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.clone(),
        ..Config::default()
    };
    config.limits.enabled = false;
    // Most tests send raw documents on every channel; the persisted-operation tests turn
    // the safelist on (with the repository's operations folder).
    config.persisted.persisted_only_channels = Vec::new();
    config.persisted.operations_dir = operations_dir();
    // `TEST_READ_PATH=off`: the whole suite without the read model and the response cache
    // (what `.ci/run` also checks); a test's own configuration still decides last.
    if read_path_off() {
        config.read_path.read_model = false;
        config.read_path.response_cache = false;
    }
    configure(&mut config);
    let gateway = gateway::start(config, true)
        .await
        .expect("the gateway starts");
    TestApp {
        gateway,
        database_url,
        client: reqwest::Client::new(),
        database,
    }
}

/// Whether `TEST_READ_PATH=off` asks for the suite without the read path.
pub fn read_path_off() -> bool {
    std::env::var("TEST_READ_PATH").is_ok_and(|v| v.trim().eq_ignore_ascii_case("off"))
}

/// The Redis URL of a cluster test, when both `TEST_DATABASE_URL` (PostgreSQL) and
/// `TEST_REDIS_URL` are set; otherwise `None`, with the skip reason printed.
pub fn cluster_redis_url() -> Option<String> {
    match (test_database_url(), test_redis_url()) {
        (Some(_), Some(redis)) => Some(redis),
        _ => {
            eprintln!("skipped: needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL (Redis)");
            None
        }
    }
}

/// Two gateways on one database (the first's) sharing Redis under a fresh key prefix: the
/// cluster of the cross-instance tests. Each reaches Redis at its own URL (one may go through
/// a [`RedisProxy`]); `configure` runs on both configurations first.
pub async fn spawn_pair(
    redis_a: String,
    redis_b: String,
    configure: impl Fn(&mut Config) + Clone + Send + 'static,
) -> (TestApp, TestApp) {
    let prefix = format!("e2e:{}:", uuid::Uuid::new_v4().simple());
    let (prefix_a, configure_a) = (prefix.clone(), configure.clone());
    let a = spawn_app_with(move |config: &mut Config| {
        configure_a(config);
        config.redis_url = Some(redis_a);
        config.limits.redis_key_prefix = prefix_a;
    })
    .await;
    let shared = a.database_url.clone();
    let b = spawn_app_with(move |config: &mut Config| {
        configure(config);
        config.database_url = shared;
        config.redis_url = Some(redis_b);
        config.limits.redis_key_prefix = prefix;
    })
    .await;
    (a, b)
}

/// The repository's `operations/` folder (safelisted operations per channel).
pub fn operations_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../operations")
}

/// Where the shared demo gateway listens, and its database.
pub struct SharedApp {
    pub url: String,
    pub database_url: String,
    /// The shared gateway's token authority (demo mode generated its secret).
    pub auth: std::sync::Arc<gateway::auth::Authenticator>,
}

impl SharedApp {
    /// A token for the shared gateway.
    pub fn token(
        &self,
        channel: &str,
        role: gateway::auth::Role,
        customer: Option<&str>,
        store: Option<&str>,
    ) -> String {
        mint(&self.auth, channel, role, customer, store)
    }
}

impl TestApp {
    /// A token for this gateway.
    pub fn token(
        &self,
        channel: &str,
        role: gateway::auth::Role,
        customer: Option<&str>,
        store: Option<&str>,
    ) -> String {
        mint(&self.gateway.state.auth, channel, role, customer, store)
    }
}

fn mint(
    auth: &gateway::auth::Authenticator,
    channel: &str,
    role: gateway::auth::Role,
    customer: Option<&str>,
    store: Option<&str>,
) -> String {
    let claims = auth.claims(
        channel,
        role,
        customer.map(str::to_owned),
        store.map(str::to_owned),
        Some(600),
    );
    auth.mint(&claims).expect("demo mode has a secret")
}

/// One demo gateway shared by the read-only tests of this process, on its own runtime thread
/// (each `#[tokio::test]` has its own runtime, which would stop a server it started). It runs
/// until the process exits; the next test run removes its database.
pub fn shared_app() -> &'static SharedApp {
    static SHARED: OnceLock<SharedApp> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let app = spawn_app().await;
                tx.send(SharedApp {
                    url: app.gateway.url(),
                    database_url: app.database_url.clone(),
                    auth: app.gateway.state.auth.clone(),
                })
                .expect("the test waits");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the shared gateway starts")
    })
}

/// A GraphQL client for one gateway and one channel.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub channel: Option<reqwest::header::HeaderValue>,
    pub accept: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    http: reqwest::Client,
}

/// A response: status, content type and parsed body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    /// The body as sent, for checks that parsing would hide (field order).
    pub text: String,
}

impl Reply {
    /// The `extensions.code` of every error.
    pub fn error_codes(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `data`, failing the test on any error.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        &self.body["data"]
    }
}

impl Client {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            channel: None,
            accept: None,
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// Sends `Authorization: Bearer <token>` (the token fixes the channel).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn channel(self, channel: &str) -> Self {
        self.channel_bytes(channel.as_bytes())
    }

    /// Sends `X-Channel` with raw bytes (for headers that are not text).
    pub fn channel_bytes(mut self, channel: &[u8]) -> Self {
        self.channel =
            Some(reqwest::header::HeaderValue::from_bytes(channel).expect("a header value"));
        self
    }

    pub fn accept(mut self, accept: &str) -> Self {
        self.accept = Some(accept.to_owned());
        self
    }

    /// POSTs a raw body with a content type.
    pub async fn post_raw(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Reply {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(channel) = &self.channel {
            request = request.header("x-channel", channel);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(accept) = &self.accept {
            request = request.header("accept", accept);
        }
        reply(request.send().await.expect("the gateway answers")).await
    }

    /// POSTs a query with variables.
    pub async fn query(&self, query: &str, variables: Value) -> Reply {
        let body = json!({ "query": query, "variables": variables });
        self.post_raw("application/json", body.to_string()).await
    }

    /// GETs `/graphql` with query-string parameters.
    pub async fn get(&self, params: &[(&str, &str)]) -> (Reply, reqwest::header::HeaderMap) {
        let mut request = self.http.get(format!("{}/graphql", self.url)).query(params);
        if let Some(channel) = &self.channel {
            request = request.header("x-channel", channel);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(accept) = &self.accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("the gateway answers");
        let headers = response.headers().clone();
        (reply(response).await, headers)
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    Reply {
        status,
        content_type,
        body,
        text,
    }
}

/// Opens a test's database directly, for independent checks of what the API returns.
pub async fn open_database(url: &str) -> DatabaseConnection {
    Database::connect(url)
        .await
        .expect("the test database opens")
}

/// A TCP proxy to Redis that can be taken down (open connections cut, new ones refused) and
/// brought back, as a Redis restart or a network failure would.
pub struct RedisProxy {
    /// `redis://` URL of the proxy.
    pub url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    pub async fn to(redis_url: &str) -> Self {
        let target = redis_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_down, list) = (down.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(forward.abort_handle());
            }
        });
        Self {
            url,
            down,
            open,
            accept,
        }
    }

    pub fn take_down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.open.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn bring_back(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::{owner_pid, with_database_name};

    #[test]
    fn test_database_names_carry_the_owner_pid() {
        assert_eq!(owner_pid(&super::new_name()), Some(std::process::id()));
        assert_eq!(owner_pid("e2e_4242_0123abcd.db-wal"), Some(4242));
        assert_eq!(owner_pid("e2e_0123456789abcdef0123456789abcdef.db"), None);
        assert_eq!(owner_pid("other_1_x.db"), None);
    }

    #[test]
    fn swaps_only_the_database_name() {
        assert_eq!(
            with_database_name("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database_name("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}

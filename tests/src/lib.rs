//! Test support for the black-box suite: fresh databases, a real gateway on 127.0.0.1:0,
//! and an HTTP client that speaks GraphQL to it.
//!
//! Every test runs against SQLite; when `TEST_DATABASE_URL` is set (as `.ci/run` does) the
//! same tests run against a fresh PostgreSQL database instead.

use std::sync::{Once, OnceLock};

use gateway::{Config, RunningGateway};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};

pub use reqwest::StatusCode;

/// The GraphQL-over-HTTP response media type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// A fresh, empty database URL: a new PostgreSQL database when `TEST_DATABASE_URL` is set,
/// else a new SQLite file in the temp directory.
pub async fn fresh_database_url() -> String {
    let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let admin = Database::connect(&base)
                .await
                .expect("TEST_DATABASE_URL must be reachable");
            drop_stale_databases(&admin).await;
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("creating a test database");
            with_database_name(&base, &name)
        }
        _ => {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                eprintln!("TEST_DATABASE_URL is unset: running against SQLite only");
                remove_stale_sqlite_files();
            });
            let path = std::env::temp_dir().join(format!("{name}.db"));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

/// Earlier runs leave their databases behind; drop those no one is connected to (a database
/// in use by a concurrent test process refuses to drop, which is what we want).
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
            if let Ok(name) = row.try_get::<String>("", "datname") {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .await;
            }
        }
    })
    .await;
}

/// SQLite files of earlier runs (an hour old or more) are removed; younger ones may belong
/// to a test process running right now.
fn remove_stale_sqlite_files() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 3600));
        if name.starts_with("e2e_") && name.contains(".db") && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A gateway with the demo data on a fresh database, serving on a random port.
pub struct TestApp {
    pub gateway: RunningGateway,
    pub database_url: String,
    pub client: reqwest::Client,
}

/// Starts a gateway on a fresh database with the demo data.
pub async fn spawn_app() -> TestApp {
    let database_url = fresh_database_url().await;
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.clone(),
        ..Config::default()
    };
    let gateway = gateway::start(config, true)
        .await
        .expect("the gateway starts");
    TestApp {
        gateway,
        database_url,
        client: reqwest::Client::new(),
    }
}

/// Where the shared demo gateway listens, and its database.
pub struct SharedApp {
    pub url: String,
    pub database_url: String,
}

/// One demo gateway shared by the read-only tests of this process, on its own runtime thread
/// (each `#[tokio::test]` has its own runtime, which would stop a server it started).
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
            http: reqwest::Client::new(),
        }
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

#[cfg(test)]
mod tests {
    use super::with_database_name;

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

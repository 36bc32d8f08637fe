//! Opening and closing the database: SQLite (embedded default) or PostgreSQL (cluster mode),
//! and explaining in plain words why it could not be opened.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::sqlx;
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    DbErr, RuntimeErr, Statement, Value,
};

/// The embedded default: a SQLite file under the working directory, created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/commerce.db?mode=rwc";

/// Connects to `url` and tunes SQLite for a server (write-ahead log so readers never wait for
/// the writer, a busy timeout instead of errors).
///
/// A SQLite file's parent directory is created only when the URL asks for the file to be
/// created (`?mode=rwc`). A PostgreSQL server is first tried with one plain connection, so a
/// refused connection, an unknown database or a wrong password is reported at once with its
/// cause (the pool would retry a refused connection until its timeout and then report only
/// the timeout). Callers that need a deadline wrap this call in one; [`explain`] turns the
/// error into a message with a hint.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_file_path(url)
        && creates_missing_file(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|err| DbErr::Custom(format!("cannot create {}: {err}", dir.display())))?;
    }
    let url = &loopback_without_tls(url);
    if is_postgres(url) {
        probe_postgres(url).await?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { 8 } else { 16 })
        .min_connections(1)
        // SeaORM maps both settings onto the pool's acquire timeout (the later one wins):
        // how long a request may wait for a free connection under load.
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .await?;
    }
    Ok(db)
}

/// A PostgreSQL statement over rows of values: `head`, then each row as `row` spells it from
/// its placeholder numbers (after the `shared` values, which are `$1`…), comma-separated, then
/// `tail`.
pub(crate) fn rows_statement(
    head: &str,
    shared: Vec<Value>,
    rows: Vec<Vec<Value>>,
    row: impl Fn(&[usize]) -> String,
    tail: &str,
) -> Statement {
    let mut sql = String::from(head);
    let mut values = shared;
    for (i, cells) in rows.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let numbers: Vec<usize> = (values.len() + 1..=values.len() + cells.len()).collect();
        sql.push_str(&row(&numbers));
        values.extend(cells);
    }
    sql.push_str(tail);
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Closes the pool, waiting for connections in use to be returned. On SQLite it first moves
/// everything from the write-ahead log into the database file and truncates the log, so after
/// a clean stop the `.db` file alone holds all data (and the `-wal` file is gone).
pub async fn close(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ))
            .await?;
        // (busy, log frames, checkpointed frames): busy = 1 when a reader kept the
        // checkpoint from completing; closing the last connection checkpoints again.
        if row.and_then(|row| row.try_get_by_index::<i64>(0).ok()) == Some(1) {
            tracing::warn!("the SQLite write-ahead log could not be checkpointed completely");
        }
    }
    db.close_by_ref().await
}

/// Why the database at `url` could not be opened or used, as one line an operator can act on:
/// the cause (connection refused, unknown database, authentication failed, …) and, when there
/// is a usual fix, a hint after a semicolon.
pub fn explain(url: &str, err: &DbErr) -> String {
    let (cause, hint) = diagnose(url, err);
    match hint {
        Some(hint) => format!("{cause}; {hint}"),
        None => cause,
    }
}

fn diagnose(url: &str, err: &DbErr) -> (String, Option<String>) {
    let timed_out = || {
        (
            "no connection within the time limit".to_owned(),
            Some("is the database server overloaded or unreachable?".to_owned()),
        )
    };
    let sqlx_err = match err {
        DbErr::Conn(RuntimeErr::SqlxError(err))
        | DbErr::Exec(RuntimeErr::SqlxError(err))
        | DbErr::Query(RuntimeErr::SqlxError(err)) => &**err,
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => return timed_out(),
        other => return (other.to_string(), None),
    };
    match sqlx_err {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            "connection refused".to_owned(),
            Some(if is_postgres(url) {
                "is PostgreSQL running and listening there?".to_owned()
            } else {
                "is the database server running and listening there?".to_owned()
            }),
        ),
        sqlx::Error::Io(io) => (
            io.to_string(),
            Some("check the host and port in the database URL".to_owned()),
        ),
        sqlx::Error::Tls(tls) => (
            format!("TLS failed: {tls}"),
            Some("check the sslmode parameter of the database URL".to_owned()),
        ),
        sqlx::Error::Configuration(config) => (format!("invalid database URL: {config}"), None),
        sqlx::Error::PoolTimedOut => timed_out(),
        sqlx::Error::Database(db) if is_postgres(url) => {
            let message = db.message().to_owned();
            match db.code().as_deref() {
                // invalid_catalog_name
                Some("3D000") => (message, Some(format!("create it first: {}", createdb(url)))),
                // invalid_password, invalid_authorization_specification (unknown role,
                // no pg_hba.conf entry)
                Some("28P01" | "28000") => (
                    message,
                    Some("check the user name and password in the database URL".to_owned()),
                ),
                _ => (message, None),
            }
        }
        sqlx::Error::Database(db) if url.starts_with("sqlite:") => {
            let path = sqlite_file_path(url).unwrap_or(url);
            let code = db
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .unwrap_or(0);
            // Primary result codes (the low byte of the extended code).
            match code & 0xff {
                // SQLITE_CANTOPEN
                14 if !creates_missing_file(url) => (
                    format!("cannot open the SQLite file {path} ({})", db.message()),
                    Some(format!(
                        "to create it (and its directory) when missing, add ?mode=rwc to the URL: {}",
                        with_mode_rwc(url)
                    )),
                ),
                14 => (
                    format!("cannot open the SQLite file {path} ({})", db.message()),
                    Some("check that its directory is writable".to_owned()),
                ),
                // SQLITE_NOTADB
                26 => (format!("{path} is not a SQLite database"), None),
                // SQLITE_READONLY, SQLITE_PERM
                8 | 3 => (
                    format!("cannot write the SQLite file {path} ({})", db.message()),
                    Some("check the permissions of the file and its directory".to_owned()),
                ),
                _ => (db.message().to_owned(), None),
            }
        }
        other => (other.to_string(), None),
    }
}

/// The command that creates the database a PostgreSQL URL names.
fn createdb(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(options) => format!(
            "createdb -h {} -p {} -U {} {}",
            options.get_host(),
            options.get_port(),
            options.get_username(),
            options.get_database().unwrap_or("DBNAME")
        ),
        Err(_) => "createdb DBNAME".to_owned(),
    }
}

/// One direct connection, without the pool's retries, so its error is the real cause.
async fn probe_postgres(url: &str) -> Result<(), DbErr> {
    use sqlx::Connection;
    let connection = sqlx::postgres::PgConnection::connect(url)
        .await
        .map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err))))?;
    let _ = connection.close().await;
    Ok(())
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A PostgreSQL URL whose host is this machine (`localhost`, `127.0.0.1`, `[::1]`) and that
/// names no `sslmode` (nor a `host` parameter) gets `sslmode=disable`: the driver's default
/// (`prefer`) would encrypt every statement of traffic that never leaves the machine. Any
/// other URL is kept as given (`?sslmode=require` keeps TLS on loopback too).
fn loopback_without_tls(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let named = |name: &str| {
        query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        })
    };
    if named("sslmode") || named("host") {
        return url.to_owned();
    }
    let authority = authority_and_path.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return url.to_owned();
    }
    match query {
        Some(q) if !q.is_empty() => format!("{url}&sslmode=disable"),
        Some(_) => format!("{url}sslmode=disable"),
        None => format!("{url}?sslmode=disable"),
    }
}

/// Whether a SQLite URL asks for the file to be created when missing (`mode=rwc`).
fn creates_missing_file(url: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair == "mode=rwc"))
}

/// `url` with `mode=rwc` in place of any other mode.
fn with_mode_rwc(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => {
            let mut pairs: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty() && !pair.starts_with("mode="))
                .collect();
            pairs.push("mode=rwc");
            format!("{base}?{}", pairs.join("&"))
        }
        None => format!("{url}?mode=rwc"),
    }
}

/// The file path inside a `sqlite://path?…` URL, or `None` for other URLs and in-memory databases.
fn sqlite_file_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// `url` with its database name replaced by `name` (query string kept): the URL of another
/// database on the same server (scratch databases of tests and benches).
pub fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_go_without_tls_unless_they_say_otherwise() {
        for (given, used) in [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            ),
            (
                "postgresql://u:p@localhost/db?application_name=gw",
                "postgresql://u:p@localhost/db?application_name=gw&sslmode=disable",
            ),
            (
                "postgres://[::1]:5432/db",
                "postgres://[::1]:5432/db?sslmode=disable",
            ),
            (
                "postgres://localhost/db?",
                "postgres://localhost/db?sslmode=disable",
            ),
            // Kept as given: TLS asked for, another host, a socket, SQLite.
            (
                "postgres://postgres@127.0.0.1/test?sslmode=require",
                "postgres://postgres@127.0.0.1/test?sslmode=require",
            ),
            (
                "postgres://app@db.internal:5432/shop",
                "postgres://app@db.internal:5432/shop",
            ),
            (
                "postgres://app:pw@127.0.0.1.example.com/shop",
                "postgres://app:pw@127.0.0.1.example.com/shop",
            ),
            (
                "postgres://localhost/db?host=/var/run/postgresql",
                "postgres://localhost/db?host=/var/run/postgresql",
            ),
            (DEFAULT_DATABASE_URL, DEFAULT_DATABASE_URL),
        ] {
            assert_eq!(loopback_without_tls(given), used, "{given}");
        }
    }

    /// On a server with TLS on (this machine's), a loopback URL without `sslmode` connects in
    /// plain text.
    #[tokio::test]
    async fn a_loopback_connection_is_not_encrypted() {
        let Some(url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("skipped: needs TEST_DATABASE_URL (PostgreSQL)");
            return;
        };
        if !loopback_without_tls(&url).ends_with("sslmode=disable") {
            eprintln!("skipped: TEST_DATABASE_URL is not a loopback URL without sslmode");
            return;
        }
        let db = connect(&url).await.expect("the test database");
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ))
            .await
            .unwrap()
            .expect("a row for this backend");
        let encrypted: bool = row.try_get_by_index(0).unwrap();
        assert!(
            !encrypted,
            "a loopback connection without sslmode is not encrypted"
        );
        db.close().await.unwrap();
    }

    #[test]
    fn another_database_on_the_same_server_keeps_the_query() {
        assert_eq!(
            with_database_name("postgres://u@h:5432/test?sslmode=disable", "bench_x"),
            "postgres://u@h:5432/bench_x?sslmode=disable"
        );
        assert_eq!(
            with_database_name("postgres://u@h/test", "bench_x"),
            "postgres://u@h/bench_x"
        );
    }

    #[test]
    fn finds_the_file_of_sqlite_urls_only() {
        assert_eq!(
            sqlite_file_path("sqlite://data/commerce.db?mode=rwc"),
            Some("data/commerce.db")
        );
        assert_eq!(sqlite_file_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_file_path("sqlite::memory:"), None);
        assert_eq!(sqlite_file_path("postgres://localhost/test"), None);
    }

    #[test]
    fn suggests_mode_rwc_in_place_of_other_modes() {
        assert!(creates_missing_file("sqlite://a.db?cache=shared&mode=rwc"));
        assert!(!creates_missing_file("sqlite://a.db?mode=rw"));
        assert!(!creates_missing_file("sqlite://a.db"));
        assert_eq!(with_mode_rwc("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_mode_rwc("sqlite://a.db?mode=ro&cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
    }

    #[test]
    fn an_unknown_postgres_database_names_the_createdb_command() {
        assert_eq!(
            createdb("postgres://app:pw@db.example:6543/shop"),
            "createdb -h db.example -p 6543 -U app shop"
        );
    }

    #[tokio::test]
    async fn a_missing_sqlite_file_without_mode_rwc_suggests_it_and_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("core-db-test-{}", std::process::id()));
        let url = format!("sqlite://{}/missing/x.db", dir.display());
        let err = connect(&url).await.expect_err("the file does not exist");
        let message = explain(&url, &err);
        assert!(message.contains("?mode=rwc"), "{message}");
        assert!(message.contains("x.db"), "{message}");
        assert!(!dir.exists(), "no directory is created without mode=rwc");
    }
}

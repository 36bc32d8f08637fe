//! Opening the database: SQLite (embedded default) or PostgreSQL (cluster mode).

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

/// The embedded default: a SQLite file under the working directory, created when missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/commerce.db?mode=rwc";

/// Connects to `url`, creating a SQLite file's parent directory, and tunes SQLite for a server
/// (write-ahead log so readers never wait for the writer, a busy timeout instead of errors).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_file_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|err| DbErr::Custom(format!("cannot create {}: {err}", dir.display())))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { 8 } else { 16 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .await?;
    }
    Ok(db)
}

/// The file path inside a `sqlite://path?…` URL, or `None` for other URLs and in-memory databases.
fn sqlite_file_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::sqlite_file_path;

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
}

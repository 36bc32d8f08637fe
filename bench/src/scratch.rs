//! A database made for one bench run and removed after it: a fresh SQLite file, or a scratch
//! PostgreSQL database (`<prefix>_<uuid>`, created on the server of a given URL and dropped
//! `WITH (FORCE)` afterwards).

use std::path::PathBuf;

pub use commerce_core::db::with_database_name;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// The database(s) a bench measures (`--database`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
    Both,
}

impl Backend {
    /// The single backends to run, in order.
    pub fn each(self) -> &'static [Backend] {
        match self {
            Self::Both => &[Self::Sqlite, Self::Postgres],
            Self::Sqlite => &[Self::Sqlite],
            Self::Postgres => &[Self::Postgres],
        }
    }

    /// `sqlite` or `postgres`, for printed lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres | Self::Both => "postgres",
        }
    }

    /// The PostgreSQL server URL to create a scratch database beside (`None` for SQLite);
    /// PostgreSQL without one is an error naming the fix.
    pub fn server_url(self, given: Option<&str>) -> Result<Option<&str>, String> {
        match self {
            Self::Sqlite => Ok(None),
            Self::Postgres | Self::Both => given
                .filter(|url| !url.is_empty())
                .map(Some)
                .ok_or_else(|| "pass --database-url or set TEST_DATABASE_URL".to_owned()),
        }
    }
}

/// The scratch database of one run.
pub enum Scratch {
    Sqlite(PathBuf),
    Postgres {
        admin: DatabaseConnection,
        name: String,
    },
}

impl Scratch {
    /// A fresh database and its URL: SQLite, or PostgreSQL on the server of `postgres_url`.
    pub async fn create(
        postgres_url: Option<&str>,
        prefix: &str,
    ) -> Result<(Self, String), String> {
        let Some(base) = postgres_url else {
            let path = crate::fresh_sqlite_file(&format!("bench-{prefix}"));
            let url = crate::sqlite_url(&path);
            return Ok((Self::Sqlite(path), url));
        };
        let admin = Database::connect(base)
            .await
            .map_err(|err| commerce_core::db::explain(base, &err))?;
        let name = format!("bench_{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|err| format!("creating {name}: {err}"))?;
        let url = with_database_name(base, &name);
        Ok((Self::Postgres { admin, name }, url))
    }

    /// Removes the database (errors are printed, not returned: the run is over).
    pub async fn remove(self) {
        match self {
            Self::Sqlite(path) => crate::remove_sqlite_file(&path),
            Self::Postgres { admin, name } => {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                if let Err(err) = admin.execute_unprepared(&drop).await {
                    eprintln!("dropping {name}: {err}");
                }
                let _ = admin.close().await;
            }
        }
    }
}

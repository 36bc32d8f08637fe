//! Running a test on each database: a fresh SQLite file, then (with `TEST_DATABASE_URL`) a
//! fresh scratch PostgreSQL database, both removed afterwards, also when the test panics.
//! Shared by the migrations' tests and, through `#[path]`, by the core's database tests.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

pub use commerce_core::db::with_database_name;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database or file name no other test (or test process) uses.
pub fn scratch_name() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        "mig_{}_{micros}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `scenario` on a fresh (unmigrated) SQLite file, then on a fresh PostgreSQL database
/// when `TEST_DATABASE_URL` is set; removes both, and re-raises a panic naming the database.
pub async fn on_each_database<F, Fut>(test: &str, scenario: F)
where
    F: Fn(DatabaseConnection) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let path = std::env::temp_dir().join(format!("{}.db", scratch_name()));
    let db = commerce_core::db::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("a SQLite file");
    let outcome = tokio::spawn(scenario(db.clone())).await;
    let _ = db.close().await;
    remove_sqlite(&path);
    if let Err(err) = outcome {
        eprintln!("{test} failed on SQLite");
        std::panic::resume_unwind(err.into_panic());
    }
    let Some(base) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("{test}: skipped on PostgreSQL: TEST_DATABASE_URL is unset (ran on SQLite)");
        return;
    };
    let admin = Database::connect(&base)
        .await
        .expect("TEST_DATABASE_URL is reachable");
    let name = scratch_name();
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("creating a scratch database");
    let db = commerce_core::db::connect(&with_database_name(&base, &name))
        .await
        .expect("the scratch database");
    let outcome = tokio::spawn(scenario(db.clone())).await;
    let _ = db.close().await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .expect("dropping the scratch database");
    let _ = admin.close().await;
    if let Err(err) = outcome {
        eprintln!("{test} failed on PostgreSQL");
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Removes a SQLite file with its `-wal`, `-shm` and `-journal` companions.
pub fn remove_sqlite(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.to_path_buf().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// Runs a statement, failing the test with the SQL and the error.
pub async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

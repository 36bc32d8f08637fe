//! Start-up and shutdown: where the data is after a clean stop, what start-up errors say,
//! and that test databases do not outlive their tests.

use std::time::Duration;

use e2e::{TestDatabase, TestFile, spawn_app, test_database_url};
use gateway::{Config, StartError};
use sea_orm::{ConnectionTrait, Database, Statement};

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("the query runs")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .unwrap()
}

#[tokio::test]
async fn after_a_clean_stop_the_sqlite_file_alone_holds_all_data() {
    if test_database_url().is_some() {
        eprintln!("skipped: SQLite only, and TEST_DATABASE_URL is set");
        return;
    }
    let app = spawn_app().await;
    let path = app
        .database
        .sqlite_path()
        .expect("a SQLite file")
        .to_owned();
    app.gateway.stop().await.expect("a clean stop");

    let wal = format!("{}-wal", path.display());
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(
        wal_len, 0,
        "the write-ahead log still holds data after a stop"
    );

    // Copy only the .db file, as a backup by hand would.
    let copy = TestFile::new();
    std::fs::copy(&path, copy.path()).unwrap();
    let db = Database::connect(format!("sqlite://{}", copy.path().display()))
        .await
        .expect("the copy opens");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM product").await, 520);
    assert!(count(&db, "SELECT COUNT(*) FROM stock_level").await > 0);
    db.close().await.unwrap();
}

#[tokio::test]
async fn an_unopenable_sqlite_path_suggests_mode_rwc() {
    let missing_dir = std::env::temp_dir().join(format!("e2e_{}_no_such_dir", std::process::id()));
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}/x/y.db", missing_dir.display()),
        ..Config::default()
    };
    let err = gateway::start(config, false)
        .await
        .err()
        .expect("the file cannot be opened");
    let message = err.to_string();
    assert!(matches!(err, StartError::Database { .. }), "{message}");
    assert!(message.contains("?mode=rwc"), "{message}");
    assert!(message.contains("y.db"), "{message}");
    assert!(!missing_dir.exists(), "nothing is created without mode=rwc");
}

#[tokio::test]
async fn an_unknown_postgres_database_is_reported_with_how_to_create_it() {
    let Some(base) = test_database_url() else {
        eprintln!("skipped: needs TEST_DATABASE_URL (PostgreSQL)");
        return;
    };
    let prefix = base.split('?').next().unwrap();
    let prefix = prefix.rsplit_once('/').map_or(prefix, |(p, _)| p);
    let url = format!("{prefix}/e2e_no_such_database");
    let started = std::time::Instant::now();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: url,
        ..Config::default()
    };
    let err = gateway::start(config, false)
        .await
        .err()
        .expect("the database does not exist");
    let message = err.to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "{message}");
    assert!(
        message.contains("\"e2e_no_such_database\" does not exist"),
        "{message}"
    );
    assert!(message.contains("createdb"), "{message}");
    assert!(message.contains("e2e_no_such_database"), "{message}");
}

/// Whether a test database still exists.
async fn database_exists(url: &str, path: Option<&std::path::Path>) -> bool {
    match (test_database_url(), path) {
        (None, Some(path)) => path.exists(),
        (Some(base), _) => {
            let name = url.split('?').next().unwrap().rsplit('/').next().unwrap();
            let admin = Database::connect(&base).await.unwrap();
            let found = count(
                &admin,
                &format!("SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'"),
            )
            .await;
            admin.close().await.unwrap();
            found == 1
        }
        (None, None) => unreachable!("a SQLite database has a file"),
    }
}

#[tokio::test]
async fn a_test_database_is_removed_when_its_test_ends() {
    let database = TestDatabase::create().await;
    let url = database.url().to_owned();
    let path = database.sqlite_path().map(|p| p.to_owned());
    let db = commerce_core::db::connect(&url).await.unwrap();
    db.execute_unprepared("CREATE TABLE t (x INTEGER)")
        .await
        .unwrap();
    assert!(database_exists(&url, path.as_deref()).await);
    db.close().await.unwrap();
    drop(database);
    assert!(!database_exists(&url, path.as_deref()).await);
    if let Some(path) = path {
        for suffix in ["-wal", "-shm"] {
            assert!(!std::path::Path::new(&format!("{}{suffix}", path.display())).exists());
        }
    }
}

#[test]
fn a_fresh_database_url_lives_as_long_as_its_test() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, path) = runtime.block_on(async {
        let url = e2e::fresh_database_url().await;
        let db = commerce_core::db::connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        db.close().await.unwrap();
        let path = url
            .strip_prefix("sqlite://")
            .map(|rest| std::path::PathBuf::from(rest.split('?').next().unwrap()));
        (url, path)
    });
    let check = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(check.block_on(database_exists(&url, path.as_deref())));
    drop(runtime);
    assert!(!check.block_on(database_exists(&url, path.as_deref())));
}

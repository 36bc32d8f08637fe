//! Idempotency records on real databases: one claim per key under concurrency, replays,
//! conflicts, expiry, take-over of lost runs and purging.
//!
//! Each scenario runs on a fresh SQLite file, and on a fresh scratch PostgreSQL database when
//! `TEST_DATABASE_URL` is set.

#[path = "../../migrations/tests/support/mod.rs"]
mod support;

use std::future::Future;

use chrono::{Duration, Utc};
use commerce_core::entities::idempotency_record;
use commerce_core::idempotency::{self, Begin, KeyLifetime, NewClaim};
use migrations::{Migrator, MigratorTrait};
use sea_orm::{DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait};

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn lifetime() -> KeyLifetime {
    KeyLifetime {
        ttl: Duration::hours(24),
        stale_after: Duration::seconds(60),
    }
}

async fn on_each_database<F, Fut>(test: &str, scenario: F)
where
    F: Fn(DatabaseConnection) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    support::on_each_database(test, move |db| {
        let scenario = scenario.clone();
        async move {
            Migrator::up(&db, None).await.expect("migrations");
            scenario(db).await;
        }
    })
    .await;
}

async fn records(db: &DatabaseConnection) -> u64 {
    idempotency_record::Entity::find().count(db).await.unwrap()
}

#[tokio::test]
async fn a_key_runs_once_then_replays_and_refuses_other_requests() {
    on_each_database("replay", |db| async move {
        let now = Utc::now();
        let begin = |scope: &'static str, key: &'static str, hash: &'static str| {
            let db = db.clone();
            async move {
                idempotency::begin(&db, scope, key, hash, lifetime(), now)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(begin("web:sub:a", "k1", HASH_A).await, Begin::Run);
        assert_eq!(begin("web:sub:a", "k1", HASH_A).await, Begin::InProgress);
        assert_eq!(begin("web:sub:a", "k1", HASH_B).await, Begin::Conflict);
        assert!(
            idempotency::finish(&db, "web:sub:a", "k1", r#"{"data":1}"#)
                .await
                .unwrap()
        );
        assert_eq!(
            begin("web:sub:a", "k1", HASH_A).await,
            Begin::Replay(r#"{"data":1}"#.to_owned())
        );
        assert_eq!(begin("web:sub:a", "k1", HASH_B).await, Begin::Conflict);
        // Keys are per scope.
        assert_eq!(begin("web:sub:b", "k1", HASH_B).await, Begin::Run);
        assert_eq!(begin("mobile:sub:a", "k1", HASH_A).await, Begin::Run);
        // A finished record is not abandoned; a running one is, and runs again.
        idempotency::abandon(&db, "web:sub:a", "k1").await.unwrap();
        assert!(matches!(
            begin("web:sub:a", "k1", HASH_A).await,
            Begin::Replay(_)
        ));
        idempotency::abandon(&db, "web:sub:b", "k1").await.unwrap();
        assert_eq!(begin("web:sub:b", "k1", HASH_B).await, Begin::Run);
        // Bad input changes nothing.
        let bad = idempotency::begin(&db, "web:sub:a", "", HASH_A, lifetime(), now).await;
        assert!(bad.is_err());
        let bad = idempotency::begin(&db, "web:sub:a", "k2", "xyz", lifetime(), now).await;
        assert!(bad.is_err());
        assert_eq!(records(&db).await, 3);
    })
    .await;
}

#[tokio::test]
async fn claims_and_responses_are_written_in_batches_on_postgres() {
    on_each_database("batches", |db| async move {
        let now = Utc::now();
        let claim = |key: &str, hash: &str| NewClaim {
            scope: "web:sub:a".to_owned(),
            key: key.to_owned(),
            request_hash: hash.to_owned(),
            token: format!("t-{key}-{}", &hash[..4]),
        };
        if db.get_database_backend() != DbBackend::Postgres {
            // SQLite claims one by one (its writers queue anyway).
            let refused =
                idempotency::claim_free(&db, &[claim("k1", HASH_A)], lifetime(), now).await;
            assert!(refused.is_err());
            assert_eq!(records(&db).await, 0);
            return;
        }
        let begin = |key: &'static str, hash: &'static str| {
            let db = db.clone();
            async move {
                idempotency::begin(&db, "web:sub:a", key, hash, lifetime(), now)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(begin("k1", HASH_A).await, Begin::Run);
        // k1 is held, k2 free, k3 sent twice: only the free ones, the first of k3 included.
        let batch = [
            claim("k1", HASH_A),
            claim("k2", HASH_A),
            claim("k3", HASH_A),
            claim("k3", HASH_B),
        ];
        let claimed = idempotency::claim_free(&db, &batch, lifetime(), now)
            .await
            .unwrap();
        assert_eq!(claimed, [false, true, true, false]);
        // A request whose batch answer was lost learns from its token whether its row is there.
        for (claim, mine) in batch.iter().zip(claimed) {
            let by = idempotency::claimed_by(&db, &claim.scope, &claim.key, &claim.token)
                .await
                .unwrap();
            assert_eq!(by, mine, "{claim:?}");
        }
        // The ones not claimed learn why one by one.
        assert_eq!(begin("k1", HASH_A).await, Begin::InProgress);
        assert_eq!(begin("k3", HASH_B).await, Begin::Conflict);
        let responses = [
            ("k2", r#"{"data":2}"#),
            ("k3", r#"{"data":3}"#),
            ("never-claimed", "{}"),
        ]
        .map(|(key, body)| ("web:sub:a".to_owned(), key.to_owned(), body.to_owned()));
        let stored = idempotency::finish_many(&db, &responses).await.unwrap();
        assert_eq!(stored, [true, true, false]);
        assert_eq!(
            begin("k2", HASH_A).await,
            Begin::Replay(r#"{"data":2}"#.to_owned())
        );
        assert_eq!(
            begin("k3", HASH_A).await,
            Begin::Replay(r#"{"data":3}"#.to_owned())
        );
        assert_eq!(records(&db).await, 3);
        // One bad key or token refuses the whole batch, writing nothing.
        let mut no_token = claim("k5", HASH_A);
        no_token.token.clear();
        for bad in [
            [claim("k4", HASH_A), claim("", HASH_A)],
            [claim("k4", HASH_A), no_token],
        ] {
            assert!(
                idempotency::claim_free(&db, &bad, lifetime(), now)
                    .await
                    .is_err()
            );
        }
        assert_eq!(records(&db).await, 3);
    })
    .await;
}

#[tokio::test]
async fn twenty_concurrent_claims_of_one_key_make_one_run() {
    on_each_database("concurrent", |db| async move {
        let now = Utc::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    idempotency::begin(&db, "web:sub:a", "same", HASH_A, lifetime(), now)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut runs = 0;
        for task in tasks {
            match task.await.unwrap() {
                Begin::Run => runs += 1,
                Begin::InProgress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(runs, 1);
        assert_eq!(records(&db).await, 1);
    })
    .await;
}

#[tokio::test]
async fn expired_keys_run_again_and_are_purged_in_batches() {
    on_each_database("expiry", |db| async move {
        let then = Utc::now() - Duration::hours(48);
        let now = Utc::now();
        for n in 0..(idempotency::PURGE_BATCH + 3) {
            let key = format!("old-{n}");
            let claimed = idempotency::begin(&db, "web:sub:a", &key, HASH_A, lifetime(), then)
                .await
                .unwrap();
            assert_eq!(claimed, Begin::Run);
        }
        idempotency::finish(&db, "web:sub:a", "old-0", "{}")
            .await
            .unwrap();
        // An expired key is claimed anew, even with another request.
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "old-0", HASH_B, lifetime(), now)
                .await
                .unwrap(),
            Begin::Run
        );
        idempotency::begin(&db, "web:sub:a", "fresh", HASH_A, lifetime(), now)
            .await
            .unwrap();
        let purged = idempotency::purge_expired(&db, now).await.unwrap();
        assert_eq!(purged, idempotency::PURGE_BATCH + 2);
        assert_eq!(records(&db).await, 2);
        assert_eq!(idempotency::purge_expired(&db, now).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_lost_run_is_taken_over_by_one_request_only() {
    on_each_database("takeover", |db| async move {
        let claimed_at = Utc::now() - Duration::seconds(120);
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "lost", HASH_A, lifetime(), claimed_at)
                .await
                .unwrap(),
            Begin::Run
        );
        let now = Utc::now();
        // Another request still conflicts; the same one takes over, once.
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "lost", HASH_B, lifetime(), now)
                .await
                .unwrap(),
            Begin::Conflict
        );
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    idempotency::begin(&db, "web:sub:a", "lost", HASH_A, lifetime(), now)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut runs = 0;
        for task in tasks {
            match task.await.unwrap() {
                Begin::Run => runs += 1,
                Begin::InProgress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(runs, 1);
        // A recent running record is not taken over.
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "lost", HASH_A, lifetime(), now)
                .await
                .unwrap(),
            Begin::InProgress
        );
    })
    .await;
}

#[tokio::test]
async fn a_run_that_heartbeats_is_never_taken_over() {
    on_each_database("heartbeat", |db| async move {
        // Claimed long ago (the run is slow, e.g. waiting on a lock), but still alive: it
        // touches its record, so a retry waits instead of running a second time.
        let claimed_at = Utc::now() - Duration::seconds(120);
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "slow", HASH_A, lifetime(), claimed_at)
                .await
                .unwrap(),
            Begin::Run
        );
        idempotency::touch(&db, "web:sub:a", "slow").await.unwrap();
        assert_eq!(
            idempotency::begin(&db, "web:sub:a", "slow", HASH_A, lifetime(), Utc::now())
                .await
                .unwrap(),
            Begin::InProgress
        );
    })
    .await;
}

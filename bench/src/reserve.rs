//! Reservations per second under contention, in the core's inventory service, on SQLite and
//! on PostgreSQL:
//!
//! - baseline: each of `--concurrency` tasks reserves 1 unit of its own variant, then
//!   releases it, in a loop (no two tasks touch the same variant);
//! - contended: every task reserves 1 unit of the same variant, then releases it, in a loop.
//!
//! Both loops release what they reserved, so stock never runs out and both scenarios do the
//! same work per reservation; the throughput counts reservations (one per reserve + release
//! cycle), the latencies are those of the `reserve` call alone. Each variant has 1 000 000
//! units at WH-EAST on the `web` channel. Prints reservations/s, p50 and p99 of each scenario
//! and the ratio contended / baseline, then checks the stock invariant on every level (on hand
//! and reserved equal the sums of its ledger, reserved equals its active reservations, 0 ≤
//! reserved ≤ on hand) and exits non-zero when it is broken.
//!
//! `cargo run --release -p bench --bin reserve -- --seconds 3 --database both` runs on a fresh
//! temp SQLite file (opened as the gateway opens it: write-ahead log, its pool) and on a
//! scratch PostgreSQL database `bench_reserve_<random>` created beside `--database-url` (or
//! `TEST_DATABASE_URL`) and dropped afterwards; both are migrated and given the demo data.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::scratch::{Backend, Scratch};
use bench::{Figures, millis, print_ratio};
use chrono::Utc;
use clap::Parser;
use commerce_core::CoreError;
use commerce_core::entities::{channel, stock_location, variant};
use commerce_core::inventory::{self, Lifetime, Owner, OwnerKind, ReserveRequest, StockIn};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

/// Units each benchmarked variant gets: far more than a run reserves at once.
const STOCK: i32 = inventory::service::MAX_QUANTITY;
/// The channel reserved for and the location stocked (the channel's first).
const CHANNEL: &str = "web";
const LOCATION: &str = "WH-EAST";
const ACTOR: &str = "bench-reserve";
/// Violations listed before the rest are only counted.
const SHOWN_VIOLATIONS: usize = 10;

#[derive(Parser)]
#[command(about = "Reservations per second under contention in the inventory service")]
struct Args {
    /// Seconds to drive each scenario.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent tasks, each reserving and releasing in a loop.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// The database(s) to measure.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    database: Backend,
    /// A PostgreSQL server URL; the scratch database is created beside the one it names.
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let backends = args.database.each();
    let mut failed = false;
    for &backend in backends {
        match on_scratch_database(backend, &args).await {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(err) => {
                eprintln!("{}: {err}", backend.label());
                failed = true;
            }
        }
        println!();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---- scratch databases ----

/// Runs both scenarios on a fresh database of `backend`; `Ok(false)` when the invariant broke.
async fn on_scratch_database(backend: Backend, args: &Args) -> Result<bool, String> {
    let postgres = backend.server_url(args.database_url.as_deref())?;
    let (scratch, url) = Scratch::create(postgres, "reserve").await?;
    // Ctrl-C still drops the scratch database (WITH (FORCE) ends the tasks' sessions).
    let outcome = tokio::select! {
        outcome = measure(backend, &url, args) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    scratch.remove().await;
    outcome
}

// ---- the run ----

/// The demo channel, location and variants a run reserves.
struct Setup {
    channel_id: i64,
    /// One per task (baseline), then the shared one (contended).
    variants: Vec<i64>,
}

async fn measure(backend: Backend, url: &str, args: &Args) -> Result<bool, String> {
    let name = backend.label();
    // As the gateway opens it: its pool, WAL on SQLite, migrated.
    let (db, _) = gateway::server::open_database(url)
        .await
        .map_err(|err| err.to_string())?;
    let outcome = drive_scenarios(name, &db, args).await;
    let _ = commerce_core::db::close(&db).await;
    outcome
}

async fn drive_scenarios(name: &str, db: &DatabaseConnection, args: &Args) -> Result<bool, String> {
    let tasks = args.concurrency as usize;
    let setup = prepare(db, tasks + 1)
        .await
        .map_err(|err| err.to_string())?;
    let duration = Duration::from_secs(args.seconds);
    println!(
        "{name}: demo data, {} variants with {STOCK} units at {LOCATION} on {CHANNEL}; \
         {tasks} tasks, {} s per scenario",
        setup.variants.len(),
        args.seconds
    );
    let setup = Arc::new(setup);
    let baseline = drive(
        format!("{name} baseline (own variant)"),
        db,
        &setup,
        |task| task,
        duration,
        tasks,
    )
    .await;
    baseline.print();
    let contended = drive(
        format!("{name} contended (one variant)"),
        db,
        &setup,
        |_| tasks,
        duration,
        tasks,
    )
    .await;
    contended.print();
    print_ratio(
        &format!("{name} contended / baseline"),
        &contended.reserved,
        &baseline.reserved,
    );
    let audit = Audit::run(db).await.map_err(|err| err.to_string())?;
    audit.print(name);
    Ok(audit.holds())
}

/// Loads the demo data and gives `count` variants [`STOCK`] units at [`LOCATION`].
async fn prepare(db: &DatabaseConnection, count: usize) -> Result<Setup, CoreError> {
    commerce_core::demo::seed_if_empty(db).await?;
    let channel_id = channel::Entity::find()
        .filter(channel::Column::Code.eq(CHANNEL))
        .one(db)
        .await?
        .ok_or_else(|| missing("channel", CHANNEL))?
        .id;
    let location_id = stock_location::Entity::find()
        .filter(stock_location::Column::Code.eq(LOCATION))
        .one(db)
        .await?
        .ok_or_else(|| missing("stock location", LOCATION))?
        .id;
    let variants: Vec<i64> = variant::Entity::find()
        .select_only()
        .column(variant::Column::Id)
        .order_by_asc(variant::Column::Id)
        .limit(count as u64)
        .into_tuple()
        .all(db)
        .await?;
    if variants.len() < count {
        return Err(missing("variants", &format!("{count} of them")));
    }
    for &variant_id in &variants {
        let stock = StockIn {
            variant_id,
            location_id,
            quantity: STOCK,
            actor: ACTOR.to_owned(),
            reason: "benchmark stock".to_owned(),
            reference: None,
        };
        inventory::receive(db, &stock, Utc::now()).await?;
    }
    Ok(Setup {
        channel_id,
        variants,
    })
}

fn missing(entity: &'static str, key: &str) -> CoreError {
    CoreError::NotFound {
        entity,
        key: format!("{key} (demo data)"),
    }
}

/// What one scenario measured: the reservations, and the failures by kind.
struct Run {
    reserved: Figures,
    failures: BTreeMap<String, usize>,
}

impl Run {
    fn print(&self) {
        let figures = &self.reserved;
        println!(
            "{:<40} {:>8.0} reservations/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} reserved, {} errors)",
            figures.name,
            figures.per_second(),
            millis(figures.p50()),
            millis(figures.p99()),
            figures.requests(),
            figures.errors
        );
        for (kind, count) in &self.failures {
            println!("    {count:>8} x {kind}");
        }
    }
}

/// Drives `tasks` tasks for `duration`, task `i` reserving 1 unit of
/// `setup.variants[variant_of(i)]` and releasing it, over and over.
async fn drive(
    name: String,
    db: &DatabaseConnection,
    setup: &Arc<Setup>,
    variant_of: impl Fn(usize) -> usize,
    duration: Duration,
    tasks: usize,
) -> Run {
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let db = db.clone();
            let setup = setup.clone();
            let variant_id = setup.variants[variant_of(task)];
            let owner = Owner {
                kind: OwnerKind::Cart,
                reference: format!("bench-{}-{task}", uuid::Uuid::new_v4().simple()),
            };
            tokio::spawn(async move {
                let request = ReserveRequest {
                    variant_id,
                    quantity: 1,
                    channel_id: setup.channel_id,
                    owner: owner.clone(),
                    lifetime: Lifetime::Seconds(900),
                    location_id: None,
                    near: None,
                    actor: ACTOR.to_owned(),
                };
                let mut latencies = Vec::new();
                let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let reserved = match inventory::reserve(&db, &request, Utc::now()).await {
                        Ok(reserved) => reserved,
                        Err(err) => {
                            *failures
                                .entry(format!("reserve: {}", kind_of(&err)))
                                .or_default() += 1;
                            continue;
                        }
                    };
                    latencies.push(sent.elapsed());
                    for row in reserved.reservations {
                        let released =
                            inventory::release(&db, row.id, Some(&owner), ACTOR, "", Utc::now())
                                .await;
                        if let Err(err) = released {
                            *failures
                                .entry(format!("release: {}", kind_of(&err)))
                                .or_default() += 1;
                        }
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut run = Run {
        reserved: Figures {
            name,
            latencies: Vec::new(),
            errors: 0,
            rate_limited: 0,
            elapsed: Duration::ZERO,
        },
        failures: BTreeMap::new(),
    };
    for worker in workers {
        let (mut latencies, failures) = match worker.await {
            Ok(outcome) => outcome,
            Err(err) => (Vec::new(), BTreeMap::from([(format!("task: {err}"), 1)])),
        };
        run.reserved.latencies.append(&mut latencies);
        for (kind, count) in failures {
            if kind.starts_with("reserve") {
                run.reserved.errors += count;
            }
            *run.failures.entry(kind).or_default() += count;
        }
    }
    run.reserved.elapsed = start.elapsed();
    run.reserved.latencies.sort_unstable();
    run
}

/// A failure, without the ids and figures that make each one different.
fn kind_of(err: &CoreError) -> String {
    match err {
        CoreError::NotFound { entity, .. } => format!("not found ({entity})"),
        CoreError::InvalidInput { field, .. } => format!("invalid input ({field})"),
        CoreError::InsufficientStock { .. } => "insufficient stock".to_owned(),
        CoreError::Conflict { field, .. } => format!("conflict ({field})"),
        CoreError::Forbidden { field, .. } => format!("forbidden ({field})"),
        CoreError::Database(err) => {
            let text = err.to_string();
            format!("database: {}", text.chars().take(120).collect::<String>())
        }
    }
}

// ---- the invariant ----

/// Every level next to the sums of its ledger and of its active reservations.
const LEVELS_WITH_LEDGER: &str = "
SELECT CAST(l.id AS BIGINT), CAST(l.on_hand AS BIGINT), CAST(l.reserved AS BIGINT),
       CAST(COALESCE(m.on_hand, 0) AS BIGINT), CAST(COALESCE(m.reserved, 0) AS BIGINT),
       CAST(COALESCE(r.quantity, 0) AS BIGINT)
FROM stock_level l
LEFT JOIN (SELECT variant_id, location_id, SUM(on_hand_delta) AS on_hand,
                  SUM(reserved_delta) AS reserved
           FROM inventory_movement GROUP BY variant_id, location_id) m
       ON m.variant_id = l.variant_id AND m.location_id = l.location_id
LEFT JOIN (SELECT variant_id, location_id, SUM(quantity) AS quantity
           FROM reservation WHERE state = 'active' GROUP BY variant_id, location_id) r
       ON r.variant_id = l.variant_id AND r.location_id = l.location_id
ORDER BY l.id";

/// Ledger entries and active reservations of a (variant, location) that has no level.
const ORPHANS: &str = "
SELECT CAST(COUNT(*) AS BIGINT) FROM (
    SELECT variant_id, location_id FROM inventory_movement
    UNION
    SELECT variant_id, location_id FROM reservation WHERE state = 'active'
) x
WHERE NOT EXISTS (SELECT 1 FROM stock_level l
                  WHERE l.variant_id = x.variant_id AND l.location_id = x.location_id)";

/// The stock invariant, checked on every level after the run.
struct Audit {
    levels: usize,
    active_reservations: i64,
    violations: Vec<String>,
}

impl Audit {
    async fn run(db: &DatabaseConnection) -> Result<Self, sea_orm::DbErr> {
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(backend, LEVELS_WITH_LEDGER))
            .await?;
        let mut audit = Self {
            levels: rows.len(),
            active_reservations: 0,
            violations: Vec::new(),
        };
        for row in rows {
            let [
                id,
                on_hand,
                reserved,
                ledger_on_hand,
                ledger_reserved,
                active,
            ] = [0, 1, 2, 3, 4, 5].map(|i| row.try_get_by_index::<i64>(i));
            let (id, on_hand, reserved) = (id?, on_hand?, reserved?);
            let (ledger_on_hand, ledger_reserved, active) =
                (ledger_on_hand?, ledger_reserved?, active?);
            audit.active_reservations += active;
            let mut broken = Vec::new();
            if on_hand != ledger_on_hand {
                broken.push(format!("on_hand {on_hand} != ledger {ledger_on_hand}"));
            }
            if reserved != ledger_reserved {
                broken.push(format!("reserved {reserved} != ledger {ledger_reserved}"));
            }
            if reserved != active {
                broken.push(format!(
                    "reserved {reserved} != active reservations {active}"
                ));
            }
            if reserved < 0 {
                broken.push(format!("reserved {reserved} < 0"));
            }
            if on_hand - reserved < 0 {
                broken.push(format!("available {} < 0", on_hand - reserved));
            }
            if !broken.is_empty() {
                audit
                    .violations
                    .push(format!("level {id}: {}", broken.join(", ")));
            }
        }
        let orphans = db
            .query_one_raw(Statement::from_string(backend, ORPHANS))
            .await?
            .map_or(Ok(0), |row| row.try_get_by_index::<i64>(0))?;
        if orphans > 0 {
            audit.violations.push(format!(
                "{orphans} (variant, location) pairs have ledger entries or active \
                 reservations but no level"
            ));
        }
        Ok(audit)
    }

    fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    fn print(&self, name: &str) {
        if self.holds() {
            println!(
                "invariant {name}: holds on {} levels (on hand and reserved = ledger, reserved = \
                 active reservations, 0 <= reserved <= on hand); {} reservations still active",
                self.levels, self.active_reservations
            );
            return;
        }
        println!(
            "invariant {name}: VIOLATED on {} of {} levels",
            self.violations.len(),
            self.levels
        );
        for violation in self.violations.iter().take(SHOWN_VIOLATIONS) {
            println!("    {violation}");
        }
        if self.violations.len() > SHOWN_VIOLATIONS {
            println!(
                "    … and {} more",
                self.violations.len() - SHOWN_VIOLATIONS
            );
        }
    }
}

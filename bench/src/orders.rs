//! Orders per second end to end over HTTP (`placeOrder` through `POST /graphql`, a shopper on
//! `web`, one `Idempotency-Key` per order), on SQLite and on PostgreSQL, with the oversell
//! check after the run:
//!
//! - baseline: `{ channel { code } }` with the same shopper token, `--concurrency`
//!   connections, `--seconds`: what the gateway answers when it does almost nothing;
//! - spread: 1-unit orders spread round-robin over `--skus` SKUs (default 20) of the catalog,
//!   each given 1,000,000 more units at WH-EAST first, for `--seconds` (the measured figure,
//!   printed against the baseline as orders/s ÷ baseline req/s);
//! - contended: one more SKU set to exactly `--units` sellable units on `web` (default 500:
//!   WH-EAST holds units + the channel's safety stock, its other locations none), then
//!   `--contended-orders` 1-unit orders (default 2 × units) sent over the same connections.
//!   Exactly `--units` must succeed, the rest answer `INSUFFICIENT_STOCK`.
//!
//! After the run the database is read directly: on every stock level, on hand and reserved
//! equal the sums of its ledger (`inventory_movement`), reserved equals its active
//! reservations, 0 ≤ reserved ≤ on hand; the contended SKU has exactly the safety stock left
//! on `web` and exactly `--units` ordered units; the orders written during the run are the
//! orders answered. Any violation (or missing the target) exits non-zero.
//!
//! ```text
//! cargo build --release -p gateway -p bench --bin orders --bin gateway
//! TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     taskset -c 1 target/release/orders --database both --server-cpu 0 --seconds 10
//! ```
//!
//! Each database is fresh: a temp SQLite file, or a scratch PostgreSQL database
//! `bench_orders_<random>` beside `--database-url` (or `TEST_DATABASE_URL`), dropped after.
//! The gateway runs as its own process (`target/release/gateway serve --demo`, rate limits
//! off, a generated `GATEWAY_JWT_SECRET` to mint the tokens with), under `taskset -c
//! <--server-cpu>` when given. The CPU time of the gateway, of PostgreSQL's processes and of
//! this driver during the spread scenario, and the gateway's SQL statements per request (from
//! its `/metrics`: those each request ran itself, and all, the order and idempotency batch
//! writers' included), show where the time goes.
//!
//! `--url` targets a running gateway instead (`--token` a web shopper token, `--admin-token`
//! a web admin token, or both minted with `GATEWAY_JWT_SECRET`); its database is audited only
//! when `--gateway-database-url` names it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bench::gateway::{Options, Spawned, default_binary};
use bench::scratch::{Backend, Scratch};
use bench::{Figures, Request, millis, print_ratio};
use clap::Parser;
use gateway::auth::{AuthConfig, Authenticator, Role, Secret};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

/// The issue's target, on PostgreSQL.
const TARGET_ORDERS_PER_SECOND: f64 = 1_000.0;
const CHANNEL: &str = "web";
const CUSTOMER: &str = "shopper@example.com";
/// Where the spread SKUs get their stock and the contended SKU its units.
const LOCATION: &str = "WH-EAST";
const SPREAD_STOCK: i64 = 1_000_000;
const PLACE_ORDER: &str =
    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id status } }";
const BASELINE: &str = "{ channel { code } }";
/// Violations and log lines quoted in the report, at most.
const QUOTED: usize = 10;

#[derive(Parser)]
#[command(about = "Orders per second end to end over HTTP, with the oversell check")]
struct Args {
    /// Seconds to drive the baseline and the spread scenario, each.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections, each sending its next request when the last one answered.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// The database(s) to measure.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    database: Backend,
    /// A PostgreSQL server URL; the scratch database is created beside the one it names.
    #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// SKUs the spread scenario orders, round-robin.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    skus: u32,
    /// Sellable units of the contended SKU.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    units: u32,
    /// Orders sent for the contended SKU (default: twice --units).
    #[arg(long)]
    contended_orders: Option<u32>,
    /// Run the spawned gateway under `taskset -c <CPUS>` (e.g. 0).
    #[arg(long, conflicts_with = "url")]
    server_cpu: Option<String>,
    /// The gateway binary to spawn; default: `gateway` beside this binary.
    #[arg(long, conflicts_with = "url")]
    gateway_bin: Option<PathBuf>,
    /// RUST_LOG of the spawned gateway (its warnings and errors are reported).
    #[arg(long, default_value = "warn", conflicts_with = "url")]
    server_log: String,
    /// A running gateway (e.g. http://127.0.0.1:8080); default: spawn one per database.
    #[arg(long)]
    url: Option<String>,
    /// Shopper token (web) for --url; default: minted with GATEWAY_JWT_SECRET.
    #[arg(long, requires = "url")]
    token: Option<String>,
    /// Admin token (web) for --url; default: minted with GATEWAY_JWT_SECRET.
    #[arg(long, requires = "url")]
    admin_token: Option<String>,
    /// The --url gateway's database, for the audit after the run.
    #[arg(long, requires = "url")]
    gateway_database_url: Option<String>,
    /// web's safety stock when the database cannot be read (--url without
    /// --gateway-database-url).
    #[arg(long, default_value_t = 2, requires = "url")]
    safety_stock: i64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut passed = true;
    if let Some(url) = &args.url {
        let outcome = on_running_gateway(url, &args).await;
        passed = report(outcome, "gateway");
    } else {
        let backends = args.database.each();
        for &backend in backends {
            let outcome = on_scratch_database(backend, &args).await;
            passed &= report(outcome, backend.label());
            println!();
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(outcome: Result<bool, String>, name: &str) -> bool {
    match outcome {
        Ok(passed) => passed,
        Err(why) => {
            eprintln!("{name}: error: {why}");
            false
        }
    }
}

// ---- databases and gateways ----

/// Spawns a gateway on a fresh database of `backend`, runs the scenarios, audits, cleans up.
async fn on_scratch_database(backend: Backend, args: &Args) -> Result<bool, String> {
    let postgres = backend.server_url(args.database_url.as_deref())?;
    let (scratch, url) = Scratch::create(postgres, "orders").await?;
    let outcome = match start_gateway(args, &url) {
        Ok((spawned, target)) => {
            // Ctrl-C still stops the gateway and drops the scratch database.
            let outcome = tokio::select! {
                outcome = measure(backend.label(), &target, Some(&url), args) => outcome,
                _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
            };
            spawned.stop().print();
            outcome
        }
        Err(why) => Err(why),
    };
    scratch.remove().await;
    outcome
}

async fn on_running_gateway(url: &str, args: &Args) -> Result<bool, String> {
    let token = |given: &Option<String>, role: Role, customer: Option<&str>| match given {
        Some(token) => Ok(token.clone()),
        None => {
            let secret = std::env::var("GATEWAY_JWT_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or("pass --token and --admin-token, or set GATEWAY_JWT_SECRET")?;
            mint(&Secret::new(secret), role, customer)
        }
    };
    let target = Target {
        url: url.trim_end_matches('/').to_owned(),
        pid: None,
        shopper: token(&args.token, Role::Shopper, Some(CUSTOMER))?,
        admin: token(&args.admin_token, Role::Admin, None)?,
    };
    measure(
        "gateway",
        &target,
        args.gateway_database_url.as_deref(),
        args,
    )
    .await
}

/// The gateway a run talks to.
struct Target {
    url: String,
    /// Its process, for its CPU time.
    pid: Option<u32>,
    shopper: String,
    admin: String,
}

/// A `web` token of `role`, valid for a day.
fn mint(secret: &Secret, role: Role, customer: Option<&str>) -> Result<String, String> {
    let auth =
        Authenticator::new(&AuthConfig::default(), Some(secret)).map_err(|err| err.to_string())?;
    let claims = auth.claims(
        CHANNEL,
        role,
        customer.map(str::to_owned),
        None,
        Some(24 * 3600),
    );
    auth.mint(&claims).map_err(|err| err.to_string())
}

/// Starts `gateway serve --demo` on `database_url` and a random port, and mints the driver's
/// tokens with the secret it was given.
fn start_gateway(args: &Args, database_url: &str) -> Result<(Spawned, Target), String> {
    let secret = Secret::generate();
    let binary = args.gateway_bin.clone().unwrap_or_else(default_binary);
    // Room for the driver's connections and then some.
    let max_connections = (args.concurrency as usize * 4).max(1_000);
    let (spawned, url) = Spawned::start(Options {
        binary: &binary,
        server_cpu: args.server_cpu.as_deref(),
        log_filter: &args.server_log,
        name: "bench-orders",
        config: format!("[http]\nmax_connections = {max_connections}\n"),
        database_url,
        secret: &secret,
        quoted: QUOTED,
    })?;
    let target = Target {
        url,
        pid: Some(spawned.pid()),
        shopper: mint(&secret, Role::Shopper, Some(CUSTOMER))?,
        admin: mint(&secret, Role::Admin, None)?,
    };
    Ok((spawned, target))
}

// ---- GraphQL calls of the set-up ----

/// One GraphQL request with `token`; its `data`, or why not.
async fn graphql(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let request = Request::graphql(&target.url, body, Some(token.to_owned()));
    let answer = request.json(client).await?;
    if answer.get("errors").is_some() {
        return Err(format!("{query}: {answer}"));
    }
    Ok(answer["data"].clone())
}

/// The first SKUs the shopper sees on `web`, in catalog order.
async fn catalog_skus(
    client: &reqwest::Client,
    target: &Target,
    count: usize,
) -> Result<Vec<String>, String> {
    let data = graphql(
        client,
        target,
        &target.shopper,
        "query($first: Int!) { products(first: $first) { edges { node { variants { sku } } } } }",
        // Products have several variants: `count` of them hold at least `count` SKUs.
        json!({ "first": count.min(100) }),
    )
    .await?;
    let mut skus = Vec::new();
    for edge in data["products"]["edges"].as_array().into_iter().flatten() {
        for variant in edge["node"]["variants"].as_array().into_iter().flatten() {
            if let Some(sku) = variant["sku"].as_str() {
                skus.push(sku.to_owned());
            }
        }
    }
    Ok(skus)
}

async fn receive(
    client: &reqwest::Client,
    target: &Target,
    sku: &str,
    location: &str,
    quantity: i64,
) -> Result<(), String> {
    graphql(
        client,
        target,
        &target.admin,
        "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { onHand } }",
        json!({ "input": {
            "sku": sku, "location": location, "quantity": quantity, "reason": "bench-orders"
        } }),
    )
    .await
    .map(drop)
}

async fn adjust(
    client: &reqwest::Client,
    target: &Target,
    sku: &str,
    location: &str,
    delta: i64,
) -> Result<(), String> {
    graphql(
        client,
        target,
        &target.admin,
        "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { onHand } }",
        json!({ "input": {
            "sku": sku, "location": location, "delta": delta, "reason": "bench-orders"
        } }),
    )
    .await
    .map(drop)
}

/// Gives `sku` exactly `sellable` units on `web`: `sellable + safety` available at the
/// channel's first location, none at its others.
async fn set_sellable(
    client: &reqwest::Client,
    target: &Target,
    sku: &str,
    sellable: i64,
    safety: i64,
) -> Result<(), String> {
    let data = graphql(
        client,
        target,
        &target.admin,
        "query($sku: String!) { channel { locations { code } } \
         variant(sku: $sku) { stockLevels { location { code } onHand reserved } } }",
        json!({ "sku": sku }),
    )
    .await?;
    let locations: Vec<String> = data["channel"]["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["code"].as_str().map(str::to_owned))
        .collect();
    let first = locations.first().ok_or("web has no locations")?.clone();
    let mut available: BTreeMap<String, i64> = BTreeMap::new();
    for level in data["variant"]["stockLevels"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(code) = level["location"]["code"].as_str() {
            let free =
                level["onHand"].as_i64().unwrap_or(0) - level["reserved"].as_i64().unwrap_or(0);
            available.insert(code.to_owned(), free);
        }
    }
    for location in &locations {
        let wanted = if *location == first {
            sellable + safety
        } else {
            0
        };
        match available.get(location) {
            Some(&free) if free != wanted => {
                adjust(client, target, sku, location, wanted - free).await?
            }
            Some(_) => {}
            None if wanted > 0 => receive(client, target, sku, location, wanted).await?,
            None => {}
        }
    }
    Ok(())
}

// ---- the run ----

async fn measure(
    name: &str,
    target: &Target,
    database_url: Option<&str>,
    args: &Args,
) -> Result<bool, String> {
    let db = match database_url {
        Some(url) => Some(
            Database::connect(url)
                .await
                .map_err(|err| commerce_core::db::explain(url, &err))?,
        ),
        None => None,
    };
    let outcome = run(name, target, db.as_ref(), args).await;
    if let Some(db) = db {
        let _ = db.close().await;
    }
    outcome
}

async fn run(
    name: &str,
    target: &Target,
    db: Option<&DatabaseConnection>,
    args: &Args,
) -> Result<bool, String> {
    let client = reqwest::Client::new();
    let concurrency = args.concurrency as usize;
    let duration = Duration::from_secs(args.seconds);
    let units = i64::from(args.units);
    let contended_orders = args.contended_orders.unwrap_or(2 * args.units) as usize;

    // Set-up: the SKUs, their stock, one order of each (they can be ordered at all).
    let wanted = args.skus as usize + 1;
    let mut skus = catalog_skus(&client, target, wanted).await?;
    if skus.len() < wanted {
        return Err(format!(
            "the catalog's first {wanted} products show {} SKUs, {wanted} needed",
            skus.len()
        ));
    }
    skus.truncate(wanted);
    let contended_sku = skus.pop().expect("one more than --skus");
    for sku in &skus {
        receive(&client, target, sku, LOCATION, SPREAD_STOCK).await?;
    }
    let orders = Arc::new(OrderPlan {
        endpoint: format!("{}/graphql", target.url),
        shopper: target.shopper.clone(),
        run: uuid::Uuid::new_v4().simple().to_string(),
        sent: AtomicUsize::new(0),
    });
    let warm = orders.place_each(&client, &skus).await;
    if warm.ok != skus.len() {
        return Err(format!(
            "a first order of each spread SKU: {} of {} placed ({})",
            warm.ok,
            skus.len(),
            warm.failure_summary()
        ));
    }
    let safety = match db {
        Some(db) => safety_stock(db).await.map_err(|err| err.to_string())?,
        None => args.safety_stock,
    };
    set_sellable(&client, target, &contended_sku, units, safety).await?;
    let orders_before = match db {
        Some(db) => Some(count_orders(db).await.map_err(|err| err.to_string())?),
        None => None,
    };
    println!(
        "{name}: gateway {} (pid {}), {concurrency} connections, {} s per timed scenario; \
         spread over {} SKUs ({} .. {}) with +{SPREAD_STOCK} at {LOCATION}; contended {} with \
         {units} sellable (safety stock {safety}), {contended_orders} orders",
        target.url,
        target.pid.map_or("unknown".to_owned(), |p| p.to_string()),
        args.seconds,
        skus.len(),
        skus.first().map_or("", String::as_str),
        skus.last().map_or("", String::as_str),
        contended_sku,
    );

    // Baseline: the cheapest authenticated query, same connections, same time.
    let baseline_request = Request::graphql(
        &target.url,
        json!({ "query": BASELINE }).to_string(),
        Some(target.shopper.clone()),
    );
    let baseline = bench::drive(
        format!("{name} baseline {BASELINE}"),
        &baseline_request,
        duration,
        concurrency,
    )
    .await;
    baseline.print();

    // Spread: the measured scenario, with where its time goes.
    let sql_before = sql_statements(&client, target).await;
    let usage_before = Usage::now(target.pid);
    let spread = orders
        .drive(
            format!("{name} placeOrder spread ({} SKUs)", skus.len()),
            Arc::new(skus.clone()),
            Load::For(duration),
            concurrency,
        )
        .await;
    let usage = Usage::now(target.pid).since(&usage_before, spread.figures.elapsed);
    let sql_after = sql_statements(&client, target).await;
    spread.print();
    print_ratio(
        &format!("{name} spread / baseline"),
        &spread.figures,
        &baseline,
    );
    usage.print();
    if let (Some(before), Some(after)) = (sql_before, sql_after) {
        let requests = after.requests - before.requests;
        if requests > 0.0 {
            println!(
                "    SQL statements over the spread scenario: {:.1} per GraphQL request run by \
                 the request itself, {:.2} per request in all (the batch writers' included; \
                 {requests:.0} requests)",
                (after.in_requests - before.in_requests) / requests,
                (after.all - before.all) / requests
            );
        }
    }

    // Contended: more orders than units on one SKU.
    let contended = orders
        .drive(
            format!("{name} placeOrder contended (1 SKU)"),
            Arc::new(vec![contended_sku.clone()]),
            Load::Count(contended_orders),
            concurrency,
        )
        .await;
    contended.print();

    let orders_per_second = spread.figures.per_second();
    println!(
        "{name}: {orders_per_second:.0} orders/s, {:.0} baseline req/s, orders/s ÷ baseline = \
         {:.4}",
        baseline.per_second(),
        orders_per_second / baseline.per_second().max(f64::EPSILON)
    );

    // The oversell check.
    let mut violations = Vec::new();
    let contended_ok = contended.figures.requests() as i64;
    if contended_ok != units {
        violations.push(format!(
            "contended: {contended_ok} orders placed for {units} sellable units{}",
            if contended_ok > units {
                " (OVERSOLD)"
            } else {
                " (undersold)"
            }
        ));
    }
    if contended.other_failures() > 0 {
        violations.push(format!(
            "contended: {} failures other than INSUFFICIENT_STOCK",
            contended.other_failures()
        ));
    }
    if spread.figures.errors > 0 {
        violations.push(format!("spread: {} failed orders", spread.figures.errors));
    }
    match db {
        Some(db) => {
            let placed = (spread.figures.requests() + contended.figures.requests()) as i64;
            let audit = Audit::run(
                db,
                &contended_sku,
                orders_before.unwrap_or(0),
                placed,
                units,
                safety,
            )
            .await
            .map_err(|err| err.to_string())?;
            audit.print(name);
            violations.extend(audit.violations);
        }
        None => println!(
            "{name}: database not audited (pass --gateway-database-url to check the ledger)"
        ),
    }
    if violations.is_empty() {
        println!(
            "{name}: no oversell: {contended_ok} of {contended_orders} contended orders placed for {units} units"
        );
    } else {
        println!("{name}: CHECK FAILED on {} point(s)", violations.len());
        for violation in violations.iter().take(QUOTED) {
            println!("    {violation}");
        }
        if violations.len() > QUOTED {
            println!("    … and {} more", violations.len() - QUOTED);
        }
    }
    let mut passed = violations.is_empty();
    if name == "postgres" {
        let met = orders_per_second >= TARGET_ORDERS_PER_SECOND;
        println!(
            "target on postgres: >= {TARGET_ORDERS_PER_SECOND:.0} orders/s with zero oversell: {}",
            if met && passed { "MET" } else { "NOT MET" }
        );
        passed &= met;
    }
    Ok(passed)
}

/// How long or how much a scenario drives.
#[derive(Clone, Copy)]
enum Load {
    For(Duration),
    /// This many orders in all, over every connection.
    Count(usize),
}

/// What every order shares.
struct OrderPlan {
    endpoint: String,
    shopper: String,
    /// Makes this run's idempotency keys its own.
    run: String,
    /// Orders sent so far (each one's key and SKU).
    sent: AtomicUsize,
}

/// How one `placeOrder` ended.
enum Placed {
    Ok,
    /// A GraphQL error code, an HTTP status or a transport failure.
    Failed(String),
}

impl OrderPlan {
    /// Places order number `n` (its key) of 1 unit of `sku`.
    async fn place(&self, client: &reqwest::Client, n: usize, sku: &str) -> Placed {
        let body = json!({
            "query": PLACE_ORDER,
            "variables": { "input": {
                "lines": [{ "sku": sku, "quantity": 1 }],
                "shipTo": {
                    "name": "A", "line1": "1 Main", "city": "Newark", "postalCode": "07102",
                    "country": "US", "region": "us-east", "latitude": 40.73, "longitude": -74.17
                }
            } }
        })
        .to_string();
        let response = client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.shopper))
            .header("idempotency-key", format!("bench-{}-{n}", self.run))
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => return Placed::Failed(format!("transport: {}", short(&err.to_string()))),
        };
        let status = response.status();
        let answer: Value = match response.json().await {
            Ok(answer) => answer,
            Err(_) => return Placed::Failed(format!("HTTP {status}, not JSON")),
        };
        if let Some(error) = answer["errors"].get(0) {
            let code = error["extensions"]["code"].as_str().unwrap_or("no code");
            return Placed::Failed(code.to_owned());
        }
        if !status.is_success() {
            return Placed::Failed(format!("HTTP {status}"));
        }
        if answer["data"]["placeOrder"]["id"].is_null() {
            return Placed::Failed("no order id".to_owned());
        }
        Placed::Ok
    }

    /// One order of each SKU, one after another.
    async fn place_each(&self, client: &reqwest::Client, skus: &[String]) -> Tally {
        let mut tally = Tally::default();
        for sku in skus {
            let n = self.sent.fetch_add(1, Ordering::Relaxed);
            match self.place(client, n, sku).await {
                Placed::Ok => tally.ok += 1,
                Placed::Failed(kind) => {
                    *tally.failures.entry(format!("{sku}: {kind}")).or_default() += 1
                }
            }
        }
        tally
    }

    /// `concurrency` connections placing 1-unit orders of `skus`, round-robin, each sending
    /// its next order when the last one answered.
    async fn drive(
        self: &Arc<Self>,
        name: String,
        skus: Arc<Vec<String>>,
        load: Load,
        concurrency: usize,
    ) -> OrderRun {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .expect("client");
        let start = Instant::now();
        let taken = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let client = client.clone();
                let plan = self.clone();
                let skus = skus.clone();
                let taken = taken.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
                    loop {
                        let more = match load {
                            Load::For(duration) => start.elapsed() < duration,
                            Load::Count(count) => taken.fetch_add(1, Ordering::Relaxed) < count,
                        };
                        if !more {
                            break;
                        }
                        let n = plan.sent.fetch_add(1, Ordering::Relaxed);
                        let sent = Instant::now();
                        match plan.place(&client, n, &skus[n % skus.len()]).await {
                            Placed::Ok => latencies.push(sent.elapsed()),
                            Placed::Failed(kind) => *failures.entry(kind).or_default() += 1,
                        }
                    }
                    (latencies, failures)
                })
            })
            .collect();
        let mut run = OrderRun {
            figures: Figures {
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
            run.figures.latencies.append(&mut latencies);
            for (kind, count) in failures {
                run.figures.errors += count;
                *run.failures.entry(kind).or_default() += count;
            }
        }
        run.figures.elapsed = start.elapsed();
        run.figures.latencies.sort_unstable();
        run
    }
}

fn short(text: &str) -> String {
    text.chars().take(120).collect()
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failures: BTreeMap<String, usize>,
}

impl Tally {
    fn failure_summary(&self) -> String {
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(kind, count)| format!("{count} x {kind}"))
            .collect();
        kinds.join(", ")
    }
}

/// What an order scenario measured: the placed orders, and the failures by kind.
struct OrderRun {
    figures: Figures,
    failures: BTreeMap<String, usize>,
}

impl OrderRun {
    fn print(&self) {
        let figures = &self.figures;
        println!(
            "{:<40} {:>8.0} orders/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} placed, {} failed)",
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

    fn other_failures(&self) -> usize {
        self.failures
            .iter()
            .filter(|(kind, _)| kind.as_str() != "INSUFFICIENT_STOCK")
            .map(|(_, count)| count)
            .sum()
    }
}

// ---- where the time goes ----

/// The gateway's SQL statement counts so far.
struct Statements {
    /// Run by requests themselves (`gateway_sql_statements_per_request` sum).
    in_requests: f64,
    /// Requests counted (`gateway_sql_statements_per_request` count).
    requests: f64,
    /// Every statement, the batch writers' included (`gateway_sql_statements_total`).
    all: f64,
}

async fn sql_statements(client: &reqwest::Client, target: &Target) -> Option<Statements> {
    let text = client
        .get(format!("{}/metrics", target.url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let total = |metric: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(metric))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Some(Statements {
        in_requests: total("gateway_sql_statements_per_request_sum"),
        requests: total("gateway_sql_statements_per_request_count"),
        all: total("gateway_sql_statements_total"),
    })
}

/// CPU time so far, in clock ticks: the gateway's, PostgreSQL's processes', this driver's,
/// and the machine's (busy, all).
#[derive(Clone, Copy, Default)]
struct Usage {
    gateway: Option<u64>,
    postgres: u64,
    driver: u64,
    busy: u64,
    total: u64,
}

impl Usage {
    fn now(gateway: Option<u32>) -> Usage {
        let (busy, total) = machine_ticks().unwrap_or_default();
        Usage {
            gateway: gateway.and_then(|pid| process_ticks(&pid.to_string())),
            postgres: postgres_ticks(),
            driver: process_ticks("self").unwrap_or(0),
            busy,
            total,
        }
    }

    /// Usage since `before`, as cores busy over `elapsed`.
    fn since(self, before: &Usage, elapsed: Duration) -> UsageReport {
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cores = |ticks: u64| ticks as f64 / per_second / elapsed.as_secs_f64().max(1e-9);
        UsageReport {
            gateway: self
                .gateway
                .zip(before.gateway)
                .map(|(after, before)| cores(after.saturating_sub(before))),
            postgres: cores(self.postgres.saturating_sub(before.postgres)),
            driver: cores(self.driver.saturating_sub(before.driver)),
            machine_busy: cores(self.busy.saturating_sub(before.busy)),
            machine_cores: cores(self.total.saturating_sub(before.total)),
        }
    }
}

/// CPU use of one scenario, in cores.
struct UsageReport {
    gateway: Option<f64>,
    postgres: f64,
    driver: f64,
    machine_busy: f64,
    machine_cores: f64,
}

impl UsageReport {
    fn print(&self) {
        println!(
            "    CPU over the spread scenario (cores): gateway {}, postgres processes {:.2}, \
             driver {:.2}; machine busy {:.2} of {:.2}",
            self.gateway
                .map_or("n/a".to_owned(), |cores| format!("{cores:.2}")),
            self.postgres,
            self.driver,
            self.machine_busy,
            self.machine_cores
        );
    }
}

/// utime + stime of `/proc/<pid>/stat` (fields 14 and 15, counted after the command name).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// CPU ticks of every process named `postgres` (the server and its backends).
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(|pid| process_ticks(&pid))
        .sum()
}

/// (busy, all) ticks of every CPU, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Some((all - idle, all))
}

// ---- the audit ----

async fn safety_stock(db: &DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    let sql = format!("SELECT CAST(safety_stock AS BIGINT) FROM channel WHERE code = '{CHANNEL}'");
    scalar(db, &sql).await
}

async fn count_orders(db: &DatabaseConnection) -> Result<i64, sea_orm::DbErr> {
    scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM orders").await
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> Result<i64, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    db.query_one_raw(Statement::from_string(backend, sql))
        .await?
        .map_or(Ok(0), |row| row.try_get_by_index::<i64>(0))
}

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

/// What is left of `sku` on `web`: the sum of on hand − reserved over the channel's
/// locations.
const LEFT_ON_WEB: &str = "
SELECT CAST(COALESCE(SUM(l.on_hand - l.reserved), 0) AS BIGINT)
FROM stock_level l
JOIN variant v ON v.id = l.variant_id
JOIN channel_location cl ON cl.location_id = l.location_id
JOIN channel c ON c.id = cl.channel_id
WHERE v.sku = $1 AND c.code = 'web'";

/// Units of `sku` on orders.
const ORDERED: &str = "
SELECT CAST(COALESCE(SUM(ol.quantity), 0) AS BIGINT)
FROM order_line ol JOIN variant v ON v.id = ol.variant_id WHERE v.sku = $1";

/// The stock invariant on every level, and the contended SKU's and the run's orders.
struct Audit {
    levels: usize,
    left_on_web: i64,
    ordered: i64,
    orders_written: i64,
    violations: Vec<String>,
}

impl Audit {
    async fn run(
        db: &DatabaseConnection,
        contended_sku: &str,
        orders_before: i64,
        orders_answered: i64,
        units: i64,
        safety: i64,
    ) -> Result<Self, sea_orm::DbErr> {
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(backend, LEVELS_WITH_LEDGER))
            .await?;
        let mut violations = Vec::new();
        let levels = rows.len();
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
                broken.push(format!("available {} < 0 (OVERSOLD)", on_hand - reserved));
            }
            if !broken.is_empty() {
                violations.push(format!("level {id}: {}", broken.join(", ")));
            }
        }
        let with_sku = |sql: &str| {
            Statement::from_sql_and_values(
                backend,
                sql.replace("$1", placeholder(backend)),
                [contended_sku.into()],
            )
        };
        let one = async |statement: Statement| -> Result<i64, sea_orm::DbErr> {
            db.query_one_raw(statement)
                .await?
                .map_or(Ok(0), |row| row.try_get_by_index::<i64>(0))
        };
        let left_on_web = one(with_sku(LEFT_ON_WEB)).await?;
        let ordered = one(with_sku(ORDERED)).await?;
        let orders_written = count_orders(db).await? - orders_before;
        if left_on_web != safety {
            violations.push(format!(
                "{contended_sku}: {left_on_web} left on web after the run, the safety stock \
                 {safety} expected"
            ));
        }
        if ordered != units {
            violations.push(format!(
                "{contended_sku}: {ordered} units on orders for {units} sellable"
            ));
        }
        if orders_written != orders_answered {
            violations.push(format!(
                "{orders_written} orders written during the run, {orders_answered} answered"
            ));
        }
        Ok(Self {
            levels,
            left_on_web,
            ordered,
            orders_written,
            violations,
        })
    }

    fn print(&self, name: &str) {
        println!(
            "audit {name}: {} levels checked against the ledger and active reservations ({}); \
             contended SKU: {} units ordered, {} left on web; {} orders written during the run",
            self.levels,
            if self.violations.iter().any(|v| v.starts_with("level")) {
                "VIOLATED"
            } else {
                "all hold"
            },
            self.ordered,
            self.left_on_web,
            self.orders_written
        );
    }
}

fn placeholder(backend: sea_orm::DatabaseBackend) -> &'static str {
    match backend {
        sea_orm::DatabaseBackend::Postgres => "$1",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_from_proc() {
        assert!(process_ticks("self").is_some());
        let (busy, all) = machine_ticks().unwrap();
        assert!(busy <= all);
    }
}

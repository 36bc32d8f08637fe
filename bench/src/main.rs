//! Load driver: runs the storefront's catalog page (20 products with variants and stock) over
//! HTTP for a fixed time, then the same page with each variant's price (`price { unitPrice
//! lineTotal }`), then `GET /healthz` as the baseline of the same run, and prints requests/s,
//! p50 and p99 of each and their ratios to the baseline (and of the priced page to the plain one).
//!
//! `cargo run --release -p bench --bin load -- --seconds 10 --concurrency 16`
//! starts its own gateway with the demo data on a fresh SQLite file; `--url` targets a
//! running gateway instead (for example one on PostgreSQL).

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

const CATALOG_PAGE: &str = "query CatalogPage($first: Int!) {
  products(first: $first) {
    edges { cursor node { id slug name category { name } variants { sku options { name value } availability { status quantity } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// The catalog page with the viewer's price of one unit of each variant.
const PRICED_CATALOG_PAGE: &str = "query PricedCatalogPage($first: Int!) {
  products(first: $first) {
    edges { cursor node { id slug name category { name } variants { sku options { name value } availability { status quantity } price { unitPrice lineTotal } } } }
    pageInfo { hasNextPage endCursor }
  }
}";

#[derive(Parser)]
#[command(about = "HTTP load driver for the gateway")]
struct Args {
    /// Seconds to run each scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// A running gateway (e.g. http://127.0.0.1:8080); default: start one in-process.
    #[arg(long)]
    url: Option<String>,
}

/// What one scenario measured.
struct Figures {
    name: &'static str,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Clone, Copy)]
enum Scenario {
    CatalogPage,
    PricedCatalogPage,
    Health,
}

impl Scenario {
    /// The GraphQL request body, for the GraphQL scenarios.
    fn body(self) -> Option<String> {
        let query = match self {
            Self::CatalogPage => CATALOG_PAGE,
            Self::PricedCatalogPage => PRICED_CATALOG_PAGE,
            Self::Health => return None,
        };
        Some(json!({ "query": query, "variables": { "first": 20 } }).to_string())
    }
}

/// Whether a response body reports GraphQL errors (a 200 with `errors` is a failure here).
fn has_errors(body: &[u8]) -> bool {
    std::str::from_utf8(body).map_or(true, |text| text.contains("\"errors\":"))
}

/// One request of each GraphQL scenario before timing anything: they must answer without
/// errors, and the priced page must price every variant.
async fn preflight(url: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    for scenario in [Scenario::CatalogPage, Scenario::PricedCatalogPage] {
        let body = scenario.body().expect("a GraphQL scenario");
        let response: serde_json::Value = client
            .post(format!("{url}/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(errors) = response.get("errors") {
            return Err(format!("GraphQL errors: {errors}"));
        }
        let variants: Vec<&serde_json::Value> = response["data"]["products"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|edge| edge["node"]["variants"].as_array().into_iter().flatten())
            .collect();
        if variants.is_empty() {
            return Err("the catalog page has no variants".into());
        }
        if matches!(scenario, Scenario::PricedCatalogPage) {
            let priced = variants
                .iter()
                .filter(|v| !v["price"]["unitPrice"].is_null())
                .count();
            if priced != variants.len() {
                return Err(format!("{priced} of {} variants priced", variants.len()));
            }
            println!("priced page: {priced} variants priced per request");
        }
    }
    Ok(())
}

async fn run(name: &'static str, url: &str, scenario: Scenario, args: &Args) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let body = scenario.body();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let request = match &body {
                        Some(body) => client
                            .post(format!("{url}/graphql"))
                            .header("content-type", "application/json")
                            .body(body.clone()),
                        None => client.get(format!("{url}/healthz")),
                    };
                    let ok = match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            match response.bytes().await {
                                Ok(bytes) => body.is_none() || !has_errors(&bytes),
                                Err(_) => false,
                            }
                        }
                        _ => false,
                    };
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut l, e) = worker.await.expect("worker");
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        name,
        requests: latencies.len(),
        errors,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn print(f: &Figures) {
    println!(
        "{:<36} {:>10.0} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} requests, {} errors)",
        f.name,
        f.per_second(),
        f.p50.as_secs_f64() * 1000.0,
        f.p99.as_secs_f64() * 1000.0,
        f.requests,
        f.errors
    );
}

/// `what`'s throughput as a fraction of `base`'s, and its p50 and p99 as multiples of `base`'s.
fn print_ratio(label: &str, what: &Figures, base: &Figures) {
    let over = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON);
    println!(
        "ratio {label:<30} throughput {:.4}, p50 latency x{:.1}, p99 latency x{:.1}",
        what.per_second() / base.per_second().max(f64::EPSILON),
        over(what.p50, base.p50),
        over(what.p99, base.p99)
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (url, running) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let path =
                std::env::temp_dir().join(format!("bench-{}.db", uuid::Uuid::new_v4().simple()));
            let config = gateway::Config {
                listen: "127.0.0.1:0".into(),
                database_url: format!("sqlite://{}?mode=rwc", path.display()),
                // One client on 127.0.0.1 driving thousands of requests a second: the
                // per-client rate limits would measure only themselves.
                limits: gateway::limits::LimitsConfig {
                    enabled: false,
                    ..Default::default()
                },
                ..gateway::Config::default()
            };
            let running = gateway::start(config, true)
                .await
                .expect("the gateway starts");
            (running.url(), Some((running, path)))
        }
    };
    println!(
        "target {url}, {} connections, {} s per scenario",
        args.concurrency, args.seconds
    );
    let checked = preflight(&url).await;
    if let Err(why) = &checked {
        eprintln!("preflight failed: {why}");
    } else {
        // Warm up connections and caches so the first scenario is not penalised.
        let _ = run(
            "warm-up",
            &url,
            Scenario::PricedCatalogPage,
            &Args {
                seconds: 1,
                concurrency: args.concurrency,
                url: None,
            },
        )
        .await;

        let catalog = run(
            "POST /graphql catalog page",
            &url,
            Scenario::CatalogPage,
            &args,
        )
        .await;
        let priced = run(
            "POST /graphql catalog page + prices",
            &url,
            Scenario::PricedCatalogPage,
            &args,
        )
        .await;
        let health = run("GET /healthz (baseline)", &url, Scenario::Health, &args).await;
        print(&catalog);
        print(&priced);
        print(&health);
        print_ratio("catalog/baseline:", &catalog, &health);
        print_ratio("catalog+prices/baseline:", &priced, &health);
        print_ratio("catalog+prices/catalog:", &priced, &catalog);
    }
    if let Some((running, path)) = running {
        let _ = running.stop().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    if checked.is_err() {
        std::process::exit(1);
    }
}

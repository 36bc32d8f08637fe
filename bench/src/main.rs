//! Load driver: runs the storefront's catalog page (20 products with variants and stock) over
//! HTTP for a fixed time, then `GET /healthz` as the baseline of the same run, and prints
//! requests/s, p50 and p99 of each and their ratio.
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
    Health,
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
                let body =
                    json!({ "query": CATALOG_PAGE, "variables": { "first": 20 } }).to_string();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let request = match scenario {
                        Scenario::CatalogPage => client
                            .post(format!("{url}/graphql"))
                            .header("content-type", "application/json")
                            .body(body.clone()),
                        Scenario::Health => client.get(format!("{url}/healthz")),
                    };
                    let ok = match request.send().await {
                        Ok(response) => {
                            response.status().is_success() && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
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
        "{:<28} {:>10.0} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} requests, {} errors)",
        f.name,
        f.per_second(),
        f.p50.as_secs_f64() * 1000.0,
        f.p99.as_secs_f64() * 1000.0,
        f.requests,
        f.errors
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
    // Warm up connections and caches so the first scenario is not penalised.
    let _ = run(
        "warm-up",
        &url,
        Scenario::CatalogPage,
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
    let health = run("GET /healthz (baseline)", &url, Scenario::Health, &args).await;
    print(&catalog);
    print(&health);
    println!(
        "ratio catalog/baseline: throughput {:.3}, p50 latency x{:.1}",
        catalog.per_second() / health.per_second().max(f64::EPSILON),
        catalog.p50.as_secs_f64() / health.p50.as_secs_f64().max(f64::EPSILON)
    );
    if let Some((running, path)) = running {
        let _ = running.stop().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

//! Load driver: runs the storefront's catalog page (20 products with variants and stock) over
//! HTTP for a fixed time, then the same page with each variant's price (`price { unitPrice
//! lineTotal }`), then `GET /healthz` as the baseline of the same run, and prints requests/s,
//! p50 and p99 of each and their ratios to the baseline (and of the priced page to the plain one).
//!
//! `cargo run --release -p bench --bin load -- --seconds 10 --concurrency 16`
//! starts its own gateway with the demo data on a fresh SQLite file; `--url` targets a
//! running gateway instead (for example one on PostgreSQL). The edge's own overhead (token,
//! rate limits and cost budgets) is measured by the `edge` binary.

use std::time::Duration;

use bench::{CATALOG_PAGE, PRICED_CATALOG_PAGE, Request, drive, page_body, print_ratio};
use clap::Parser;

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

/// One request of each GraphQL scenario before timing anything: they must answer without
/// errors, and the priced page must price every variant.
async fn preflight(url: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    for (query, priced) in [(CATALOG_PAGE, false), (PRICED_CATALOG_PAGE, true)] {
        let response = Request::graphql(url, page_body(query), None)
            .json(&client)
            .await?;
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
        if priced {
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (url, running) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let path = bench::fresh_sqlite_file("bench");
            let config = gateway::Config {
                listen: "127.0.0.1:0".into(),
                database_url: bench::sqlite_url(&path),
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
        let seconds = Duration::from_secs(args.seconds);
        let catalog = Request::graphql(&url, page_body(CATALOG_PAGE), None);
        let priced = Request::graphql(&url, page_body(PRICED_CATALOG_PAGE), None);
        let health = Request {
            url: format!("{url}/healthz"),
            body: None,
            bearer: None,
        };
        // Warm up connections and caches so the first scenario is not penalised.
        let _ = drive("warm-up", &priced, Duration::from_secs(1), args.concurrency).await;

        let catalog = drive(
            "POST /graphql catalog page",
            &catalog,
            seconds,
            args.concurrency,
        )
        .await;
        let priced = drive(
            "POST /graphql catalog page + prices",
            &priced,
            seconds,
            args.concurrency,
        )
        .await;
        let health = drive(
            "GET /healthz (baseline)",
            &health,
            seconds,
            args.concurrency,
        )
        .await;
        catalog.print();
        priced.print();
        health.print();
        print_ratio("catalog/baseline:", &catalog, &health);
        print_ratio("catalog+prices/baseline:", &priced, &health);
        print_ratio("catalog+prices/catalog:", &priced, &catalog);
    }
    if let Some((running, path)) = running {
        let _ = running.stop().await;
        bench::remove_sqlite_file(&path);
    }
    if checked.is_err() {
        std::process::exit(1);
    }
}

//! The edge's overhead: the storefront's catalog page (the `load` driver's page) sent
//!
//! - (a) anonymously to a gateway with rate limits and cost budgets off (the baseline), and
//! - (b) with a shopper's bearer token to a gateway with them on, its web quotas too high to
//!   ever refuse: the token is verified and its customer loaded, the request is rate-checked
//!   and charged its cost, and the budget is reported in `extensions.cost.budget`,
//!
//! both over one database, alternating (a b b a …) so that drift on a busy machine falls on
//! both alike. Shaping (the persisted-operation lookup, the nesting scan, the size and cost
//! analysis, the per-operation maximum cost) runs in both: it cannot be turned off. Prints
//! requests/s, p50 and p99 of each, the ratios (b)/(a) and the overhead in percent.
//!
//! `cargo run --release -p bench --bin edge -- --seconds 10 --concurrency 16` starts both
//! gateways in-process, one after the other on the same fresh SQLite file (demo data), and
//! mints the token with the edge gateway's authenticator. `--url` (the baseline) and
//! `--edge-url` target two running gateways instead, started with `bench/edge.toml` (the
//! baseline with `GATEWAY_LIMITS=off`); the token is `--token`, else minted with
//! `GATEWAY_JWT_SECRET` (the edge gateway's secret) for `shopper@example.com` on `web`.

use std::time::Duration;

use bench::{CATALOG_PAGE, Figures, Request, drive, millis, page_body};
use clap::Parser;
use gateway::auth::{AuthConfig, Authenticator, Role, Secret};
use gateway::limits::{ChannelQuota, LimitsConfig};

/// The token's viewer: a demo shopper, on `web` (the baseline's anonymous channel).
const SHOPPER: &str = "shopper@example.com";
const CHANNEL: &str = "web";
/// The edge overhead this benchmark checks against, in percent of a catalog request.
const TARGET_PERCENT: f64 = 5.0;

#[derive(Parser)]
#[command(about = "The edge's overhead (token, rate limits, cost budgets) on a catalog page")]
struct Args {
    /// Seconds to drive each variant (split into --rounds segments).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The baseline: a running gateway with limits off (GATEWAY_LIMITS=off), e.g.
    /// http://127.0.0.1:8080; default: start both gateways in-process.
    #[arg(long, requires = "edge_url")]
    url: Option<String>,
    /// The edge: a running gateway with limits on (`--config bench/edge.toml`), over the same
    /// database as --url.
    #[arg(long, requires = "url")]
    edge_url: Option<String>,
    /// Bearer token for --edge-url (web channel); default: minted with GATEWAY_JWT_SECRET.
    #[arg(long, requires = "edge_url")]
    token: Option<String>,
    /// Alternations: each variant runs --seconds / --rounds at a time, (a) first in even
    /// rounds and (b) first in odd ones.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

/// Rate limits and cost budgets on, with web quotas no driver reaches (as `bench/edge.toml`).
fn edge_limits() -> LimitsConfig {
    let mut limits = LimitsConfig::default();
    let web = limits
        .channels
        .get_mut(CHANNEL)
        .expect("web has built-in quotas");
    *web = ChannelQuota {
        requests_per_second: 1_000_000,
        burst: 1_000_000,
        cost_bucket: 1_000_000_000,
        cost_restore_per_second: 1_000_000_000,
        ..web.clone()
    };
    limits.enabled = true;
    limits
}

/// Both gateways in-process, on one fresh SQLite file.
struct InProcess {
    baseline: gateway::RunningGateway,
    edge: gateway::RunningGateway,
    path: std::path::PathBuf,
}

impl InProcess {
    async fn start() -> Self {
        let path = bench::fresh_sqlite_file("bench-edge");
        let config = gateway::Config {
            listen: "127.0.0.1:0".into(),
            database_url: bench::sqlite_url(&path),
            jwt_secret: Some(Secret::generate()),
            ..gateway::Config::default()
        };
        // The first loads the demo data; the second finds it there.
        let baseline = gateway::start(
            gateway::Config {
                limits: LimitsConfig {
                    enabled: false,
                    ..edge_limits()
                },
                ..config.clone()
            },
            true,
        )
        .await
        .expect("the baseline gateway starts");
        let edge = gateway::start(
            gateway::Config {
                limits: edge_limits(),
                ..config
            },
            true,
        )
        .await
        .expect("the edge gateway starts");
        Self {
            baseline,
            edge,
            path,
        }
    }

    fn token(&self) -> String {
        mint(&self.edge.state.auth)
    }

    async fn stop(self) {
        let _ = self.edge.stop().await;
        let _ = self.baseline.stop().await;
        bench::remove_sqlite_file(&self.path);
    }
}

fn mint(auth: &Authenticator) -> String {
    let claims = auth.claims(
        CHANNEL,
        Role::Shopper,
        Some(SHOPPER.to_owned()),
        None,
        Some(24 * 3600),
    );
    auth.mint(&claims).expect("the authenticator has a secret")
}

/// A token for a running edge gateway: `--token`, else minted with `GATEWAY_JWT_SECRET`.
fn external_token(args: &Args) -> Result<String, String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let secret = std::env::var("GATEWAY_JWT_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or("pass --token, or set GATEWAY_JWT_SECRET to the edge gateway's secret")?;
    let auth = Authenticator::new(&AuthConfig::default(), Some(&Secret::new(secret)))
        .map_err(|err| err.to_string())?;
    Ok(mint(&auth))
}

/// One request of each variant before timing anything: both answer the same page without
/// errors; the baseline's budget is untouched (limits off) and the edge's charged (limits on);
/// a broken token is refused by the edge (so the token really is checked).
async fn preflight(baseline: &Request, edge: &Request) -> Result<(), String> {
    let client = reqwest::Client::new();
    let a = baseline
        .json(&client)
        .await
        .map_err(|e| format!("(a): {e}"))?;
    let b = edge.json(&client).await.map_err(|e| format!("(b): {e}"))?;
    for (which, answer) in [("(a)", &a), ("(b)", &b)] {
        if let Some(errors) = answer.get("errors") {
            return Err(format!("{which}: GraphQL errors: {errors}"));
        }
    }
    if a["data"] != b["data"] {
        return Err("(a) and (b) answer different pages: not the same database?".into());
    }
    let products = a["data"]["products"]["edges"]
        .as_array()
        .map_or(0, Vec::len);
    let variants: usize = a["data"]["products"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|edge| edge["node"]["variants"].as_array().map(Vec::len))
        .sum();
    if variants == 0 {
        return Err("the catalog page has no variants".into());
    }
    let budget = |answer: &serde_json::Value| {
        let budget = &answer["extensions"]["cost"]["budget"];
        (budget["max"].as_u64(), budget["remaining"].as_u64())
    };
    match budget(&a) {
        (Some(max), Some(remaining)) if remaining == max => {}
        other => {
            return Err(format!(
                "(a) must run with limits off (GATEWAY_LIMITS=off): its budget (max, remaining) \
                 is {other:?}"
            ));
        }
    }
    match budget(&b) {
        (Some(max), Some(remaining)) if remaining < max && max >= 1_000_000 => {}
        other => {
            return Err(format!(
                "(b) must run with limits on and quotas that never refuse (bench/edge.toml): its \
                 budget (max, remaining) is {other:?}"
            ));
        }
    }
    let broken = Request {
        bearer: edge.bearer.as_ref().map(|t| format!("{t}x")),
        ..edge.clone()
    };
    let status = broken
        .build(&client)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .status();
    if status != reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "(b) answered a broken token with {status}, not 401"
        ));
    }
    println!(
        "catalog page: {products} products, {variants} variants, cost {} points (charged to the \
         token's budget on (b))",
        b["extensions"]["cost"]["requested"]
    );
    Ok(())
}

/// One variant's request and what it measured over its segments.
struct Variant<'a> {
    name: &'static str,
    request: &'a Request,
    figures: Option<Figures>,
    /// The in-process gateway it targets, whose SQL statements are counted.
    gateway: Option<&'a gateway::RunningGateway>,
    statements: u64,
}

impl<'a> Variant<'a> {
    fn new(
        name: &'static str,
        request: &'a Request,
        gateway: Option<&'a gateway::RunningGateway>,
    ) -> Self {
        Self {
            name,
            request,
            figures: None,
            gateway,
            statements: 0,
        }
    }

    async fn drive(&mut self, duration: Duration, concurrency: usize) {
        let before = self.gateway.map(|g| g.sql_statements());
        let measured = drive(self.name, self.request, duration, concurrency).await;
        if let (Some(before), Some(gateway)) = (before, self.gateway) {
            self.statements += gateway.sql_statements() - before;
        }
        match &mut self.figures {
            Some(figures) => figures.merge(measured),
            None => self.figures = Some(measured),
        }
    }

    /// The figures, and SQL statements per request when the gateway is in-process.
    fn done(self) -> (Figures, Option<f64>) {
        let figures = self.figures.expect("at least one round");
        let sent = (figures.requests() + figures.errors).max(1) as f64;
        let statements = self.gateway.map(|_| self.statements as f64 / sent);
        (figures, statements)
    }
}

/// Percent more than `base`.
fn percent_over(what: f64, base: f64) -> f64 {
    (what / base.max(f64::EPSILON) - 1.0) * 100.0
}

fn report(a: &Figures, b: &Figures) {
    a.print();
    b.print();
    let ratio =
        |what: Duration, base: Duration| what.as_secs_f64() / base.as_secs_f64().max(f64::EPSILON);
    println!(
        "ratio (b)/(a): throughput {:.3}, p50 latency {:.3}, p99 latency {:.3}",
        b.per_second() / a.per_second().max(f64::EPSILON),
        ratio(b.p50(), a.p50()),
        ratio(b.p99(), a.p99())
    );
    // Time per request at a fixed concurrency is the inverse of throughput.
    let overhead = percent_over(a.per_second(), b.per_second());
    println!(
        "edge overhead: {overhead:+.1}% time per request (from throughput), {:+.1}% p50 \
         ({:+.3} ms), {:+.1}% p99; target <= {TARGET_PERCENT}%: {}",
        percent_over(millis(b.p50()), millis(a.p50())),
        millis(b.p50()) - millis(a.p50()),
        percent_over(millis(b.p99()), millis(a.p99())),
        if overhead <= TARGET_PERCENT {
            "met"
        } else {
            "NOT met"
        }
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (base_url, edge_url, token, running) = match (&args.url, &args.edge_url) {
        (Some(url), Some(edge_url)) => match external_token(&args) {
            Ok(token) => (
                url.trim_end_matches('/').to_owned(),
                edge_url.trim_end_matches('/').to_owned(),
                token,
                None,
            ),
            Err(why) => {
                eprintln!("error: {why}");
                std::process::exit(2);
            }
        },
        _ => {
            let running = InProcess::start().await;
            (
                running.baseline.url(),
                running.edge.url(),
                running.token(),
                Some(running),
            )
        }
    };
    println!(
        "(a) {base_url}: anonymous, limits off; (b) {edge_url}: shopper token, limits on \
         (quotas never reached); {} connections, {} s per variant in {} round(s)",
        args.concurrency, args.seconds, args.rounds
    );
    let baseline = Request::graphql(&base_url, page_body(CATALOG_PAGE), None);
    let edge = Request::graphql(&edge_url, page_body(CATALOG_PAGE), Some(token));
    let checked = preflight(&baseline, &edge).await;
    let mut refused = false;
    match &checked {
        Err(why) => eprintln!("preflight failed: {why}"),
        Ok(()) => {
            // Warm up connections, caches and both gateways' pools.
            let warm = Duration::from_secs(1);
            let _ = drive("warm-up", &baseline, warm, args.concurrency).await;
            let _ = drive("warm-up", &edge, warm, args.concurrency).await;

            let segment = Duration::from_secs(args.seconds) / args.rounds;
            let gateways = running.as_ref().map(|r| (&r.baseline, &r.edge));
            let mut a = Variant::new(
                "(a) catalog page, anonymous, limits off",
                &baseline,
                gateways.map(|g| g.0),
            );
            let mut b = Variant::new(
                "(b) catalog page, token, limits on",
                &edge,
                gateways.map(|g| g.1),
            );
            for round in 0..args.rounds {
                let order = if round % 2 == 0 {
                    [&mut a, &mut b]
                } else {
                    [&mut b, &mut a]
                };
                for variant in order {
                    variant.drive(segment, args.concurrency).await;
                }
            }
            let (a, b) = (a.done(), b.done());
            report(&a.0, &b.0);
            if let (Some(sa), Some(sb)) = (a.1, b.1) {
                println!(
                    "SQL statements per request: (a) {sa:.2}, (b) {sb:.2} (the token's customer \
                     lookup)"
                );
            }
            let b = b.0;
            refused = b.rate_limited > 0;
            if refused {
                eprintln!("(b) was refused with 429: its quotas are too low for this load");
            }
        }
    }
    if let Some(running) = running {
        running.stop().await;
    }
    if checked.is_err() || refused {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_toml_holds_the_in_process_quotas() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/edge.toml"));
        let config = gateway::Config::from_file(path).expect("bench/edge.toml parses");
        config.validate().expect("bench/edge.toml is valid");
        assert_eq!(config.limits, edge_limits());
        let web = config.limits.quota(CHANNEL);
        assert_eq!(
            web.max_cost_per_operation,
            LimitsConfig::default()
                .quota(CHANNEL)
                .max_cost_per_operation,
            "both variants check the same per-operation maximum"
        );
    }
}

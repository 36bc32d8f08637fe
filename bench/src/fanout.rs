//! Subscription fan-out over WebSocket: `--subscribers` sockets (default 1,000) each run
//! `stockChanged(skus: [--sku])` over `graphql-transport-ws` at `/graphql/ws` with an admin
//! token, while `--changes` stock adjustments (default 200, +1 and -1 in turn so stock never
//! runs out) are sent through `POST /graphql`, one every `--interval-ms` (default 20 ms, so
//! the figures are latencies, not a queue). A delivery's latency runs from just before its
//! `adjustStock` request is sent to the moment a subscriber reads the event with the version
//! that change committed; p50, p99 and max are over every (subscriber, change) delivery.
//!
//! The same changes with one subscriber are the baseline of the same run: the driver prints
//! p99(N) / p99(1) and the events-per-second ratio (ideally N: every event reaches every
//! subscriber at the pace of the changes). Missing deliveries, `REFETCH` events (a subscriber
//! fell behind the event bus), unexpected messages and sockets the server closed are counted
//! and must all be 0 for a valid run (the exit code is 1 otherwise).
//!
//! The gateway runs as its own process so that its resident memory (`VmRSS` of
//! `/proc/<pid>/status`) is its own: `target/release/gateway serve --demo` on a fresh SQLite
//! file, rate limits off (`GATEWAY_LIMITS=off`), a known `GATEWAY_JWT_SECRET` to mint the
//! token with, and `[http] max_connections` and the `[websocket]` socket caps raised above the
//! number of sockets (a config file
//! in the temp directory). Its RSS is read when every subscription is live and after the run.
//! Its warnings and errors (logs at `--server-log`, default `warn`) are counted and shown.
//!
//! ```text
//! cargo build --release -p gateway -p bench --bin fanout --bin gateway
//! taskset -c 1 target/release/fanout --server-cpu 0 --subscribers 1000 --changes 200
//! taskset -c 1 target/release/fanout --server-cpu 0 --subscribers 10000
//! ```
//!
//! `--server-cpu 0` runs the gateway under `taskset -c 0`, so the driver (pinned to the other
//! core) and the server do not share one. `--url` (and `--pid` for its RSS) targets a running
//! gateway instead; its token is `--token`, else minted with `GATEWAY_JWT_SECRET`. Each socket
//! is a file descriptor on both ends: the driver raises its soft open-file limit to the hard
//! one (the spawned gateway inherits it); 10,000 subscribers need `ulimit -Hn` above 10,300.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bench::gateway::{LogReport, Options, Spawned, default_binary};
use bench::{Figures, millis, print_ratio};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gateway::auth::{AuthConfig, Authenticator, Role, Secret};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The subprotocol every socket offers.
const PROTOCOL: &str = "graphql-transport-ws";
const SUBSCRIPTION: &str =
    "subscription($skus:[String!]){ stockChanged(skus:$skus){ kind sku location onHand version } }";
const ADJUST: &str = "mutation($input: AdjustStockInput!) { \
    adjustStock(input: $input) { location version onHand } }";
/// The token's viewer: an admin (`stockChanged` shows exact stock) on `web`, whose locations
/// include the default `--location`.
const CHANNEL: &str = "web";
/// The latency target, for 1,000 subscribers.
const P99_TARGET: Duration = Duration::from_millis(20);
const P99_TARGET_SUBSCRIBERS: usize = 1_000;
/// The gateway's memory target, for 10,000 subscribers, in MiB.
const RSS_TARGET_MIB: f64 = 300.0;
const RSS_TARGET_SUBSCRIBERS: usize = 10_000;
/// How long one socket may take to open and be acknowledged.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one warm-up change waits for every subscription to hear it before the next.
const WARM_UP_STEP: Duration = Duration::from_secs(1);
/// How often the driver looks at the subscribers' progress while it waits.
const POLL: Duration = Duration::from_millis(2);
/// Descriptors the driver keeps beyond one per socket (the runtime, the HTTP client, logs).
const FD_SPARE: u64 = 256;
/// Messages and errors quoted in the report, at most.
const QUOTED: usize = 5;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Parser)]
#[command(about = "Subscription fan-out over WebSocket: delivery latency, events/s, gateway RSS")]
struct Args {
    /// Subscriber sockets of the measured scenario (the baseline has one).
    #[arg(long, default_value_t = 1_000)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..=100_000))]
    subscribers: u64,
    /// Stock changes measured in each scenario.
    #[arg(long, default_value_t = 200)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    changes: u64,
    /// Milliseconds between two changes (0: each as soon as the last one answered).
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// The SKU changed and watched.
    #[arg(long, default_value = "TS-0001-M")]
    sku: String,
    /// The location whose stock is adjusted (one of the web channel's).
    #[arg(long, default_value = "WH-EAST")]
    location: String,
    /// Sockets opened at once while connecting.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connect_batch: u64,
    /// Seconds every subscription may take to hear its first (warm-up) change.
    #[arg(long, default_value_t = 60)]
    warm_up_secs: u64,
    /// Seconds to wait for the last deliveries after the last change (a gateway that cannot
    /// keep up with the pace is still delivering its backlog).
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// A running gateway (e.g. http://127.0.0.1:8080); default: spawn `--gateway-bin`.
    #[arg(long)]
    url: Option<String>,
    /// The process id of the --url gateway, to report its RSS.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    /// Admin bearer token for --url; default: minted with GATEWAY_JWT_SECRET.
    #[arg(long, requires = "url")]
    token: Option<String>,
    /// The gateway binary to spawn; default: `gateway` beside this binary.
    #[arg(long, conflicts_with = "url")]
    gateway_bin: Option<PathBuf>,
    /// Run the spawned gateway under `taskset -c <CPUS>` (e.g. 0).
    #[arg(long, conflicts_with = "url")]
    server_cpu: Option<String>,
    /// RUST_LOG of the spawned gateway (its warnings and errors are reported).
    #[arg(long, default_value = "warn", conflicts_with = "url")]
    server_log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let subscribers = args.subscribers as usize;
    match raise_open_files_limit() {
        Ok(limit) if limit < subscribers as u64 + FD_SPARE => eprintln!(
            "warning: the open-file limit is {limit}: too low for {subscribers} sockets \
             (raise `ulimit -Hn` to at least {})",
            subscribers as u64 + FD_SPARE
        ),
        Ok(_) => {}
        Err(why) => eprintln!("warning: cannot raise the open-file limit: {why}"),
    }
    let server = match Server::start(&args) {
        Ok(server) => server,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(&args, &server).await;
    let log = server.stop();
    if let Some(log) = log {
        log.print();
    }
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Both scenarios and the report; `Ok(false)` when a run is not valid.
async fn run(args: &Args, server: &Server) -> Result<bool, String> {
    let token = server.token.clone();
    let mut stock = Stock {
        client: reqwest::Client::new(),
        endpoint: format!("{}/graphql", server.url),
        token: token.clone(),
        sku: args.sku.clone(),
        location: args.location.clone(),
        up: true,
    };
    // Two changes that cancel out: the mutation works and names its version.
    for _ in 0..2 {
        stock
            .change()
            .await
            .map_err(|why| format!("preflight: {why}"))?;
    }
    let interval = Duration::from_millis(args.interval_ms);
    println!(
        "gateway {} (pid {}), {} changes of {} at {} every {} ms; scenarios: 1 subscriber \
         (baseline), then {}",
        server.url,
        server.pid.map_or("unknown".to_owned(), |p| p.to_string()),
        args.changes,
        args.sku,
        args.location,
        args.interval_ms,
        args.subscribers
    );
    let plan = Arc::new(Plan {
        ws_url: format!("{}/graphql/ws", server.url.replacen("http", "ws", 1)),
        token,
        subscribe: json!({
            "id": "1",
            "type": "subscribe",
            "payload": { "query": SUBSCRIPTION, "variables": { "skus": [args.sku] } }
        })
        .to_string(),
        changes: args.changes as usize,
        interval,
        connect_batch: args.connect_batch as usize,
        warm_up: Duration::from_secs(args.warm_up_secs),
        settle: Duration::from_secs(args.settle_secs),
        pid: server.pid,
    });
    let baseline = scenario(&plan, &mut stock, 1).await;
    baseline.print();
    // Let the baseline's socket go before the idle memory of the next scenario is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured = scenario(&plan, &mut stock, args.subscribers as usize).await;
    measured.print();
    println!();
    print_ratio(
        &format!("{}/1 subscribers:", measured.subscribers),
        &measured.deliveries,
        &baseline.deliveries,
    );
    let throughput_ratio =
        measured.deliveries.per_second() / baseline.deliveries.per_second().max(f64::EPSILON);
    println!(
        "events/s ratio {throughput_ratio:.1} of an ideal {} (every event to every subscriber \
         at the pace of the changes): {:.1}% fan-out efficiency",
        measured.connected,
        throughput_ratio / measured.connected.max(1) as f64 * 100.0
    );
    measured.print_targets();
    let mut valid = true;
    for outcome in [&baseline, &measured] {
        let problems = outcome.problems();
        if !problems.is_empty() {
            valid = false;
            println!(
                "INVALID run ({} subscribers): {}",
                outcome.subscribers,
                problems.join(", ")
            );
        }
    }
    if valid {
        println!("valid run: no missing deliveries, REFETCH events, closed sockets or errors");
    }
    Ok(valid)
}

/// What every scenario shares.
struct Plan {
    ws_url: String,
    token: String,
    /// The `subscribe` message.
    subscribe: String,
    changes: usize,
    interval: Duration,
    connect_batch: usize,
    warm_up: Duration,
    settle: Duration,
    pid: Option<u32>,
}

/// The watched stock level, changed by +1 and -1 in turn (it never drops below where it
/// started, so it never runs out).
struct Stock {
    client: reqwest::Client,
    endpoint: String,
    token: String,
    sku: String,
    location: String,
    up: bool,
}

impl Stock {
    /// One adjustment: the version it committed, when it was sent and how long it took.
    async fn change(&mut self) -> Result<(i64, Instant, Duration), String> {
        let delta = if self.up { 1 } else { -1 };
        let body = json!({
            "query": ADJUST,
            "variables": { "input": {
                "sku": self.sku, "location": self.location, "delta": delta, "reason": "bench"
            } }
        });
        let sent = Instant::now();
        let response = self
            .client
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|err| err.to_string())?;
        let took = sent.elapsed();
        if !status.is_success() || answer.get("errors").is_some() {
            return Err(format!("adjustStock answered {status}: {answer}"));
        }
        // It committed: the next change goes the other way even if this answer is odd.
        self.up = !self.up;
        let levels = answer["data"]["adjustStock"].as_array();
        let version = levels
            .into_iter()
            .flatten()
            .find(|level| level["location"] == self.location.as_str())
            .and_then(|level| level["version"].as_i64())
            .ok_or_else(|| {
                format!(
                    "adjustStock answered no version at {}: {answer}",
                    self.location
                )
            })?;
        Ok((version, sent, took))
    }
}

/// What one scenario measured.
struct Outcome {
    subscribers: usize,
    connected: usize,
    /// Socket open to `connection_ack`, of every socket that opened.
    acks: Figures,
    connect_elapsed: Duration,
    connect_failures: Vec<String>,
    connect_failed: usize,
    warm_up_changes: usize,
    warm_up_elapsed: Duration,
    warm_up_error: Option<String>,
    /// Send of a change to a subscriber reading it, over every measured delivery.
    deliveries: Figures,
    missing: usize,
    refetches: usize,
    duplicates: usize,
    /// Events of a version this run did not send (another writer of the same level).
    foreign: usize,
    unexpected: usize,
    unexpected_quoted: Vec<String>,
    /// Sockets that ended before the driver closed them, with why.
    ended: usize,
    ended_quoted: Vec<String>,
    /// `adjustStock` round trips of the measured changes.
    mutations: Figures,
    mutation_errors: Vec<String>,
    /// First to last measured change sent: the pace achieved.
    changes_elapsed: Duration,
    changes_sent: usize,
    interval: Duration,
    rss_idle: Option<Memory>,
    rss_subscribed: Option<Memory>,
    rss_after: Option<Memory>,
    client_rss: Option<Memory>,
    /// The gateway's and this driver's CPU time from the first measured change to the last
    /// delivery read (which of the two is saturated).
    server_cpu: Option<CpuTime>,
    client_cpu: Option<CpuTime>,
}

/// A process's resident memory (`VmRSS`) and its peak (`VmHWM`), in KiB.
#[derive(Clone, Copy)]
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

impl Memory {
    fn of(pid: &str) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        parse_memory(&status)
    }
}

fn parse_memory(status: &str) -> Option<Memory> {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory {
        rss_kib: kib("VmRSS:")?,
        peak_kib: kib("VmHWM:")?,
    })
}

/// CPU time a process has used, from `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTime {
    user: Duration,
    /// In the kernel: for a socket server mostly its reads and writes.
    system: Duration,
}

impl CpuTime {
    fn of(pid: &str) -> Option<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (user, system) = parse_cpu_ticks(&stat)?;
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / per_second as f64);
        (per_second > 0).then(|| CpuTime {
            user: time(user),
            system: time(system),
        })
    }

    fn since(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }
}

/// (utime, stime): fields 14 and 15, counted after the command name (which may hold spaces,
/// so from its closing parenthesis).
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn show_mib(memory: Option<Memory>) -> String {
    memory.map_or("n/a".to_owned(), |m| format!("{:.1} MiB", mib(m.rss_kib)))
}

impl Outcome {
    fn print(&self) {
        let max = self
            .deliveries
            .latencies
            .last()
            .copied()
            .unwrap_or_default();
        println!();
        println!(
            "== {} subscriber(s): {} connected in {:.2} s ({:.0} sockets/s), open to \
             connection_ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            self.subscribers,
            self.connected,
            self.connect_elapsed.as_secs_f64(),
            self.connected as f64 / self.connect_elapsed.as_secs_f64().max(f64::EPSILON),
            millis(self.acks.p50()),
            millis(self.acks.p99()),
            millis(self.acks.latencies.last().copied().unwrap_or_default()),
            if self.connect_failed > 0 {
                format!(
                    "; {} FAILED to connect: {}",
                    self.connect_failed,
                    self.connect_failures.join(" | ")
                )
            } else {
                String::new()
            }
        );
        println!(
            "   warm-up: every subscription live after {} change(s) in {:.2} s{}",
            self.warm_up_changes,
            self.warm_up_elapsed.as_secs_f64(),
            self.warm_up_error
                .as_ref()
                .map_or(String::new(), |why| format!(" — NOT all: {why}"))
        );
        println!(
            "   delivery latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries; \
             {:.0} events/s delivered",
            millis(self.deliveries.p50()),
            millis(self.deliveries.p99()),
            millis(max),
            self.deliveries.requests(),
            self.deliveries.per_second()
        );
        // n changes span n - 1 intervals from the first send to the last.
        let pace = self.changes_sent.saturating_sub(1) as f64
            / self.changes_elapsed.as_secs_f64().max(f64::EPSILON);
        println!(
            "   changes: {} sent at {:.1}/s{}, adjustStock round trip p50 {:.2} ms, p99 {:.2} ms",
            self.changes_sent,
            pace,
            if self.interval.is_zero() {
                " (unpaced)".to_owned()
            } else {
                format!(" (paced at {:.1}/s)", 1.0 / self.interval.as_secs_f64())
            },
            millis(self.mutations.p50()),
            millis(self.mutations.p99())
        );
        println!(
            "   missing deliveries {}, REFETCH events {}, duplicates {}, foreign versions {}, \
             unexpected messages {}, sockets closed early {}, mutation errors {}",
            self.missing,
            self.refetches,
            self.duplicates,
            self.foreign,
            self.unexpected,
            self.ended,
            self.mutation_errors.len()
        );
        for quoted in self
            .unexpected_quoted
            .iter()
            .map(|m| format!("unexpected message: {m}"))
            .chain(
                self.ended_quoted
                    .iter()
                    .map(|m| format!("socket ended: {m}")),
            )
            .chain(
                self.mutation_errors
                    .iter()
                    .take(QUOTED)
                    .map(|m| format!("mutation error: {m}")),
            )
        {
            println!("     {quoted}");
        }
        let window = self.deliveries.elapsed.as_secs_f64().max(f64::EPSILON);
        let share = |cpu: Option<CpuTime>| {
            cpu.map_or("n/a".to_owned(), |cpu| {
                let total = cpu.total().as_secs_f64();
                format!(
                    "{total:.2} s (user {:.2} + system {:.2}; {:.0}% of a core, {:.1} µs per \
                     delivered event)",
                    cpu.user.as_secs_f64(),
                    cpu.system.as_secs_f64(),
                    total / window * 100.0,
                    total * 1e6 / self.deliveries.requests().max(1) as f64
                )
            })
        };
        println!(
            "   CPU from the first change to the last delivery ({window:.2} s): gateway {}, \
             driver {}",
            share(self.server_cpu),
            share(self.client_cpu)
        );
        let per_subscriber = match (self.rss_idle, self.rss_subscribed) {
            // Below a hundred sockets the allocator's noise is larger than the sockets.
            (Some(idle), Some(subscribed)) if self.connected >= 100 => format!(
                ", {:.1} KiB per subscriber",
                (subscribed.rss_kib as f64 - idle.rss_kib as f64) / self.connected as f64
            ),
            _ => String::new(),
        };
        println!(
            "   gateway RSS: idle {}, all subscribed {}, after the changes {} (peak {}){}; \
             driver RSS {}",
            show_mib(self.rss_idle),
            show_mib(self.rss_subscribed),
            show_mib(self.rss_after),
            self.rss_after
                .map_or("n/a".to_owned(), |m| format!("{:.1} MiB", mib(m.peak_kib))),
            per_subscriber,
            show_mib(self.client_rss)
        );
    }

    fn print_targets(&self) {
        let p99 = self.deliveries.p99();
        let applies = |at: usize| {
            if self.subscribers == at {
                String::new()
            } else {
                format!(
                    " (set for {at} subscribers; this run has {})",
                    self.subscribers
                )
            }
        };
        println!(
            "target p99 < {} ms at {P99_TARGET_SUBSCRIBERS} subscribers: {} ({:.2} ms){}",
            P99_TARGET.as_millis(),
            if p99 < P99_TARGET { "met" } else { "NOT met" },
            millis(p99),
            applies(P99_TARGET_SUBSCRIBERS)
        );
        let peak = [self.rss_subscribed, self.rss_after]
            .into_iter()
            .flatten()
            .map(|m| m.rss_kib)
            .max();
        match peak {
            Some(kib) => println!(
                "target gateway RSS < {RSS_TARGET_MIB} MiB at {RSS_TARGET_SUBSCRIBERS} \
                 subscribers: {} ({:.1} MiB, the larger of subscribed and after){}",
                if mib(kib) < RSS_TARGET_MIB {
                    "met"
                } else {
                    "NOT met"
                },
                mib(kib),
                applies(RSS_TARGET_SUBSCRIBERS)
            ),
            None => println!(
                "target gateway RSS < {RSS_TARGET_MIB} MiB: not measured (pass --pid with --url)"
            ),
        }
    }

    /// Why the run does not count, if it does not.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (count, what) in [
            (self.connect_failed, "sockets failed to connect"),
            (self.missing, "missing deliveries"),
            (self.refetches, "REFETCH events"),
            (self.duplicates, "duplicate deliveries"),
            (self.unexpected, "unexpected messages"),
            (self.ended, "sockets closed early"),
            (self.mutation_errors.len(), "mutation errors"),
        ] {
            if count > 0 {
                problems.push(format!("{count} {what}"));
            }
        }
        if let Some(why) = &self.warm_up_error {
            problems.push(format!("warm-up: {why}"));
        }
        problems
    }
}

/// What the driver sees of the subscribers while they run: each one's last version heard.
struct Progress {
    latest: Vec<AtomicI64>,
}

/// `Progress` of a socket that has heard nothing yet.
const SILENT: i64 = 0;
/// `Progress` of a socket that ended.
const ENDED: i64 = -1;

impl Progress {
    fn new(subscribers: usize) -> Self {
        Self {
            latest: (0..subscribers).map(|_| AtomicI64::new(SILENT)).collect(),
        }
    }

    /// Whether every subscriber still open has heard `version` (or a later one).
    fn all_heard(&self, version: i64) -> bool {
        self.latest.iter().all(|latest| {
            let latest = latest.load(Ordering::Relaxed);
            latest == ENDED || latest >= version
        })
    }

    fn silent(&self) -> usize {
        self.latest
            .iter()
            .filter(|l| l.load(Ordering::Relaxed) == SILENT)
            .count()
    }

    /// Waits until every open subscriber has heard `version`, at most `limit`.
    async fn wait_for(&self, version: i64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.all_heard(version) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What one subscriber heard.
#[derive(Default)]
struct Heard {
    /// `(version, read at)` of every `CHANGED` event, in arrival order.
    events: Vec<(i64, Instant)>,
    refetches: usize,
    unexpected: usize,
    first_unexpected: Option<String>,
    /// Why the socket ended before the driver closed it.
    ended: Option<String>,
}

/// One message from the server, as the driver needs it.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    Changed(i64),
    Refetch,
    Other,
}

/// Reads a `next` message by looking for its fields rather than parsing it into a tree: with
/// thousands of sockets on one core, the driver's time should go to reading sockets. The
/// server's messages are compact JSON whose only `"kind":` and `"version":` are the event's.
fn classify(text: &str) -> Frame {
    if !text.contains(r#""type":"next""#) || text.contains(r#""errors":"#) {
        return Frame::Other;
    }
    match scalar(text, r#""kind":"#) {
        Some(r#""CHANGED""#) => scalar(text, r#""version":"#)
            .and_then(|v| v.parse().ok())
            .map_or(Frame::Other, Frame::Changed),
        Some(r#""REFETCH""#) => Frame::Refetch,
        _ => Frame::Other,
    }
}

/// The raw JSON scalar after `key` (up to the next `,` or `}`).
fn scalar<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim())
}

/// Connects, initialises with the token, waits for `connection_ack` and subscribes; returns
/// the socket and the time to its acknowledgement.
async fn open(plan: &Plan) -> Result<(Socket, Duration), String> {
    let started = Instant::now();
    let mut request = plan
        .ws_url
        .as_str()
        .into_client_request()
        .map_err(|err| err.to_string())?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
    // Thousands of sockets: small buffers (the events are ~150 bytes), each message written
    // at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|err| format!("connect: {err}"))?;
    let offered = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|p| p.to_str().ok());
    if offered != Some(PROTOCOL) {
        return Err(format!("the server chose subprotocol {offered:?}"));
    }
    let init = json!({
        "type": "connection_init",
        "payload": { "Authorization": format!("Bearer {}", plan.token) }
    });
    socket
        .send(Message::text(init.to_string()))
        .await
        .map_err(|err| format!("connection_init: {err}"))?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains(r#""connection_ack""#) => break,
            Some(Ok(Message::Text(text))) => {
                return Err(format!(
                    "expected connection_ack, got {}",
                    quote(text.as_str())
                ));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed before connection_ack: {frame:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(format!("before connection_ack: {err}")),
            None => return Err("ended before connection_ack".to_owned()),
        }
    }
    let acked = started.elapsed();
    socket
        .send(Message::text(plan.subscribe.clone()))
        .await
        .map_err(|err| format!("subscribe: {err}"))?;
    Ok((socket, acked))
}

/// Reads one socket until the driver says stop: the version and arrival of each event.
async fn listen(
    mut socket: Socket,
    progress: Arc<Progress>,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> Heard {
    let mut heard = Heard::default();
    loop {
        tokio::select! {
            biased;
            message = socket.next() => {
                let at = Instant::now();
                let ended = match message {
                    Some(Ok(Message::Text(text))) => {
                        match classify(text.as_str()) {
                            Frame::Changed(version) => {
                                heard.events.push((version, at));
                                progress.latest[index].store(version, Ordering::Relaxed);
                            }
                            Frame::Refetch => heard.refetches += 1,
                            Frame::Other => {
                                heard.unexpected += 1;
                                heard.first_unexpected.get_or_insert_with(|| quote(text.as_str()));
                            }
                        }
                        None
                    }
                    // Pings are answered by tungstenite as it reads on.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => None,
                    Some(Ok(Message::Binary(_))) => {
                        heard.unexpected += 1;
                        None
                    }
                    Some(Ok(Message::Close(frame))) => Some(match frame {
                        Some(frame) => {
                            format!("closed by the server: {} {}", frame.code, frame.reason)
                        }
                        None => "closed by the server without a code".to_owned(),
                    }),
                    Some(Err(err)) => Some(err.to_string()),
                    None => Some("the stream ended".to_owned()),
                };
                if let Some(why) = ended {
                    heard.ended = Some(why);
                    progress.latest[index].store(ENDED, Ordering::Relaxed);
                    return heard;
                }
            }
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return heard;
            }
        }
    }
}

/// One scenario: `subscribers` sockets, warm-up, the measured changes, the deliveries.
async fn scenario(plan: &Arc<Plan>, stock: &mut Stock, subscribers: usize) -> Outcome {
    let memory = || plan.pid.and_then(|pid| Memory::of(&pid.to_string()));
    let rss_idle = memory();
    let progress = Arc::new(Progress::new(subscribers));
    let (stop, stopping) = watch::channel(false);

    // Connect in batches, each socket listening as soon as it has subscribed.
    let connect_started = Instant::now();
    let mut listeners = Vec::with_capacity(subscribers);
    let mut acks = Vec::with_capacity(subscribers);
    let mut connect_failures: Vec<String> = Vec::new();
    let mut connect_failed = 0;
    let mut next = 0;
    while next < subscribers {
        let batch = plan.connect_batch.min(subscribers - next);
        let mut opening = JoinSet::new();
        for index in next..next + batch {
            let plan = plan.clone();
            opening.spawn(async move {
                let opened = tokio::time::timeout(OPEN_TIMEOUT, open(&plan))
                    .await
                    .unwrap_or_else(|_| Err(format!("not open within {OPEN_TIMEOUT:?}")));
                (index, opened)
            });
        }
        while let Some(joined) = opening.join_next().await {
            let (index, opened) = joined.expect("opening a socket does not panic");
            match opened {
                Ok((socket, acked)) => {
                    acks.push(acked);
                    listeners.push(tokio::spawn(listen(
                        socket,
                        progress.clone(),
                        index,
                        stopping.clone(),
                    )));
                }
                Err(why) => {
                    connect_failed += 1;
                    progress.latest[index].store(ENDED, Ordering::Relaxed);
                    if connect_failures.len() < QUOTED && !connect_failures.contains(&why) {
                        connect_failures.push(why);
                    }
                }
            }
        }
        next += batch;
    }
    let connect_elapsed = connect_started.elapsed();
    acks.sort_unstable();
    let connected = acks.len();

    // Warm up: a subscription is live once its server task listens to the event bus, which
    // the protocol does not acknowledge; changes until every one has heard one.
    let warm_up_started = Instant::now();
    let mut warm_up_changes = 0;
    let mut warm_up_error = None;
    loop {
        match stock.change().await {
            Ok((version, _, _)) => {
                warm_up_changes += 1;
                if progress.wait_for(version, WARM_UP_STEP).await {
                    break;
                }
            }
            Err(why) => {
                warm_up_error = Some(format!("a warm-up change failed: {why}"));
                break;
            }
        }
        if warm_up_started.elapsed() >= plan.warm_up {
            warm_up_error = Some(format!(
                "{} of {connected} subscriptions heard nothing within {:?}",
                progress.silent(),
                plan.warm_up
            ));
            break;
        }
    }
    let warm_up_elapsed = warm_up_started.elapsed();
    let rss_subscribed = memory();

    // The measured changes, paced.
    let mut sent: HashMap<i64, Instant> = HashMap::with_capacity(plan.changes);
    let mut round_trips = Vec::with_capacity(plan.changes);
    let mut mutation_errors = Vec::new();
    let mut last_version = None;
    let mut ticker = (!plan.interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval(plan.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let cpu_before = plan.pid.and_then(|pid| CpuTime::of(&pid.to_string()));
    let client_cpu_before = CpuTime::of("self");
    let changes_started = Instant::now();
    let mut last_sent = changes_started;
    for _ in 0..plan.changes {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        match stock.change().await {
            Ok((version, at, took)) => {
                sent.insert(version, at);
                round_trips.push(took);
                last_version = Some(version);
                last_sent = at;
            }
            Err(why) => mutation_errors.push(why),
        }
    }
    let changes_elapsed = last_sent.saturating_duration_since(changes_started);
    if let Some(version) = last_version {
        progress.wait_for(version, plan.settle).await;
    }
    let server_cpu = cpu_before.zip(plan.pid.and_then(|pid| CpuTime::of(&pid.to_string())));
    let server_cpu = server_cpu.map(|(before, after)| after.since(before));
    let client_cpu = client_cpu_before.zip(CpuTime::of("self"));
    let client_cpu = client_cpu.map(|(before, after)| after.since(before));
    let rss_after = memory();
    let client_rss = Memory::of("self");

    let _ = stop.send(true);
    let mut heard = Vec::with_capacity(listeners.len());
    for listener in listeners {
        heard.push(listener.await.expect("a listener does not panic"));
    }
    round_trips.sort_unstable();
    let mut outcome = Outcome {
        subscribers,
        connected,
        acks: figures("connection_ack", acks, connect_elapsed),
        connect_elapsed,
        connect_failures,
        connect_failed,
        warm_up_changes,
        warm_up_elapsed,
        warm_up_error,
        deliveries: figures("deliveries", Vec::new(), Duration::ZERO),
        missing: 0,
        refetches: 0,
        duplicates: 0,
        foreign: 0,
        unexpected: 0,
        unexpected_quoted: Vec::new(),
        ended: 0,
        ended_quoted: Vec::new(),
        mutations: figures("adjustStock", round_trips, changes_elapsed),
        mutation_errors,
        changes_elapsed,
        changes_sent: sent.len(),
        interval: plan.interval,
        rss_idle,
        rss_subscribed,
        rss_after,
        client_rss,
        server_cpu,
        client_cpu,
    };
    outcome.tally(&sent, heard, changes_started);
    outcome
}

/// Sorted latencies as `Figures`, for their quantiles.
fn figures(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort_unstable();
    Figures {
        name: name.to_owned(),
        latencies,
        errors: 0,
        rate_limited: 0,
        elapsed,
    }
}

impl Outcome {
    /// Matches what each subscriber heard with what was sent. Events of versions below the
    /// first measured change are the warm-up's.
    fn tally(&mut self, sent: &HashMap<i64, Instant>, heard: Vec<Heard>, started: Instant) {
        let first = sent.keys().min().copied().unwrap_or(i64::MAX);
        let mut latencies = Vec::with_capacity(sent.len() * heard.len());
        let mut last_delivery = started;
        for subscriber in heard {
            let mut delivered = 0;
            let mut previous = i64::MIN;
            for (version, at) in subscriber.events {
                if version <= previous {
                    self.duplicates += 1;
                    continue;
                }
                previous = version;
                if version < first {
                    continue;
                }
                match sent.get(&version) {
                    Some(&sent_at) => {
                        delivered += 1;
                        latencies.push(at.saturating_duration_since(sent_at));
                        last_delivery = last_delivery.max(at);
                    }
                    None => self.foreign += 1,
                }
            }
            self.missing += sent.len() - delivered;
            self.refetches += subscriber.refetches;
            self.unexpected += subscriber.unexpected;
            if let Some(message) = subscriber.first_unexpected
                && self.unexpected_quoted.len() < QUOTED
                && !self.unexpected_quoted.contains(&message)
            {
                self.unexpected_quoted.push(message);
            }
            if let Some(why) = subscriber.ended {
                self.ended += 1;
                if self.ended_quoted.len() < QUOTED && !self.ended_quoted.contains(&why) {
                    self.ended_quoted.push(why);
                }
            }
        }
        // Events per second from the first change sent to the last event read.
        let window = last_delivery.saturating_duration_since(started);
        self.deliveries = figures("deliveries", latencies, window);
        self.deliveries.errors = self.missing;
    }
}

/// A message cut for the report.
fn quote(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Raises the soft open-file limit to the hard one (a spawned gateway inherits it); returns
/// the soft limit now in force.
fn raise_open_files_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above; the kernel only reads `limit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(limit.rlim_cur)
}

/// The gateway under test: spawned, or running already (`--url`).
struct Server {
    url: String,
    pid: Option<u32>,
    token: String,
    /// The gateway this driver started, and its database file.
    spawned: Option<(Spawned, PathBuf)>,
}

impl Server {
    fn start(args: &Args) -> Result<Server, String> {
        if let Some(url) = &args.url {
            let token = match &args.token {
                Some(token) => token.clone(),
                None => {
                    let secret = std::env::var("GATEWAY_JWT_SECRET")
                        .ok()
                        .filter(|s| !s.is_empty())
                        .ok_or("pass --token, or set GATEWAY_JWT_SECRET to the gateway's secret")?;
                    mint_admin(&Secret::new(secret))?
                }
            };
            return Ok(Server {
                url: url.trim_end_matches('/').to_owned(),
                pid: args.pid,
                token,
                spawned: None,
            });
        }
        let secret = Secret::generate();
        let token = mint_admin(&secret)?;
        let (spawned, database, url) = spawn_gateway(args, &secret)?;
        Ok(Server {
            url,
            pid: Some(spawned.pid()),
            token,
            spawned: Some((spawned, database)),
        })
    }

    /// Stops a spawned gateway (SIGTERM, then SIGKILL after 10 s) and removes its files.
    fn stop(self) -> Option<LogReport> {
        let (spawned, database) = self.spawned?;
        let report = spawned.stop();
        bench::remove_sqlite_file(&database);
        Some(report)
    }
}

/// An admin token on `web`, valid for a day.
fn mint_admin(secret: &Secret) -> Result<String, String> {
    let auth =
        Authenticator::new(&AuthConfig::default(), Some(secret)).map_err(|err| err.to_string())?;
    let claims = auth.claims(CHANNEL, Role::Admin, None, None, Some(24 * 3600));
    auth.mint(&claims).map_err(|err| err.to_string())
}

/// Starts `gateway serve --demo` on a fresh SQLite file and a random port; its URL.
fn spawn_gateway(args: &Args, secret: &Secret) -> Result<(Spawned, PathBuf, String), String> {
    let binary = args.gateway_bin.clone().unwrap_or_else(default_binary);
    let database = bench::fresh_sqlite_file("bench-fanout");
    // Every socket holds a connection permit for as long as it is open: the cap must exceed
    // the subscribers, with room for the HTTP client that sends the changes. Every socket
    // comes from this one address: the socket caps go above N too.
    let max_connections = (args.subscribers as usize + 256).max(10_000);
    let started = Spawned::start(Options {
        binary: &binary,
        server_cpu: args.server_cpu.as_deref(),
        log_filter: &args.server_log,
        name: "bench-fanout",
        config: format!(
            "[http]\nmax_connections = {max_connections}\n\n[websocket]\nmax_sockets = {max_connections}\nmax_sockets_per_client = {max_connections}\n"
        ),
        database_url: &bench::sqlite_url(&database),
        secret,
        quoted: 2 * QUOTED,
    });
    match started {
        Ok((spawned, url)) => Ok((spawned, database, url)),
        Err(err) => {
            bench::remove_sqlite_file(&database);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_from_compact_next_messages() {
        let changed = r#"{"id":"1","type":"next","payload":{"data":{"stockChanged":{"kind":"CHANGED","sku":"TS-0001-M","location":"WH-EAST","onHand":12,"version":42}}}}"#;
        assert_eq!(classify(changed), Frame::Changed(42));
        let refetch = r#"{"id":"1","type":"next","payload":{"data":{"stockChanged":{"kind":"REFETCH","sku":null,"location":null,"onHand":null,"version":null}}}}"#;
        assert_eq!(classify(refetch), Frame::Refetch);
        let failed =
            r#"{"id":"1","type":"next","payload":{"data":null,"errors":[{"message":"x"}]}}"#;
        assert_eq!(classify(failed), Frame::Other);
        assert_eq!(classify(r#"{"id":"1","type":"complete"}"#), Frame::Other);
        assert_eq!(
            classify(r#"{"id":"1","type":"error","payload":[{"message":"no"}]}"#),
            Frame::Other
        );
    }

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tgateway\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        let memory = parse_memory(status).unwrap();
        assert_eq!((memory.rss_kib, memory.peak_kib), (102_400, 204_800));
        assert!(parse_memory("Name:\tx\n").is_none());
        assert!(Memory::of("self").is_some());
        let stat = "42 (gate way) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some((250, 50)));
        assert!(CpuTime::of("self").is_some());
    }
}

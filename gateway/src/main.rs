//! `gateway`: serve, migrate, print the schema, check health.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Many small, short-lived allocations per request: mimalloc serves them faster than glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use gateway::Config;
use gateway::auth::Role;
use sea_orm::{EntityTrait, PaginatorTrait};

/// The log filter without `RUST_LOG`; with it, the quiet levels of the database crates stay
/// unless `RUST_LOG` names those crates itself.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn";
/// Targets kept at `warn` unless `RUST_LOG` names them (their `info` is one line per query).
const QUIET_TARGETS: [&str; 2] = ["sqlx", "sea_orm"];

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "GraphQL Backend-for-Frontend over the commerce core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve GraphQL over HTTP.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address to listen on (e.g. 127.0.0.1:8080, localhost:8080, 0.0.0.0:8080).
        #[arg(long, env = "GATEWAY_LISTEN")]
        listen: Option<String>,
        /// Load the demo data set when the database is empty.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// List the safelisted operations (`operations/<channel>/*.graphql`) with the SHA-256 a
    /// client sends as `extensions.persistedQuery.sha256Hash`.
    Operations {
        /// TOML configuration file (for `[persisted] operations_dir`).
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Mint a token signed with GATEWAY_JWT_SECRET (for development and tests).
    Token {
        /// TOML configuration file (for `[auth]` issuer, audience and default lifetime).
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// The channel every request with the token runs on: web, mobile, pos or b2b.
        #[arg(long)]
        channel: String,
        /// shopper, b2b_buyer, pos_clerk or admin.
        #[arg(long)]
        role: String,
        /// The customer's e-mail (shoppers and B2B buyers).
        #[arg(long)]
        customer: Option<String>,
        /// The store code a POS clerk is bound to (e.g. STORE-DOWNTOWN).
        #[arg(long)]
        store: Option<String>,
        /// Lifetime in seconds (default: `[auth] default_ttl_secs`, 8 hours).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Exit 0 when the gateway on the listen address answers `GET /healthz`, else 1
    /// (for container health checks; 0.0.0.0 is checked on 127.0.0.1).
    Healthcheck {
        /// TOML configuration file (for its `listen`).
        #[arg(long, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// Address the gateway listens on.
        #[arg(long, env = "GATEWAY_LISTEN")]
        listen: Option<String>,
    },
}

#[derive(Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL (default: sqlite://data/commerce.db?mode=rwc).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

impl CommonArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = load_config(self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        Ok(config)
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    // Secrets come from the environment only, never from the file.
    if let Ok(secret) = std::env::var("GATEWAY_JWT_SECRET")
        && !secret.is_empty()
    {
        config.jwt_secret = Some(gateway::auth::Secret::new(secret));
    }
    if let Ok(url) = std::env::var("REDIS_URL")
        && !url.is_empty()
    {
        config.redis_url = Some(url);
    }
    match std::env::var("GATEWAY_LIMITS").as_deref().map(str::trim) {
        Err(_) | Ok("") => {}
        Ok(value) if value.eq_ignore_ascii_case("off") => config.limits.enabled = false,
        Ok(value) if value.eq_ignore_ascii_case("on") => config.limits.enabled = true,
        Ok(value) => anyhow::bail!("GATEWAY_LIMITS must be on or off, got {value:?}"),
    }
    match std::env::var("GATEWAY_READ_PATH").as_deref().map(str::trim) {
        Err(_) | Ok("") => {}
        Ok(value) if value.eq_ignore_ascii_case("off") => {
            config.read_path.read_model = false;
            config.read_path.response_cache = false;
        }
        Ok(value) if value.eq_ignore_ascii_case("on") => {
            config.read_path.read_model = true;
            config.read_path.response_cache = true;
        }
        Ok(value) => anyhow::bail!("GATEWAY_READ_PATH must be on or off, got {value:?}"),
    }
    Ok(config)
}

/// Dev tokens `serve --demo` prints: one per channel and role, for demo customers and stores.
const DEMO_TOKENS: [(&str, Role, Option<&str>, Option<&str>); 7] = [
    ("web", Role::Shopper, Some("shopper@example.com"), None),
    ("mobile", Role::Shopper, Some("vip@example.com"), None),
    ("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN")),
    ("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None),
    ("b2b", Role::B2bBuyer, Some("buyer@globex.example"), None),
    ("web", Role::Admin, None, None),
    // Admins may run any document, so this one explores the persisted-only POS channel.
    ("pos", Role::Admin, None, None),
];

fn print_demo_tokens(running: &gateway::RunningGateway) -> anyhow::Result<()> {
    if running.generated_secret {
        println!(
            "dev-only notice: GATEWAY_JWT_SECRET is unset, so this run signs tokens with a secret it generated; they stop working when it stops. Set GATEWAY_JWT_SECRET (32+ bytes) to keep them."
        );
    }
    if !running.state.auth.has_secret() {
        return Ok(());
    }
    println!("dev tokens (send as Authorization: Bearer <token>; each fixes its channel):");
    for (channel, role, customer, store) in DEMO_TOKENS {
        let auth = &running.state.auth;
        let claims = auth.claims(
            channel,
            role,
            customer.map(str::to_owned),
            store.map(str::to_owned),
            None,
        );
        let who = customer.or(store).unwrap_or("-");
        println!("  {channel:<6} {role:<9} {who:<22} {}", auth.mint(&claims)?);
    }
    Ok(())
}

/// Start-up errors are one line on stderr (`error: …`) and exit code 1, never a backtrace.
#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Schema => print!("{}", gateway::schema_sdl()),
        Command::Migrate { common } => {
            let config = common.load()?;
            config.validate()?;
            let (db, _) = gateway::server::open_database(&config.database_url).await?;
            commerce_core::db::close(&db)
                .await
                .context("closing the database")?;
            println!("migrations applied");
        }
        Command::Serve {
            common,
            listen,
            demo,
        } => {
            let mut config = common.load()?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let running = gateway::start(config, demo).await?;
            if demo {
                match &running.demo {
                    Some(summary) => println!(
                        "demo data loaded: {} products, {} variants, {} categories, {} stock levels, {} prices",
                        summary.products,
                        summary.variants,
                        summary.categories,
                        summary.stock_levels,
                        summary.price_entries
                    ),
                    None => {
                        let products = commerce_core::entities::product::Entity::find()
                            .count(&running.state.db)
                            .await
                            .map_or_else(|_| "some".to_owned(), |n| n.to_string());
                        println!(
                            "database already has data ({products} products): demo data not loaded, kept what is there"
                        );
                    }
                }
            }
            if demo {
                print_demo_tokens(&running)?;
            }
            tracing::info!(url = %running.url(), "listening");
            println!("GraphiQL: {}/graphql", running.url());
            let limits = &running.state.limits;
            if !limits.enabled() {
                println!(
                    "rate limits and cost budgets: off (GATEWAY_LIMITS=off or [limits] enabled = false); the per-operation maximum cost still applies"
                );
            } else if let Some(redis) = limits.redis() {
                println!(
                    "rate limits and cost budgets: shared by every instance in Redis at {}",
                    redis.url()
                );
            }
            let read_path = &running.state.read_path;
            let on_off = |on: bool| if on { "on" } else { "off" };
            println!(
                "read path: read model {}, response cache {} (GATEWAY_READ_PATH or [read_path])",
                on_off(read_path.model.is_some()),
                on_off(read_path.cache.is_some())
            );
            println!(
                "channels: web (default), mobile, pos, b2b — anonymous requests choose one with X-Channel; a token fixes its own"
            );
            shutdown_signal().await;
            println!("shutting down");
            running.stop().await.context("stopping")?;
        }
        Command::Operations { config } => {
            let config = load_config(config.as_deref())?;
            let dir = &config.persisted.operations_dir;
            let operations =
                gateway::shaping::persisted::list_operations(dir).map_err(anyhow::Error::msg)?;
            if operations.is_empty() {
                println!("no operations under {}", dir.display());
            }
            for operation in operations {
                println!(
                    "{:<8} {}  {}",
                    operation.channel,
                    operation.sha256,
                    operation.file.display()
                );
            }
        }
        Command::Token {
            config,
            channel,
            role,
            customer,
            store,
            ttl,
        } => {
            let config = load_config(config.as_deref())?;
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!(
                    "--role must be shopper, b2b_buyer, pos_clerk or admin, got {role:?}"
                )
            })?;
            match role {
                Role::PosClerk if store.is_none() => {
                    anyhow::bail!("a pos_clerk token needs --store CODE (e.g. STORE-DOWNTOWN)")
                }
                Role::Shopper | Role::B2bBuyer if customer.is_none() => {
                    anyhow::bail!("a {role} token needs --customer EMAIL")
                }
                _ => {}
            }
            let secret = config.jwt_secret.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "set GATEWAY_JWT_SECRET (32+ bytes) to the gateway's secret to mint tokens"
                )
            })?;
            let auth = gateway::auth::Authenticator::new(&config.auth, Some(secret))?;
            let claims = auth.claims(&channel.to_ascii_lowercase(), role, customer, store, ttl);
            println!("{}", auth.mint(&claims)?);
        }
        Command::Healthcheck { config, listen } => {
            let mut config = load_config(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let target = health_target(&config.listen)?;
            return Ok(match healthcheck(&target).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("unhealthy: http://{target}/healthz: {why}");
                    ExitCode::FAILURE
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stdout, coloured only on a terminal.
fn init_logging() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let wanted = log_filter(rust_log.as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&wanted).unwrap_or_else(|err| {
        eprintln!("warning: ignoring RUST_LOG ({err}); logging with {DEFAULT_LOG_FILTER}");
        tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// The log filter for a `RUST_LOG` value: the default without one; with one, that value plus
/// `sqlx=warn` and `sea_orm=warn` unless it names those targets itself.
fn log_filter(rust_log: Option<&str>) -> String {
    let spec = rust_log.map(str::trim).unwrap_or("");
    if spec.is_empty() {
        return DEFAULT_LOG_FILTER.to_owned();
    }
    let mut filter = spec.to_owned();
    for quiet in QUIET_TARGETS {
        let named = spec.split(',').any(|directive| {
            let target = directive.trim().split(['=', '[']).next().unwrap_or("");
            target == quiet
                || target
                    .strip_prefix(quiet)
                    .is_some_and(|rest| rest.starts_with("::"))
        });
        if !named {
            filter.push_str(&format!(",{quiet}=warn"));
        }
    }
    filter
}

/// An error and its causes on one line, each cause once (many messages already embed their
/// source), with multi-line messages (such as TOML's) folded without their source excerpts.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !is_source_excerpt(l))
            .collect::<Vec<_>>()
            .join(": ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `|`, `2 | key = 1` and `| ^^^` lines of a parser's excerpt.
fn is_source_excerpt(line: &str) -> bool {
    line.split_once('|')
        .is_some_and(|(before, _)| before.trim().chars().all(|c| c.is_ascii_digit()))
}

/// The `host:port` to check for a listen address: an unspecified address (0.0.0.0, [::]) is
/// checked on loopback.
fn health_target(listen: &str) -> anyhow::Result<String> {
    let config = Config {
        listen: listen.to_owned(),
        ..Config::default()
    };
    let (host, port) = config.listen_host_port()?;
    anyhow::ensure!(
        port != 0,
        "the listen address {listen} has port 0 (a random port); give the real one with --listen or GATEWAY_LISTEN"
    );
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => format!("127.0.0.1:{port}"),
        Ok(ip) if ip.is_unspecified() => format!("[::1]:{port}"),
        Ok(ip) if ip.is_ipv6() => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// `GET /healthz` over HTTP/1.0 within 3 s; healthy when the status is 200.
async fn healthcheck(target: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|err| err.to_string())?;
        stream
            .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .map_err(|err| err.to_string())?;
        let mut response = Vec::new();
        stream
            .take(64 * 1024)
            .read_to_end(&mut response)
            .await
            .map_err(|err| err.to_string())?;
        let response = String::from_utf8_lossy(&response);
        let status = response.lines().next().unwrap_or("").trim().to_owned();
        match status.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            _ if status.is_empty() => Err("empty response".to_owned()),
            _ => Err(status),
        }
    };
    tokio::time::timeout(Duration::from_secs(3), check)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_owned()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_keeps_the_database_crates_quiet_unless_it_names_them() {
        assert_eq!(log_filter(None), DEFAULT_LOG_FILTER);
        assert_eq!(log_filter(Some(" ")), DEFAULT_LOG_FILTER);
        assert_eq!(log_filter(Some("info")), "info,sqlx=warn,sea_orm=warn");
        assert_eq!(
            log_filter(Some("debug,gateway::sql=trace")),
            "debug,gateway::sql=trace,sqlx=warn,sea_orm=warn"
        );
        assert_eq!(
            log_filter(Some("info,sqlx=debug")),
            "info,sqlx=debug,sea_orm=warn"
        );
        assert_eq!(
            log_filter(Some("info,sqlx::query=info,sea_orm[x]=info")),
            "info,sqlx::query=info,sea_orm[x]=info"
        );
        // A different crate whose name starts alike does not count.
        assert_eq!(
            log_filter(Some("sea_orm_migration=info")),
            "sea_orm_migration=info,sqlx=warn,sea_orm=warn"
        );
        for spec in ["info", "debug,sqlx=debug", "sea_orm_migration=info"] {
            tracing_subscriber::EnvFilter::try_new(log_filter(Some(spec))).unwrap();
        }
    }

    #[test]
    fn errors_are_one_line_with_each_cause_once() {
        let err = anyhow::Error::from(std::io::Error::other("disk full")).context("writing x");
        assert_eq!(one_line(&err), "writing x: disk full");
        let config = toml::from_str::<Config>("[graphql]\nmax_pagesize = 5\n").unwrap_err();
        let err = anyhow::Error::msg(format!("config file g.toml is invalid: {config}"));
        let line = one_line(&err);
        assert!(!line.contains('\n') && !line.contains('^'), "{line}");
        assert!(
            line.contains("max_pagesize") && line.contains("line 2"),
            "{line}"
        );
        let start = gateway::StartError::Bind {
            addr: "127.0.0.1:8080".into(),
            error: std::io::ErrorKind::AddrInUse.into(),
            hint: "choose another address with --listen ADDR or GATEWAY_LISTEN",
        };
        let line = one_line(&start.into());
        assert!(
            line.starts_with("cannot listen on 127.0.0.1:8080: "),
            "{line}"
        );
    }

    #[test]
    fn the_health_check_targets_loopback_for_unspecified_addresses() {
        assert_eq!(health_target("0.0.0.0:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(health_target("[::]:9000").unwrap(), "[::1]:9000");
        assert_eq!(health_target("10.1.2.3:81").unwrap(), "10.1.2.3:81");
        assert_eq!(health_target("localhost:8080").unwrap(), "localhost:8080");
        assert!(health_target("127.0.0.1:0").is_err());
        assert!(health_target("nowhere").is_err());
    }

    #[tokio::test]
    async fn the_health_check_passes_on_a_running_gateway_only() {
        let config = Config {
            listen: "127.0.0.1:0".into(),
            database_url: "sqlite::memory:".into(),
            ..Config::default()
        };
        let running = gateway::start(config, false).await.unwrap();
        let target = running.addr.to_string();
        healthcheck(&target).await.unwrap();
        running.stop().await.unwrap();
        assert!(healthcheck(&target).await.is_err());
    }
}

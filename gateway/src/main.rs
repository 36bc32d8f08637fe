//! `gateway`: serve, migrate, print the schema.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gateway::Config;
use migrations::{Migrator, MigratorTrait};

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
        /// Address to listen on.
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
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Schema => print!("{}", gateway::schema_sdl()),
        Command::Migrate { common } => {
            let config = common.load()?;
            config.validate()?;
            let db = commerce_core::db::connect(&config.database_url)
                .await
                .context("connecting to the database")?;
            Migrator::up(&db, None)
                .await
                .context("applying migrations")?;
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
            if let Some(summary) = &running.demo {
                println!(
                    "demo data loaded: {} products, {} variants, {} categories, {} stock levels, {} prices",
                    summary.products,
                    summary.variants,
                    summary.categories,
                    summary.stock_levels,
                    summary.price_entries
                );
            }
            println!("GraphiQL: {}/graphql", running.url());
            println!(
                "channels: web (default), mobile, pos, b2b — choose one with the X-Channel header"
            );
            shutdown_signal().await;
            println!("shutting down");
            running.stop().await?;
        }
    }
    Ok(())
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

//! The GraphQL Backend-for-Frontend gateway over the commerce core.
//!
//! - [`bus`]: domain events announced after commit (in process for now)
//! - [`completion`]: response order and null propagation as the spec says
//! - [`config`]: typed configuration (file + env + flags)
//! - [`cors`]: browser origins allowed per channel (preflights, `Access-Control-*`)
//! - [`connections`]: the accept loop: connection cap, header-read and idle timeouts
//! - [`limits`]: rate limits and query-cost budgets per (channel, client), in process or Redis
//! - [`log_budget`]: at most a few log lines per request and kind of failure, then a count
//! - [`metrics`]: Prometheus metrics at `/metrics`; the per-request scope (SQL statements,
//!   DataLoader batches in the request's span)
//! - [`response_size`]: the response-size cap (`RESPONSE_TOO_LARGE`)
//! - [`server`]: routes, middleware, start-up
//! - [`transport`]: GraphQL over HTTP to the letter of the spec
//! - [`graphiql`]: the in-browser IDE, its assets embedded (no CDN)
//! - [`graphql`]: the schema, one module per domain
//! - [`shaping`]: what each channel may see

pub mod auth;
pub mod bus;
pub mod completion;
pub mod config;
pub mod connections;
pub mod cors;
pub mod graphiql;
pub mod graphql;
pub mod limits;
pub mod log_budget;
pub mod metrics;
pub mod response_size;
pub mod server;
pub mod shaping;
pub mod transport;

pub use config::Config;
pub use server::{RunningGateway, StartError, start};

/// The SDL of the schema, as checked in at `schema.graphql`.
pub fn schema_sdl() -> String {
    graphql::build_schema(&config::GraphqlConfig::default()).sdl()
}

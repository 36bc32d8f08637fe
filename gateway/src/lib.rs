//! The GraphQL Backend-for-Frontend gateway over the commerce core. One folder (or file) per
//! duty:
//!
//! - [`transport`]: GraphQL over HTTP to the letter of the spec (negotiation, handlers, the
//!   order of checks for one operation, rendering)
//! - [`auth`]: tokens (JWT) and the viewer of a request
//! - [`limits`]: rate limits and query-cost budgets per (channel, client), in process or Redis
//! - [`shaping`]: operation size, input checks, persisted operations, stock visibility
//! - [`errors`]: every error code, how core errors map to them
//! - [`idempotency`]: mutations with an `Idempotency-Key` run once per key and viewer
//! - [`graphql`]: the schema, one module per domain
//! - [`completion`]: response order and null propagation as the spec says
//! - [`server`]: routes, middleware, start-up; [`connections`]: the accept loop (connection
//!   cap, header-read and idle timeouts); [`cors`]: browser origins per channel
//! - [`metrics`]: Prometheus metrics at `/metrics` and the per-request scope; [`log_budget`]:
//!   bounded log lines per request; [`response_size`]: the response-size cap
//! - [`bus`]: domain events announced after commit (in process, or between instances over
//!   Redis); [`read_path`]: the in-memory read model and the event-exact response cache
//! - [`config`]: typed configuration (file + env + flags); [`graphiql`]: the in-browser IDE,
//!   its assets embedded (no CDN)

pub mod auth;
pub mod bus;
pub mod completion;
pub mod config;
pub mod connections;
pub mod cors;
pub mod errors;
pub mod graphiql;
pub mod graphql;
pub mod idempotency;
pub mod limits;
pub mod log_budget;
pub mod metrics;
pub mod order_batches;
pub mod read_path;
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

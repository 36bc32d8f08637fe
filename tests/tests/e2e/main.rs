//! Black-box tests: a real gateway on 127.0.0.1:0 over HTTP, on SQLite or (with
//! `TEST_DATABASE_URL`) PostgreSQL. One crate, grouped by feature.

mod auth;
mod catalog;
mod completion;
mod connections;
mod demo_data;
mod events;
mod fuzz;
mod graphiql;
mod hardening;
mod idempotency;
mod inventory;
mod lifecycle;
mod limits;
mod metrics;
mod orders;
mod persisted;
mod pricing;
mod pricing_admin;
mod read_path;
mod schema;
mod shaping;
mod sorting;
mod sql_statements;
mod subscriptions;
mod transport;

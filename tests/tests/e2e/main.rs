//! Black-box tests: a real gateway on 127.0.0.1:0 over HTTP, on SQLite or (with
//! `TEST_DATABASE_URL`) PostgreSQL. One crate, grouped by feature.

mod catalog;
mod demo_data;
mod schema;
mod sql_statements;
mod transport;

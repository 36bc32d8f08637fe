//! The commerce core: catalog, channels, pricing, inventory and orders.
//!
//! It owns every piece of data and every business rule. It knows nothing of HTTP, GraphQL or
//! Redis: the gateway parses input, calls a service here and shapes the answer.

pub mod catalog;
pub mod channels;
pub mod db;
pub mod demo;
pub mod entities;
pub mod error;
pub mod idempotency;
pub mod inventory;
pub mod money;
pub mod orders;
pub mod pricing;

pub use error::CoreError;

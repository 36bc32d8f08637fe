//! Schema migrations for the commerce core. They run unchanged on SQLite and PostgreSQL.
//!
//! Migrations are frozen history: never edit one that has shipped, add a new one instead.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_initial;
mod m20261126_000001_money_as_integer;
mod m20261126_000002_inventory_service;
mod m20261126_000003_orders;
mod m20261126_000004_idempotency_claim_token;

/// Applies every migration in order; `gateway migrate` and `gateway serve` call it.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261126_000001_money_as_integer::Migration),
            Box::new(m20261126_000002_inventory_service::Migration),
            Box::new(m20261126_000003_orders::Migration),
            Box::new(m20261126_000004_idempotency_claim_token::Migration),
        ]
    }
}

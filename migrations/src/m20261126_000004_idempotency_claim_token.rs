//! `idempotency_record.claim_token` VARCHAR(36) NULL: the token of the claim that inserted a
//! record, set by claims written in batches (PostgreSQL). A request whose batch failed reads
//! its key's record back and knows by the token whether its own claim was written (the
//! insert committed, its answer was lost) or another request's is there.
//!
//! A nullable column, so SQLite's `ADD COLUMN` suffices; `down` drops it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000004_idempotency_claim_token"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyRecord::Table)
                    .add_column(string_len_null(IdempotencyRecord::ClaimToken, 36))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyRecord::Table)
                    .drop_column(IdempotencyRecord::ClaimToken)
                    .take(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum IdempotencyRecord {
    Table,
    ClaimToken,
}

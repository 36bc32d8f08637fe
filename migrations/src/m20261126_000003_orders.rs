//! Orders and routing (issue 14, DESIGN.md §4, §5, §7).
//!
//! 1. `stock_location.time_zone` VARCHAR(64) NOT NULL DEFAULT 'UTC': the IANA zone its cut-off
//!    time is read in.
//! 2. Per-channel routing settings on `channel`: `eligible_location_kinds` (comma-separated
//!    kinds that may fulfil, default `warehouse,store`), `service_levels` (allowed, default
//!    `standard,express,same_day`), `max_shipments` (default 3) and `backorders` (default
//!    false).
//! 3. On `orders`: `external_ref` (an order ingested from elsewhere, unique per channel),
//!    `extensions` (channel-specific JSON fields) and `note`.
//! 4. `order_line.returned_quantity` (units returned so far) and `shipment.promised_ship_date`.
//! 5. The `idempotency_record` table: one row per (scope, key) of a mutation sent with an
//!    idempotency key: the request's hash, whether it is still running, the stored response,
//!    and when the key expires.
//!
//! Only columns with defaults (or nullable ones) are added, so SQLite's `ADD COLUMN` suffices.
//! `down` drops what `up` added.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000003_orders"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite applies one change per ALTER TABLE.
        let columns: Vec<(DynIden, ColumnDef)> = vec![
            (
                StockLocation::Table.into_iden(),
                string_len(StockLocation::TimeZone, 64)
                    .default("UTC")
                    .take(),
            ),
            (
                Channel::Table.into_iden(),
                string_len(Channel::EligibleLocationKinds, 64)
                    .default("warehouse,store")
                    .take(),
            ),
            (
                Channel::Table.into_iden(),
                string_len(Channel::ServiceLevels, 64)
                    .default("standard,express,same_day")
                    .take(),
            ),
            (
                Channel::Table.into_iden(),
                integer(Channel::MaxShipments).default(3).take(),
            ),
            (
                Channel::Table.into_iden(),
                boolean(Channel::Backorders).default(false).take(),
            ),
            (
                Order::Table.into_iden(),
                string_len_null(Order::ExternalRef, 128).take(),
            ),
            (
                Order::Table.into_iden(),
                json_null(Order::Extensions).take(),
            ),
            (
                Order::Table.into_iden(),
                string_len(Order::Note, 1000).default("").take(),
            ),
            (
                OrderLine::Table.into_iden(),
                integer(OrderLine::ReturnedQuantity).default(0).take(),
            ),
            (
                Shipment::Table.into_iden(),
                date_null(Shipment::PromisedShipDate).take(),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(Table::alter().table(table).add_column(&mut column).take())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("uq_order_external_ref")
                    .table(Order::Table)
                    .if_not_exists()
                    .unique()
                    .col(Order::ChannelId)
                    .col(Order::ExternalRef)
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyRecord::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Alias::new("id")))
                    .col(
                        timestamp_with_time_zone(Alias::new("created_at"))
                            .default(Expr::current_timestamp()),
                    )
                    .col(
                        timestamp_with_time_zone(Alias::new("updated_at"))
                            .default(Expr::current_timestamp()),
                    )
                    .col(string_len(IdempotencyRecord::Scope, 300))
                    .col(string_len(IdempotencyRecord::Key, 255))
                    .col(string_len(IdempotencyRecord::RequestHash, 64))
                    .col(string_len(IdempotencyRecord::State, 16).default("running"))
                    .col(text_null(IdempotencyRecord::Response))
                    .col(timestamp_with_time_zone(IdempotencyRecord::ExpiresAt))
                    .check(Expr::col(IdempotencyRecord::State).is_in(["running", "done"]))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_idempotency_scope_key")
                    .table(IdempotencyRecord::Table)
                    .if_not_exists()
                    .unique()
                    .col(IdempotencyRecord::Scope)
                    .col(IdempotencyRecord::Key)
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_idempotency_expires")
                    .table(IdempotencyRecord::Table)
                    .if_not_exists()
                    .col(IdempotencyRecord::ExpiresAt)
                    .take(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(IdempotencyRecord::Table)
                    .if_exists()
                    .take(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("uq_order_external_ref")
                    .table(Order::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (
                Shipment::Table.into_iden(),
                Shipment::PromisedShipDate.into_iden(),
            ),
            (
                OrderLine::Table.into_iden(),
                OrderLine::ReturnedQuantity.into_iden(),
            ),
            (Order::Table.into_iden(), Order::Note.into_iden()),
            (Order::Table.into_iden(), Order::Extensions.into_iden()),
            (Order::Table.into_iden(), Order::ExternalRef.into_iden()),
            (Channel::Table.into_iden(), Channel::Backorders.into_iden()),
            (
                Channel::Table.into_iden(),
                Channel::MaxShipments.into_iden(),
            ),
            (
                Channel::Table.into_iden(),
                Channel::ServiceLevels.into_iden(),
            ),
            (
                Channel::Table.into_iden(),
                Channel::EligibleLocationKinds.into_iden(),
            ),
            (
                StockLocation::Table.into_iden(),
                StockLocation::TimeZone.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).take())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum StockLocation {
    Table,
    TimeZone,
}

#[derive(DeriveIden)]
enum Channel {
    Table,
    EligibleLocationKinds,
    ServiceLevels,
    MaxShipments,
    Backorders,
}

#[derive(DeriveIden)]
enum Order {
    #[sea_orm(iden = "orders")]
    Table,
    ChannelId,
    ExternalRef,
    Extensions,
    Note,
}

#[derive(DeriveIden)]
enum OrderLine {
    Table,
    ReturnedQuantity,
}

#[derive(DeriveIden)]
enum Shipment {
    Table,
    PromisedShipDate,
}

#[derive(DeriveIden)]
enum IdempotencyRecord {
    Table,
    Scope,
    Key,
    RequestHash,
    State,
    Response,
    ExpiresAt,
}

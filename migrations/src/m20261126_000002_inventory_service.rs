//! The inventory service (issue 13, DESIGN.md §4, §5, §7).
//!
//! 1. `stock_level.version` BIGINT NOT NULL DEFAULT 0: bumped by every change to the row in
//!    the same UPDATE, so stock events can carry it (existing rows start at 0).
//! 2. `channel.allocation_strategy` VARCHAR(16) NOT NULL DEFAULT 'priority': how a
//!    reservation picks locations (`priority`, `highest_stock`, `nearest`).
//! 3. `channel.reservation_ttl_seconds` INTEGER NOT NULL DEFAULT 900: how long a reservation
//!    of the channel lives unless its owner extends it; 0 means hard holds (no expiry).
//! 4. The `stock_hold` table: N units of a variant kept for one channel, at one location or
//!    (location NULL) anywhere, that other channels cannot reserve.
//!
//! Only columns with defaults are added, so SQLite's `ADD COLUMN` suffices and every existing
//! row stays valid. `down` drops what `up` added.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000002_inventory_service"
    }
}

fn fk<F: IntoIden, T: IntoIden>(
    from_table: impl IntoIden,
    from_col: F,
    to_table: T,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_col)
        .to(to_table, Alias::new("id"))
        .on_delete(ForeignKeyAction::Restrict)
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite applies one change per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(StockLevel::Table)
                    .add_column(big_integer(StockLevel::Version).default(0))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Channel::Table)
                    .add_column(string_len(Channel::AllocationStrategy, 16).default("priority"))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Channel::Table)
                    .add_column(integer(Channel::ReservationTtlSeconds).default(900))
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StockHold::Table)
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
                    .col(big_integer(StockHold::ChannelId))
                    .col(big_integer(StockHold::VariantId))
                    .col(big_integer_null(StockHold::LocationId))
                    .col(integer(StockHold::Quantity))
                    .foreign_key(&mut fk(
                        StockHold::Table,
                        StockHold::ChannelId,
                        Channel::Table,
                    ))
                    .foreign_key(&mut fk(
                        StockHold::Table,
                        StockHold::VariantId,
                        Variant::Table,
                    ))
                    .foreign_key(&mut fk(
                        StockHold::Table,
                        StockHold::LocationId,
                        StockLocation::Table,
                    ))
                    .check(Expr::col(StockHold::Quantity).gt(0))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_stock_hold_variant")
                    .table(StockHold::Table)
                    .if_not_exists()
                    .col(StockHold::VariantId)
                    .col(StockHold::ChannelId)
                    .take(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StockHold::Table).if_exists().take())
            .await?;
        for (table, column) in [
            (
                Channel::Table.into_iden(),
                Channel::ReservationTtlSeconds.into_iden(),
            ),
            (
                Channel::Table.into_iden(),
                Channel::AllocationStrategy.into_iden(),
            ),
            (
                StockLevel::Table.into_iden(),
                StockLevel::Version.into_iden(),
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
enum StockLevel {
    Table,
    Version,
}

#[derive(DeriveIden)]
enum Channel {
    Table,
    AllocationStrategy,
    ReservationTtlSeconds,
}

#[derive(DeriveIden)]
enum StockHold {
    Table,
    ChannelId,
    VariantId,
    LocationId,
    Quantity,
}

#[derive(DeriveIden)]
enum Variant {
    Table,
}

#[derive(DeriveIden)]
enum StockLocation {
    Table,
}

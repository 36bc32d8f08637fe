//! Money as exact integers, promotion currencies, and quantity rules (DESIGN.md §4, §8).
//!
//! 1. Every money column (`price_list_entry.amount`, `promotion.value`, `orders.subtotal`,
//!    `orders.discount_total`, `orders.total`, `order_line.unit_price`,
//!    `order_line.line_total`) becomes a `BIGINT` holding the amount × 10^4 (19.99 is
//!    199900), with `CHECK (col >= 0)`, so SQL sorts and sums money on both backends. Column
//!    names stay the same. Existing rows are converted exactly: the text is checked first and
//!    the migration refuses (naming the rows) anything that is not a plain non-negative decimal
//!    with at most four significant decimal places within the BIGINT range; after the
//!    conversion every converted value is compared with the value computed here.
//!    - PostgreSQL: `ALTER COLUMN … TYPE BIGINT USING ROUND(col::numeric * 10000)::bigint`
//!      plus a named CHECK constraint.
//!    - SQLite cannot change a column's type, and `ADD COLUMN … NOT NULL` would need a
//!      default that the money columns never had, so each of the four tables is rebuilt under
//!      its own name: copy the rows aside into a temporary table, drop the table, create it
//!      again with the new definition (every other column, default, foreign key and check as
//!      in the initial migration), copy the rows back converting the money columns, and
//!      recreate the table's indexes. The tables other tables point at (`orders`,
//!      `order_line`) keep their names throughout, so the foreign keys of `order_line`,
//!      `shipment`, `shipment_line` and `order_event` stay valid: with
//!      `PRAGMA defer_foreign_keys` the drop is checked at commit, by which time every parent
//!      row is back (and `PRAGMA foreign_key_check` confirms it). The AUTOINCREMENT counters
//!      are restored too.
//! 2. `promotion.currency` CHAR(3) NULL: the currency of an amount (`amount_off`,
//!    `fixed_price`), backfilled from the promotion's channel's currency or `USD`, with a CHECK
//!    that those promotions have one. `percent_off` promotions keep NULL (any currency).
//! 3. The unique tier index on `price_list_entry (price_list_id, variant_id, min_quantity)` and
//!    the index on `price_list_entry (variant_id)`, when missing.
//! 4. The `quantity_rule` table: min, max and increment of a variant's quantity per price list.
//!
//! The whole migration runs in one transaction on both backends (SQLite DDL is transactional
//! too), so it is applied completely or not at all. `down` reverses it exactly (amounts back to
//! their canonical decimal text).

use std::collections::BTreeMap;

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000001_money_as_integer"
    }
}

/// Decimal places of a stored amount: the column holds `amount × 10^4`.
const SCALE: u32 = 4;
/// `10^SCALE`.
const FACTOR: i64 = 10_000;
/// Width of the text money columns of the initial migration.
const MONEY_TEXT_LEN: u32 = 40;

/// A table whose money columns change, with its columns in their order in the initial
/// migration (without the new `promotion.currency`).
struct MoneyTable {
    name: &'static str,
    columns: &'static [&'static str],
    money: &'static [&'static str],
}

const MONEY_TABLES: [MoneyTable; 4] = [
    MoneyTable {
        name: "price_list_entry",
        columns: &[
            "id",
            "created_at",
            "updated_at",
            "price_list_id",
            "variant_id",
            "min_quantity",
            "amount",
        ],
        money: &["amount"],
    },
    MoneyTable {
        name: "promotion",
        columns: &[
            "id",
            "created_at",
            "updated_at",
            "code",
            "name",
            "channel_id",
            "customer_group_id",
            "target_kind",
            "target_id",
            "discount_kind",
            "value",
            "min_quantity",
            "starts_at",
            "ends_at",
            "stackable",
            "priority",
            "active",
        ],
        money: &["value"],
    },
    MoneyTable {
        name: "orders",
        columns: &[
            "id",
            "created_at",
            "updated_at",
            "number",
            "channel_id",
            "customer_id",
            "idempotency_key",
            "request_hash",
            "status",
            "currency",
            "subtotal",
            "discount_total",
            "total",
            "service_level",
            "shipping_address",
            "pickup_location_id",
        ],
        money: &["subtotal", "discount_total", "total"],
    },
    MoneyTable {
        name: "order_line",
        columns: &[
            "id",
            "created_at",
            "updated_at",
            "order_id",
            "variant_id",
            "sku",
            "quantity",
            "unit_price",
            "line_total",
            "price_breakdown",
        ],
        money: &["unit_price", "line_total"],
    },
];

/// Tables whose foreign keys point at a rebuilt table (checked after a SQLite rebuild).
const REFERENCING_TABLES: &[&str] = &["shipment", "shipment_line", "order_event"];

/// How the money columns are stored: before (`Text`) or after (`Integer`) this migration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stored {
    Text,
    Integer,
}

// ---- helpers, as in the initial migration ----

/// A table with an auto-increment id and created/updated timestamps (every table has them).
fn table<T: IntoIden + 'static>(name: T) -> TableCreateStatement {
    Table::create()
        .table(name)
        .if_not_exists()
        .col(big_pk_auto(Alias::new("id")))
        .col(timestamp_with_time_zone(Alias::new("created_at")).default(Expr::current_timestamp()))
        .col(timestamp_with_time_zone(Alias::new("updated_at")).default(Expr::current_timestamp()))
        .take()
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

fn index<T: IntoTableRef>(name: &str, table: T, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table).if_not_exists();
    for col in cols {
        stmt.col(Alias::new(*col));
    }
    stmt.take()
}

fn unique<T: IntoTableRef>(name: &str, table: T, cols: &[&'static str]) -> IndexCreateStatement {
    index(name, table, cols).unique().take()
}

/// A money column: decimal text before this migration, `amount × 10^4` after it.
fn money<T: IntoIden>(col: T, stored: Stored) -> ColumnDef {
    match stored {
        Stored::Text => string_len(col, MONEY_TEXT_LEN),
        Stored::Integer => big_integer(col),
    }
}

/// The name of the CHECK keeping a money column non-negative.
fn money_check_name(table: &str, column: &str) -> String {
    format!("ck_{table}_{column}_not_negative")
}

/// Adds the CHECKs of `table`'s money columns (integer storage, SQLite): not negative, and an
/// integer (SQLite would otherwise keep a stray `19.99` from raw SQL as a float).
fn money_checks(stmt: &mut TableCreateStatement, table: &MoneyTable, stored: Stored) {
    if stored == Stored::Integer {
        for column in table.money {
            stmt.check(Check::named(
                money_check_name(table.name, column),
                Expr::col(Alias::new(*column)).gte(0),
            ));
            stmt.check(Check::named(
                format!("ck_{}_{column}_integer", table.name),
                Expr::cust(format!("typeof(\"{column}\") = 'integer'")),
            ));
        }
    }
}

const PROMOTION_CURRENCY_CHECK: &str = "ck_promotion_currency_for_amounts";

fn promotion_currency_check() -> Check {
    Check::named(
        PROMOTION_CURRENCY_CHECK,
        Expr::col(Promotion::DiscountKind)
            .eq("percent_off")
            .or(Expr::col(Promotion::Currency).is_not_null()),
    )
}

// ---- the four rebuilt tables (SQLite), as in the initial migration but for money ----

fn money_table(name: &str) -> &'static MoneyTable {
    MONEY_TABLES
        .iter()
        .find(|t| t.name == name)
        .expect("a money table")
}

fn create_statement(name: &str, stored: Stored) -> TableCreateStatement {
    let mut stmt = match name {
        "price_list_entry" => table(PriceListEntry::Table)
            .col(big_integer(PriceListEntry::PriceListId))
            .col(big_integer(PriceListEntry::VariantId))
            .col(integer(PriceListEntry::MinQuantity).default(1))
            .col(money(PriceListEntry::Amount, stored))
            .foreign_key(&mut fk(
                PriceListEntry::Table,
                PriceListEntry::PriceListId,
                PriceList::Table,
            ))
            .foreign_key(&mut fk(
                PriceListEntry::Table,
                PriceListEntry::VariantId,
                Variant::Table,
            ))
            .check(Expr::col(PriceListEntry::MinQuantity).gte(1))
            .take(),
        "promotion" => {
            let mut stmt = table(Promotion::Table)
                .col(string_len_uniq(Promotion::Code, 64))
                .col(string_len(Promotion::Name, 200))
                .col(big_integer_null(Promotion::ChannelId))
                .col(big_integer_null(Promotion::CustomerGroupId))
                .col(string_len(Promotion::TargetKind, 16))
                .col(big_integer_null(Promotion::TargetId))
                .col(string_len(Promotion::DiscountKind, 16))
                .col(money(Promotion::Value, stored))
                .col(integer(Promotion::MinQuantity).default(1))
                .col(timestamp_with_time_zone_null(Promotion::StartsAt))
                .col(timestamp_with_time_zone_null(Promotion::EndsAt))
                .col(boolean(Promotion::Stackable).default(false))
                .col(integer(Promotion::Priority).default(0))
                .col(boolean(Promotion::Active).default(true))
                .foreign_key(&mut fk(
                    Promotion::Table,
                    Promotion::ChannelId,
                    Channel::Table,
                ))
                .foreign_key(&mut fk(
                    Promotion::Table,
                    Promotion::CustomerGroupId,
                    CustomerGroup::Table,
                ))
                .check(
                    Expr::col(Promotion::TargetKind)
                        .is_in(["variant", "product", "category", "all"]),
                )
                .check(Expr::col(Promotion::DiscountKind).is_in([
                    "percent_off",
                    "amount_off",
                    "fixed_price",
                ]))
                .take();
            if stored == Stored::Integer {
                stmt.col(char_len_null(Promotion::Currency, 3))
                    .check(promotion_currency_check());
            }
            stmt
        }
        "orders" => table(Order::Table)
            .col(string_len_uniq(Order::Number, 32))
            .col(big_integer(Order::ChannelId))
            .col(big_integer_null(Order::CustomerId))
            .col(string_len_null(Order::IdempotencyKey, 128))
            .col(string_len_null(Order::RequestHash, 64))
            .col(string_len(Order::Status, 24).default("pending"))
            .col(char_len(Order::Currency, 3))
            .col(money(Order::Subtotal, stored))
            .col(money(Order::DiscountTotal, stored))
            .col(money(Order::Total, stored))
            .col(string_len(Order::ServiceLevel, 16).default("standard"))
            .col(json_null(Order::ShippingAddress))
            .col(big_integer_null(Order::PickupLocationId))
            .foreign_key(&mut fk(Order::Table, Order::ChannelId, Channel::Table))
            .foreign_key(&mut fk(Order::Table, Order::CustomerId, Customer::Table))
            .foreign_key(&mut fk(
                Order::Table,
                Order::PickupLocationId,
                StockLocation::Table,
            ))
            .check(Expr::col(Order::Status).is_in([
                "pending",
                "allocated",
                "partially_fulfilled",
                "fulfilled",
                "delivered",
                "cancelled",
                "returned",
            ]))
            .take(),
        "order_line" => table(OrderLine::Table)
            .col(big_integer(OrderLine::OrderId))
            .col(big_integer(OrderLine::VariantId))
            .col(string_len(OrderLine::Sku, 64))
            .col(integer(OrderLine::Quantity))
            .col(money(OrderLine::UnitPrice, stored))
            .col(money(OrderLine::LineTotal, stored))
            .col(json(OrderLine::PriceBreakdown))
            .foreign_key(&mut fk(OrderLine::Table, OrderLine::OrderId, Order::Table))
            .foreign_key(&mut fk(
                OrderLine::Table,
                OrderLine::VariantId,
                Variant::Table,
            ))
            .check(Expr::col(OrderLine::Quantity).gt(0))
            .take(),
        other => unreachable!("{other} is not a money table"),
    };
    money_checks(&mut stmt, money_table(name), stored);
    stmt
}

/// The indexes of the rebuilt tables, as in the initial migration (a SQLite table's indexes
/// go with it when it is dropped). The two `price_list_entry` ones are also item 3.
fn rebuilt_table_indexes(name: &str) -> Vec<IndexCreateStatement> {
    match name {
        "price_list_entry" => price_list_entry_indexes(),
        "orders" => vec![
            // NULL keys never collide, so orders placed without a key are unconstrained.
            unique(
                "uq_order_idempotency",
                Order::Table,
                &["channel_id", "idempotency_key"],
            ),
            index("idx_order_customer", Order::Table, &["customer_id"]),
        ],
        "order_line" => vec![index(
            "idx_order_line_order",
            OrderLine::Table,
            &["order_id"],
        )],
        _ => Vec::new(),
    }
}

fn price_list_entry_indexes() -> Vec<IndexCreateStatement> {
    vec![
        unique(
            "uq_price_list_entry",
            PriceListEntry::Table,
            &["price_list_id", "variant_id", "min_quantity"],
        ),
        index(
            "idx_price_list_entry_variant",
            PriceListEntry::Table,
            &["variant_id"],
        ),
    ]
}

fn quantity_rule_table() -> TableCreateStatement {
    table(QuantityRule::Table)
        .col(big_integer(QuantityRule::PriceListId))
        .col(big_integer(QuantityRule::VariantId))
        .col(integer(QuantityRule::MinQuantity).default(1))
        .col(integer_null(QuantityRule::MaxQuantity))
        .col(integer(QuantityRule::Increment).default(1))
        .foreign_key(&mut fk(
            QuantityRule::Table,
            QuantityRule::PriceListId,
            PriceList::Table,
        ))
        .foreign_key(&mut fk(
            QuantityRule::Table,
            QuantityRule::VariantId,
            Variant::Table,
        ))
        .check(Expr::col(QuantityRule::MinQuantity).gte(1))
        .check(
            Expr::col(QuantityRule::MaxQuantity)
                .is_null()
                .or(Expr::col(QuantityRule::MaxQuantity).gte(Expr::col(QuantityRule::MinQuantity))),
        )
        .check(Expr::col(QuantityRule::Increment).gte(1))
        .take()
}

fn quantity_rule_indexes() -> Vec<IndexCreateStatement> {
    vec![
        unique(
            "uq_quantity_rule",
            QuantityRule::Table,
            &["price_list_id", "variant_id"],
        ),
        index(
            "idx_quantity_rule_variant",
            QuantityRule::Table,
            &["variant_id"],
        ),
    ]
}

// ---- converting the existing text ----

/// `amount × 10^4` of a money column's text, or why it cannot be converted exactly. Accepts
/// what the text storage wrote: plain decimals (`19.99`, `100`, `0.1234`; trailing zeros
/// beyond the fourth place are fine, `-0` is zero).
fn text_to_units(text: &str) -> Result<i64, &'static str> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return Err("is not a plain decimal number"),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return Err("is not a plain decimal number");
    }
    let places = SCALE as usize;
    if frac.len() > places && frac.bytes().skip(places).any(|b| b != b'0') {
        return Err("has more than 4 decimal places");
    }
    let int = int.trim_start_matches('0');
    if int.len() > 15 {
        return Err("is larger than the largest storable amount (922337203685477.5807)");
    }
    let whole: i128 = if int.is_empty() {
        0
    } else {
        int.parse().expect("at most 15 digits")
    };
    let frac: String = frac.chars().chain("0000".chars()).take(places).collect();
    let units = whole * i128::from(FACTOR) + frac.parse::<i128>().expect("four digits");
    if negative && units != 0 {
        return Err("is negative");
    }
    <i64 as TryFrom<i128>>::try_from(units)
        .map_err(|_| "is larger than the largest storable amount (922337203685477.5807)")
}

/// The canonical text of `units / 10^4` (what the text storage wrote: `19.99`, `100`).
#[cfg(test)]
fn units_to_text(units: i64) -> String {
    let (whole, frac) = (units / FACTOR, units % FACTOR);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:04}").trim_end_matches('0'))
    }
}

/// Every row's money values, computed exactly, keyed by (table, column); refuses with every
/// offending row named when a value cannot be converted exactly.
async fn expected_units<C: ConnectionTrait>(
    db: &C,
) -> Result<BTreeMap<(&'static str, &'static str), Vec<(i64, i64)>>, DbErr> {
    let backend = db.get_database_backend();
    let mut expected = BTreeMap::new();
    let mut problems = Vec::new();
    for table in &MONEY_TABLES {
        for column in table.money {
            let sql = format!(
                "SELECT id, CAST(\"{column}\" AS TEXT) AS v FROM \"{}\" ORDER BY id",
                table.name
            );
            let mut values = Vec::new();
            for row in db
                .query_all_raw(Statement::from_string(backend, sql))
                .await?
            {
                let id: i64 = row.try_get("", "id")?;
                let text: String = row.try_get("", "v")?;
                match text_to_units(&text) {
                    Ok(units) => values.push((id, units)),
                    Err(why) => problems.push(format!(
                        "{}.{column} of id {id} ({text:?}) {why}",
                        table.name
                    )),
                }
            }
            expected.insert((table.name, *column), values);
        }
    }
    if problems.is_empty() {
        return Ok(expected);
    }
    let count = problems.len();
    problems.truncate(20);
    Err(DbErr::Migration(format!(
        "cannot store money as integers at 4 decimal places: {count} value(s) cannot be \
         converted exactly; fix them and migrate again: {}{}",
        problems.join("; "),
        if count > 20 { "; …" } else { "" }
    )))
}

/// After the conversion: every value is exactly the one computed by [`expected_units`].
async fn verify_units<C: ConnectionTrait>(
    db: &C,
    expected: &BTreeMap<(&'static str, &'static str), Vec<(i64, i64)>>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for ((table, column), values) in expected {
        let sql = format!("SELECT id, \"{column}\" AS v FROM \"{table}\" ORDER BY id");
        let rows = db
            .query_all_raw(Statement::from_string(backend, sql))
            .await?;
        let actual = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64>("", "id")?, row.try_get::<i64>("", "v")?)))
            .collect::<Result<Vec<_>, DbErr>>()?;
        if &actual != values {
            return Err(DbErr::Migration(format!(
                "converting {table}.{column} to an integer was not exact; nothing was changed"
            )));
        }
    }
    Ok(())
}

/// SQLite: the exact integer of a validated decimal text column (no floating point).
fn sqlite_text_to_units(column: &str) -> String {
    let c = format!("\"{column}\"");
    format!(
        "(CAST(CASE WHEN instr({c}, '.') > 0 THEN substr({c}, 1, instr({c}, '.') - 1) ELSE {c} END AS INTEGER) * {FACTOR} \
         + CAST(CASE WHEN instr({c}, '.') > 0 THEN substr(substr({c}, instr({c}, '.') + 1) || '0000', 1, 4) ELSE '0' END AS INTEGER))"
    )
}

/// The canonical decimal text of an integer money column (`199900` → `19.99`), for `down`.
fn units_to_text_sql(backend: DbBackend, column: &str) -> String {
    let c = format!("\"{column}\"");
    match backend {
        DbBackend::Sqlite => format!(
            "(CAST({c} / {FACTOR} AS TEXT) || CASE WHEN {c} % {FACTOR} = 0 THEN '' \
             ELSE '.' || rtrim(substr('0000' || ({c} % {FACTOR}), -4), '0') END)"
        ),
        _ => format!(
            "(({c} / {FACTOR})::text || CASE WHEN {c} % {FACTOR} = 0 THEN '' \
             ELSE '.' || rtrim(lpad(({c} % {FACTOR})::text, 4, '0'), '0') END)"
        ),
    }
}

/// The backfill of `promotion.currency`: the channel's currency, else USD, for amounts only.
const CURRENCY_BACKFILL: &str = "CASE WHEN discount_kind = 'percent_off' THEN NULL ELSE \
     COALESCE((SELECT c.currency FROM channel c WHERE c.id = promotion.channel_id), 'USD') END";

async fn execute<C: ConnectionTrait>(db: &C, sql: &str) -> Result<(), DbErr> {
    db.execute_unprepared(sql).await.map(|_| ())
}

// ---- SQLite: rebuild the four tables under their own names ----

async fn sqlite_rebuild(manager: &SchemaManager<'_>, to: Stored) -> Result<(), DbErr> {
    let db = manager.get_connection();
    // Dropping `orders` while `order_line` rows point at it would fail at once; deferred, the
    // foreign keys are checked at commit, when every parent row is back.
    execute(db, "PRAGMA defer_foreign_keys = ON").await?;
    execute(
        db,
        "CREATE TEMP TABLE mig_money_sequence AS SELECT name, seq FROM sqlite_sequence \
         WHERE name IN ('price_list_entry', 'promotion', 'orders', 'order_line')",
    )
    .await?;
    for table in &MONEY_TABLES {
        let old = format!("mig_money_old_{}", table.name);
        execute(
            db,
            &format!(
                "CREATE TEMP TABLE \"{old}\" AS SELECT * FROM \"{}\"",
                table.name
            ),
        )
        .await?;
        execute(db, &format!("DROP TABLE \"{}\"", table.name)).await?;
        manager
            .create_table(create_statement(table.name, to))
            .await?;
        let mut targets: Vec<String> = Vec::new();
        let mut sources: Vec<String> = Vec::new();
        for column in table.columns {
            targets.push(format!("\"{column}\""));
            sources.push(if !table.money.contains(column) {
                format!("\"{column}\"")
            } else if to == Stored::Integer {
                sqlite_text_to_units(column)
            } else {
                units_to_text_sql(DbBackend::Sqlite, column)
            });
        }
        if table.name == "promotion" && to == Stored::Integer {
            targets.push("\"currency\"".to_owned());
            sources.push(
                CURRENCY_BACKFILL.replace("promotion.channel_id", &format!("\"{old}\".channel_id")),
            );
        }
        execute(
            db,
            &format!(
                "INSERT INTO \"{}\" ({}) SELECT {} FROM \"{old}\" ORDER BY id",
                table.name,
                targets.join(", "),
                sources.join(", ")
            ),
        )
        .await?;
        execute(db, &format!("DROP TABLE \"{old}\"")).await?;
        for stmt in rebuilt_table_indexes(table.name) {
            manager.create_index(stmt).await?;
        }
    }
    // AUTOINCREMENT counters as they were (a dropped table's counter goes with it).
    execute(
        db,
        "UPDATE sqlite_sequence SET seq = (SELECT m.seq FROM mig_money_sequence m \
         WHERE m.name = sqlite_sequence.name) \
         WHERE name IN (SELECT name FROM mig_money_sequence) \
         AND seq < (SELECT m.seq FROM mig_money_sequence m WHERE m.name = sqlite_sequence.name)",
    )
    .await?;
    execute(
        db,
        "INSERT INTO sqlite_sequence (name, seq) SELECT name, seq FROM mig_money_sequence \
         WHERE name NOT IN (SELECT name FROM sqlite_sequence)",
    )
    .await?;
    execute(db, "DROP TABLE mig_money_sequence").await?;
    for name in MONEY_TABLES
        .iter()
        .map(|t| t.name)
        .chain(REFERENCING_TABLES.iter().copied())
    {
        let dangling = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                format!("PRAGMA foreign_key_check(\"{name}\")"),
            ))
            .await?;
        if !dangling.is_empty() {
            return Err(DbErr::Migration(format!(
                "rebuilding the money tables left {} row(s) of {name} without their parent",
                dangling.len()
            )));
        }
    }
    Ok(())
}

// ---- PostgreSQL: change the column types in place ----

async fn postgres_up(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for table in &MONEY_TABLES {
        for column in table.money {
            execute(
                db,
                &format!(
                    "ALTER TABLE \"{t}\" ALTER COLUMN \"{column}\" TYPE BIGINT \
                     USING ROUND(\"{column}\"::numeric * {FACTOR})::bigint, \
                     ADD CONSTRAINT \"{check}\" CHECK (\"{column}\" >= 0)",
                    t = table.name,
                    check = money_check_name(table.name, column),
                ),
            )
            .await?;
        }
    }
    execute(db, "ALTER TABLE promotion ADD COLUMN currency CHAR(3) NULL").await?;
    execute(
        db,
        &format!("UPDATE promotion SET currency = {CURRENCY_BACKFILL}"),
    )
    .await?;
    execute(
        db,
        &format!(
            "ALTER TABLE promotion ADD CONSTRAINT \"{PROMOTION_CURRENCY_CHECK}\" \
             CHECK (discount_kind = 'percent_off' OR currency IS NOT NULL)"
        ),
    )
    .await
}

async fn postgres_down(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    execute(
        db,
        &format!(
            "ALTER TABLE promotion DROP CONSTRAINT IF EXISTS \"{PROMOTION_CURRENCY_CHECK}\", \
             DROP COLUMN IF EXISTS currency"
        ),
    )
    .await?;
    for table in &MONEY_TABLES {
        for column in table.money {
            execute(
                db,
                &format!(
                    "ALTER TABLE \"{t}\" DROP CONSTRAINT IF EXISTS \"{check}\", \
                     ALTER COLUMN \"{column}\" TYPE VARCHAR({MONEY_TEXT_LEN}) USING {text}",
                    t = table.name,
                    check = money_check_name(table.name, column),
                    text = units_to_text_sql(DbBackend::Postgres, column),
                ),
            )
            .await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on SQLite too: the table rebuild must be all or nothing, and
    /// `PRAGMA defer_foreign_keys` lasts until its commit.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let expected = expected_units(db).await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => sqlite_rebuild(manager, Stored::Integer).await?,
            DbBackend::Postgres => postgres_up(manager).await?,
            other => {
                return Err(DbErr::Migration(format!(
                    "{other:?} is not supported: SQLite and PostgreSQL are"
                )));
            }
        }
        verify_units(db, &expected).await?;
        for stmt in price_list_entry_indexes() {
            manager.create_index(stmt).await?;
        }
        manager.create_table(quantity_rule_table()).await?;
        for stmt in quantity_rule_indexes() {
            manager.create_index(stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QuantityRule::Table).if_exists().take())
            .await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => sqlite_rebuild(manager, Stored::Text).await,
            DbBackend::Postgres => postgres_down(manager).await,
            other => Err(DbErr::Migration(format!(
                "{other:?} is not supported: SQLite and PostgreSQL are"
            ))),
        }
    }
}

#[derive(DeriveIden)]
enum Channel {
    Table,
}

#[derive(DeriveIden)]
enum CustomerGroup {
    Table,
}

#[derive(DeriveIden)]
enum Customer {
    Table,
}

#[derive(DeriveIden)]
enum StockLocation {
    Table,
}

#[derive(DeriveIden)]
enum Variant {
    Table,
}

#[derive(DeriveIden)]
enum PriceList {
    Table,
}

#[derive(DeriveIden)]
enum PriceListEntry {
    Table,
    PriceListId,
    VariantId,
    MinQuantity,
    Amount,
}

#[derive(DeriveIden)]
enum Promotion {
    Table,
    Code,
    Name,
    ChannelId,
    CustomerGroupId,
    TargetKind,
    TargetId,
    DiscountKind,
    Value,
    Currency,
    MinQuantity,
    StartsAt,
    EndsAt,
    Stackable,
    Priority,
    Active,
}

#[derive(DeriveIden)]
enum Order {
    #[sea_orm(iden = "orders")]
    Table,
    Number,
    ChannelId,
    CustomerId,
    IdempotencyKey,
    RequestHash,
    Status,
    Currency,
    Subtotal,
    DiscountTotal,
    Total,
    ServiceLevel,
    ShippingAddress,
    PickupLocationId,
}

#[derive(DeriveIden)]
enum OrderLine {
    Table,
    OrderId,
    VariantId,
    Sku,
    Quantity,
    UnitPrice,
    LineTotal,
    PriceBreakdown,
}

#[derive(DeriveIden)]
enum QuantityRule {
    Table,
    PriceListId,
    VariantId,
    MinQuantity,
    MaxQuantity,
    Increment,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_converts_exactly_to_ten_thousandths() {
        for (text, units) in [
            ("19.99", 199_900),
            ("0.1234", 1_234),
            ("100", 1_000_000),
            ("9.5", 95_000),
            ("1234567.5", 12_345_675_000),
            ("0", 0),
            ("-0", 0),
            ("-0.00", 0),
            ("007.50", 75_000),
            ("1.50000", 15_000),
            ("922337203685477.5807", i64::MAX),
        ] {
            assert_eq!(text_to_units(text), Ok(units), "{text}");
            assert_eq!(
                text_to_units(&units_to_text(units)),
                Ok(units),
                "{units} round-trips"
            );
        }
        assert_eq!(units_to_text(199_900), "19.99");
        assert_eq!(units_to_text(1_234), "0.1234");
        assert_eq!(units_to_text(1_000_000), "100");
    }

    #[test]
    fn text_that_is_not_exact_is_refused() {
        for (text, why) in [
            ("1.23456", "has more than 4 decimal places"),
            ("-1", "is negative"),
            ("-0.01", "is negative"),
            ("1e5", "is not a plain decimal number"),
            ("", "is not a plain decimal number"),
            (".5", "is not a plain decimal number"),
            ("5.", "is not a plain decimal number"),
            (" 5", "is not a plain decimal number"),
            ("1.2.3", "is not a plain decimal number"),
            ("+5", "is not a plain decimal number"),
            (
                "922337203685477.5808",
                "is larger than the largest storable amount (922337203685477.5807)",
            ),
            (
                "1000000000000000",
                "is larger than the largest storable amount (922337203685477.5807)",
            ),
        ] {
            assert_eq!(text_to_units(text), Err(why), "{text:?}");
        }
    }
}

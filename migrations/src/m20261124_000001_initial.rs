//! The whole domain model of DESIGN.md §4: catalog, channels, customers, pricing, inventory
//! and orders, with the constraints the core rules depend on.
//!
//! Money columns hold the exact decimal as text: SQLite has no exact decimal type and
//! SeaORM reads SQLite decimals through `f64`, so text is the only lossless common form.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000001_initial"
    }
}

/// Width of money columns: 28 significant digits, sign and point fit easily.
const MONEY_LEN: u32 = 40;

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

fn money<T: IntoIden>(col: T) -> ColumnDef {
    string_len(col, MONEY_LEN)
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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for stmt in tables() {
            manager.create_table(stmt).await?;
        }
        for stmt in indexes() {
            manager.create_index(stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for stmt in tables().into_iter().rev() {
            let name = stmt
                .get_table_name()
                .cloned()
                .expect("every table is named");
            manager
                .drop_table(Table::drop().table(name).if_exists().take())
                .await?;
        }
        Ok(())
    }
}

fn tables() -> Vec<TableCreateStatement> {
    vec![
        // ---- catalog ----
        table(Category::Table)
            .col(big_integer_null(Category::ParentId))
            .col(string_len_uniq(Category::Slug, 120))
            .col(string_len(Category::Name, 200))
            .col(integer(Category::Position).default(0))
            .foreign_key(&mut fk(
                Category::Table,
                Category::ParentId,
                Category::Table,
            ))
            .take(),
        table(Product::Table)
            .col(string_len_uniq(Product::Slug, 200))
            .col(string_len(Product::Name, 300))
            .col(text(Product::Description))
            .col(big_integer(Product::CategoryId))
            .col(json(Product::Attributes))
            .col(string_len(Product::Status, 20).default("active"))
            .foreign_key(&mut fk(
                Product::Table,
                Product::CategoryId,
                Category::Table,
            ))
            .check(Expr::col(Product::Status).is_in(["draft", "active", "archived"]))
            .take(),
        table(Variant::Table)
            .col(big_integer(Variant::ProductId))
            .col(string_len_uniq(Variant::Sku, 64))
            .col(string_len(Variant::Name, 300))
            .col(json(Variant::OptionValues))
            .col(integer(Variant::WeightGrams).default(0))
            .col(integer(Variant::Position).default(0))
            .foreign_key(&mut fk(Variant::Table, Variant::ProductId, Product::Table))
            .take(),
        // ---- channels and locations ----
        table(Channel::Table)
            .col(string_len_uniq(Channel::Code, 32))
            .col(string_len(Channel::Name, 120))
            .col(char_len(Channel::Currency, 3))
            .col(integer(Channel::SafetyStock).default(0))
            .col(integer(Channel::LowStockThreshold).default(5))
            .col(string_len(Channel::RoutingPolicy, 32).default("fewest_shipments"))
            .check(Expr::col(Channel::SafetyStock).gte(0))
            .take(),
        table(ChannelProduct::Table)
            .col(big_integer(ChannelProduct::ChannelId))
            .col(big_integer(ChannelProduct::ProductId))
            .foreign_key(&mut fk(
                ChannelProduct::Table,
                ChannelProduct::ChannelId,
                Channel::Table,
            ))
            .foreign_key(&mut fk(
                ChannelProduct::Table,
                ChannelProduct::ProductId,
                Product::Table,
            ))
            .take(),
        table(StockLocation::Table)
            .col(string_len_uniq(StockLocation::Code, 32))
            .col(string_len(StockLocation::Name, 120))
            .col(string_len(StockLocation::Kind, 16))
            .col(string_len(StockLocation::Region, 32))
            .col(double(StockLocation::Latitude))
            .col(double(StockLocation::Longitude))
            .col(integer(StockLocation::HandlingHours))
            .col(string_len(StockLocation::CutoffTime, 5))
            .check(Expr::col(StockLocation::Kind).is_in(["warehouse", "store", "dropship"]))
            .take(),
        table(ChannelLocation::Table)
            .col(big_integer(ChannelLocation::ChannelId))
            .col(big_integer(ChannelLocation::LocationId))
            .col(integer(ChannelLocation::Priority).default(0))
            .foreign_key(&mut fk(
                ChannelLocation::Table,
                ChannelLocation::ChannelId,
                Channel::Table,
            ))
            .foreign_key(&mut fk(
                ChannelLocation::Table,
                ChannelLocation::LocationId,
                StockLocation::Table,
            ))
            .take(),
        // ---- customers ----
        table(CustomerGroup::Table)
            .col(string_len_uniq(CustomerGroup::Code, 32))
            .col(string_len(CustomerGroup::Name, 120))
            .take(),
        table(Company::Table)
            .col(string_len_uniq(Company::Code, 32))
            .col(string_len(Company::Name, 200))
            .take(),
        table(Customer::Table)
            .col(string_len_uniq(Customer::Email, 254))
            .col(string_len(Customer::Name, 200))
            .col(big_integer_null(Customer::CompanyId))
            .col(big_integer_null(Customer::GroupId))
            .foreign_key(&mut fk(
                Customer::Table,
                Customer::CompanyId,
                Company::Table,
            ))
            .foreign_key(&mut fk(
                Customer::Table,
                Customer::GroupId,
                CustomerGroup::Table,
            ))
            .take(),
        // ---- pricing ----
        table(PriceList::Table)
            .col(string_len_uniq(PriceList::Code, 64))
            .col(string_len(PriceList::Name, 200))
            .col(char_len(PriceList::Currency, 3))
            .col(big_integer_null(PriceList::ChannelId))
            .col(big_integer_null(PriceList::CustomerGroupId))
            .col(big_integer_null(PriceList::CompanyId))
            .col(big_integer_null(PriceList::CustomerId))
            .col(integer(PriceList::Priority).default(0))
            .col(timestamp_with_time_zone_null(PriceList::ValidFrom))
            .col(timestamp_with_time_zone_null(PriceList::ValidUntil))
            .col(boolean(PriceList::Active).default(true))
            .foreign_key(&mut fk(
                PriceList::Table,
                PriceList::ChannelId,
                Channel::Table,
            ))
            .foreign_key(&mut fk(
                PriceList::Table,
                PriceList::CustomerGroupId,
                CustomerGroup::Table,
            ))
            .foreign_key(&mut fk(
                PriceList::Table,
                PriceList::CompanyId,
                Company::Table,
            ))
            .foreign_key(&mut fk(
                PriceList::Table,
                PriceList::CustomerId,
                Customer::Table,
            ))
            .take(),
        table(PriceListEntry::Table)
            .col(big_integer(PriceListEntry::PriceListId))
            .col(big_integer(PriceListEntry::VariantId))
            .col(integer(PriceListEntry::MinQuantity).default(1))
            .col(money(PriceListEntry::Amount))
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
        table(Promotion::Table)
            .col(string_len_uniq(Promotion::Code, 64))
            .col(string_len(Promotion::Name, 200))
            .col(big_integer_null(Promotion::ChannelId))
            .col(big_integer_null(Promotion::CustomerGroupId))
            .col(string_len(Promotion::TargetKind, 16))
            .col(big_integer_null(Promotion::TargetId))
            .col(string_len(Promotion::DiscountKind, 16))
            .col(money(Promotion::Value))
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
                Expr::col(Promotion::TargetKind).is_in(["variant", "product", "category", "all"]),
            )
            .check(Expr::col(Promotion::DiscountKind).is_in([
                "percent_off",
                "amount_off",
                "fixed_price",
            ]))
            .take(),
        // ---- inventory ----
        table(StockLevel::Table)
            .col(big_integer(StockLevel::VariantId))
            .col(big_integer(StockLevel::LocationId))
            .col(integer(StockLevel::OnHand).default(0))
            .col(integer(StockLevel::Reserved).default(0))
            .foreign_key(&mut fk(
                StockLevel::Table,
                StockLevel::VariantId,
                Variant::Table,
            ))
            .foreign_key(&mut fk(
                StockLevel::Table,
                StockLevel::LocationId,
                StockLocation::Table,
            ))
            // The database itself refuses oversell, whatever the code above it does.
            .check(Expr::col(StockLevel::Reserved).gte(0))
            .check(Expr::col(StockLevel::Reserved).lte(Expr::col(StockLevel::OnHand)))
            .take(),
        table(Reservation::Table)
            .col(big_integer(Reservation::VariantId))
            .col(big_integer(Reservation::LocationId))
            .col(big_integer(Reservation::ChannelId))
            .col(integer(Reservation::Quantity))
            .col(string_len(Reservation::OwnerKind, 16))
            .col(string_len(Reservation::OwnerRef, 128))
            .col(timestamp_with_time_zone_null(Reservation::ExpiresAt))
            .col(string_len(Reservation::State, 16).default("active"))
            .foreign_key(&mut fk(
                Reservation::Table,
                Reservation::VariantId,
                Variant::Table,
            ))
            .foreign_key(&mut fk(
                Reservation::Table,
                Reservation::LocationId,
                StockLocation::Table,
            ))
            .foreign_key(&mut fk(
                Reservation::Table,
                Reservation::ChannelId,
                Channel::Table,
            ))
            .check(Expr::col(Reservation::Quantity).gt(0))
            .check(Expr::col(Reservation::OwnerKind).is_in(["order", "cart"]))
            .check(
                Expr::col(Reservation::State).is_in(["active", "released", "consumed", "expired"]),
            )
            .take(),
        table(InventoryMovement::Table)
            .col(big_integer(InventoryMovement::VariantId))
            .col(big_integer(InventoryMovement::LocationId))
            .col(string_len(InventoryMovement::Kind, 16))
            .col(integer(InventoryMovement::OnHandDelta))
            .col(integer(InventoryMovement::ReservedDelta))
            .col(string_len(InventoryMovement::Actor, 128))
            .col(string_len(InventoryMovement::Reason, 500))
            .col(string_len_null(InventoryMovement::Reference, 128))
            .foreign_key(&mut fk(
                InventoryMovement::Table,
                InventoryMovement::VariantId,
                Variant::Table,
            ))
            .foreign_key(&mut fk(
                InventoryMovement::Table,
                InventoryMovement::LocationId,
                StockLocation::Table,
            ))
            .check(Expr::col(InventoryMovement::Kind).is_in([
                "receive", "adjust", "reserve", "release", "sale", "transfer", "return",
            ]))
            .take(),
        // ---- orders ----
        table(Order::Table)
            .col(string_len_uniq(Order::Number, 32))
            .col(big_integer(Order::ChannelId))
            .col(big_integer_null(Order::CustomerId))
            .col(string_len_null(Order::IdempotencyKey, 128))
            .col(string_len_null(Order::RequestHash, 64))
            .col(string_len(Order::Status, 24).default("pending"))
            .col(char_len(Order::Currency, 3))
            .col(money(Order::Subtotal))
            .col(money(Order::DiscountTotal))
            .col(money(Order::Total))
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
        table(OrderLine::Table)
            .col(big_integer(OrderLine::OrderId))
            .col(big_integer(OrderLine::VariantId))
            .col(string_len(OrderLine::Sku, 64))
            .col(integer(OrderLine::Quantity))
            .col(money(OrderLine::UnitPrice))
            .col(money(OrderLine::LineTotal))
            .col(json(OrderLine::PriceBreakdown))
            .foreign_key(&mut fk(OrderLine::Table, OrderLine::OrderId, Order::Table))
            .foreign_key(&mut fk(
                OrderLine::Table,
                OrderLine::VariantId,
                Variant::Table,
            ))
            .check(Expr::col(OrderLine::Quantity).gt(0))
            .take(),
        table(Shipment::Table)
            .col(big_integer(Shipment::OrderId))
            .col(big_integer(Shipment::LocationId))
            .col(string_len(Shipment::ServiceLevel, 16))
            .col(string_len(Shipment::Status, 24).default("pending"))
            .col(json_null(Shipment::Decision))
            .foreign_key(&mut fk(Shipment::Table, Shipment::OrderId, Order::Table))
            .foreign_key(&mut fk(
                Shipment::Table,
                Shipment::LocationId,
                StockLocation::Table,
            ))
            .take(),
        table(ShipmentLine::Table)
            .col(big_integer(ShipmentLine::ShipmentId))
            .col(big_integer(ShipmentLine::OrderLineId))
            .col(integer(ShipmentLine::Quantity))
            .col(boolean(ShipmentLine::Backordered).default(false))
            .foreign_key(&mut fk(
                ShipmentLine::Table,
                ShipmentLine::ShipmentId,
                Shipment::Table,
            ))
            .foreign_key(&mut fk(
                ShipmentLine::Table,
                ShipmentLine::OrderLineId,
                OrderLine::Table,
            ))
            .check(Expr::col(ShipmentLine::Quantity).gt(0))
            .take(),
        table(OrderEvent::Table)
            .col(big_integer(OrderEvent::OrderId))
            .col(string_len_null(OrderEvent::FromStatus, 24))
            .col(string_len(OrderEvent::ToStatus, 24))
            .col(string_len(OrderEvent::Actor, 128))
            .col(string_len(OrderEvent::Note, 500))
            .col(json_null(OrderEvent::Data))
            .foreign_key(&mut fk(
                OrderEvent::Table,
                OrderEvent::OrderId,
                Order::Table,
            ))
            .take(),
    ]
}

fn indexes() -> Vec<IndexCreateStatement> {
    vec![
        index("idx_category_parent", Category::Table, &["parent_id"]),
        index("idx_product_category", Product::Table, &["category_id"]),
        index(
            "idx_variant_product",
            Variant::Table,
            &["product_id", "position"],
        ),
        unique(
            "uq_channel_product",
            ChannelProduct::Table,
            &["channel_id", "product_id"],
        ),
        index(
            "idx_channel_product_product",
            ChannelProduct::Table,
            &["product_id"],
        ),
        unique(
            "uq_channel_location",
            ChannelLocation::Table,
            &["channel_id", "location_id"],
        ),
        index("idx_customer_company", Customer::Table, &["company_id"]),
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
        unique(
            "uq_stock_level",
            StockLevel::Table,
            &["variant_id", "location_id"],
        ),
        index(
            "idx_stock_level_location",
            StockLevel::Table,
            &["location_id"],
        ),
        index(
            "idx_reservation_state_expiry",
            Reservation::Table,
            &["state", "expires_at"],
        ),
        index(
            "idx_reservation_owner",
            Reservation::Table,
            &["owner_kind", "owner_ref"],
        ),
        index(
            "idx_movement_variant_location",
            InventoryMovement::Table,
            &["variant_id", "location_id", "id"],
        ),
        // NULL keys never collide, so orders placed without a key are unconstrained.
        unique(
            "uq_order_idempotency",
            Order::Table,
            &["channel_id", "idempotency_key"],
        ),
        index("idx_order_customer", Order::Table, &["customer_id"]),
        index("idx_order_line_order", OrderLine::Table, &["order_id"]),
        index("idx_shipment_order", Shipment::Table, &["order_id"]),
        index(
            "idx_shipment_line_shipment",
            ShipmentLine::Table,
            &["shipment_id"],
        ),
        index(
            "idx_order_event_order",
            OrderEvent::Table,
            &["order_id", "id"],
        ),
    ]
}

#[derive(DeriveIden)]
enum Category {
    Table,
    ParentId,
    Slug,
    Name,
    Position,
}

#[derive(DeriveIden)]
enum Product {
    Table,
    Slug,
    Name,
    Description,
    CategoryId,
    Attributes,
    Status,
}

#[derive(DeriveIden)]
enum Variant {
    Table,
    ProductId,
    Sku,
    Name,
    OptionValues,
    WeightGrams,
    Position,
}

#[derive(DeriveIden)]
enum Channel {
    Table,
    Code,
    Name,
    Currency,
    SafetyStock,
    LowStockThreshold,
    RoutingPolicy,
}

#[derive(DeriveIden)]
enum ChannelProduct {
    Table,
    ChannelId,
    ProductId,
}

#[derive(DeriveIden)]
enum StockLocation {
    Table,
    Code,
    Name,
    Kind,
    Region,
    Latitude,
    Longitude,
    HandlingHours,
    CutoffTime,
}

#[derive(DeriveIden)]
enum ChannelLocation {
    Table,
    ChannelId,
    LocationId,
    Priority,
}

#[derive(DeriveIden)]
enum CustomerGroup {
    Table,
    Code,
    Name,
}

#[derive(DeriveIden)]
enum Company {
    Table,
    Code,
    Name,
}

#[derive(DeriveIden)]
enum Customer {
    Table,
    Email,
    Name,
    CompanyId,
    GroupId,
}

#[derive(DeriveIden)]
enum PriceList {
    Table,
    Code,
    Name,
    Currency,
    ChannelId,
    CustomerGroupId,
    CompanyId,
    CustomerId,
    Priority,
    ValidFrom,
    ValidUntil,
    Active,
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
    MinQuantity,
    StartsAt,
    EndsAt,
    Stackable,
    Priority,
    Active,
}

#[derive(DeriveIden)]
enum StockLevel {
    Table,
    VariantId,
    LocationId,
    OnHand,
    Reserved,
}

#[derive(DeriveIden)]
enum Reservation {
    Table,
    VariantId,
    LocationId,
    ChannelId,
    Quantity,
    OwnerKind,
    OwnerRef,
    ExpiresAt,
    State,
}

#[derive(DeriveIden)]
enum InventoryMovement {
    Table,
    VariantId,
    LocationId,
    Kind,
    OnHandDelta,
    ReservedDelta,
    Actor,
    Reason,
    Reference,
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
enum Shipment {
    Table,
    OrderId,
    LocationId,
    ServiceLevel,
    Status,
    Decision,
}

#[derive(DeriveIden)]
enum ShipmentLine {
    Table,
    ShipmentId,
    OrderLineId,
    Quantity,
    Backordered,
}

#[derive(DeriveIden)]
enum OrderEvent {
    Table,
    OrderId,
    FromStatus,
    ToStatus,
    Actor,
    Note,
    Data,
}

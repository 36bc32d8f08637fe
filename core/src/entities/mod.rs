//! SeaORM entities, one per table of DESIGN.md §4. Relations are resolved by services and
//! DataLoaders with explicit batched queries, so entities declare none.

pub mod category;
pub mod channel;
pub mod channel_location;
pub mod channel_product;
pub mod company;
pub mod customer;
pub mod customer_group;
pub mod idempotency_record;
pub mod inventory_movement;
pub mod order;
pub mod order_event;
pub mod order_line;
pub mod price_list;
pub mod price_list_entry;
pub mod product;
pub mod promotion;
pub mod quantity_rule;
pub mod reservation;
pub mod shipment;
pub mod shipment_line;
pub mod stock_hold;
pub mod stock_level;
pub mod stock_location;
pub mod variant;

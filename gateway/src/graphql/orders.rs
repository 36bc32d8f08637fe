//! Orders: the `planFulfillment` query (the routing decision, reserving nothing), `placeOrder` (priced,
//! reserved and routed in one transaction, idempotent), the lifecycle mutations, the
//! `order` / `orders` queries scoped to the viewer, and `orderStatusChanged`.
//!
//! Who sees what: a shopper their own orders, a company buyer their company's, a POS clerk
//! their channel's, an admin all. Placing needs a token (shopper, b2b_buyer, pos_clerk or
//! admin) and an idempotency key; the lifecycle mutations need an admin, except that a
//! customer may cancel their own order before it ships.

use std::collections::HashMap;

use async_graphql::{
    Context, Enum, ErrorExtensions, ID, InputObject, Json, Object, SimpleObject, Subscription,
};
use chrono::{DateTime, NaiveDate, Utc};
use commerce_core::CoreError;
use commerce_core::entities::{customer, order, stock_location};
use commerce_core::inventory::GeoPoint;
use commerce_core::orders::batch::{self, PricedOrder};
use commerce_core::orders::routing::ServiceLevel as CoreServiceLevel;
use commerce_core::orders::service::{
    self as orders, Fulfilment, NewOrder, OrderDetails, OrderError, OrderLineInput,
};
use futures_util::Stream;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::ids::{Kind, decode_id, encode_id};
use super::pricing::Money;
use super::{RequestContext, request_context};
use crate::auth::Role;
use crate::bus::Event;
use crate::errors::{ApiError, ApiResultExt};
use crate::metrics::ORDERS_PLACED_ALONE_TOTAL;

/// Most orders one `orders` page holds.
pub const MAX_PAGE: i32 = 100;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceLevel {
    Standard,
    Express,
    SameDay,
}

impl From<ServiceLevel> for CoreServiceLevel {
    fn from(level: ServiceLevel) -> Self {
        match level {
            ServiceLevel::Standard => Self::Standard,
            ServiceLevel::Express => Self::Express,
            ServiceLevel::SameDay => Self::SameDay,
        }
    }
}

/// One line to order: a SKU and its units.
#[derive(InputObject, Clone)]
pub struct OrderLineRequest {
    pub sku: String,
    pub quantity: i32,
}

/// Where a shipped order goes. `region` decides same-day eligibility; `latitude` and
/// `longitude`, when given, make nearer locations win.
#[derive(InputObject, Clone)]
pub struct ShipToInput {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The shipping region, as stock locations name theirs (`us-east`).
    pub region: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// An order to place (or to plan: `planFulfillment` reads the same input).
#[derive(InputObject, Clone)]
pub struct PlaceOrderInput {
    /// 1 to 100 lines, each SKU once.
    pub lines: Vec<OrderLineRequest>,
    /// Ship to this address …
    pub ship_to: Option<ShipToInput>,
    /// … or collect at this store (its code); exactly one of the two. POS sales may leave
    /// both out: they are collected at the clerk's store.
    pub pickup_at: Option<String>,
    #[graphql(default_with = "ServiceLevel::Standard")]
    pub service_level: ServiceLevel,
    /// Up to 1,000 characters.
    pub note: Option<String>,
    /// The order's id where it came from (a marketplace, an offline POS): unique per channel,
    /// so the same external order is never created twice.
    pub external_ref: Option<String>,
    /// Channel-specific fields kept on the order (a JSON object of at most 16 KiB).
    pub extensions: Option<Json<serde_json::Value>>,
    /// The idempotency key, when the `Idempotency-Key` header is not sent.
    pub idempotency_key: Option<String>,
}

/// One stop of an order's history.
#[derive(SimpleObject)]
pub struct OrderEvent {
    pub from_status: Option<OrderStatus>,
    pub to_status: OrderStatus,
    pub actor: String,
    pub note: String,
    pub at: DateTime<Utc>,
}

#[derive(SimpleObject)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    /// Exact unit price (up to 4 decimals).
    pub unit_price: Money,
    pub line_total: Money,
    pub returned_quantity: i32,
    /// Why the price is what it is (lists and promotions applied).
    pub price_breakdown: Json<serde_json::Value>,
}

#[derive(SimpleObject)]
pub struct ShipmentLine {
    pub sku: String,
    pub quantity: i32,
    /// Not in stock when ordered: ships when it comes in.
    pub backordered: bool,
}

#[derive(SimpleObject)]
pub struct Shipment {
    pub id: ID,
    /// The location it ships from.
    pub location: String,
    pub status: ShipmentStatus,
    pub promised_ship_date: Option<NaiveDate>,
    /// Why routing chose this location.
    pub reasons: Vec<String>,
    pub lines: Vec<ShipmentLine>,
}

/// An order with its lines, shipments (its routing) and history.
pub struct Order {
    details: OrderDetails,
    codes: HashMap<i64, String>,
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        encode_id(Kind::Order, self.details.order.id)
    }

    async fn number(&self) -> &str {
        &self.details.order.number
    }

    async fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.details.order.status)
    }

    async fn currency(&self) -> &str {
        &self.details.order.currency
    }

    /// List prices before promotions.
    async fn subtotal(&self) -> Money {
        money(self.details.order.subtotal, &self.details.order.currency)
    }

    async fn discount_total(&self) -> Money {
        money(
            self.details.order.discount_total,
            &self.details.order.currency,
        )
    }

    async fn total(&self) -> Money {
        money(self.details.order.total, &self.details.order.currency)
    }

    async fn service_level(&self) -> ServiceLevel {
        match CoreServiceLevel::parse(&self.details.order.service_level) {
            Some(CoreServiceLevel::Express) => ServiceLevel::Express,
            Some(CoreServiceLevel::SameDay) => ServiceLevel::SameDay,
            _ => ServiceLevel::Standard,
        }
    }

    async fn external_ref(&self) -> Option<&str> {
        self.details.order.external_ref.as_deref()
    }

    async fn extensions(&self) -> Option<Json<serde_json::Value>> {
        self.details.order.extensions.clone().map(Json)
    }

    async fn note(&self) -> &str {
        &self.details.order.note
    }

    async fn ship_to(&self) -> Option<Json<serde_json::Value>> {
        self.details.order.shipping_address.clone().map(Json)
    }

    async fn pickup_at(&self) -> Option<&str> {
        self.details
            .order
            .pickup_location_id
            .and_then(|id| self.codes.get(&id))
            .map(String::as_str)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.details.order.created_at
    }

    async fn lines(&self) -> Vec<OrderLine> {
        let currency = &self.details.order.currency;
        self.details
            .lines
            .iter()
            .map(|l| OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: Money::unit(rust_decimal::Decimal::from(l.unit_price), currency),
                line_total: money(l.line_total, currency),
                returned_quantity: l.returned_quantity,
                price_breakdown: Json(l.price_breakdown.clone()),
            })
            .collect()
    }

    /// The fulfilment groups routing chose, with their reasons.
    async fn routing(&self) -> Vec<Shipment> {
        let sku_of: HashMap<i64, &str> = self
            .details
            .lines
            .iter()
            .map(|l| (l.id, l.sku.as_str()))
            .collect();
        self.details
            .shipments
            .iter()
            .map(|(s, parts)| Shipment {
                id: encode_id(Kind::Shipment, s.id),
                location: self.codes.get(&s.location_id).cloned().unwrap_or_default(),
                status: ShipmentStatus::parse(&s.status),
                promised_ship_date: s.promised_ship_date,
                reasons: s
                    .decision
                    .as_ref()
                    .and_then(|d| d.get("reasons"))
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default(),
                lines: parts
                    .iter()
                    .map(|p| ShipmentLine {
                        sku: sku_of
                            .get(&p.order_line_id)
                            .copied()
                            .unwrap_or("")
                            .to_owned(),
                        quantity: p.quantity,
                        backordered: p.backordered,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every status change, oldest first; never rewritten.
    async fn events(&self) -> Vec<OrderEvent> {
        self.details
            .events
            .iter()
            .map(|e| OrderEvent {
                from_status: e.from_status.as_deref().map(OrderStatus::parse),
                to_status: OrderStatus::parse(&e.to_status),
                actor: e.actor.clone(),
                note: e.note.clone(),
                at: e.created_at,
            })
            .collect()
    }
}

fn money(amount: commerce_core::money::StoredAmount, currency: &str) -> Money {
    Money::total(rust_decimal::Decimal::from(amount), currency)
}

/// Where an order is in its lifecycle.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Allocated,
    PartiallyFulfilled,
    Fulfilled,
    Delivered,
    Cancelled,
    Returned,
}

impl OrderStatus {
    fn parse(stored: &str) -> Self {
        match stored {
            "pending" => Self::Pending,
            "partially_fulfilled" => Self::PartiallyFulfilled,
            "fulfilled" => Self::Fulfilled,
            "delivered" => Self::Delivered,
            "cancelled" => Self::Cancelled,
            "returned" => Self::Returned,
            _ => Self::Allocated,
        }
    }

    fn stored(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allocated => "allocated",
            Self::PartiallyFulfilled => "partially_fulfilled",
            Self::Fulfilled => "fulfilled",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::Returned => "returned",
        }
    }
}

/// Where a shipment is.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShipmentStatus {
    /// Reserved, waiting to ship.
    Pending,
    /// Not in stock when ordered; ships once the location has the units.
    Backordered,
    Fulfilled,
    Cancelled,
}

impl ShipmentStatus {
    fn parse(stored: &str) -> Self {
        match stored {
            "backordered" => Self::Backordered,
            "fulfilled" => Self::Fulfilled,
            "cancelled" => Self::Cancelled,
            _ => Self::Pending,
        }
    }
}

/// A routing decision: the groups and why, and the locations left out.
#[derive(SimpleObject)]
pub struct FulfillmentPlan {
    pub groups: Vec<PlannedGroup>,
    /// Locations that could not take part, and why.
    pub excluded: Vec<ExcludedLocation>,
    pub currency: String,
    /// What the order would cost, with promotions.
    pub total: Money,
}

#[derive(SimpleObject)]
pub struct PlannedGroup {
    pub location: String,
    /// When it would ship; `null` for backordered units.
    pub ships_on: Option<NaiveDate>,
    pub lines: Vec<ShipmentLine>,
    pub reasons: Vec<String>,
}

#[derive(SimpleObject)]
pub struct ExcludedLocation {
    pub location: String,
    pub reason: String,
}

/// A page of orders, newest first.
#[derive(SimpleObject)]
pub struct OrderPage {
    pub nodes: Vec<Order>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// The routing decision for an order as it would be placed now, with its reasons and a
    /// promised ship date per group; reserves nothing.
    async fn plan_fulfillment(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<FulfillmentPlan> {
        let rc = request_context(ctx)?;
        let order = new_order(rc, input)?;
        let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
        let now = Utc::now();
        let planned = orders::plan_with(&rc.db, &rc.reads(), &rc.channel, &order, now)
            .await
            .map_err(|err| input_error(err, &skus))?;
        let currency = rc.channel.channel.currency.clone();
        let total: rust_decimal::Decimal = planned.lines.iter().map(|l| l.price.line_total).sum();
        let code_of = |id: i64| {
            planned
                .locations
                .get(&id)
                .map(|l| l.code.clone())
                .unwrap_or_default()
        };
        Ok(FulfillmentPlan {
            groups: planned
                .plan
                .groups
                .iter()
                .map(|g| PlannedGroup {
                    location: g.code.clone(),
                    ships_on: g.ships_on,
                    lines: g
                        .lines
                        .iter()
                        .map(|l| ShipmentLine {
                            sku: planned.lines[l.line].variant.sku.clone(),
                            quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                            backordered: l.backordered,
                        })
                        .collect(),
                    reasons: g.reasons.clone(),
                })
                .collect(),
            excluded: planned
                .plan
                .excluded
                .iter()
                .map(|e| ExcludedLocation {
                    location: if e.code.is_empty() {
                        code_of(e.location_id)
                    } else {
                        e.code.clone()
                    },
                    reason: e.reason.clone(),
                })
                .collect(),
            total: Money::total(total, &currency),
            currency,
        })
    }

    /// One order, if the viewer may see it (else `NOT_FOUND`, as for an order that does not
    /// exist).
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        let id = decode_id(Kind::Order, &id, "id").api()?;
        let order = visible_order(rc, id, "id").await?;
        shaped(rc, order).await
    }

    /// The viewer's orders (a company buyer: the company's; an admin: all), newest first,
    /// `first` 1 to 100 (default 20), optionally of one `status`.
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        status: Option<OrderStatus>,
    ) -> async_graphql::Result<OrderPage> {
        let rc = request_context(ctx)?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(ApiError::bad_input(
                "first",
                format!("must be between 1 and {MAX_PAGE}"),
            ))
            .api();
        }
        let after = after
            .map(|cursor| decode_id(Kind::Order, &ID(cursor), "after"))
            .transpose()
            .api()?;
        let mut query = scope(rc).await?;
        if let Some(after) = after {
            query = query.filter(order::Column::Id.lt(after));
        }
        if let Some(status) = status {
            query = query.filter(order::Column::Status.eq(status.stored()));
        }
        let mut rows = query
            .order_by_desc(order::Column::Id)
            .limit(first as u64 + 1)
            .all(&rc.db)
            .await
            .map_err(CoreError::from)
            .api()?;
        let has_next_page = rows.len() > first as usize;
        rows.truncate(first as usize);
        let end_cursor = rows
            .last()
            .filter(|_| has_next_page)
            .map(|o| encode_id(Kind::Order, o.id).0);
        // The whole page in a constant number of statements.
        let details = orders::details_many(&rc.db, rows).await.api()?;
        let codes = location_codes(rc, &details).await?;
        let nodes = details
            .into_iter()
            .map(|details| Order {
                details,
                codes: codes.clone(),
            })
            .collect();
        Ok(OrderPage {
            nodes,
            end_cursor,
            has_next_page,
        })
    }
}

/// The orders the viewer may see.
async fn scope(rc: &RequestContext) -> async_graphql::Result<sea_orm::Select<order::Entity>> {
    let query = order::Entity::find();
    if rc.viewer.admin {
        return Ok(query);
    }
    match (rc.viewer.role, &rc.viewer.customer) {
        (Some(Role::PosClerk), _) => {
            Ok(query.filter(order::Column::ChannelId.eq(rc.channel.channel.id)))
        }
        (Some(Role::B2bBuyer), Some(customer)) if customer.company_id.is_some() => {
            let colleagues: Vec<i64> = customer::Entity::find()
                .select_only()
                .column(customer::Column::Id)
                .filter(customer::Column::CompanyId.eq(customer.company_id))
                .into_tuple()
                .all(&rc.db)
                .await
                .map_err(CoreError::from)
                .api()?;
            Ok(query.filter(order::Column::CustomerId.is_in(colleagues)))
        }
        (_, Some(customer)) => Ok(query.filter(order::Column::CustomerId.eq(customer.id))),
        _ => Err(ApiError::Forbidden(
            "orders need a signed-in viewer (a token)".to_owned(),
        ))
        .api(),
    }
}

async fn visible_order(
    rc: &RequestContext,
    id: i64,
    field: &str,
) -> async_graphql::Result<order::Model> {
    scope(rc)
        .await?
        .filter(order::Column::Id.eq(id))
        .one(&rc.db)
        .await
        .map_err(CoreError::from)
        .api()?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no order {} for this viewer",
                encode_id(Kind::Order, id).0
            ))
            .extend()
            .extend_with(|_, ext| ext.set("field", field))
        })
}

async fn shaped(rc: &RequestContext, order: order::Model) -> async_graphql::Result<Order> {
    let details = orders::details(&rc.db, order).await.api()?;
    order_of(rc, details).await
}

async fn order_of(rc: &RequestContext, details: OrderDetails) -> async_graphql::Result<Order> {
    let codes = location_codes(rc, std::slice::from_ref(&details)).await?;
    Ok(Order { details, codes })
}

/// The codes of the locations the orders ship from or are collected at: one statement.
async fn location_codes(
    rc: &RequestContext,
    orders: &[OrderDetails],
) -> async_graphql::Result<HashMap<i64, String>> {
    let mut ids: Vec<i64> = orders
        .iter()
        .flat_map(|d| {
            d.shipments
                .iter()
                .map(|(s, _)| s.location_id)
                .chain(d.order.pickup_location_id)
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    // The request's channel knows its own locations; only others' are read.
    let mut codes: HashMap<i64, String> = rc
        .channel
        .locations
        .iter()
        .filter(|l| ids.contains(&l.location.id))
        .map(|l| (l.location.id, l.location.code.clone()))
        .collect();
    ids.retain(|id| !codes.contains_key(id));
    if !ids.is_empty() {
        codes.extend(
            stock_location::Entity::find()
                .filter(stock_location::Column::Id.is_in(ids))
                .all(&rc.db)
                .await
                .map_err(CoreError::from)
                .api()?
                .into_iter()
                .map(|l| (l.id, l.code)),
        );
    }
    Ok(codes)
}

fn order_error(err: OrderError) -> async_graphql::Error {
    match err {
        OrderError::Core(err) => ApiError::from(err).extend(),
        OrderError::Pricing { line, sku, error } => {
            super::pricing::pricing_error(error, &sku, &format!("input.lines[{line}].quantity"))
        }
        OrderError::UnknownSku { line, sku } => {
            let field = format!("input.lines[{line}].sku");
            ApiError::NotFound(format!("no variant {sku:?} on this channel ({field})"))
                .extend()
                .extend_with(move |_, ext| ext.set("field", field.as_str()))
        }
    }
}

/// Field names of the core's errors, as the input names them; shortages name their SKU.
fn input_error(err: OrderError, skus: &[String]) -> async_graphql::Error {
    match err {
        OrderError::Core(CoreError::InvalidInput { field, reason }) => {
            ApiError::bad_input(format!("input.{field}"), reason).extend()
        }
        OrderError::Core(CoreError::InsufficientStock { mut lines }) => {
            for line in &mut lines {
                line.field = format!("input.{}", line.field);
            }
            match ApiError::from(CoreError::InsufficientStock { lines }) {
                ApiError::InsufficientStock { mut lines } => {
                    for line in &mut lines {
                        // `input.lines[i].quantity` names the line.
                        line.sku = line
                            .field
                            .strip_prefix("input.lines[")
                            .and_then(|rest| rest.split(']').next())
                            .and_then(|i| i.parse::<usize>().ok())
                            .and_then(|i| skus.get(i))
                            .cloned();
                    }
                    ApiError::InsufficientStock { lines }.extend()
                }
                other => other.extend(),
            }
        }
        other => order_error(other),
    }
}

/// `err` as a GraphQL error, its shortages naming their SKUs and locations (a backordered
/// shipment's units are short at its location).
async fn named_shortages(rc: &RequestContext, err: CoreError) -> async_graphql::Error {
    let mut lines = match ApiError::from(err) {
        ApiError::InsufficientStock { lines } => lines,
        other => return other.extend(),
    };
    let ids: Vec<i64> = lines.iter().map(|l| l.variant_id).collect();
    let skus = commerce_core::inventory::replay::skus_of(&rc.db, &ids)
        .await
        .unwrap_or_default();
    let codes: HashMap<i64, String> = stock_location::Entity::find()
        .filter(stock_location::Column::Id.is_in(lines.iter().filter_map(|l| l.location_id)))
        .all(&rc.db)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.id, l.code))
        .collect();
    for line in &mut lines {
        line.sku = skus.get(&line.variant_id).cloned();
        line.location = line.location_id.and_then(|id| codes.get(&id).cloned());
    }
    ApiError::InsufficientStock { lines }.extend()
}

/// The order to plan or place, for this viewer.
fn new_order(rc: &RequestContext, input: PlaceOrderInput) -> async_graphql::Result<NewOrder> {
    let viewer = &rc.viewer;
    let placer = viewer.admin
        || matches!(
            viewer.role,
            Some(Role::Shopper | Role::B2bBuyer | Role::PosClerk)
        );
    if !placer {
        return Err(ApiError::Forbidden(
            "placing an order needs a token (shopper, b2b_buyer, pos_clerk or admin)".to_owned(),
        ))
        .api();
    }
    let clerk_store = viewer
        .store_id
        .filter(|_| viewer.role == Some(Role::PosClerk));
    let fulfilment = match (input.ship_to, input.pickup_at) {
        (Some(to), None) => {
            let point = match (to.latitude, to.longitude) {
                (Some(latitude), Some(longitude)) => Some(
                    GeoPoint {
                        latitude,
                        longitude,
                    }
                    .validate("input.shipTo")
                    .api()?,
                ),
                (None, None) => None,
                _ => {
                    return Err(ApiError::bad_input(
                        "input.shipTo",
                        "give both latitude and longitude, or neither",
                    ))
                    .api();
                }
            };
            Fulfilment::Ship {
                address: serde_json::json!({
                    "name": to.name, "line1": to.line1, "line2": to.line2, "city": to.city,
                    "postalCode": to.postal_code, "country": to.country, "region": to.region,
                }),
                region: to.region,
                point,
            }
        }
        (None, Some(code)) => Fulfilment::Pickup { location: code },
        (None, None) if clerk_store.is_some() => Fulfilment::Pickup {
            location: rc
                .channel
                .locations
                .iter()
                .find(|l| Some(l.location.id) == clerk_store)
                .map(|l| l.location.code.clone())
                .unwrap_or_default(),
        },
        _ => {
            return Err(ApiError::bad_input(
                "input.shipTo",
                "give exactly one of shipTo and pickupAt",
            ))
            .api();
        }
    };
    Ok(NewOrder {
        channel_id: rc.channel.channel.id,
        viewer: viewer.price_viewer(&rc.channel),
        customer_id: viewer.customer.as_ref().map(|c| c.id),
        lines: input
            .lines
            .into_iter()
            .map(|l| OrderLineInput {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect(),
        fulfilment,
        service_level: input.service_level.into(),
        note: input.note.unwrap_or_default(),
        external_ref: input.external_ref,
        extensions: input.extensions.map(|j| j.0),
        // Stored on the order per viewer (the order table's key is unique per channel): the
        // same key from two viewers is two orders.
        idempotency_key: rc
            .idempotency_key
            .clone()
            .or(input.idempotency_key)
            .filter(|key| !key.trim().is_empty() && key.len() <= 255)
            .map(|key| {
                use sha2::Digest;
                let subject = viewer.subject.as_deref().unwrap_or("anonymous");
                hex::encode(sha2::Sha256::digest(format!("{subject}\n{key}")))
            }),
        store: clerk_store,
        actor: viewer
            .subject
            .clone()
            .unwrap_or_else(|| "anonymous".to_owned()),
    })
}

fn admin_only(rc: &RequestContext, what: &str) -> async_graphql::Result<()> {
    if rc.viewer.admin {
        Ok(())
    } else {
        Err(needs_admin(what))
    }
}

fn needs_admin(what: &str) -> async_graphql::Error {
    ApiError::Forbidden(format!("{what} needs an admin token")).extend()
}

fn actor(rc: &RequestContext) -> String {
    rc.viewer
        .subject
        .clone()
        .unwrap_or_else(|| "anonymous".to_owned())
}

/// Announces what a committed order change did: its stock and its new status.
fn announce(
    rc: &RequestContext,
    details: &OrderDetails,
    change: &commerce_core::inventory::StockChange,
) {
    announce_on(&rc.bus, details, change);
}

/// [`announce`] on `bus` (the order batch writers announce their orders themselves).
pub(crate) fn announce_on(
    bus: &crate::bus::EventBus,
    details: &OrderDetails,
    change: &commerce_core::inventory::StockChange,
) {
    if let Some(event) = Event::stock_changed(change) {
        bus.publish(event);
    }
    bus.publish(Event::OrderStatusChanged {
        order_id: details.order.id,
        status: details.order.status.clone(),
    });
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places an order: prices every line for the viewer, routes it and reserves its stock
    /// in one transaction. Needs an idempotency key (`Idempotency-Key` header or
    /// `input.idempotencyKey`); an `externalRef` already placed on the channel returns that
    /// order unchanged.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        let order = new_order(rc, input)?;
        match &order.idempotency_key {
            Some(_) => {}
            None => {
                return Err(ApiError::bad_input(
                    "input.idempotencyKey",
                    "placeOrder needs an idempotency key: send an Idempotency-Key header or input.idempotencyKey (1 to 255 characters)",
                ))
                .api();
            }
        }
        let skus: Vec<String> = order.lines.iter().map(|l| l.sku.clone()).collect();
        // Prices from the read model when the request may use it (exact: every price change
        // reaches it before its mutation answers); stock always from the order's transaction.
        let now = Utc::now();
        let reads = rc.reads();
        let batched = match &rc.order_batches {
            // Priced here, placed with the orders that wait with it; anything the batch does
            // not place (a pricing error too) is placed alone below, which answers it.
            Some(batches) if order.lines.len() <= batch::MAX_LINES => {
                match PricedOrder::new(&reads, rc.channel.clone(), order.clone(), now).await {
                    Ok(priced) => batches.place(priced).await,
                    Err(_) => None,
                }
            }
            Some(_) => {
                metrics::counter!(ORDERS_PLACED_ALONE_TOTAL, "reason" => "lines").increment(1);
                None
            }
            None => None,
        };
        let placed = match batched {
            // Announced by its batch's writer, in the order the batch placed its orders (so
            // a level's versions reach `stockChanged` in order).
            Some(placed) => placed,
            None => {
                let placed = orders::place_with(&rc.db, &reads, &rc.channel, &order, now)
                    .await
                    .map_err(|err| input_error(err, &skus))?;
                if placed.created {
                    announce(rc, &placed.details, &placed.change);
                }
                placed
            }
        };
        order_of(rc, placed.details).await
    }

    /// Ships one shipment (its reserved units become sales; backordered units are sold from
    /// what is free at the location now). An admin, or a POS clerk for a shipment of their
    /// own store (the till hands the goods over).
    async fn fulfill_shipment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        let id = decode_id(Kind::Shipment, &id, "id").api()?;
        if !rc.viewer.admin {
            let clerk_store = rc
                .viewer
                .store_id
                .filter(|_| rc.viewer.role == Some(Role::PosClerk));
            let Some(store) = clerk_store else {
                return Err(needs_admin("fulfillShipment"));
            };
            let at_store = commerce_core::entities::shipment::Entity::find_by_id(id)
                .one(&rc.db)
                .await
                .map_err(CoreError::from)
                .api()?
                .is_some_and(|s| s.location_id == store);
            if !at_store {
                return Err(ApiError::Forbidden(
                    "a POS clerk may fulfil shipments of their own store only".to_owned(),
                ))
                .api();
            }
        }
        let (details, change) =
            match orders::fulfill_shipment(&rc.db, id, &actor(rc), Utc::now()).await {
                Ok(done) => done,
                Err(err) => return Err(named_shortages(rc, err).await),
            };
        announce(rc, &details, &change);
        order_of(rc, details).await
    }

    /// Marks a fulfilled order delivered.
    async fn mark_delivered(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        admin_only(rc, "markDelivered")?;
        let id = decode_id(Kind::Order, &id, "id").api()?;
        let details = orders::mark_delivered(&rc.db, id, &actor(rc), Utc::now())
            .await
            .api()?;
        announce(rc, &details, &Default::default());
        order_of(rc, details).await
    }

    /// Cancels an order that has not shipped; its stock is released. An admin, or the
    /// order's own customer.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        let id = decode_id(Kind::Order, &id, "id").api()?;
        if !rc.viewer.admin {
            // Not the viewer's: NOT_FOUND, as for an order that does not exist.
            visible_order(rc, id, "id").await?;
            if rc.viewer.customer.is_none() {
                return Err(needs_admin("cancelOrder"));
            }
        }
        let (details, change) = orders::cancel(&rc.db, id, &actor(rc), &reason, Utc::now())
            .await
            .api()?;
        announce(rc, &details, &change);
        order_of(rc, details).await
    }

    /// Takes shipped units back into stock (at the location they shipped from).
    async fn return_lines(
        &self,
        ctx: &Context<'_>,
        id: ID,
        lines: Vec<OrderLineRequest>,
        reason: String,
    ) -> async_graphql::Result<Order> {
        let rc = request_context(ctx)?;
        admin_only(rc, "returnLines")?;
        let id = decode_id(Kind::Order, &id, "id").api()?;
        let lines: Vec<OrderLineInput> = lines
            .into_iter()
            .map(|l| OrderLineInput {
                sku: l.sku,
                quantity: l.quantity,
            })
            .collect();
        let (details, change) =
            orders::return_lines(&rc.db, id, &lines, &actor(rc), &reason, Utc::now())
                .await
                .api()?;
        announce(rc, &details, &change);
        order_of(rc, details).await
    }
}

/// A status change of a watched order.
#[derive(SimpleObject, Clone)]
pub struct OrderStatusEvent {
    pub order_id: ID,
    pub status: OrderStatus,
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's status as it changes (placed, shipped, delivered, cancelled, returned), on
    /// any gateway of the cluster. Needs a viewer who may see the order.
    async fn order_status_changed(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = OrderStatusEvent> + use<>> {
        let rc = request_context(ctx)?;
        let id = decode_id(Kind::Order, &order_id, "orderId").api()?;
        let events = rc.bus.subscribe();
        visible_order(rc, id, "orderId").await?;
        Ok(futures_util::stream::unfold(
            events,
            move |mut events| async move {
                loop {
                    match events.recv().await {
                        Ok(Event::OrderStatusChanged { order_id, status }) if order_id == id => {
                            let event = OrderStatusEvent {
                                order_id: encode_id(Kind::Order, order_id),
                                status: OrderStatus::parse(&status),
                            };
                            return Some((event, events));
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

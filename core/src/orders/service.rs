//! The order service: plans, places and moves orders through their lifecycle.
//!
//! Placing an order prices every line for the viewer (quantity rules enforced; prices are read
//! just before the write transaction), then, in one write transaction with every ordered
//! variant locked (sorted, so two orders never wait on each other in a cycle): reads the
//! channel's stock, routes the lines ([`super::routing::route`]), reserves each group's units
//! at its location (owner: the order; no expiry), writes the order, its lines, shipments and
//! its first `order_event`. Any shortage (also one that appears between routing and the
//! conditional reservation UPDATE) rolls everything back: `INSUFFICIENT_STOCK`, nothing
//! written.
//!
//! Lifecycle (DESIGN.md §5): `allocated` → (`partially_fulfilled`) → `fulfilled` → `delivered`;
//! `cancelled` from `pending` or `allocated` (releases the reservations); `returned` once every
//! unit sold came back. Each transition appends an `order_event`, which is never updated or
//! deleted. An illegal transition is `CONFLICT`, naming the order's status.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use super::routing::{
    self, Candidate, Destination, LineRequest, Plan, RoutingRequest, RoutingSettings, ServiceLevel,
};
use crate::CoreError;
use crate::channels::ChannelPolicy;
use crate::entities::{
    order, order_event, order_line, product, reservation, shipment, shipment_line, stock_hold,
    stock_level, stock_location, variant,
};
use crate::error::StockShortage;
use crate::inventory::service::{
    Hold, Move, Owner, OwnerKind, StockChange, apply, finish, hold_at, in_write, level_or_new,
    load_policy_by_id, lock_variant, micros,
};
use crate::inventory::{GeoPoint, StockView, channel_availability};
use crate::money::StoredAmount;
use crate::pricing::load;
use crate::pricing::resolve::{
    PriceBreakdown, PriceCandidates, PriceViewer, PricedItem, PricingError, resolve_price,
};

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: i32 = 1_000_000;
/// Largest `extensions` object, in bytes of JSON.
pub const MAX_EXTENSIONS_BYTES: usize = 16 * 1024;
/// Longest `externalRef`.
pub const MAX_EXTERNAL_REF: usize = 128;
/// Longest note.
pub const MAX_NOTE: usize = 1000;

/// One line as ordered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLineInput {
    pub sku: String,
    pub quantity: i32,
}

/// Where the order goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Fulfilment {
    /// Shipped to an address in `region` (near `point`, when given: nearer locations win).
    Ship {
        address: serde_json::Value,
        region: String,
        point: Option<GeoPoint>,
    },
    /// Collected at a store, by its code.
    Pickup { location: String },
}

/// An order to plan or place.
#[derive(Clone, Debug)]
pub struct NewOrder {
    pub channel_id: i64,
    /// Who prices it (channel, customer, company, group).
    pub viewer: PriceViewer,
    pub customer_id: Option<i64>,
    pub lines: Vec<OrderLineInput>,
    pub fulfilment: Fulfilment,
    pub service_level: ServiceLevel,
    pub note: String,
    /// The order's id where it came from (unique per channel): the same one is never created
    /// twice.
    pub external_ref: Option<String>,
    /// Channel-specific fields (a JSON object, at most [`MAX_EXTENSIONS_BYTES`]).
    pub extensions: Option<serde_json::Value>,
    /// The idempotency key it was placed with.
    pub idempotency_key: Option<String>,
    /// A POS clerk's store: the sale is fulfilled there.
    pub store: Option<i64>,
    /// Who places it (for the ledger and the history).
    pub actor: String,
}

/// Why an order could not be planned or placed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A line names a SKU the channel does not sell.
    #[error("lines[{line}].sku: no variant {sku:?} on this channel")]
    UnknownSku { line: usize, sku: String },
    /// A line cannot be priced for the viewer (no price, or a quantity rule).
    #[error("lines[{line}] {sku}: {error}")]
    Pricing {
        line: usize,
        sku: String,
        error: PricingError,
    },
}

impl From<sea_orm::DbErr> for OrderError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Core(err.into())
    }
}

/// One priced line.
#[derive(Clone, Debug)]
pub struct PricedLine {
    pub variant: variant::Model,
    pub quantity: i32,
    pub price: PriceBreakdown,
}

/// A plan: the routing decision and the priced lines, nothing reserved.
#[derive(Clone, Debug)]
pub struct Planned {
    pub plan: Plan,
    pub lines: Vec<PricedLine>,
    /// Location codes by id (for the groups and exclusions).
    pub locations: HashMap<i64, stock_location::Model>,
}

/// An order as stored, with its parts.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderDetails {
    pub order: order::Model,
    pub lines: Vec<order_line::Model>,
    pub shipments: Vec<(shipment::Model, Vec<shipment_line::Model>)>,
    pub events: Vec<order_event::Model>,
}

/// What placing did.
#[derive(Debug)]
pub struct Placed {
    pub details: OrderDetails,
    /// The stock the order reserved (publish it once committed).
    pub change: StockChange,
    /// `false` when an order with the same `external_ref` existed: it is returned unchanged.
    pub created: bool,
}

/// The routing decision for `input` as it would be placed now, reserving nothing.
pub async fn plan(
    db: &DatabaseConnection,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Planned, OrderError> {
    let policy = load_policy_by_id(db, input.channel_id).await?;
    plan_for(db, &policy, input, now).await
}

/// [`plan`] with the channel's policy already loaded (the gateway has it per request).
pub async fn plan_for(
    db: &DatabaseConnection,
    policy: &ChannelPolicy,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Planned, OrderError> {
    plan_with(db, &load::FromDatabase(db), policy, input, now).await
}

/// [`plan_for`] with pricing's rows read from `inputs`.
pub async fn plan_with(
    db: &DatabaseConnection,
    inputs: &impl load::PriceInputs,
    policy: &ChannelPolicy,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Planned, OrderError> {
    check_for(policy, input)?;
    let lines = price(inputs, policy, input, now).await?;
    let (plan, locations, _) = route_lines(db, policy, input, &lines, now).await?;
    Ok(Planned {
        plan,
        lines,
        locations,
    })
}

/// Places the order (see the module documentation).
pub async fn place(
    db: &DatabaseConnection,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Placed, OrderError> {
    let policy = load_policy_by_id(db, input.channel_id).await?;
    place_for(db, &policy, input, now).await
}

/// [`place`] with the channel's policy already loaded (the gateway has it per request).
pub async fn place_for(
    db: &DatabaseConnection,
    policy: &ChannelPolicy,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Placed, OrderError> {
    place_with(db, &load::FromDatabase(db), policy, input, now).await
}

/// [`place_for`] with pricing's rows read from `inputs` (the stock is always read and written
/// in the order's transaction).
pub async fn place_with(
    db: &DatabaseConnection,
    inputs: &impl load::PriceInputs,
    policy: &ChannelPolicy,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Placed, OrderError> {
    check_for(policy, input)?;
    let now = micros(now);
    let placed = async {
        let lines = price(inputs, policy, input, now).await?;
        in_write(db, async |txn| {
            // The order and its lines first: they do not depend on the stock, so the
            // variants' locks below are held for as few statements as possible (and a
            // repeat of a placed order fails on its unique key before taking any).
            let head = write_head(txn, policy, input, &lines, now).await?;
            let mut variant_ids: Vec<i64> = lines.iter().map(|l| l.variant.id).collect();
            variant_ids.sort_unstable();
            for (i, id) in variant_ids.iter().enumerate() {
                lock_variant(txn, *id, &format!("lines[{i}].sku")).await?;
            }
            let (plan, _, levels) =
                route_lines(txn, policy, input, &lines, now)
                    .await
                    .map_err(|err| match err {
                        OrderError::Core(err) => err,
                        OrderError::Pricing { .. } | OrderError::UnknownSku { .. } => {
                            unreachable!("lines are priced before")
                        }
                    })?;
            write_routing(txn, policy, input, head, &plan, &levels, now).await
        })
        .await
        .map_err(OrderError::from)
    }
    .await;
    match placed {
        Ok(placed) => Ok(placed),
        // An order already placed under the reference or key (a repeat, or two placements of
        // one order at once: the order's insert then violates its unique index) is returned
        // instead of the error. Looked up only on failure, so a first placement reads nothing
        // more; and on any failure, so a repeat is answered its order even where placing it
        // again would fail now (its stock sold since, its SKU delisted).
        Err(err) if input.external_ref.is_some() || input.idempotency_key.is_some() => {
            match existing_order(db, policy, input).await? {
                Some(existing) => Ok(existing),
                None => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// [`check`], and that `policy` is the order's channel's.
pub(crate) fn check_for(policy: &ChannelPolicy, input: &NewOrder) -> Result<(), CoreError> {
    if policy.channel.id != input.channel_id {
        return Err(CoreError::invalid(
            "channel_id",
            "the policy is of another channel",
        ));
    }
    check(input)
}

fn check(input: &NewOrder) -> Result<(), CoreError> {
    if input.lines.is_empty() || input.lines.len() > MAX_LINES {
        return Err(CoreError::invalid(
            "lines",
            format!("give 1 to {MAX_LINES} lines, got {}", input.lines.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, line) in input.lines.iter().enumerate() {
        let sku = line.sku.trim();
        if sku.is_empty() || sku.chars().count() > crate::catalog::MAX_SKU_LEN {
            return Err(CoreError::invalid(
                format!("lines[{i}].sku"),
                format!("a SKU is 1 to {} characters", crate::catalog::MAX_SKU_LEN),
            ));
        }
        if !seen.insert(sku) {
            return Err(CoreError::invalid(
                format!("lines[{i}].sku"),
                format!("{sku} appears twice; put its whole quantity on one line"),
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(CoreError::invalid(
                format!("lines[{i}].quantity"),
                format!(
                    "must be between 1 and {MAX_QUANTITY}, got {}",
                    line.quantity
                ),
            ));
        }
    }
    if input.note.chars().count() > MAX_NOTE || input.note.contains('\0') {
        return Err(CoreError::invalid(
            "note",
            format!("at most {MAX_NOTE} characters, no NUL"),
        ));
    }
    if let Some(reference) = &input.external_ref {
        let reference = reference.trim();
        if reference.is_empty()
            || reference.chars().count() > MAX_EXTERNAL_REF
            || reference.chars().any(char::is_control)
        {
            return Err(CoreError::invalid(
                "externalRef",
                format!("1 to {MAX_EXTERNAL_REF} characters, no control characters"),
            ));
        }
    }
    if let Some(extensions) = &input.extensions {
        if !extensions.is_object() {
            return Err(CoreError::invalid("extensions", "must be a JSON object"));
        }
        let size = extensions.to_string().len();
        if size > MAX_EXTENSIONS_BYTES {
            return Err(CoreError::invalid(
                "extensions",
                format!("at most {MAX_EXTENSIONS_BYTES} bytes of JSON, got {size}"),
            ));
        }
    }
    match &input.fulfilment {
        Fulfilment::Ship {
            address, region, ..
        } => {
            if !address.is_object() || address.to_string().len() > 4096 {
                return Err(CoreError::invalid(
                    "shipTo",
                    "the address is a JSON object of at most 4096 bytes",
                ));
            }
            if region.trim().is_empty() {
                return Err(CoreError::invalid("shipTo.region", "must not be empty"));
            }
        }
        Fulfilment::Pickup { location } => {
            if location.trim().is_empty() {
                return Err(CoreError::invalid("pickupAt", "must name a store"));
            }
        }
    }
    Ok(())
}

/// The order already placed under the input's `external_ref` or idempotency key (both
/// unique per channel), if any.
async fn existing_order(
    db: &DatabaseConnection,
    policy: &ChannelPolicy,
    input: &NewOrder,
) -> Result<Option<Placed>, OrderError> {
    let mut found = None;
    if let Some(reference) = &input.external_ref {
        found = order::Entity::find()
            .filter(order::Column::ChannelId.eq(policy.channel.id))
            .filter(order::Column::ExternalRef.eq(reference.trim()))
            .one(db)
            .await?;
    }
    if found.is_none()
        && let Some(key) = &input.idempotency_key
    {
        found = order::Entity::find()
            .filter(order::Column::ChannelId.eq(policy.channel.id))
            .filter(order::Column::IdempotencyKey.eq(key.as_str()))
            .one(db)
            .await?;
    }
    let Some(order) = found else {
        return Ok(None);
    };
    // Never another viewer's order; and the same reference with other lines is a mistake, not
    // a repeat.
    let details = details(db, order).await?;
    let field = if input.external_ref.is_some() {
        "externalRef"
    } else {
        "idempotencyKey"
    };
    if details.order.customer_id != input.customer_id {
        return Err(
            CoreError::conflict(field, "already used on this channel by another order").into(),
        );
    }
    let mut placed: Vec<(String, i32)> = details
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    let mut asked: Vec<(String, i32)> = input
        .lines
        .iter()
        .map(|l| (l.sku.trim().to_owned(), l.quantity))
        .collect();
    placed.sort();
    asked.sort();
    if placed != asked {
        return Err(CoreError::conflict(
            field,
            format!(
                "order {} was placed under it with other lines; use a new reference for a new order",
                details.order.number
            ),
        )
        .into());
    }
    Ok(Some(Placed {
        details,
        change: StockChange::default(),
        created: false,
    }))
}

/// Prices every line for the viewer (quantity rules enforced).
pub(crate) async fn price(
    inputs: &impl load::PriceInputs,
    policy: &ChannelPolicy,
    input: &NewOrder,
    now: DateTime<Utc>,
) -> Result<Vec<PricedLine>, OrderError> {
    let skus: Vec<String> = input
        .lines
        .iter()
        .map(|l| l.sku.trim().to_owned())
        .collect();
    let variants = inputs.visible_variants(policy.channel.id, &skus).await?;
    let by_sku: HashMap<&str, &variant::Model> =
        variants.iter().map(|v| (v.sku.as_str(), v)).collect();
    for (i, sku) in skus.iter().enumerate() {
        if !by_sku.contains_key(sku.as_str()) {
            return Err(OrderError::UnknownSku {
                line: i,
                sku: sku.chars().take(64).collect(),
            });
        }
    }
    let lists = inputs.viewer_lists(&input.viewer).await?;
    let promotions = inputs.channel_promotions(policy.channel.id).await?;
    let list_ids: Vec<i64> = lists.iter().map(|l| l.id).collect();
    let variant_ids: Vec<i64> = variants.iter().map(|v| v.id).collect();
    let data = inputs.variant_price_data(&list_ids, &variant_ids).await?;
    // The products' categories only matter to promotions on a category.
    let (products, categories): (HashMap<i64, product::Model>, _) = if promotions.iter().any(|p| {
        matches!(
            p.target,
            crate::pricing::resolve::PromotionTarget::Category(_)
        )
    }) {
        let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
        let products = inputs
            .visible_products(policy.channel.id, &product_ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        (products, inputs.categories().await?)
    } else {
        (HashMap::new(), std::sync::Arc::default())
    };
    let mut priced = Vec::with_capacity(skus.len());
    for (i, (line, sku)) in input.lines.iter().zip(&skus).enumerate() {
        let variant = by_sku[sku.as_str()];
        let product_id = variant.product_id;
        let category_path = products
            .get(&product_id)
            .map(|p| load::category_path(&categories, p.category_id))
            .unwrap_or_default();
        let item = PricedItem {
            variant_id: variant.id,
            product_id,
            category_path,
        };
        let own = data.get(&variant.id).cloned().unwrap_or_default();
        let candidates = PriceCandidates {
            lists: &lists,
            entries: &own.entries,
            rules: &own.rules,
            promotions: &promotions,
        };
        let price = resolve_price(&item, line.quantity, &input.viewer, now, &candidates).map_err(
            |error| OrderError::Pricing {
                line: i,
                sku: sku.clone(),
                error,
            },
        )?;
        priced.push(PricedLine {
            variant: variant.clone(),
            quantity: line.quantity,
            price,
        });
    }
    Ok(priced)
}

/// Routes the priced lines over the channel's stock as it is on `conn` now.
async fn route_lines(
    conn: &impl ConnectionTrait,
    policy: &ChannelPolicy,
    input: &NewOrder,
    lines: &[PricedLine],
    now: DateTime<Utc>,
) -> Result<
    (
        Plan,
        HashMap<i64, stock_location::Model>,
        HashMap<(i64, i64), stock_level::Model>,
    ),
    OrderError,
> {
    let variant_ids: Vec<i64> = lines.iter().map(|l| l.variant.id).collect();
    let stock = read_stock(conn, &variant_ids).await?;
    let (plan, locations) = route_over(policy, input, lines, now, &stock)?;
    // The levels read, by (variant, location): under the order's locks they are what its
    // reservations update.
    let read_levels = stock
        .levels
        .into_values()
        .flatten()
        .map(|level| ((level.variant_id, level.location_id), level))
        .collect();
    Ok((plan, locations, read_levels))
}

/// The stock levels and holds of some variants, by variant id.
#[derive(Default)]
pub(crate) struct Stock {
    pub(crate) levels: HashMap<i64, Vec<stock_level::Model>>,
    pub(crate) holds: HashMap<i64, Vec<stock_hold::Model>>,
}

/// The levels and holds of the variants, each in id order.
pub(crate) async fn read_stock(
    conn: &impl ConnectionTrait,
    variant_ids: &[i64],
) -> Result<Stock, sea_orm::DbErr> {
    let mut stock = Stock::default();
    for level in stock_level::Entity::find()
        .filter(stock_level::Column::VariantId.is_in(variant_ids.iter().copied()))
        .order_by_asc(stock_level::Column::Id)
        .all(conn)
        .await?
    {
        stock
            .levels
            .entry(level.variant_id)
            .or_default()
            .push(level);
    }
    for hold in stock_hold::Entity::find()
        .filter(stock_hold::Column::VariantId.is_in(variant_ids.iter().copied()))
        .order_by_asc(stock_hold::Column::Id)
        .all(conn)
        .await?
    {
        stock.holds.entry(hold.variant_id).or_default().push(hold);
    }
    Ok(stock)
}

/// Routes the priced lines over `stock` (which holds every line's variant).
pub(crate) fn route_over(
    policy: &ChannelPolicy,
    input: &NewOrder,
    lines: &[PricedLine],
    now: DateTime<Utc>,
    stock: &Stock,
) -> Result<(Plan, HashMap<i64, stock_location::Model>), OrderError> {
    let mut candidates: Vec<Candidate> = policy
        .locations
        .iter()
        .map(|feed| Candidate {
            location_id: feed.location.id,
            code: feed.location.code.clone(),
            kind: feed.location.kind.clone(),
            region: feed.location.region.clone(),
            point: GeoPoint {
                latitude: feed.location.latitude,
                longitude: feed.location.longitude,
            },
            handling_hours: feed.location.handling_hours,
            cutoff: feed.location.cutoff_time.clone(),
            time_zone: feed.location.time_zone.clone(),
            priority: feed.priority,
            available: HashMap::new(),
        })
        .collect();
    // What the channel may take at each location, and in all (safety stock and other
    // channels' holds respected, as for a reservation).
    let mut channel_total: HashMap<i64, i64> = HashMap::new();
    for line in lines {
        let id = line.variant.id;
        let levels = stock.levels.get(&id).map_or(&[][..], Vec::as_slice);
        let holds = stock.holds.get(&id).map_or(&[][..], Vec::as_slice);
        let seen = channel_availability(policy, StockView::Exact, id, levels, holds);
        channel_total.insert(id, seen.available);
        for at in &seen.locations {
            if let Some(candidate) = candidates
                .iter_mut()
                .find(|c| c.location_id == at.location_id)
            {
                candidate.available.insert(id, at.sellable);
            }
        }
    }
    // The channel-wide safety stock (and other channels' location-less holds) cap what the
    // locations together may give: the lowest-priority locations give up the difference, so
    // routing sees exactly what the channel may sell (and backorders the rest where allowed).
    for line in lines {
        let cap = channel_total.get(&line.variant.id).copied().unwrap_or(0);
        let mut total: i64 = candidates
            .iter()
            .filter_map(|c| c.available.get(&line.variant.id))
            .sum();
        for candidate in candidates.iter_mut().rev() {
            if total <= cap {
                break;
            }
            if let Some(units) = candidate.available.get_mut(&line.variant.id) {
                let cut = Ord::min(*units, total - cap);
                *units -= cut;
                total -= cut;
            }
        }
    }
    let destination = match &input.fulfilment {
        Fulfilment::Ship { region, point, .. } => Destination::Ship {
            region: region.trim().to_owned(),
            point: *point,
        },
        Fulfilment::Pickup { location } => {
            let location = location.trim();
            let found = policy
                .locations
                .iter()
                .find(|l| l.location.code.eq_ignore_ascii_case(location))
                .ok_or_else(|| {
                    CoreError::invalid(
                        "pickupAt",
                        format!(
                            "{location:?} is not a store of channel {}",
                            policy.channel.code
                        ),
                    )
                })?;
            Destination::Pickup {
                location_id: found.location.id,
            }
        }
    };
    let requests: Vec<LineRequest> = lines
        .iter()
        .map(|l| LineRequest {
            variant_id: l.variant.id,
            sku: l.variant.sku.clone(),
            quantity: i64::from(l.quantity),
        })
        .collect();
    let request = RoutingRequest {
        lines: &requests,
        destination,
        service_level: input.service_level,
        now,
        store: input.store,
    };
    let settings = RoutingSettings::from_channel(&policy.channel);
    let plan = routing::route(&request, &settings, &candidates)?;
    // The channel-wide safety stock caps what the locations together may give.
    let mut shortages = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let taken: i64 = plan
            .groups
            .iter()
            .flat_map(|g| &g.lines)
            .filter(|l| l.line == i && !l.backordered)
            .map(|l| l.quantity)
            .sum();
        let total = channel_total.get(&line.variant.id).copied().unwrap_or(0);
        if taken > total && !settings.backorders {
            shortages.push(StockShortage {
                field: format!("lines[{i}].quantity"),
                variant_id: line.variant.id,
                location_id: None,
                requested: i64::from(line.quantity),
                available: total,
            });
        }
    }
    if !shortages.is_empty() {
        return Err(CoreError::InsufficientStock { lines: shortages }.into());
    }
    let locations = policy
        .locations
        .iter()
        .map(|l| (l.location.id, l.location.clone()))
        .collect();
    Ok((plan, locations))
}

/// Writes the order and its lines.
async fn write_head(
    txn: &DatabaseTransaction,
    policy: &ChannelPolicy,
    input: &NewOrder,
    lines: &[PricedLine],
    now: DateTime<Utc>,
) -> Result<(order::Model, Vec<order_line::Model>), CoreError> {
    let (order, line_rows) = head_rows(policy, input, lines, now)?;
    let order = order.insert(txn).await?;
    let mut written = Vec::with_capacity(line_rows.len());
    for mut row in line_rows {
        row.order_id = Set(order.id);
        written.push(row.insert(txn).await?);
    }
    Ok((order, written))
}

/// The order's row and its lines' rows (their `order_id` not set), as placing writes them.
pub(crate) fn head_rows(
    policy: &ChannelPolicy,
    input: &NewOrder,
    lines: &[PricedLine],
    now: DateTime<Utc>,
) -> Result<(order::ActiveModel, Vec<order_line::ActiveModel>), CoreError> {
    let currency = policy.channel.currency.clone();
    let subtotal: rust_decimal::Decimal = lines.iter().map(|l| l.price.list_line_total).sum();
    let total: rust_decimal::Decimal = lines.iter().map(|l| l.price.line_total).sum();
    let amount = |value: rust_decimal::Decimal, field: &str| {
        StoredAmount::try_from(value).map_err(|err| CoreError::invalid(field, err.to_string()))
    };
    let number = order_number(&policy.channel.code);
    let (address, pickup) = match &input.fulfilment {
        Fulfilment::Ship { address, .. } => (Some(address.clone()), None),
        Fulfilment::Pickup { location } => (
            None,
            policy
                .locations
                .iter()
                .find(|l| l.location.code.eq_ignore_ascii_case(location.trim()))
                .map(|l| l.location.id),
        ),
    };
    let order = order::ActiveModel {
        number: Set(number),
        channel_id: Set(policy.channel.id),
        customer_id: Set(input.customer_id),
        idempotency_key: Set(input.idempotency_key.clone()),
        request_hash: Set(None),
        status: Set("allocated".to_owned()),
        currency: Set(currency),
        subtotal: Set(amount(subtotal, "lines")?),
        discount_total: Set(amount(subtotal - total, "lines")?),
        total: Set(amount(total, "lines")?),
        service_level: Set(input.service_level.as_str().to_owned()),
        shipping_address: Set(address),
        pickup_location_id: Set(pickup),
        external_ref: Set(input.external_ref.as_ref().map(|r| r.trim().to_owned())),
        extensions: Set(input.extensions.clone()),
        note: Set(input.note.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    let mut line_rows = Vec::with_capacity(lines.len());
    for line in lines {
        line_rows.push(order_line::ActiveModel {
            variant_id: Set(line.variant.id),
            sku: Set(line.variant.sku.clone()),
            quantity: Set(line.quantity),
            unit_price: Set(amount(line.price.unit_price, "lines")?),
            line_total: Set(amount(line.price.line_total, "lines")?),
            price_breakdown: Set(serde_json::to_value(&line.price).unwrap_or_default()),
            returned_quantity: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        });
    }
    Ok((order, line_rows))
}

/// Writes the order's reservations, shipments and first event, as `plan` routed it over the
/// `levels` read under the variants' locks.
async fn write_routing(
    txn: &DatabaseTransaction,
    policy: &ChannelPolicy,
    input: &NewOrder,
    (order, line_rows): (order::Model, Vec<order_line::Model>),
    plan: &Plan,
    levels: &HashMap<(i64, i64), stock_level::Model>,
    now: DateTime<Utc>,
) -> Result<Placed, CoreError> {
    let number = order.number.clone();
    let mut change = StockChange::default();
    let owner = Owner {
        kind: OwnerKind::Order,
        reference: number.clone(),
    };
    let mut shipments = Vec::with_capacity(plan.groups.len());
    for group in &plan.groups {
        let row = shipment_row(order.id, input, group, now)
            .insert(txn)
            .await?;
        let mut rows = Vec::with_capacity(group.lines.len());
        for part in &group.lines {
            let units = i32::try_from(part.quantity).expect("at most a line's i32 quantity");
            if !part.backordered {
                let level = match levels.get(&(part.variant_id, group.location_id)) {
                    Some(level) => level.clone(),
                    None => level_or_new(txn, part.variant_id, group.location_id, now).await?,
                };
                hold_at(
                    txn,
                    &level,
                    Hold {
                        units,
                        ..order_hold(policy, input, &owner)
                    },
                    now,
                    &format!("lines[{}].quantity", part.line),
                    &mut change,
                )
                .await?;
            }
            rows.push(
                shipment_line_row(row.id, line_rows[part.line].id, part, now)
                    .insert(txn)
                    .await?,
            );
        }
        shipments.push((row, rows));
    }
    let event = placed_event(order.id, input, plan, now).insert(txn).await?;
    Ok(Placed {
        details: OrderDetails {
            order,
            lines: line_rows,
            shipments,
            events: vec![event],
        },
        change,
        created: true,
    })
}

/// The shipment row of one routing group.
pub(crate) fn shipment_row(
    order_id: i64,
    input: &NewOrder,
    group: &routing::Group,
    now: DateTime<Utc>,
) -> shipment::ActiveModel {
    let backorder = group.lines.iter().all(|l| l.backordered);
    shipment::ActiveModel {
        order_id: Set(order_id),
        location_id: Set(group.location_id),
        service_level: Set(input.service_level.as_str().to_owned()),
        status: Set(if backorder { "backordered" } else { "pending" }.to_owned()),
        decision: Set(Some(json!({
            "location": group.code,
            "reasons": group.reasons,
            "shipsOn": group.ships_on,
        }))),
        promised_ship_date: Set(group.ships_on),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// The shipment line of one part of a routing group.
pub(crate) fn shipment_line_row(
    shipment_id: i64,
    order_line_id: i64,
    part: &routing::GroupLine,
    now: DateTime<Utc>,
) -> shipment_line::ActiveModel {
    shipment_line::ActiveModel {
        shipment_id: Set(shipment_id),
        order_line_id: Set(order_line_id),
        quantity: Set(i32::try_from(part.quantity).expect("at most a line's i32 quantity")),
        backordered: Set(part.backordered),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// What an order's reservation holds (its units are set per part).
pub(crate) fn order_hold<'a>(
    policy: &ChannelPolicy,
    input: &'a NewOrder,
    owner: &'a Owner,
) -> Hold<'a> {
    Hold {
        channel_id: policy.channel.id,
        units: 0,
        owner,
        expires_at: None,
        actor: &input.actor,
        reason: "order",
        reference: Some(format!("order:{}", owner.reference)),
    }
}

/// The order's first event: placed, with its routing.
pub(crate) fn placed_event(
    order_id: i64,
    input: &NewOrder,
    plan: &Plan,
    now: DateTime<Utc>,
) -> order_event::ActiveModel {
    event_row(
        order_id,
        None,
        "allocated",
        &input.actor,
        "placed",
        Some(json!({ "routing": plan })),
        now,
    )
}

/// A new order number: the channel's code and 16 random hex digits
/// (`WEB-7F3A9C21B4E05D18`; at most 25 characters).
fn order_number(channel: &str) -> String {
    let prefix: String = channel
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    let random = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase();
    format!("{prefix}-{}", &random[..16])
}

/// An `order_event` row (appended, never changed).
fn event_row(
    order_id: i64,
    from: Option<&str>,
    to: &str,
    actor: &str,
    note: &str,
    data: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> order_event::ActiveModel {
    order_event::ActiveModel {
        order_id: Set(order_id),
        from_status: Set(from.map(str::to_owned)),
        to_status: Set(to.to_owned()),
        actor: Set(actor.to_owned()),
        note: Set(note.to_owned()),
        data: Set(data),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// The order with its lines, shipments and history.
pub async fn details(
    conn: &impl ConnectionTrait,
    order: order::Model,
) -> Result<OrderDetails, CoreError> {
    Ok(details_many(conn, vec![order])
        .await?
        .pop()
        .expect("one order in, one out"))
}

/// Several orders with their lines, shipments and histories, in the order given: four
/// statements for any number of orders.
pub async fn details_many(
    conn: &impl ConnectionTrait,
    orders: Vec<order::Model>,
) -> Result<Vec<OrderDetails>, CoreError> {
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    let mut lines: HashMap<i64, Vec<order_line::Model>> = HashMap::new();
    for line in order_line::Entity::find()
        .filter(order_line::Column::OrderId.is_in(ids.iter().copied()))
        .order_by_asc(order_line::Column::Id)
        .all(conn)
        .await?
    {
        lines.entry(line.order_id).or_default().push(line);
    }
    let shipments = shipment::Entity::find()
        .filter(shipment::Column::OrderId.is_in(ids.iter().copied()))
        .order_by_asc(shipment::Column::Id)
        .all(conn)
        .await?;
    let mut parts: HashMap<i64, Vec<shipment_line::Model>> = HashMap::new();
    for part in shipment_line::Entity::find()
        .filter(shipment_line::Column::ShipmentId.is_in(shipments.iter().map(|s| s.id)))
        .order_by_asc(shipment_line::Column::Id)
        .all(conn)
        .await?
    {
        parts.entry(part.shipment_id).or_default().push(part);
    }
    let mut shipments_of: HashMap<i64, Vec<(shipment::Model, Vec<shipment_line::Model>)>> =
        HashMap::new();
    for shipment in shipments {
        let own = parts.remove(&shipment.id).unwrap_or_default();
        shipments_of
            .entry(shipment.order_id)
            .or_default()
            .push((shipment, own));
    }
    let mut events: HashMap<i64, Vec<order_event::Model>> = HashMap::new();
    for event in order_event::Entity::find()
        .filter(order_event::Column::OrderId.is_in(ids.iter().copied()))
        .order_by_asc(order_event::Column::Id)
        .all(conn)
        .await?
    {
        events.entry(event.order_id).or_default().push(event);
    }
    Ok(orders
        .into_iter()
        .map(|order| OrderDetails {
            lines: lines.remove(&order.id).unwrap_or_default(),
            shipments: shipments_of.remove(&order.id).unwrap_or_default(),
            events: events.remove(&order.id).unwrap_or_default(),
            order,
        })
        .collect())
}

/// The order with `id`; `NotFound` naming `field` when there is none.
pub async fn find(
    conn: &impl ConnectionTrait,
    id: i64,
    field: &str,
) -> Result<order::Model, CoreError> {
    order::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::NotFound {
            entity: "order",
            key: format!("{id} ({field})"),
        })
}

/// The order locked for a transition: its variants locked in order (as placing does), then
/// the order re-read inside the transaction.
async fn locked_order(
    txn: &DatabaseTransaction,
    id: i64,
    field: &str,
) -> Result<OrderDetails, CoreError> {
    let order = find(txn, id, field).await?;
    let details = details(txn, order).await?;
    let mut variant_ids: Vec<i64> = details.lines.iter().map(|l| l.variant_id).collect();
    variant_ids.sort_unstable();
    variant_ids.dedup();
    for variant_id in variant_ids {
        lock_variant(txn, variant_id, field).await?;
    }
    let order = find(txn, id, field).await?;
    crate::orders::service::details(txn, order).await
}

fn illegal(order: &order::Model, action: &str) -> CoreError {
    CoreError::conflict(
        "id",
        format!(
            "order {} is {}: it cannot be {action}",
            order.number, order.status
        ),
    )
}

async fn set_status(
    txn: &DatabaseTransaction,
    order: &order::Model,
    to: &str,
    actor: &str,
    note: &str,
    data: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<(), CoreError> {
    if order.status != to {
        order::Entity::update_many()
            .col_expr(order::Column::Status, Expr::value(to))
            .col_expr(order::Column::UpdatedAt, Expr::value(now))
            .filter(order::Column::Id.eq(order.id))
            .exec(txn)
            .await?;
    }
    event_row(order.id, Some(&order.status), to, actor, note, data, now)
        .insert(txn)
        .await?;
    Ok(())
}

/// The order's active reservations at `location_id` for `variant_id`.
async fn order_reservations(
    txn: &DatabaseTransaction,
    number: &str,
    variant_id: Option<i64>,
    location_id: Option<i64>,
) -> Result<Vec<reservation::Model>, CoreError> {
    let mut query = reservation::Entity::find()
        .filter(reservation::Column::OwnerKind.eq("order"))
        .filter(reservation::Column::OwnerRef.eq(number))
        .filter(reservation::Column::State.eq("active"));
    if let Some(variant_id) = variant_id {
        query = query.filter(reservation::Column::VariantId.eq(variant_id));
    }
    if let Some(location_id) = location_id {
        query = query.filter(reservation::Column::LocationId.eq(location_id));
    }
    Ok(query.order_by_asc(reservation::Column::Id).all(txn).await?)
}

/// Ships one shipment: its reserved units become sales (movement `sale`). The order becomes
/// `partially_fulfilled`, or `fulfilled` once every shipment has gone.
pub async fn fulfill_shipment(
    db: &DatabaseConnection,
    shipment_id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(OrderDetails, StockChange), CoreError> {
    let now = micros(now);
    in_write(db, async |txn| {
        let target = shipment::Entity::find_by_id(shipment_id)
            .one(txn)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                entity: "shipment",
                key: format!("{shipment_id} (shipmentId)"),
            })?;
        let details = locked_order(txn, target.order_id, "shipmentId").await?;
        let order = &details.order;
        if !matches!(order.status.as_str(), "allocated" | "partially_fulfilled") {
            return Err(illegal(order, "fulfilled"));
        }
        let (shipment, parts) = details
            .shipments
            .iter()
            .find(|(s, _)| s.id == shipment_id)
            .expect("the shipment belongs to its order");
        match shipment.status.as_str() {
            "pending" | "backordered" => {}
            other => {
                return Err(CoreError::conflict(
                    "id",
                    format!("the shipment is {other}"),
                ));
            }
        }
        let mut change = StockChange::default();
        // Backordered units ship from what is free at the location now (a restock): sold
        // straight from on hand, never from others' reservations.
        for part in parts.iter().filter(|p| p.backordered) {
            let line = details
                .lines
                .iter()
                .find(|l| l.id == part.order_line_id)
                .expect("shipment lines point at the order's lines");
            let level = level_or_new(txn, line.variant_id, shipment.location_id, now).await?;
            apply(
                txn,
                &level,
                Move {
                    kind: "sale",
                    on_hand: -part.quantity,
                    reserved: 0,
                    actor,
                    reason: "backorder shipped",
                    reference: Some(format!("order:{}", order.number)),
                },
                now,
                "id",
                &mut change,
            )
            .await?;
        }
        for part in parts.iter().filter(|p| !p.backordered) {
            let line = details
                .lines
                .iter()
                .find(|l| l.id == part.order_line_id)
                .expect("shipment lines point at the order's lines");
            let rows = order_reservations(
                txn,
                &order.number,
                Some(line.variant_id),
                Some(shipment.location_id),
            )
            .await?;
            for row in rows {
                finish(
                    txn,
                    row,
                    "consumed",
                    "sale",
                    actor,
                    "shipped",
                    format!("order:{}", order.number),
                    now,
                    &mut change,
                )
                .await?;
            }
        }
        shipment::Entity::update_many()
            .col_expr(shipment::Column::Status, Expr::value("fulfilled"))
            .col_expr(shipment::Column::UpdatedAt, Expr::value(now))
            .filter(shipment::Column::Id.eq(shipment_id))
            .exec(txn)
            .await?;
        let open = details
            .shipments
            .iter()
            .filter(|(s, _)| s.id != shipment_id && s.status != "fulfilled")
            .count();
        let to = if open == 0 {
            "fulfilled"
        } else {
            "partially_fulfilled"
        };
        set_status(
            txn,
            order,
            to,
            actor,
            "shipment fulfilled",
            Some(json!({ "shipment": shipment_id })),
            now,
        )
        .await?;
        let order = find(txn, order.id, "shipmentId").await?;
        Ok((self::details(txn, order).await?, change))
    })
    .await
}

/// Marks a fulfilled order delivered.
pub async fn mark_delivered(
    db: &DatabaseConnection,
    order_id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<OrderDetails, CoreError> {
    let now = micros(now);
    in_write(db, async |txn| {
        let details = locked_order(txn, order_id, "id").await?;
        if details.order.status != "fulfilled" {
            return Err(illegal(
                &details.order,
                "marked delivered (only a fulfilled one can)",
            ));
        }
        set_status(
            txn,
            &details.order,
            "delivered",
            actor,
            "delivered",
            None,
            now,
        )
        .await?;
        let order = find(txn, order_id, "id").await?;
        self::details(txn, order).await
    })
    .await
}

/// Cancels an order not shipped yet: its reservations are released.
pub async fn cancel(
    db: &DatabaseConnection,
    order_id: i64,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(OrderDetails, StockChange), CoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(CoreError::invalid("reason", "1 to 500 characters"));
    }
    let now = micros(now);
    in_write(db, async |txn| {
        let details = locked_order(txn, order_id, "id").await?;
        // A partly shipped order cancels what has not shipped (its shipped units stay sold;
        // they come back with returnLines).
        if !matches!(
            details.order.status.as_str(),
            "pending" | "allocated" | "partially_fulfilled"
        ) {
            return Err(illegal(&details.order, "cancelled"));
        }
        let mut change = StockChange::default();
        for row in order_reservations(txn, &details.order.number, None, None).await? {
            finish(
                txn,
                row,
                "released",
                "release",
                actor,
                "order cancelled",
                format!("order:{}", details.order.number),
                now,
                &mut change,
            )
            .await?;
        }
        shipment::Entity::update_many()
            .col_expr(shipment::Column::Status, Expr::value("cancelled"))
            .col_expr(shipment::Column::UpdatedAt, Expr::value(now))
            .filter(shipment::Column::OrderId.eq(order_id))
            .filter(shipment::Column::Status.ne("fulfilled"))
            .exec(txn)
            .await?;
        set_status(txn, &details.order, "cancelled", actor, reason, None, now).await?;
        let order = find(txn, order_id, "id").await?;
        Ok((self::details(txn, order).await?, change))
    })
    .await
}

/// Returns sold units: each back on hand (movement `return`) at the location it shipped
/// from. The order becomes `returned` once every unit sold is back.
pub async fn return_lines(
    db: &DatabaseConnection,
    order_id: i64,
    lines: &[OrderLineInput],
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(OrderDetails, StockChange), CoreError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(CoreError::invalid("reason", "1 to 500 characters"));
    }
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(CoreError::invalid(
            "lines",
            format!("give 1 to {MAX_LINES} lines"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if !seen.insert(line.sku.trim()) {
            return Err(CoreError::invalid(
                format!("lines[{i}].sku"),
                format!(
                    "{} appears twice; put its whole quantity on one line",
                    line.sku.trim()
                ),
            ));
        }
    }
    let now = micros(now);
    in_write(db, async |txn| {
        let details = locked_order(txn, order_id, "id").await?;
        let order = &details.order;
        let shipped_any = details
            .shipments
            .iter()
            .any(|(s, _)| s.status == "fulfilled");
        match order.status.as_str() {
            "partially_fulfilled" | "fulfilled" | "delivered" => {}
            // A cancelled order keeps what it shipped before the cancel: it can come back.
            "cancelled" if shipped_any => {}
            "returned" => return Err(illegal(order, "returned again: every unit is back")),
            _ => return Err(illegal(order, "returned: nothing of it has shipped")),
        }
        let mut change = StockChange::default();
        for (i, wanted) in lines.iter().enumerate() {
            let field = format!("lines[{i}]");
            let line = details
                .lines
                .iter()
                .find(|l| l.sku == wanted.sku.trim())
                .ok_or_else(|| {
                    CoreError::invalid(
                        format!("{field}.sku"),
                        format!("{} is not a line of order {}", wanted.sku.trim(), order.number),
                    )
                })?;
            // Units shipped of this line, by location.
            let mut shipped: Vec<(i64, i32)> = Vec::new();
            for (shipment, parts) in &details.shipments {
                if shipment.status != "fulfilled" {
                    continue;
                }
                // Backordered units count once their shipment has gone (sold from a restock).
                for part in parts.iter().filter(|p| p.order_line_id == line.id) {
                    shipped.push((shipment.location_id, part.quantity));
                }
            }
            let sold: i32 = shipped.iter().map(|(_, q)| q).sum();
            let returnable = sold - line.returned_quantity;
            if wanted.quantity < 1 || wanted.quantity > returnable {
                return Err(CoreError::invalid(
                    format!("{field}.quantity"),
                    format!("1 to {returnable} units of {} can be returned", line.sku),
                ));
            }
            // Units come back where they shipped from, in shipment order: the first
            // `returned_quantity` units of the list are back already.
            let mut skip = line.returned_quantity;
            let mut left = wanted.quantity;
            for (location_id, units) in &shipped {
                let here = Ord::min(Ord::max(units - skip, 0), left);
                skip = Ord::max(skip - units, 0);
                if here == 0 {
                    continue;
                }
                left -= here;
                let level = level_or_new(txn, line.variant_id, *location_id, now).await?;
                apply(
                    txn,
                    &level,
                    Move {
                        kind: "return",
                        on_hand: here,
                        reserved: 0,
                        actor,
                        reason,
                        reference: Some(format!("order:{}", order.number)),
                    },
                    now,
                    &format!("{field}.quantity"),
                    &mut change,
                )
                .await?;
            }
            order_line::Entity::update_many()
                .col_expr(
                    order_line::Column::ReturnedQuantity,
                    Expr::col(order_line::Column::ReturnedQuantity).add(wanted.quantity),
                )
                .col_expr(order_line::Column::UpdatedAt, Expr::value(now))
                .filter(order_line::Column::Id.eq(line.id))
                .exec(txn)
                .await?;
        }
        let after = order_line::Entity::find()
            .filter(order_line::Column::OrderId.eq(order.id))
            .all(txn)
            .await?;
        let everything_back = !matches!(order.status.as_str(), "partially_fulfilled" | "cancelled")
            && after.iter().all(|l| l.returned_quantity >= l.quantity);
        let to = if everything_back {
            "returned"
        } else {
            order.status.as_str()
        };
        set_status(
            txn,
            order,
            to,
            actor,
            reason,
            Some(json!({ "returned": lines.iter().map(|l| json!({"sku": l.sku, "quantity": l.quantity})).collect::<Vec<_>>() })),
            now,
        )
        .await?;
        let order = find(txn, order_id, "id").await?;
        Ok((self::details(txn, order).await?, change))
    })
    .await
}

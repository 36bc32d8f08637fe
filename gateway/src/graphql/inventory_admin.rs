//! Stock mutations (issue 13): receiving, adjusting and transferring stock, and reserving
//! stock for carts.
//!
//! * `receiveStock`, `adjustStock` and `transferStock` are for admins, and for a POS clerk at
//!   their own store only (`viewer.store_id`; a transfer's `from` must be it); anyone else
//!   gets `FORBIDDEN` before any write.
//! * `reserveStock` holds units of a SKU for the request's channel (its locations, holds and
//!   safety stock; a POS clerk's units come from their store) for a cart: anonymous shoppers
//!   name their cart with `ownerToken`, signed-in viewers may leave it out (the reservation
//!   is then theirs). `extendReservation` and `releaseReservation` are for the same owner
//!   only (`FORBIDDEN` otherwise).
//! * `commitReservation` turns an active reservation into a sale (movement `sale`): its owner
//!   may, an admin may, and a POS clerk may for reservations at their own store (the till
//!   sells); anyone else gets `FORBIDDEN` before any write.
//! * `returnStock` takes returned units back into stock (movement `return`), for admins
//!   anywhere and POS clerks at their own store.
//! * `setStockHold` (admin only) keeps units of a SKU for one channel, at one location or
//!   anywhere, which other channels can neither sell nor reserve; quantity 0 removes the hold.
//!   A hold changes no stock level, so it writes no ledger entry; it publishes
//!   [`Event::StockHoldsChanged`] (availability changed).
//! * Each calls one core function of [`commerce_core::inventory`], which validates and
//!   writes (ledger included) in one transaction; once it has committed, the changed levels
//!   are published as [`Event::StockChanged`]. A failed mutation changes and publishes
//!   nothing.
//!
//! Errors: bad values are `BAD_USER_INPUT` with `extensions.field` (`input.quantity`); an
//! unknown SKU, location or reservation is `NOT_FOUND` with `extensions.field`; too little
//! stock is `INSUFFICIENT_STOCK` with `extensions.shortages` (each line's requested and
//! available units); a reservation no longer active (released, expired) is `CONFLICT`.

use async_graphql::{Context, ErrorExtensions, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use commerce_core::CoreError;
use commerce_core::entities::{channel, reservation, stock_level, stock_location, variant};
use commerce_core::inventory::{self, Lifetime, Owner, OwnerKind, StockChange};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::ids::{Kind, decode_id, encode_id};
use super::{RequestContext, request_context};
use crate::auth::Role;
use crate::bus::Event;
use crate::errors::{ApiError, ApiResultExt};

/// Longest `ownerToken` (the stored owner reference adds a short prefix).
pub const MAX_OWNER_TOKEN_LEN: usize = 100;

/// The stock mutations.
#[derive(Default)]
pub struct InventoryMutation;

/// Units of a SKU arriving at a location.
#[derive(InputObject)]
pub struct ReceiveStockInput {
    pub sku: String,
    /// The location's code, e.g. `WH-EAST`.
    pub location: String,
    /// 1 to 1,000,000 units.
    pub quantity: i32,
    /// Why; default `received`.
    pub reason: Option<String>,
    /// An outside reference such as a purchase order.
    pub reference: Option<String>,
}

/// A correction of the counted stock of a SKU at a location.
#[derive(InputObject)]
pub struct AdjustStockInput {
    pub sku: String,
    /// The location's code.
    pub location: String,
    /// Units added (positive) or removed (negative); never zero.
    pub delta: i32,
    /// Why (damage, count correction, …); required.
    pub reason: String,
}

/// Unreserved units of a SKU moving between two locations.
#[derive(InputObject)]
pub struct TransferStockInput {
    pub sku: String,
    /// The code of the location the units leave.
    pub from: String,
    /// The code of the location they arrive at; not `from`.
    pub to: String,
    /// 1 to 1,000,000 units.
    pub quantity: i32,
    pub reason: Option<String>,
}

/// Returned units of a SKU taken back into stock at a location.
#[derive(InputObject)]
pub struct ReturnStockInput {
    pub sku: String,
    /// The location's code.
    pub location: String,
    /// 1 to 1,000,000 units.
    pub quantity: i32,
    /// Why (customer return, unsold POS basket, …); required.
    pub reason: String,
    /// An outside reference such as a return number.
    pub reference: Option<String>,
}

/// Units of a SKU kept for one channel.
#[derive(InputObject)]
pub struct SetStockHoldInput {
    pub sku: String,
    /// The channel's code, e.g. `pos`.
    pub channel: String,
    /// The code of the location the units are kept at; leave it out to keep them across all
    /// locations.
    pub location: Option<String>,
    /// 0 to 1,000,000 units; 0 removes the hold.
    pub quantity: i32,
}

/// Units of a SKU kept for one channel: other channels can neither sell nor reserve them.
#[derive(SimpleObject)]
pub struct StockHold {
    pub sku: String,
    /// The channel's code.
    pub channel: String,
    /// The location's code; `null` for a hold across all locations.
    pub location: Option<String>,
    /// The units kept; 0 once the hold is removed.
    pub quantity: i32,
}

/// Units of a SKU to hold for a cart.
#[derive(InputObject)]
pub struct ReserveStockInput {
    pub sku: String,
    /// 1 to 1,000,000 units.
    pub quantity: i32,
    /// The cart's token (up to 100 characters); required for anonymous viewers, who pass it
    /// again to extend or release the reservation.
    pub owner_token: Option<String>,
}

/// One stock level after a change.
#[derive(SimpleObject)]
pub struct StockLevelChange {
    pub variant_id: ID,
    pub sku: String,
    /// The location's code.
    pub location: String,
    pub on_hand: i32,
    pub reserved: i32,
    /// on hand minus reserved, never negative.
    pub available: i64,
    /// Bumped by every change of the level.
    pub version: i64,
}

/// Units held for a cart at one location until they are sold, released or expire.
#[derive(SimpleObject)]
pub struct Reservation {
    pub id: ID,
    pub sku: String,
    /// The code of the location the units are held at.
    pub location: String,
    pub quantity: i32,
    /// `active`, `released`, `expired` or `consumed`.
    pub state: String,
    /// When the sweeper releases it; `null` for a hard hold (no expiry).
    pub expires_at: Option<DateTime<Utc>>,
}

fn not_found(what: &str, value: &str, field: &str) -> async_graphql::Error {
    let shown: String = value.chars().take(64).collect();
    ApiError::NotFound(format!("{what} {shown:?} not found"))
        .extend()
        .extend_with(|_, ext| ext.set("field", field))
}

/// The GraphQL input path of a core field name.
fn input_field(core: &str) -> String {
    let path = match core {
        "variant_id" => "input.sku",
        "location_id" => "input.location",
        "from_location_id" => "input.from",
        "to_location_id" => "input.to",
        "quantity" => "input.quantity",
        "delta" => "input.delta",
        "reason" => "input.reason",
        "reference" => "input.reference",
        "owner" | "owner.reference" => "input.ownerToken",
        "channel_id" => "input.channel",
        "reservation_id" => "id",
        other => return other.to_owned(),
    };
    path.to_owned()
}

/// What a resolver knows by name: shortages then name their SKU and location codes.
#[derive(Default)]
struct Names<'a> {
    sku: Option<&'a str>,
    locations: Vec<&'a stock_location::Model>,
}

/// A core result as a GraphQL one with its code, its fields named as in the schema, and
/// shortages naming the SKU and the locations in `names`.
fn stock_api<T>(result: Result<T, CoreError>, names: &Names<'_>) -> Result<T> {
    result.map_err(|err| {
        let not_found_field = match &err {
            CoreError::NotFound { key, .. } => key
                .rsplit_once(" (")
                .and_then(|(_, field)| field.strip_suffix(')'))
                .map(input_field),
            _ => None,
        };
        let err = match ApiError::from(err) {
            ApiError::BadUserInput { field, reason } => ApiError::BadUserInput {
                field: input_field(&field),
                reason,
            },
            ApiError::Conflict { field, reason } => ApiError::Conflict {
                field: input_field(&field),
                reason,
            },
            ApiError::InsufficientStock { mut lines } => {
                for line in &mut lines {
                    line.field = input_field(&line.field);
                    line.sku = names.sku.map(str::to_owned);
                    line.location = line.location_id.and_then(|id| {
                        names
                            .locations
                            .iter()
                            .find(|l| l.id == id)
                            .map(|l| l.code.clone())
                    });
                }
                ApiError::InsufficientStock { lines }
            }
            other => other,
        };
        let error = err.extend();
        match not_found_field {
            Some(field) => error.extend_with(|_, ext| ext.set("field", field)),
            None => error,
        }
    })
}

/// The request's context, when the viewer may change stock at `location_id`: an admin, or a
/// POS clerk at their own store. `FORBIDDEN` otherwise.
fn stock_keeper<'a>(
    ctx: &Context<'a>,
    location: &stock_location::Model,
) -> Result<&'a RequestContext> {
    let context = request_context(ctx)?;
    let viewer = &context.viewer;
    let clerk_here = viewer.role == Some(Role::PosClerk) && viewer.store_id == Some(location.id);
    if viewer.admin || clerk_here {
        return Ok(context);
    }
    let reason = if viewer.role == Some(Role::PosClerk) {
        format!(
            "a POS clerk may change stock at their own store only, not at {}",
            location.code
        )
    } else {
        "changing stock needs an admin token, or a pos_clerk token at the store".to_owned()
    };
    Err(ApiError::Forbidden(reason).extend())
}

/// Who is asking, for the ledger.
fn actor(context: &RequestContext) -> String {
    context
        .viewer
        .subject
        .as_deref()
        .map_or_else(|| "anonymous".to_owned(), |s| s.chars().take(120).collect())
}

/// What a change at one location names, checked in order: the location (it decides who may
/// change it), the viewer as its stock keeper, then the variant (`input.location`,
/// `input.sku`).
async fn stock_target<'a>(
    ctx: &Context<'a>,
    sku: &str,
    location: &str,
) -> Result<(&'a RequestContext, stock_location::Model, variant::Model)> {
    let context = request_context(ctx)?;
    let location = find_location(context, location, "input.location").await?;
    let context = stock_keeper(ctx, &location)?;
    let variant = find_variant(context, sku, "input.sku").await?;
    Ok((context, location, variant))
}

async fn find_variant(context: &RequestContext, sku: &str, field: &str) -> Result<variant::Model> {
    variant::Entity::find()
        .filter(variant::Column::Sku.eq(sku))
        .one(&context.db)
        .await
        .map_err(CoreError::from)
        .api()?
        .ok_or_else(|| not_found("SKU", sku, field))
}

async fn find_location(
    context: &RequestContext,
    code: &str,
    field: &str,
) -> Result<stock_location::Model> {
    stock_location::Entity::find()
        .filter(stock_location::Column::Code.eq(code))
        .one(&context.db)
        .await
        .map_err(CoreError::from)
        .api()?
        .ok_or_else(|| not_found("stock location", code, field))
}

/// The codes of the given locations, by id.
async fn location_codes(
    context: &RequestContext,
    ids: impl IntoIterator<Item = i64>,
) -> Result<std::collections::HashMap<i64, String>> {
    Ok(stock_location::Entity::find()
        .filter(stock_location::Column::Id.is_in(ids))
        .all(&context.db)
        .await
        .map_err(CoreError::from)
        .api()?
        .into_iter()
        .map(|l| (l.id, l.code))
        .collect())
}

/// Publishes a committed change and shapes its levels.
async fn committed(
    context: &RequestContext,
    change: StockChange,
    sku: &str,
) -> Result<Vec<StockLevelChange>> {
    if let Some(event) = Event::stock_changed(&change) {
        context.bus.publish(event);
    }
    let codes = location_codes(context, change.levels.iter().map(|l| l.location_id)).await?;
    Ok(change
        .levels
        .iter()
        .map(|l: &stock_level::Model| StockLevelChange {
            variant_id: encode_id(Kind::Variant, l.variant_id),
            sku: sku.to_owned(),
            location: codes.get(&l.location_id).cloned().unwrap_or_default(),
            on_hand: l.on_hand,
            reserved: l.reserved,
            available: inventory::location_available(l.on_hand, l.reserved),
            version: l.version,
        })
        .collect())
}

/// The owner a request speaks for: its cart token, else its signed-in subject.
fn owner(context: &RequestContext, token: Option<&str>, field: &str) -> Result<Owner> {
    let reference = match (token, context.viewer.subject.as_deref()) {
        (Some(token), _) => {
            if token.trim().is_empty() || token.contains('\0') {
                return Err(ApiError::bad_input(field, "must not be empty").extend());
            }
            if token.chars().count() > MAX_OWNER_TOKEN_LEN {
                return Err(ApiError::bad_input(
                    field,
                    format!("must be at most {MAX_OWNER_TOKEN_LEN} characters"),
                )
                .extend());
            }
            format!("token:{token}")
        }
        (None, Some(subject)) => {
            format!("viewer:{}", subject.chars().take(100).collect::<String>())
        }
        (None, None) => {
            return Err(ApiError::bad_input(
                field,
                "an anonymous viewer must name its cart with ownerToken",
            )
            .extend());
        }
    };
    Ok(Owner {
        kind: OwnerKind::Cart,
        reference,
    })
}

async fn shape_reservations(
    context: &RequestContext,
    rows: Vec<reservation::Model>,
    sku: Option<&str>,
) -> Result<Vec<Reservation>> {
    let codes = location_codes(context, rows.iter().map(|r| r.location_id)).await?;
    let sku = match sku {
        Some(sku) => sku.to_owned(),
        None => match rows.first() {
            Some(row) => variant::Entity::find_by_id(row.variant_id)
                .one(&context.db)
                .await
                .map_err(CoreError::from)
                .api()?
                .map(|v| v.sku)
                .unwrap_or_default(),
            None => String::new(),
        },
    };
    Ok(rows
        .into_iter()
        .map(|r| Reservation {
            id: encode_id(Kind::Reservation, r.id),
            sku: sku.clone(),
            location: codes.get(&r.location_id).cloned().unwrap_or_default(),
            quantity: r.quantity,
            state: r.state,
            expires_at: r.expires_at,
        })
        .collect())
}

async fn one_reservation(context: &RequestContext, row: reservation::Model) -> Result<Reservation> {
    Ok(shape_reservations(context, vec![row], None)
        .await?
        .pop()
        .expect("one row in, one out"))
}

#[Object]
impl InventoryMutation {
    /// Records units arriving at a location (admin, or a POS clerk at their store). Returns
    /// the changed level.
    async fn receive_stock(
        &self,
        ctx: &Context<'_>,
        input: ReceiveStockInput,
    ) -> Result<Vec<StockLevelChange>> {
        let (context, location, variant) = stock_target(ctx, &input.sku, &input.location).await?;
        let change = stock_api(
            inventory::receive(
                &context.db,
                &inventory::StockIn {
                    variant_id: variant.id,
                    location_id: location.id,
                    quantity: input.quantity,
                    actor: actor(context),
                    reason: input.reason.unwrap_or_default(),
                    reference: input.reference,
                },
                Utc::now(),
            )
            .await,
            &Names {
                sku: Some(&variant.sku),
                locations: vec![&location],
            },
        )?;
        committed(context, change, &variant.sku).await
    }

    /// Corrects the counted stock at a location by `delta` units, with a reason (admin, or a
    /// POS clerk at their store). Returns the changed level.
    async fn adjust_stock(
        &self,
        ctx: &Context<'_>,
        input: AdjustStockInput,
    ) -> Result<Vec<StockLevelChange>> {
        let (context, location, variant) = stock_target(ctx, &input.sku, &input.location).await?;
        let change = stock_api(
            inventory::adjust(
                &context.db,
                &inventory::Adjustment {
                    variant_id: variant.id,
                    location_id: location.id,
                    delta: input.delta,
                    actor: actor(context),
                    reason: input.reason,
                },
                Utc::now(),
            )
            .await,
            &Names {
                sku: Some(&variant.sku),
                locations: vec![&location],
            },
        )?;
        committed(context, change, &variant.sku).await
    }

    /// Moves unreserved units from one location to another (admin, or a POS clerk sending
    /// from their store). Returns both changed levels.
    async fn transfer_stock(
        &self,
        ctx: &Context<'_>,
        input: TransferStockInput,
    ) -> Result<Vec<StockLevelChange>> {
        let context = request_context(ctx)?;
        let from = find_location(context, &input.from, "input.from").await?;
        let context = stock_keeper(ctx, &from)?;
        let to = find_location(context, &input.to, "input.to").await?;
        let variant = find_variant(context, &input.sku, "input.sku").await?;
        let change = stock_api(
            inventory::transfer(
                &context.db,
                &inventory::Transfer {
                    variant_id: variant.id,
                    from_location_id: from.id,
                    to_location_id: to.id,
                    quantity: input.quantity,
                    actor: actor(context),
                    reason: input.reason.unwrap_or_default(),
                },
                Utc::now(),
            )
            .await,
            &Names {
                sku: Some(&variant.sku),
                locations: vec![&from, &to],
            },
        )?;
        committed(context, change, &variant.sku).await
    }

    /// Holds units of a SKU for a cart on the request's channel, for the channel's
    /// reservation lifetime (`expiresAt`). One reservation per location the units come from.
    async fn reserve_stock(
        &self,
        ctx: &Context<'_>,
        input: ReserveStockInput,
    ) -> Result<Vec<Reservation>> {
        let context = request_context(ctx)?;
        let owner = owner(context, input.owner_token.as_deref(), "input.ownerToken")?;
        let variant = find_variant(context, &input.sku, "input.sku").await?;
        let clerk = context.viewer.role == Some(Role::PosClerk);
        let reserved = stock_api(
            inventory::reserve(
                &context.db,
                &inventory::ReserveRequest {
                    variant_id: variant.id,
                    quantity: input.quantity,
                    channel_id: context.channel.channel.id,
                    owner,
                    lifetime: Lifetime::ChannelDefault,
                    location_id: if clerk { context.viewer.store_id } else { None },
                    near: None,
                    actor: actor(context),
                },
                Utc::now(),
            )
            .await,
            &Names {
                sku: Some(&variant.sku),
                locations: Vec::new(),
            },
        )?;
        if let Some(event) = Event::stock_changed(&reserved.change) {
            context.bus.publish(event);
        }
        shape_reservations(context, reserved.reservations, Some(&variant.sku)).await
    }

    /// Gives an active reservation the channel's full lifetime again from now (never
    /// shortening it); only its owner may, and only before it expires.
    async fn extend_reservation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        owner_token: Option<String>,
    ) -> Result<Reservation> {
        let context = request_context(ctx)?;
        let reservation_id = decode_id(Kind::Reservation, &id, "id").api()?;
        let owner = owner(context, owner_token.as_deref(), "ownerToken")?;
        let row = stock_api(
            inventory::extend_reservation(
                &context.db,
                reservation_id,
                &owner,
                Lifetime::ChannelDefault,
                Utc::now(),
            )
            .await,
            &Names::default(),
        )?;
        one_reservation(context, row).await
    }

    /// Releases an active reservation: its units are available again. Only its owner may.
    async fn release_reservation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        owner_token: Option<String>,
    ) -> Result<Reservation> {
        let context = request_context(ctx)?;
        let reservation_id = decode_id(Kind::Reservation, &id, "id").api()?;
        let owner = owner(context, owner_token.as_deref(), "ownerToken")?;
        let (row, change) = stock_api(
            inventory::release(
                &context.db,
                reservation_id,
                Some(&owner),
                &actor(context),
                "released",
                Utc::now(),
            )
            .await,
            &Names::default(),
        )?;
        if let Some(event) = Event::stock_changed(&change) {
            context.bus.publish(event);
        }
        one_reservation(context, row).await
    }

    /// Turns an active reservation into a sale (movement `sale`: on hand and reserved both go
    /// down by its units). Its owner may, an admin may, and a POS clerk may for reservations
    /// at their own store.
    async fn commit_reservation(
        &self,
        ctx: &Context<'_>,
        id: ID,
        owner_token: Option<String>,
    ) -> Result<Reservation> {
        let context = request_context(ctx)?;
        let reservation_id = decode_id(Kind::Reservation, &id, "id").api()?;
        let row = reservation::Entity::find_by_id(reservation_id)
            .one(&context.db)
            .await
            .map_err(CoreError::from)
            .api()?
            .ok_or_else(|| not_found("reservation", id.as_str(), "id"))?;
        let viewer = &context.viewer;
        let till = viewer.role == Some(Role::PosClerk) && viewer.store_id == Some(row.location_id);
        // Admins and the store's till sell for anyone; others only what they own (the core
        // checks ownership before it writes).
        let owner = if viewer.admin || till {
            None
        } else {
            Some(owner(context, owner_token.as_deref(), "ownerToken")?)
        };
        let (row, change) = stock_api(
            inventory::commit_reservation(
                &context.db,
                reservation_id,
                owner.as_ref(),
                &actor(context),
                None,
                Utc::now(),
            )
            .await,
            &Names::default(),
        )?;
        if let Some(event) = Event::stock_changed(&change) {
            context.bus.publish(event);
        }
        one_reservation(context, row).await
    }

    /// Takes returned units back into stock at a location (movement `return`), with a reason
    /// (admin, or a POS clerk at their store). Returns the changed level.
    async fn return_stock(
        &self,
        ctx: &Context<'_>,
        input: ReturnStockInput,
    ) -> Result<Vec<StockLevelChange>> {
        let (context, location, variant) = stock_target(ctx, &input.sku, &input.location).await?;
        if input.reason.trim().is_empty() {
            return Err(ApiError::bad_input("input.reason", "must not be empty").extend());
        }
        let change = stock_api(
            inventory::return_stock(
                &context.db,
                &inventory::StockIn {
                    variant_id: variant.id,
                    location_id: location.id,
                    quantity: input.quantity,
                    actor: actor(context),
                    reason: input.reason,
                    reference: input.reference,
                },
                Utc::now(),
            )
            .await,
            &Names {
                sku: Some(&variant.sku),
                locations: vec![&location],
            },
        )?;
        committed(context, change, &variant.sku).await
    }

    /// Keeps `quantity` units of a SKU for one channel, at a location or (without one) across
    /// all locations: other channels can neither sell nor reserve them. Replaces that
    /// channel's hold on the SKU there; 0 removes it. Admin only.
    async fn set_stock_hold(
        &self,
        ctx: &Context<'_>,
        input: SetStockHoldInput,
    ) -> Result<StockHold> {
        let context = request_context(ctx)?;
        if !context.viewer.admin {
            return Err(
                ApiError::Forbidden("setting stock holds needs an admin token".to_owned()).extend(),
            );
        }
        let channel = channel::Entity::find()
            .filter(channel::Column::Code.eq(input.channel.as_str()))
            .one(&context.db)
            .await
            .map_err(CoreError::from)
            .api()?
            .ok_or_else(|| not_found("channel", &input.channel, "input.channel"))?;
        let location = match input.location.as_deref() {
            Some(code) => Some(find_location(context, code, "input.location").await?),
            None => None,
        };
        let variant = find_variant(context, &input.sku, "input.sku").await?;
        let hold = stock_api(
            inventory::set_hold(
                &context.db,
                channel.id,
                variant.id,
                location.as_ref().map(|l| l.id),
                input.quantity,
                Utc::now(),
            )
            .await,
            &Names::default(),
        )?;
        // No stock level changed, but availability did: read models and caches drop it.
        context.bus.publish(Event::StockHoldsChanged {
            variant_ids: vec![variant.id],
        });
        Ok(StockHold {
            sku: variant.sku,
            channel: channel.code,
            location: location.map(|l| l.code),
            quantity: hold.map_or(0, |h| h.quantity),
        })
    }
}

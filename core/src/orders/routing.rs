//! Order routing (DESIGN.md §5 "Order routing"): which stock locations ship which lines.
//!
//! [`route`] is a pure policy over plain data (no database, no clock of its own), so every
//! rule is tested here. It works in four steps, each of which leaves an explanation behind:
//!
//! 1. **Eligibility.** A candidate must be of a kind the channel ships from, be the clerk's
//!    own store for a POS sale, be the pickup store for a pickup, and meet the service level
//!    ([`ServiceLevel`]); every candidate dropped lands in [`Plan::excluded`] with a reason.
//! 2. **Stock.** Units the eligible locations hold are pooled per variant. A short line is an
//!    [`CoreError::InsufficientStock`] unless the channel takes backorders.
//! 3. **Choice.** Fewer shipments first: one location that holds every line when one exists
//!    (nearest to the destination, then channel priority, then location id); otherwise a
//!    greedy split (most units covered first, same tie-breaks), at most
//!    [`RoutingSettings::max_shipments`] shipments.
//! 4. **Assignment.** Lines go whole to the first chosen location that holds them, and are
//!    split only when no chosen location holds the whole line; units beyond stock go to one
//!    backorder group.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::CoreError;
use crate::entities::{channel, stock_location};
use crate::error::StockShortage;
use crate::inventory::GeoPoint;

/// Most location sets tried when the greedy split needs more shipments than allowed.
const MAX_COVER_SEARCH: usize = 20_000;

/// How fast an order must leave the building.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceLevel {
    /// Any eligible location; ships when its handling time allows.
    Standard,
    /// Ships today: ordered before the location's cut-off, handling at most 24 h.
    Express,
    /// As express, from the destination's region, handling at most 4 h.
    SameDay,
}

impl ServiceLevel {
    /// Every level, in the order channels list them.
    pub const ALL: [ServiceLevel; 3] = [Self::Standard, Self::Express, Self::SameDay];

    /// The stored spelling: `standard`, `express` or `same_day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Express => "express",
            Self::SameDay => "same_day",
        }
    }

    /// The level of a spelling, case-insensitive (`SAME_DAY` and `same-day` too).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "standard" => Some(Self::Standard),
            "express" => Some(Self::Express),
            "same_day" | "same-day" | "sameday" => Some(Self::SameDay),
            _ => None,
        }
    }

    /// The longest handling time the level tolerates, if it has a limit.
    pub fn max_handling_hours(self) -> Option<i32> {
        match self {
            Self::Standard => None,
            Self::Express => Some(24),
            Self::SameDay => Some(4),
        }
    }
}

impl fmt::Display for ServiceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A channel's routing policy: where its orders may ship from and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingSettings {
    /// Location kinds that may fulfil (`warehouse`, `store`, `dropship`), lower-case.
    pub eligible_kinds: Vec<String>,
    /// Service levels the channel offers.
    pub service_levels: Vec<ServiceLevel>,
    /// Most shipments (non-backorder groups) one order may be split into; 0 reads as 1.
    pub max_shipments: usize,
    /// Whether units beyond stock may be backordered instead of refusing the order.
    pub backorders: bool,
}

impl RoutingSettings {
    /// The channel's stored policy. Blank and unknown list entries are skipped; a
    /// `max_shipments` below 1 reads as 1, since every order ships at least once.
    pub fn from_channel(channel: &channel::Model) -> Self {
        let eligible_kinds = channel
            .eligible_location_kinds
            .split(',')
            .map(|kind| kind.trim().to_ascii_lowercase())
            .filter(|kind| !kind.is_empty())
            .collect();
        let mut service_levels: Vec<ServiceLevel> = Vec::new();
        for level in channel
            .service_levels
            .split(',')
            .filter_map(ServiceLevel::parse)
        {
            if !service_levels.contains(&level) {
                service_levels.push(level);
            }
        }
        Self {
            eligible_kinds,
            service_levels,
            max_shipments: usize::try_from(channel.max_shipments.max(1)).unwrap_or(1),
            backorders: channel.backorders,
        }
    }

    fn offers_kind(&self, kind: &str) -> bool {
        self.eligible_kinds
            .iter()
            .any(|eligible| eligible.eq_ignore_ascii_case(kind))
    }
}

/// Where the order goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    /// Shipped to an address in `region`, at `point` when it is known (for "nearest").
    Ship {
        region: String,
        point: Option<GeoPoint>,
    },
    /// Collected at a store.
    Pickup { location_id: i64 },
}

/// A stock location that feeds the channel, with what the channel may take there.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The stock location.
    pub location_id: i64,
    /// Its code, used in every explanation (`WH-EAST`).
    pub code: String,
    /// `warehouse`, `store` or `dropship`.
    pub kind: String,
    /// Its region, for the same-day rule.
    pub region: String,
    /// Where it is, for "nearest".
    pub point: GeoPoint,
    /// Hours from release to the warehouse until the parcel leaves.
    pub handling_hours: i32,
    /// Local cut-off time, `HH:MM`: orders after it are handled from the next day.
    pub cutoff: String,
    /// The IANA zone the cut-off is read in (`America/New_York`).
    pub time_zone: String,
    /// The channel's priority for the location (lower first).
    pub priority: i32,
    /// Units per variant id the channel may take there (negative reads as 0).
    pub available: HashMap<i64, i64>,
}

impl Candidate {
    /// A candidate from its stored location, the channel's priority and the units available.
    pub fn from_location(
        location: &stock_location::Model,
        priority: i32,
        available: HashMap<i64, i64>,
    ) -> Self {
        Self {
            location_id: location.id,
            code: location.code.clone(),
            kind: location.kind.clone(),
            region: location.region.clone(),
            point: GeoPoint {
                latitude: location.latitude,
                longitude: location.longitude,
            },
            handling_hours: location.handling_hours,
            cutoff: location.cutoff_time.clone(),
            time_zone: location.time_zone.clone(),
            priority,
            available,
        }
    }

    fn units_of(&self, variant_id: i64) -> i64 {
        self.available.get(&variant_id).copied().unwrap_or(0).max(0)
    }
}

/// One line to route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRequest {
    /// The variant ordered.
    pub variant_id: i64,
    /// Its SKU, for explanations.
    pub sku: String,
    /// Units ordered (must be positive).
    pub quantity: i64,
}

/// Everything routing needs to know about one order.
#[derive(Clone, Debug)]
pub struct RoutingRequest<'a> {
    /// The lines, in the order the caller sent them.
    pub lines: &'a [LineRequest],
    /// Where the order goes.
    pub destination: Destination,
    /// The service level asked for.
    pub service_level: ServiceLevel,
    /// The instant cut-offs are judged at.
    pub now: DateTime<Utc>,
    /// A POS clerk's store: the sale fulfils there and nowhere else.
    pub store: Option<i64>,
}

/// The routing decision: fulfilment groups, and the candidates that were ruled out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Shipments, first chosen first; a backorder group, if any, comes last.
    pub groups: Vec<Group>,
    /// Candidates dropped before the choice, in the order they were given, with why.
    pub excluded: Vec<Excluded>,
}

impl Plan {
    /// The groups that ship from stock (every group but the backorder one).
    pub fn shipments(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|group| group.ships_on.is_some())
    }

    /// The backorder group, if units beyond stock were backordered.
    pub fn backorder(&self) -> Option<&Group> {
        self.groups.iter().find(|group| group.ships_on.is_none())
    }
}

/// One fulfilment group: what one location ships (or owes, for a backorder group).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    /// The location that ships (or will ship the backorder).
    pub location_id: i64,
    /// Its code.
    pub code: String,
    /// Its lines, in request order.
    pub lines: Vec<GroupLine>,
    /// The local date the group ships (or is ready for pickup); `None` for a backorder.
    pub ships_on: Option<NaiveDate>,
    /// Why this location, and when, for people.
    pub reasons: Vec<String>,
}

/// Units of one request line in one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupLine {
    /// Index into [`RoutingRequest::lines`].
    pub line: usize,
    /// The variant.
    pub variant_id: i64,
    /// Units of the line in this group.
    pub quantity: i64,
    /// Whether these units are beyond stock and ship later.
    pub backordered: bool,
}

/// A candidate ruled out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// The location.
    pub location_id: i64,
    /// Its code.
    pub code: String,
    /// Why, for people: `WH-CENTRAL: kind warehouse is not eligible on this channel`.
    pub reason: String,
}

/// An eligible candidate with what the SLA check worked out for it.
struct Eligible<'c> {
    candidate: &'c Candidate,
    ships_on: NaiveDate,
    ships_reason: String,
    /// Metres to the destination point; whole metres so that ties are exact.
    distance_m: Option<i64>,
}

impl Eligible<'_> {
    /// Nearer first (when there is a point), then channel priority, then location id.
    fn rank(&self) -> (i64, i32, i64) {
        (
            self.distance_m.unwrap_or(0),
            self.candidate.priority,
            self.candidate.location_id,
        )
    }
}

/// Chooses fulfilment groups for `request` among `candidates` under the channel's
/// `settings`; see the module documentation for the rules.
///
/// Errors: [`CoreError::InvalidInput`] for bad lines, a service level the channel does not
/// offer, a bad pickup store or POS store; [`CoreError::InsufficientStock`] when eligible
/// stock cannot cover a line and the channel takes no backorders; [`CoreError::Conflict`]
/// when the stock exists but needs more shipments than the channel allows.
pub fn route(
    request: &RoutingRequest<'_>,
    settings: &RoutingSettings,
    candidates: &[Candidate],
) -> Result<Plan, CoreError> {
    validate(request, settings, candidates)?;
    let near = match &request.destination {
        Destination::Ship { point, .. } => *point,
        Destination::Pickup { .. } => None,
    };

    let mut excluded = Vec::new();
    let mut eligible = Vec::new();
    for candidate in candidates {
        match screen(candidate, request, settings, candidates) {
            Ok((ships_on, ships_reason)) => eligible.push(Eligible {
                candidate,
                ships_on,
                ships_reason,
                distance_m: near.map(|point| metres(point.distance_km(candidate.point))),
            }),
            Err(reason) => excluded.push(Excluded {
                location_id: candidate.location_id,
                code: candidate.code.clone(),
                reason,
            }),
        }
    }

    // Pool eligible stock per variant; lines take from the pool in request order, so a
    // variant on two lines is short on the later one first.
    let mut pool: BTreeMap<i64, i64> = BTreeMap::new();
    for line in request.lines {
        pool.entry(line.variant_id).or_insert_with(|| {
            eligible
                .iter()
                .map(|e| e.candidate.units_of(line.variant_id))
                .fold(0i64, i64::saturating_add)
        });
    }
    let mut covered_of_line = Vec::with_capacity(request.lines.len());
    let mut shortages = Vec::new();
    for (index, line) in request.lines.iter().enumerate() {
        let left = pool.get_mut(&line.variant_id).expect("pooled above");
        let covered = line.quantity.min(*left);
        if covered < line.quantity {
            shortages.push(StockShortage {
                field: format!("lines[{index}].quantity"),
                variant_id: line.variant_id,
                location_id: None,
                requested: line.quantity,
                available: *left,
            });
        }
        *left -= covered;
        covered_of_line.push(covered);
    }
    if !shortages.is_empty() && (!settings.backorders || eligible.is_empty()) {
        // Without an eligible location there is nowhere to owe the backorder from either.
        return Err(CoreError::InsufficientStock { lines: shortages });
    }

    let mut target: BTreeMap<i64, i64> = BTreeMap::new();
    for (line, covered) in request.lines.iter().zip(&covered_of_line) {
        *target.entry(line.variant_id).or_insert(0) += covered;
    }
    let max_shipments = settings.max_shipments.max(1);
    let short = !shortages.is_empty();

    let mut groups = if target.values().all(|units| *units == 0) {
        Vec::new()
    } else if let Some(groups) =
        single_location(request, &eligible, &target, &covered_of_line, short)
    {
        groups
    } else {
        let everyone: Vec<usize> = (0..eligible.len()).collect();
        let mut groups = split(request, &eligible, &everyone, &target, &covered_of_line);
        if groups.len() > max_shipments {
            let needed = groups.len();
            groups = smallest_cover(&eligible, &target, max_shipments)
                .map(|subset| split(request, &eligible, &subset, &target, &covered_of_line))
                .filter(|groups| groups.len() <= max_shipments)
                .ok_or_else(|| {
                    CoreError::conflict(
                        "lines",
                        format!(
                            "needs {needed} shipments; the channel allows at most {max_shipments}"
                        ),
                    )
                })?;
        }
        groups
    };

    if short {
        groups.push(backorder_group(
            request,
            &eligible,
            &covered_of_line,
            groups.first(),
        ));
    }
    Ok(Plan { groups, excluded })
}

fn validate(
    request: &RoutingRequest<'_>,
    settings: &RoutingSettings,
    candidates: &[Candidate],
) -> Result<(), CoreError> {
    if request.lines.is_empty() {
        return Err(CoreError::invalid(
            "lines",
            "an order needs at least one line",
        ));
    }
    for (index, line) in request.lines.iter().enumerate() {
        if line.quantity <= 0 {
            return Err(CoreError::invalid(
                format!("lines[{index}].quantity"),
                format!("must be at least 1 (got {})", line.quantity),
            ));
        }
    }
    if !settings.service_levels.contains(&request.service_level) {
        let offered = settings
            .service_levels
            .iter()
            .map(|level| level.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let offered = if offered.is_empty() {
            "no service level".to_owned()
        } else {
            offered
        };
        return Err(CoreError::invalid(
            "serviceLevel",
            format!(
                "{} is not offered; this channel offers {offered}",
                request.service_level
            ),
        ));
    }
    let find = |id: i64| candidates.iter().find(|c| c.location_id == id);
    let store = match request.store {
        Some(id) => Some(find(id).ok_or_else(|| {
            CoreError::invalid(
                "store",
                format!("location {id} does not fulfil this channel's orders"),
            )
        })?),
        None => None,
    };
    match &request.destination {
        Destination::Ship {
            point: Some(point), ..
        } => {
            point.validate("destination.point")?;
        }
        Destination::Ship { point: None, .. } => {}
        Destination::Pickup { location_id } => {
            let at = find(*location_id).ok_or_else(|| {
                CoreError::invalid(
                    "pickupAt",
                    format!("location {location_id} does not fulfil this channel's orders"),
                )
            })?;
            if !at.kind.eq_ignore_ascii_case("store") {
                return Err(CoreError::invalid(
                    "pickupAt",
                    format!(
                        "{} is a {}; orders are picked up at stores only",
                        at.code, at.kind
                    ),
                ));
            }
            if !settings.offers_kind(&at.kind) {
                return Err(CoreError::invalid(
                    "pickupAt",
                    format!(
                        "{}: kind {} is not eligible on this channel",
                        at.code, at.kind
                    ),
                ));
            }
            if let Some(store) = store.filter(|store| store.location_id != at.location_id) {
                return Err(CoreError::invalid(
                    "pickupAt",
                    format!("a POS sale fulfils at its own store {} only", store.code),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `candidate` may fulfil the request: its ship (or ready) date and why, or why not.
fn screen(
    candidate: &Candidate,
    request: &RoutingRequest<'_>,
    settings: &RoutingSettings,
    candidates: &[Candidate],
) -> Result<(NaiveDate, String), String> {
    let code = &candidate.code;
    let code_of = |id: i64| {
        candidates
            .iter()
            .find(|c| c.location_id == id)
            .map_or_else(|| format!("location {id}"), |c| c.code.clone())
    };
    if let Destination::Pickup { location_id } = request.destination
        && candidate.location_id != location_id
    {
        return Err(format!(
            "{code}: the order is picked up at {}",
            code_of(location_id)
        ));
    }
    if let Some(store) = request.store
        && candidate.location_id != store
    {
        return Err(format!(
            "{code}: a POS sale fulfils from its own store {} only",
            code_of(store)
        ));
    }
    if !settings.offers_kind(&candidate.kind) {
        return Err(format!(
            "{code}: kind {} is not eligible on this channel",
            candidate.kind
        ));
    }
    service_level_check(candidate, request)
}

/// The SLA rule of DESIGN §5, read on the location's own clock.
///
/// Standard: handling starts now when it is before the local cut-off, else at the next local
/// midnight; the group ships on the local date handling ends (no weekends or holidays are
/// skipped: locations have no calendar yet). Express and same-day: the location must be
/// before its cut-off with handling of at most 24 h (4 h and the destination's region for
/// same-day) and ships today. A pickup is ready on the local date handling ends.
fn service_level_check(
    candidate: &Candidate,
    request: &RoutingRequest<'_>,
) -> Result<(NaiveDate, String), String> {
    let code = &candidate.code;
    let level = request.service_level;
    let zone: Tz = candidate.time_zone.parse().map_err(|_| {
        tracing::warn!(location = candidate.location_id, zone = %candidate.time_zone, "unknown time zone");
        format!("{code}: unknown time zone {:?}", candidate.time_zone)
    })?;
    let cutoff = NaiveTime::parse_from_str(candidate.cutoff.trim(), "%H:%M").map_err(|_| {
        tracing::warn!(location = candidate.location_id, cutoff = %candidate.cutoff, "bad cut-off time");
        format!("{code}: cut-off {:?} is not a HH:MM time", candidate.cutoff)
    })?;
    let hours = candidate.handling_hours;
    if hours < 0 {
        return Err(format!("{code}: handling time {hours} h is negative"));
    }
    let cut = cutoff.format("%H:%M");
    let local_now = request.now.with_timezone(&zone);
    let before_cutoff = local_now.time() < cutoff;
    let pickup = matches!(request.destination, Destination::Pickup { .. });

    if level != ServiceLevel::Standard {
        if level == ServiceLevel::SameDay
            && let Destination::Ship { region, .. } = &request.destination
            && !candidate.region.eq_ignore_ascii_case(region)
        {
            return Err(format!(
                "{code}: region {} cannot deliver same_day to {region}",
                candidate.region
            ));
        }
        if let Some(limit) = level.max_handling_hours()
            && hours > limit
        {
            return Err(format!(
                "{code}: handling {hours} h is too slow for {level} (at most {limit} h)"
            ));
        }
        if !before_cutoff {
            return Err(format!(
                "{code}: past its {cut} cut-off ({zone}) for {level}"
            ));
        }
    }

    let ready = if before_cutoff {
        request.now
    } else {
        next_local_midnight(zone, local_now.date_naive())
    };
    let done = ready
        .checked_add_signed(TimeDelta::hours(i64::from(hours)))
        .ok_or_else(|| format!("{code}: handling time {hours} h is out of range"))?;
    let (ships_on, what) = match (pickup, level) {
        (true, _) => (done.with_timezone(&zone).date_naive(), "ready for pickup"),
        (false, ServiceLevel::Standard) => (done.with_timezone(&zone).date_naive(), "ships"),
        (false, _) => (local_now.date_naive(), "ships"),
    };
    let level_note = if level == ServiceLevel::Standard {
        String::new()
    } else {
        format!(" ({level})")
    };
    let reason = if before_cutoff {
        format!(
            "{what} {ships_on}{level_note}: ordered before the {cut} cut-off ({zone}), handling {hours} h"
        )
    } else {
        format!(
            "{what} {ships_on}: ordered after the {cut} cut-off ({zone}), handling {hours} h from the next day"
        )
    };
    Ok((ships_on, reason))
}

/// The first instant of the local day after `date` (a DST gap at midnight moves it later).
fn next_local_midnight(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.succ_opt().unwrap_or(date).and_time(NaiveTime::MIN);
    (0..4)
        .find_map(|hour| {
            zone.from_local_datetime(&(midnight + TimeDelta::hours(hour)))
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&midnight),
            |at| at.with_timezone(&Utc),
        )
}

/// One group from the best location that holds all the stock the order needs, if any does.
fn single_location(
    request: &RoutingRequest<'_>,
    eligible: &[Eligible<'_>],
    target: &BTreeMap<i64, i64>,
    covered_of_line: &[i64],
    short: bool,
) -> Option<Vec<Group>> {
    let mut holders: Vec<&Eligible<'_>> = eligible
        .iter()
        .filter(|e| {
            target
                .iter()
                .all(|(variant, units)| e.candidate.units_of(*variant) >= *units)
        })
        .collect();
    holders.sort_by_key(|e| e.rank());
    let best = *holders.first()?;
    let code = &best.candidate.code;
    let holds = if short {
        format!("{code} holds every unit in stock")
    } else {
        format!("{code} holds every line")
    };
    let choice = match (holders.get(1), best.distance_m) {
        (None, Some(distance)) => {
            format!(
                "{holds}; the only eligible location that does ({})",
                km(distance)
            )
        }
        (None, None) => format!("{holds}; the only eligible location that does"),
        (Some(runner), Some(distance)) if runner.distance_m != Some(distance) => format!(
            "{holds}; nearest of {} such locations ({})",
            holders.len(),
            km(distance)
        ),
        (Some(runner), _) => format!("{holds}; {}", tie_break(best, runner)),
    };
    let mut reasons = vec![choice, priority_note(best, eligible)];
    reasons.push(best.ships_reason.clone());
    let lines = request
        .lines
        .iter()
        .zip(covered_of_line)
        .enumerate()
        .filter(|(_, (_, covered))| **covered > 0)
        .map(|(index, (line, covered))| GroupLine {
            line: index,
            variant_id: line.variant_id,
            quantity: *covered,
            backordered: false,
        })
        .collect();
    Some(vec![Group {
        location_id: best.candidate.location_id,
        code: code.clone(),
        lines,
        ships_on: Some(best.ships_on),
        reasons,
    }])
}

/// Greedy split over `among` (indices into `eligible`): the location covering the most of
/// what is left goes first (ties: nearer, channel priority, id), until `target` is covered.
/// Lines then go whole to the first chosen location that holds them, split only when none
/// does; a chosen location left with no line is dropped.
fn split(
    request: &RoutingRequest<'_>,
    eligible: &[Eligible<'_>],
    among: &[usize],
    target: &BTreeMap<i64, i64>,
    covered_of_line: &[i64],
) -> Vec<Group> {
    let total: i64 = target.values().sum();
    let mut left = target.clone();
    let mut chosen: Vec<(usize, String)> = Vec::new();
    while left.values().any(|units| *units > 0) {
        let coverage = |index: usize| -> i64 {
            left.iter()
                .map(|(variant, units)| eligible[index].candidate.units_of(*variant).min(*units))
                .sum()
        };
        let mut ranked: Vec<(i64, usize)> = among
            .iter()
            .copied()
            .filter(|index| chosen.iter().all(|(taken, _)| taken != index))
            .map(|index| (coverage(index), index))
            .filter(|(covers, _)| *covers > 0)
            .collect();
        ranked.sort_by_key(|(covers, index)| (-covers, eligible[*index].rank()));
        let Some(&(covers, best)) = ranked.first() else {
            break; // `among` cannot cover the target; the caller sees too few units assigned
        };
        let remaining: i64 = left.values().sum();
        let code = &eligible[best].candidate.code;
        let mut why = if chosen.is_empty() {
            format!(
                "split: no eligible location holds every line; {code} covers the most units ({covers} of {total})"
            )
        } else if covers == remaining {
            let skus = skus_of(
                request,
                left.iter().filter(|(_, u)| **u > 0).map(|(v, _)| *v),
            );
            format!("split: {code} has the remaining {covers} units of {skus}")
        } else {
            format!(
                "split: {code} covers the most of the remaining units ({covers} of {remaining})"
            )
        };
        if let Some(&(runner_covers, runner)) = ranked.get(1)
            && runner_covers == covers
        {
            why.push_str("; ");
            why.push_str(&tie_break(&eligible[best], &eligible[runner]));
        }
        for (variant, units) in left.iter_mut() {
            *units -= eligible[best].candidate.units_of(*variant).min(*units);
        }
        chosen.push((best, why));
    }

    // Assignment: whole lines first, then what must be split, in choice order.
    let mut stock: Vec<HashMap<i64, i64>> = chosen
        .iter()
        .map(|(index, _)| {
            target
                .keys()
                .map(|variant| (*variant, eligible[*index].candidate.units_of(*variant)))
                .collect()
        })
        .collect();
    let mut assigned: Vec<Vec<GroupLine>> = vec![Vec::new(); chosen.len()];
    for (line_index, (line, covered)) in request.lines.iter().zip(covered_of_line).enumerate() {
        let mut need = *covered;
        if need == 0 {
            continue;
        }
        let whole = stock
            .iter()
            .position(|units| units[&line.variant_id] >= need);
        let order: Vec<usize> = match whole {
            Some(at) => vec![at],
            None => (0..chosen.len()).collect(),
        };
        for at in order {
            let have = stock[at].get_mut(&line.variant_id).expect("stocked above");
            let take = need.min(*have);
            if take == 0 {
                continue;
            }
            *have -= take;
            need -= take;
            assigned[at].push(GroupLine {
                line: line_index,
                variant_id: line.variant_id,
                quantity: take,
                backordered: false,
            });
            if need == 0 {
                break;
            }
        }
    }

    chosen
        .into_iter()
        .zip(assigned)
        .filter(|(_, lines)| !lines.is_empty())
        .map(|((index, why), lines)| {
            let e = &eligible[index];
            let mut reasons = vec![why];
            if let Some(distance) = e.distance_m {
                reasons.push(format!("{} from the destination", km(distance)));
            }
            reasons.push(priority_note(e, eligible));
            reasons.push(e.ships_reason.clone());
            Group {
                location_id: e.candidate.location_id,
                code: e.candidate.code.clone(),
                lines,
                ships_on: Some(e.ships_on),
                reasons,
            }
        })
        .collect()
}

/// The fewest locations (at most `limit`) whose stock together covers `target`, trying sets
/// in ranking order and giving up after [`MAX_COVER_SEARCH`] sets. The greedy split is not
/// always minimal; this keeps a plan that fits the channel's limit from being refused.
fn smallest_cover(
    eligible: &[Eligible<'_>],
    target: &BTreeMap<i64, i64>,
    limit: usize,
) -> Option<Vec<usize>> {
    let mut useful: Vec<usize> = (0..eligible.len())
        .filter(|index| {
            target
                .keys()
                .any(|variant| eligible[*index].candidate.units_of(*variant) > 0)
        })
        .collect();
    useful.sort_by_key(|index| eligible[*index].rank());
    let covers = |subset: &[usize]| {
        target.iter().all(|(variant, units)| {
            subset
                .iter()
                .map(|index| eligible[*index].candidate.units_of(*variant))
                .fold(0i64, i64::saturating_add)
                >= *units
        })
    };
    let mut tried = 0usize;
    for size in 1..=limit.min(useful.len()) {
        let mut picks: Vec<usize> = (0..size).collect();
        loop {
            tried += 1;
            if tried > MAX_COVER_SEARCH {
                return None;
            }
            let subset: Vec<usize> = picks.iter().map(|pick| useful[*pick]).collect();
            if covers(&subset) {
                return Some(subset);
            }
            // Next combination of `size` out of `useful.len()`, lexicographically.
            let Some(slot) = (0..size)
                .rev()
                .find(|slot| picks[*slot] < useful.len() - size + slot)
            else {
                break;
            };
            picks[slot] += 1;
            for next in slot + 1..size {
                picks[next] = picks[next - 1] + 1;
            }
        }
    }
    None
}

/// The group owing every unit beyond stock: at the first shipment's location, or at the
/// first eligible location by channel priority when nothing is in stock.
fn backorder_group(
    request: &RoutingRequest<'_>,
    eligible: &[Eligible<'_>],
    covered_of_line: &[i64],
    first: Option<&Group>,
) -> Group {
    let (location_id, code, why) = match first {
        Some(group) => (
            group.location_id,
            group.code.clone(),
            format!("owed by {}, the first shipment's location", group.code),
        ),
        None => {
            let best = eligible
                .iter()
                .min_by_key(|e| (e.candidate.priority, e.candidate.location_id))
                .expect("backorders need an eligible location");
            (
                best.candidate.location_id,
                best.candidate.code.clone(),
                format!(
                    "owed by {}, first eligible location by channel priority (nothing is in stock)",
                    best.candidate.code
                ),
            )
        }
    };
    let mut reasons = Vec::new();
    let mut lines = Vec::new();
    for (index, (line, covered)) in request.lines.iter().zip(covered_of_line).enumerate() {
        let missing = line.quantity - covered;
        if missing > 0 {
            reasons.push(format!(
                "backordered: {missing} units of {} beyond stock",
                line.sku
            ));
            lines.push(GroupLine {
                line: index,
                variant_id: line.variant_id,
                quantity: missing,
                backordered: true,
            });
        }
    }
    reasons.push(why);
    Group {
        location_id,
        code,
        lines,
        ships_on: None,
        reasons,
    }
}

/// What set `best` before `runner` when they tie on the main criterion.
fn tie_break(best: &Eligible<'_>, runner: &Eligible<'_>) -> String {
    let (b, r) = (best.candidate, runner.candidate);
    match (best.distance_m, runner.distance_m) {
        (Some(mine), Some(theirs)) if mine != theirs => {
            format!("nearer than {} ({} vs {})", r.code, km(mine), km(theirs))
        }
        (distance, _) => {
            let tied = match distance {
                Some(distance) => format!("tied at {} with {}", km(distance), r.code),
                None => format!("tied with {}", r.code),
            };
            if b.priority != r.priority {
                format!(
                    "{tied}; channel priority {} beats {}",
                    b.priority, r.priority
                )
            } else {
                format!("{tied} on channel priority too; lower location id")
            }
        }
    }
}

/// "channel priority 1 (rank 1 of 3 eligible locations)".
fn priority_note(e: &Eligible<'_>, eligible: &[Eligible<'_>]) -> String {
    let key = |x: &Eligible<'_>| (x.candidate.priority, x.candidate.location_id);
    let rank = eligible.iter().filter(|x| key(x) < key(e)).count() + 1;
    format!(
        "channel priority {} (rank {rank} of {} eligible locations)",
        e.candidate.priority,
        eligible.len()
    )
}

/// The SKUs of `variants`, in request order, comma-separated.
fn skus_of(request: &RoutingRequest<'_>, variants: impl Iterator<Item = i64>) -> String {
    let variants: Vec<i64> = variants.collect();
    let mut skus: Vec<&str> = Vec::new();
    for line in request.lines {
        if variants.contains(&line.variant_id) && !skus.contains(&line.sku.as_str()) {
            skus.push(&line.sku);
        }
    }
    skus.join(", ")
}

fn metres(km: f64) -> i64 {
    // Whole metres: ties compare exactly and the order is total (no NaN for valid points).
    (km * 1000.0).round() as i64
}

fn km(metres: i64) -> String {
    if metres < 10_000 {
        format!("{:.1} km", metres as f64 / 1000.0)
    } else {
        format!("{} km", (metres + 500) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EAST: GeoPoint = GeoPoint {
        latitude: 40.71,
        longitude: -74.0,
    };

    fn loc(id: i64, code: &str) -> Candidate {
        Candidate {
            location_id: id,
            code: code.to_owned(),
            kind: "warehouse".to_owned(),
            region: "us-east".to_owned(),
            point: EAST,
            handling_hours: 24,
            cutoff: "15:00".to_owned(),
            time_zone: "America/New_York".to_owned(),
            priority: i32::try_from(id).unwrap(),
            available: HashMap::new(),
        }
    }

    impl Candidate {
        fn stock(mut self, variant_id: i64, units: i64) -> Self {
            self.available.insert(variant_id, units);
            self
        }
        fn kind(mut self, kind: &str) -> Self {
            self.kind = kind.to_owned();
            self
        }
        fn at(mut self, latitude: f64, longitude: f64) -> Self {
            self.point = GeoPoint {
                latitude,
                longitude,
            };
            self
        }
        fn priority(mut self, priority: i32) -> Self {
            self.priority = priority;
            self
        }
        fn clock(mut self, time_zone: &str, cutoff: &str, handling_hours: i32) -> Self {
            self.time_zone = time_zone.to_owned();
            self.cutoff = cutoff.to_owned();
            self.handling_hours = handling_hours;
            self
        }
        fn region(mut self, region: &str) -> Self {
            self.region = region.to_owned();
            self
        }
    }

    fn line(variant_id: i64, quantity: i64) -> LineRequest {
        LineRequest {
            variant_id,
            sku: format!("TS-000{variant_id}-M"),
            quantity,
        }
    }

    fn settings(kinds: &[&str], backorders: bool, max_shipments: usize) -> RoutingSettings {
        RoutingSettings {
            eligible_kinds: kinds.iter().map(|kind| (*kind).to_owned()).collect(),
            service_levels: ServiceLevel::ALL.to_vec(),
            max_shipments,
            backorders,
        }
    }

    fn web() -> RoutingSettings {
        settings(&["warehouse", "store"], false, 3)
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Noon in New York, 09:00 in Los Angeles, 18:00 in Berlin.
    fn noon_new_york() -> DateTime<Utc> {
        utc("2026-11-26T17:00:00Z")
    }

    fn request(lines: &[LineRequest], destination: Destination) -> RoutingRequest<'_> {
        RoutingRequest {
            lines,
            destination,
            service_level: ServiceLevel::Standard,
            now: noon_new_york(),
            store: None,
        }
    }

    fn ship_to(point: Option<GeoPoint>) -> Destination {
        Destination::Ship {
            region: "us-east".to_owned(),
            point,
        }
    }

    /// `(location_id, [(line, quantity, backordered)])` per group.
    type Shape = Vec<(i64, Vec<(usize, i64, bool)>)>;

    fn shape(plan: &Plan) -> Shape {
        plan.groups
            .iter()
            .map(|group| {
                (
                    group.location_id,
                    group
                        .lines
                        .iter()
                        .map(|l| (l.line, l.quantity, l.backordered))
                        .collect(),
                )
            })
            .collect()
    }

    fn invalid_field(error: CoreError) -> (String, String) {
        match error {
            CoreError::InvalidInput { field, reason } => (field, reason),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn one_location_is_preferred_over_a_split() {
        let lines = [line(1, 2), line(2, 1)];
        let candidates = [
            loc(1, "WH-NEAR").stock(1, 5),
            loc(2, "STORE-NEAR").kind("store").stock(2, 5),
            loc(3, "WH-FAR").at(34.05, -118.24).stock(1, 2).stock(2, 1),
        ];
        let plan = route(&request(&lines, ship_to(Some(EAST))), &web(), &candidates).unwrap();
        assert_eq!(shape(&plan), vec![(3, vec![(0, 2, false), (1, 1, false)])]);
        let reasons = &plan.groups[0].reasons;
        assert!(
            reasons[0].starts_with("WH-FAR holds every line; the only eligible location"),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.starts_with("channel priority 3")));
        assert!(plan.excluded.is_empty());
    }

    #[test]
    fn express_drops_locations_past_their_local_cut_off() {
        // 21:30 UTC: 16:30 in New York (before 17:00), 22:30 in Berlin (after 17:00).
        let lines = [line(1, 1)];
        let candidates = [
            loc(1, "WH-BERLIN")
                .clock("Europe/Berlin", "17:00", 4)
                .stock(1, 9),
            loc(2, "STORE-MALL")
                .kind("store")
                .clock("America/New_York", "17:00", 4)
                .stock(1, 9),
        ];
        let mut express = request(&lines, ship_to(None));
        express.now = utc("2026-11-26T21:30:00Z");
        express.service_level = ServiceLevel::Express;
        let plan = route(&express, &web(), &candidates).unwrap();
        assert_eq!(shape(&plan), vec![(2, vec![(0, 1, false)])]);
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-26")));
        assert_eq!(
            plan.excluded,
            vec![Excluded {
                location_id: 1,
                code: "WH-BERLIN".into(),
                reason: "WH-BERLIN: past its 17:00 cut-off (Europe/Berlin) for express".into(),
            }]
        );

        // The same instant in standard: Berlin (priority 1) ships after the next local day.
        express.service_level = ServiceLevel::Standard;
        let plan = route(&express, &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].code, "WH-BERLIN");
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-27")));
        assert!(plan.groups[0].reasons.contains(
            &"ships 2026-11-27: ordered after the 17:00 cut-off (Europe/Berlin), handling 4 h from the next day"
                .to_owned()
        ));
    }

    #[test]
    fn standard_ships_on_the_local_date_handling_ends() {
        let lines = [line(1, 1)];
        // 12:00 in New York, before 15:00: 24 h of handling ends tomorrow noon.
        let candidates = [loc(1, "WH-EAST").stock(1, 1)];
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-27")));
        // 4 h of handling before the cut-off ships today.
        let candidates = [loc(1, "WH-EAST")
            .clock("America/New_York", "15:00", 4)
            .stock(1, 1)];
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-26")));
        // Past the 11:00 cut-off, 24 h from the next midnight end the day after.
        let candidates = [loc(1, "WH-EAST")
            .clock("America/New_York", "11:00", 24)
            .stock(1, 1)];
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-28")));
    }

    #[test]
    fn splits_only_when_needed_and_keeps_lines_whole() {
        // WH-A covers the most units (7 of 9), so it goes first; line 0 still ships whole
        // from WH-B, which holds all 5.
        let lines = [line(1, 5), line(2, 4)];
        let candidates = [
            loc(1, "WH-A").stock(1, 3).stock(2, 4),
            loc(2, "WH-B").stock(1, 5),
        ];
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(
            shape(&plan),
            vec![(1, vec![(1, 4, false)]), (2, vec![(0, 5, false)])]
        );
        assert!(plan.groups[0].reasons[0].starts_with(
            "split: no eligible location holds every line; WH-A covers the most units (7 of 9)"
        ));
        assert_eq!(
            plan.groups[1].reasons[0],
            "split: WH-B has the remaining 2 units of TS-0001-M"
        );

        // A line no location holds whole is split.
        let lines = [line(1, 8)];
        let candidates = [
            loc(1, "WH-A").stock(1, 5),
            loc(2, "STORE-MALL").kind("store").stock(1, 3),
        ];
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(
            shape(&plan),
            vec![(1, vec![(0, 5, false)]), (2, vec![(0, 3, false)])]
        );
        assert_eq!(
            plan.groups[1].reasons[0],
            "split: STORE-MALL has the remaining 3 units of TS-0001-M"
        );
    }

    #[test]
    fn nearer_location_wins_over_channel_priority() {
        let lines = [line(1, 1)];
        let candidates = [
            loc(1, "WH-WEST").at(34.05, -118.24).stock(1, 5),
            loc(2, "WH-EAST").at(40.80, -74.0).stock(1, 5),
        ];
        let plan = route(&request(&lines, ship_to(Some(EAST))), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].code, "WH-EAST");
        assert_eq!(
            plan.groups[0].reasons[0],
            "WH-EAST holds every line; nearest of 2 such locations (10 km)"
        );
        // Without a point, channel priority decides.
        let plan = route(&request(&lines, ship_to(None)), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].code, "WH-WEST");
    }

    #[test]
    fn channel_priority_breaks_distance_ties_then_location_id() {
        let lines = [line(1, 1)];
        let candidates = [
            loc(1, "WH-A").priority(2).stock(1, 5),
            loc(2, "WH-B").priority(1).stock(1, 5),
            loc(3, "WH-C").priority(1).stock(1, 5),
        ];
        let plan = route(&request(&lines, ship_to(Some(EAST))), &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].code, "WH-B");
        assert_eq!(
            plan.groups[0].reasons[0],
            "WH-B holds every line; tied at 0.0 km with WH-C on channel priority too; lower location id"
        );
        let plan = route(
            &request(&lines, ship_to(Some(EAST))),
            &web(),
            &candidates[..2],
        )
        .unwrap();
        assert_eq!(
            plan.groups[0].reasons[0],
            "WH-B holds every line; tied at 0.0 km with WH-A; channel priority 1 beats 2"
        );
        assert_eq!(
            plan.groups[0].reasons[1],
            "channel priority 1 (rank 1 of 2 eligible locations)"
        );
    }

    #[test]
    fn pos_fulfils_from_its_own_store_only() {
        let lines = [line(1, 2)];
        let candidates = [
            loc(1, "WH-EAST").priority(1).stock(1, 100),
            loc(2, "STORE-MALL").kind("store").priority(2).stock(1, 1),
            loc(3, "STORE-PARK").kind("store").priority(3).stock(1, 5),
        ];
        let pos = settings(&["store"], false, 1);
        let mut sale = request(&lines, ship_to(None));
        sale.store = Some(3);
        let plan = route(&sale, &pos, &candidates).unwrap();
        assert_eq!(shape(&plan), vec![(3, vec![(0, 2, false)])]);
        assert_eq!(
            plan.excluded
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            vec![
                "WH-EAST: a POS sale fulfils from its own store STORE-PARK only",
                "STORE-MALL: a POS sale fulfils from its own store STORE-PARK only",
            ]
        );
        // The clerk's store short: other stores' stock does not count.
        sale.store = Some(2);
        match route(&sale, &pos, &candidates).unwrap_err() {
            CoreError::InsufficientStock { lines } => {
                assert_eq!(lines.len(), 1);
                assert_eq!((lines[0].requested, lines[0].available), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        sale.store = Some(99);
        let (field, _) = invalid_field(route(&sale, &pos, &candidates).unwrap_err());
        assert_eq!(field, "store");
    }

    fn short_stock() -> Vec<Candidate> {
        vec![
            loc(1, "WH-EAST")
                .clock("America/New_York", "15:00", 4)
                .stock(1, 4),
            loc(2, "STORE-MALL")
                .kind("store")
                .clock("America/New_York", "15:00", 4)
                .stock(1, 3)
                .stock(2, 2),
            // Past its cut-off at noon New York time: out for express.
            loc(3, "WH-LATE")
                .clock("America/New_York", "11:00", 4)
                .stock(1, 50),
            loc(4, "DS-VENDOR").kind("dropship").stock(1, 500),
        ]
    }

    #[test]
    fn web_short_stock_is_insufficient_stock_with_eligible_available() {
        let lines = [line(1, 10), line(2, 2)];
        let mut order = request(&lines, ship_to(None));
        order.service_level = ServiceLevel::Express;
        match route(&order, &web(), &short_stock()).unwrap_err() {
            CoreError::InsufficientStock { lines } => assert_eq!(
                lines,
                vec![StockShortage {
                    field: "lines[0].quantity".into(),
                    variant_id: 1,
                    location_id: None,
                    requested: 10,
                    available: 7,
                }]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn b2b_backorders_units_beyond_stock() {
        let lines = [line(1, 10), line(2, 2)];
        let mut order = request(&lines, ship_to(None));
        order.service_level = ServiceLevel::Express;
        let b2b = settings(&["warehouse", "store"], true, 2);
        let plan = route(&order, &b2b, &short_stock()).unwrap();
        assert_eq!(
            shape(&plan),
            vec![
                (2, vec![(0, 3, false), (1, 2, false)]),
                (1, vec![(0, 4, false)]),
                (2, vec![(0, 3, true)]),
            ]
        );
        let backorder = plan.backorder().unwrap();
        assert_eq!(backorder.ships_on, None);
        assert_eq!(
            backorder.reasons,
            vec![
                "backordered: 3 units of TS-0001-M beyond stock",
                "owed by STORE-MALL, the first shipment's location",
            ]
        );
        assert_eq!(plan.shipments().count(), 2);

        // Nothing in stock at all: one backorder group at the first location by priority.
        let lines = [line(7, 4)];
        let plan = route(&request(&lines, ship_to(None)), &b2b, &short_stock()).unwrap();
        assert_eq!(shape(&plan), vec![(1, vec![(0, 4, true)])]);
        assert_eq!(
            plan.groups[0].reasons[0],
            "backordered: 4 units of TS-0007-M beyond stock"
        );
    }

    #[test]
    fn more_shipments_than_allowed_is_a_conflict() {
        let lines = [line(1, 6)];
        let candidates = [
            loc(1, "WH-A").stock(1, 2),
            loc(2, "WH-B").stock(1, 2),
            loc(3, "WH-C").stock(1, 2),
        ];
        match route(
            &request(&lines, ship_to(None)),
            &settings(&["warehouse"], false, 2),
            &candidates,
        )
        .unwrap_err()
        {
            CoreError::Conflict { field, reason } => {
                assert_eq!(field, "lines");
                assert_eq!(reason, "needs 3 shipments; the channel allows at most 2");
            }
            other => panic!("{other:?}"),
        }
        let plan = route(
            &request(&lines, ship_to(None)),
            &settings(&["warehouse"], false, 3),
            &candidates,
        )
        .unwrap();
        assert_eq!(plan.groups.len(), 3);
    }

    #[test]
    fn a_smaller_split_is_found_when_greedy_needs_too_many() {
        // Greedy takes WH-A (8 units), then needs WH-B and WH-C: 3 shipments. WH-B and WH-C
        // alone do it in 2, which is all the channel allows.
        let lines = [line(1, 6), line(2, 6)];
        let candidates = [
            loc(1, "WH-A").stock(1, 4).stock(2, 4),
            loc(2, "WH-B").stock(1, 5).stock(2, 1),
            loc(3, "WH-C").stock(1, 1).stock(2, 5),
        ];
        let order = request(&lines, ship_to(None));
        let plan = route(&order, &settings(&["warehouse"], false, 3), &candidates).unwrap();
        assert_eq!(
            shape(&plan),
            vec![
                (1, vec![(0, 4, false), (1, 4, false)]),
                (2, vec![(0, 2, false), (1, 1, false)]),
                (3, vec![(1, 1, false)]),
            ]
        );
        let plan = route(&order, &settings(&["warehouse"], false, 2), &candidates).unwrap();
        assert_eq!(
            shape(&plan),
            vec![
                (2, vec![(0, 5, false), (1, 1, false)]),
                (3, vec![(0, 1, false), (1, 5, false)]),
            ]
        );
    }

    #[test]
    fn same_day_needs_the_destination_region_and_fast_handling() {
        let lines = [line(1, 1)];
        let candidates = [
            loc(1, "WH-WEST")
                .region("us-west")
                .clock("America/Los_Angeles", "15:00", 2)
                .stock(1, 5),
            loc(2, "WH-EAST").stock(1, 5),
            loc(3, "STORE-EAST")
                .kind("store")
                .clock("America/New_York", "18:00", 2)
                .stock(1, 5),
        ];
        let mut order = request(&lines, ship_to(Some(EAST)));
        order.service_level = ServiceLevel::SameDay;
        let plan = route(&order, &web(), &candidates).unwrap();
        assert_eq!(shape(&plan), vec![(3, vec![(0, 1, false)])]);
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-26")));
        assert_eq!(
            plan.excluded
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            vec![
                "WH-WEST: region us-west cannot deliver same_day to us-east",
                "WH-EAST: handling 24 h is too slow for same_day (at most 4 h)",
            ]
        );
        // Express takes WH-EAST's 24 h handling, and ships today.
        order.service_level = ServiceLevel::Express;
        let plan = route(&order, &web(), &candidates).unwrap();
        assert_eq!(plan.groups[0].code, "WH-WEST");
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-26")));
    }

    #[test]
    fn pickup_fulfils_at_the_pickup_store() {
        let lines = [line(1, 2)];
        let candidates = [
            loc(1, "WH-EAST").stock(1, 50),
            loc(2, "STORE-MALL")
                .kind("store")
                .clock("America/New_York", "20:00", 2)
                .stock(1, 2),
        ];
        let plan = route(
            &request(&lines, Destination::Pickup { location_id: 2 }),
            &web(),
            &candidates,
        )
        .unwrap();
        assert_eq!(shape(&plan), vec![(2, vec![(0, 2, false)])]);
        assert_eq!(plan.groups[0].ships_on, Some(date("2026-11-26")));
        assert!(plan.groups[0].reasons.contains(
            &"ready for pickup 2026-11-26: ordered before the 20:00 cut-off (America/New_York), handling 2 h"
                .to_owned()
        ));
        assert_eq!(
            plan.excluded[0].reason,
            "WH-EAST: the order is picked up at STORE-MALL"
        );
    }

    #[test]
    fn invalid_inputs_name_their_field() {
        let candidates = [
            loc(1, "WH-EAST").stock(1, 5),
            loc(2, "STORE-MALL").kind("store"),
        ];
        let no_lines: [LineRequest; 0] = [];
        let one = [line(1, 1)];
        let zero = [line(1, 1), line(2, 0)];
        let cases: Vec<(RoutingRequest<'_>, RoutingSettings, &str, &str)> = vec![
            (
                request(&no_lines, ship_to(None)),
                web(),
                "lines",
                "at least one line",
            ),
            (
                request(&zero, ship_to(None)),
                web(),
                "lines[1].quantity",
                "must be at least 1",
            ),
            (
                RoutingRequest {
                    service_level: ServiceLevel::SameDay,
                    ..request(&one, ship_to(None))
                },
                RoutingSettings {
                    service_levels: vec![ServiceLevel::Standard, ServiceLevel::Express],
                    ..web()
                },
                "serviceLevel",
                "same_day is not offered; this channel offers standard, express",
            ),
            (
                request(&one, Destination::Pickup { location_id: 9 }),
                web(),
                "pickupAt",
                "location 9 does not fulfil",
            ),
            (
                request(&one, Destination::Pickup { location_id: 1 }),
                web(),
                "pickupAt",
                "WH-EAST is a warehouse; orders are picked up at stores only",
            ),
            (
                request(&one, Destination::Pickup { location_id: 2 }),
                settings(&["warehouse"], false, 1),
                "pickupAt",
                "STORE-MALL: kind store is not eligible on this channel",
            ),
            (
                request(
                    &one,
                    ship_to(Some(GeoPoint {
                        latitude: 91.0,
                        longitude: 0.0,
                    })),
                ),
                web(),
                "destination.point.latitude",
                "between",
            ),
        ];
        for (request, settings, field, reason) in cases {
            let (got_field, got_reason) =
                invalid_field(route(&request, &settings, &candidates).unwrap_err());
            assert_eq!(got_field, field);
            assert!(
                got_reason.contains(reason),
                "{got_reason:?} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn ineligible_kinds_and_bad_clocks_are_excluded_with_reasons() {
        let lines = [line(1, 1)];
        let candidates = [
            loc(1, "WH-CENTRAL").stock(1, 5),
            loc(2, "STORE-MARS")
                .kind("store")
                .clock("Mars/Olympus", "15:00", 1)
                .stock(1, 5),
            loc(3, "STORE-BAD")
                .kind("store")
                .clock("UTC", "3pm", 1)
                .stock(1, 5),
            loc(4, "STORE-MALL").kind("store").stock(1, 5),
        ];
        let plan = route(
            &request(&lines, ship_to(None)),
            &settings(&["store"], false, 1),
            &candidates,
        )
        .unwrap();
        assert_eq!(plan.groups[0].code, "STORE-MALL");
        assert_eq!(
            plan.excluded
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            vec![
                "WH-CENTRAL: kind warehouse is not eligible on this channel",
                "STORE-MARS: unknown time zone \"Mars/Olympus\"",
                "STORE-BAD: cut-off \"3pm\" is not a HH:MM time",
            ]
        );
    }

    #[test]
    fn service_levels_parse_and_print() {
        for level in ServiceLevel::ALL {
            assert_eq!(ServiceLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(ServiceLevel::parse("SAME_DAY"), Some(ServiceLevel::SameDay));
        assert_eq!(
            ServiceLevel::parse(" Express "),
            Some(ServiceLevel::Express)
        );
        assert_eq!(ServiceLevel::parse("overnight"), None);
    }

    #[test]
    fn settings_come_from_the_channel_row() {
        let channel = channel::Model {
            id: 1,
            code: "b2b".into(),
            name: "B2B".into(),
            currency: "USD".into(),
            safety_stock: 0,
            low_stock_threshold: 3,
            routing_policy: "default".into(),
            allocation_strategy: "priority".into(),
            reservation_ttl_seconds: 0,
            eligible_location_kinds: "warehouse, Dropship,".into(),
            service_levels: "standard,express,bogus,express".into(),
            max_shipments: 0,
            backorders: true,
            created_at: utc("2026-01-01T00:00:00Z"),
            updated_at: utc("2026-01-01T00:00:00Z"),
        };
        assert_eq!(
            RoutingSettings::from_channel(&channel),
            RoutingSettings {
                eligible_kinds: vec!["warehouse".into(), "dropship".into()],
                service_levels: vec![ServiceLevel::Standard, ServiceLevel::Express],
                max_shipments: 1,
                backorders: true,
            }
        );
    }

    #[test]
    fn plan_serializes_for_the_gateway() {
        let lines = [line(1, 1)];
        let plan = route(
            &request(&lines, ship_to(None)),
            &web(),
            &[loc(1, "WH-EAST").stock(1, 1)],
        )
        .unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["groups"][0]["ships_on"], "2026-11-27");
        assert_eq!(json["groups"][0]["lines"][0]["backordered"], false);
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            prop::sample::select(vec!["warehouse", "store", "dropship"]),
            0i32..3,
            -2i32..3,
            -2i32..3,
            prop::collection::vec(0i64..7, 4),
        )
            .prop_map(|(kind, priority, lat, lon, units)| {
                let mut candidate = loc(0, "X")
                    .kind(kind)
                    .priority(priority)
                    .at(40.0 + f64::from(lat), -74.0 + f64::from(lon));
                for (variant, units) in (1..).zip(units) {
                    candidate = candidate.stock(variant, units);
                }
                candidate
            })
    }

    proptest! {
        #[test]
        fn plans_respect_stock_lines_and_limits(
            mut candidates in prop::collection::vec(arb_candidate(), 0..6),
            wanted in prop::collection::vec((1i64..5, 1i64..9), 1..5),
            kinds in prop::sample::subsequence(vec!["warehouse", "store", "dropship"], 1..=3),
            max_shipments in 1usize..4,
            backorders in any::<bool>(),
            with_point in any::<bool>(),
        ) {
            for (id, candidate) in (1..).zip(candidates.iter_mut()) {
                candidate.location_id = id;
                candidate.code = format!("L{id}");
            }
            let lines: Vec<LineRequest> = wanted.iter().map(|(v, q)| line(*v, *q)).collect();
            let settings = settings(&kinds, backorders, max_shipments);
            let point = with_point.then_some(EAST);
            let order = request(&lines, ship_to(point));
            let eligible: Vec<&Candidate> =
                candidates.iter().filter(|c| kinds.contains(&c.kind.as_str())).collect();
            let mut demand: BTreeMap<i64, i64> = BTreeMap::new();
            for l in &lines {
                *demand.entry(l.variant_id).or_default() += l.quantity;
            }
            let pooled = |variant: i64| eligible.iter().map(|c| c.units_of(variant)).sum::<i64>();
            let short = demand.iter().any(|(v, q)| pooled(*v) < *q);
            let one_holds_all = eligible
                .iter()
                .any(|c| demand.iter().all(|(v, q)| c.units_of(*v) >= *q));

            match route(&order, &settings, &candidates) {
                Ok(plan) => {
                    let mut taken: HashMap<(i64, i64), i64> = HashMap::new();
                    let mut per_line = vec![0i64; lines.len()];
                    for group in &plan.groups {
                        prop_assert_eq!(group.ships_on.is_none(), group.lines.iter().all(|l| l.backordered));
                        prop_assert!(group.lines.windows(2).all(|w| w[0].line < w[1].line));
                        for l in &group.lines {
                            prop_assert!(l.quantity > 0);
                            prop_assert_eq!(l.variant_id, lines[l.line].variant_id);
                            per_line[l.line] += l.quantity;
                            if !l.backordered {
                                *taken.entry((group.location_id, l.variant_id)).or_default() += l.quantity;
                            }
                        }
                    }
                    for ((location, variant), units) in taken {
                        let c = candidates.iter().find(|c| c.location_id == location).unwrap();
                        prop_assert!(kinds.contains(&c.kind.as_str()));
                        prop_assert!(units <= c.units_of(variant), "L{location} v{variant}: {units}");
                    }
                    for (l, assigned) in lines.iter().zip(&per_line) {
                        prop_assert_eq!(*assigned, l.quantity);
                    }
                    prop_assert!(plan.shipments().count() <= max_shipments);
                    prop_assert!(plan.groups.iter().filter(|g| g.ships_on.is_none()).count() <= 1);
                    prop_assert_eq!(plan.backorder().is_some(), short);
                    if one_holds_all {
                        prop_assert_eq!(plan.groups.len(), 1);
                    }
                    prop_assert_eq!(plan.excluded.len(), candidates.len() - eligible.len());
                }
                Err(CoreError::InsufficientStock { lines: shortages }) => {
                    prop_assert!(short && (!backorders || eligible.is_empty()));
                    for s in shortages {
                        prop_assert!(s.available < s.requested);
                    }
                }
                Err(CoreError::Conflict { field, .. }) => {
                    prop_assert_eq!(field, "lines");
                    prop_assert!(!one_holds_all && max_shipments < eligible.len());
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}

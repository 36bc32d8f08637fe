//! Which locations a reservation takes its units from: the channel's allocation strategy
//! over the units each location may give (pure, so it is tested without a database).

use crate::CoreError;

/// How a channel's reservations choose locations (`channel.allocation_strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationStrategy {
    /// The channel's location priority (1 first).
    Priority,
    /// The location with the most sellable units first.
    HighestStock,
    /// The location nearest to the reservation's point first (priority without a point).
    Nearest,
}

impl AllocationStrategy {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::HighestStock => "highest_stock",
            Self::Nearest => "nearest",
        }
    }

    /// The strategy of a stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "priority" => Some(Self::Priority),
            "highest_stock" => Some(Self::HighestStock),
            "nearest" => Some(Self::Nearest),
            _ => None,
        }
    }
}

/// A point on Earth in degrees, for the `nearest` strategy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoPoint {
    /// Latitude, −90 to 90.
    pub latitude: f64,
    /// Longitude, −180 to 180.
    pub longitude: f64,
}

impl GeoPoint {
    /// Checks the ranges; `field` names the input that carried the point.
    pub fn validate(self, field: &str) -> Result<Self, CoreError> {
        if !self.latitude.is_finite() || !(-90.0..=90.0).contains(&self.latitude) {
            return Err(CoreError::invalid(
                format!("{field}.latitude"),
                "must be between -90 and 90",
            ));
        }
        if !self.longitude.is_finite() || !(-180.0..=180.0).contains(&self.longitude) {
            return Err(CoreError::invalid(
                format!("{field}.longitude"),
                "must be between -180 and 180",
            ));
        }
        Ok(self)
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().min(1.0).asin()
    }
}

/// A location a reservation may take units from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The stock location.
    pub location_id: i64,
    /// Its priority for the channel (lower first).
    pub priority: i32,
    /// Units the channel may reserve there.
    pub sellable: i64,
    /// Where it is.
    pub point: GeoPoint,
}

/// Chooses where `quantity` units come from: the candidates in the strategy's order, the
/// first that can give every unit alone when one can (fewer shipments), else as many as each
/// gives in that order. Returns `(location_id, units)` pairs, or `None` when all candidates
/// together cannot give `quantity`.
pub fn allocate(
    strategy: AllocationStrategy,
    near: Option<GeoPoint>,
    candidates: &[Candidate],
    quantity: i64,
) -> Option<Vec<(i64, i64)>> {
    let mut ordered: Vec<&Candidate> = candidates.iter().filter(|c| c.sellable > 0).collect();
    match (strategy, near) {
        (AllocationStrategy::HighestStock, _) => ordered.sort_by(|a, b| {
            b.sellable
                .cmp(&a.sellable)
                .then(a.priority.cmp(&b.priority))
                .then(a.location_id.cmp(&b.location_id))
        }),
        (AllocationStrategy::Nearest, Some(point)) => ordered.sort_by(|a, b| {
            point
                .distance_km(a.point)
                .total_cmp(&point.distance_km(b.point))
                .then(a.priority.cmp(&b.priority))
                .then(a.location_id.cmp(&b.location_id))
        }),
        _ => ordered.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(a.location_id.cmp(&b.location_id))
        }),
    }
    if quantity <= 0 {
        return None;
    }
    if let Some(whole) = ordered.iter().find(|c| c.sellable >= quantity) {
        return Some(vec![(whole.location_id, quantity)]);
    }
    let mut plan = Vec::new();
    let mut left = quantity;
    for candidate in ordered {
        let take = candidate.sellable.min(left);
        plan.push((candidate.location_id, take));
        left -= take;
        if left == 0 {
            return Some(plan);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(location_id: i64, priority: i32, sellable: i64, latitude: f64) -> Candidate {
        Candidate {
            location_id,
            priority,
            sellable,
            point: GeoPoint {
                latitude,
                longitude: 0.0,
            },
        }
    }

    #[test]
    fn priority_prefers_one_location_then_splits_in_order() {
        let c = [at(1, 1, 2, 0.0), at(2, 2, 10, 10.0), at(3, 3, 4, 20.0)];
        assert_eq!(
            allocate(AllocationStrategy::Priority, None, &c, 2),
            Some(vec![(1, 2)])
        );
        assert_eq!(
            allocate(AllocationStrategy::Priority, None, &c, 5),
            Some(vec![(2, 5)])
        );
        assert_eq!(
            allocate(AllocationStrategy::Priority, None, &c, 13),
            Some(vec![(1, 2), (2, 10), (3, 1)])
        );
        assert_eq!(allocate(AllocationStrategy::Priority, None, &c, 17), None);
    }

    #[test]
    fn highest_stock_and_nearest_reorder() {
        let c = [at(1, 1, 2, 0.0), at(2, 2, 10, 10.0), at(3, 3, 4, 20.0)];
        assert_eq!(
            allocate(AllocationStrategy::HighestStock, None, &c, 1),
            Some(vec![(2, 1)])
        );
        let near = GeoPoint {
            latitude: 19.0,
            longitude: 0.0,
        };
        assert_eq!(
            allocate(AllocationStrategy::Nearest, Some(near), &c, 3),
            Some(vec![(3, 3)])
        );
        assert_eq!(
            allocate(AllocationStrategy::Nearest, None, &c, 1),
            Some(vec![(1, 1)]),
            "without a point, nearest falls back to priority"
        );
    }
}

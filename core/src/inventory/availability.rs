//! Availability rules (DESIGN.md §5) as pure functions over plain numbers.

/// Unreserved units at one location; never negative.
pub fn location_available(on_hand: i32, reserved: i32) -> i64 {
    (i64::from(on_hand) - i64::from(reserved)).max(0)
}

/// A channel's availability: the sum over its locations of (on_hand − reserved), minus the
/// channel's safety stock, never below zero. `levels` are `(on_hand, reserved)` pairs.
pub fn channel_available(levels: impl IntoIterator<Item = (i32, i32)>, safety_stock: i32) -> i64 {
    let total: i64 = levels
        .into_iter()
        .map(|(on_hand, reserved)| location_available(on_hand, reserved))
        .sum();
    (total - i64::from(safety_stock.max(0))).max(0)
}

/// The coarse view shown to storefront shoppers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockStatus {
    InStock,
    LowStock,
    OutOfStock,
}

/// Classifies an available quantity: low when at or under the channel's threshold.
pub fn stock_status(available: i64, low_stock_threshold: i32) -> StockStatus {
    if available <= 0 {
        StockStatus::OutOfStock
    } else if available <= i64::from(low_stock_threshold) {
        StockStatus::LowStock
    } else {
        StockStatus::InStock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_unreserved_stock_then_removes_safety_stock() {
        assert_eq!(channel_available([(10, 2), (5, 0)], 3), 10);
        assert_eq!(channel_available([(10, 2), (5, 0)], 0), 13);
    }

    #[test]
    fn never_negative_even_with_inconsistent_rows_or_large_safety_stock() {
        assert_eq!(
            channel_available([(2, 5), (1, 0)], 0),
            1,
            "an over-reserved row counts as zero"
        );
        assert_eq!(channel_available([(3, 0)], 10), 0);
        assert_eq!(channel_available(std::iter::empty(), 0), 0);
    }

    #[test]
    fn classifies_by_threshold() {
        assert_eq!(stock_status(0, 5), StockStatus::OutOfStock);
        assert_eq!(stock_status(1, 5), StockStatus::LowStock);
        assert_eq!(stock_status(5, 5), StockStatus::LowStock);
        assert_eq!(stock_status(6, 5), StockStatus::InStock);
    }
}

//! Field visibility by channel: what each kind of client may see of the core's data.
//! (Operation size limits live beside it, in [`super::analysis`].)

/// How much of the stock picture a channel sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockVisibility {
    /// A status, and a quantity only when stock is low ("2 left"): web and mobile shoppers.
    Coarse,
    /// The exact available quantity: B2B buyers planning large orders.
    Exact,
    /// Exact quantities per location: POS terminals.
    PerLocation,
}

impl StockVisibility {
    /// The visibility of a channel; channels not named here get the coarse view.
    pub fn for_channel(code: &str) -> Self {
        match code {
            "pos" => Self::PerLocation,
            "b2b" => Self::Exact,
            _ => Self::Coarse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StockVisibility;

    #[test]
    fn storefronts_are_coarse_and_only_pos_sees_locations() {
        assert_eq!(StockVisibility::for_channel("web"), StockVisibility::Coarse);
        assert_eq!(
            StockVisibility::for_channel("mobile"),
            StockVisibility::Coarse
        );
        assert_eq!(StockVisibility::for_channel("b2b"), StockVisibility::Exact);
        assert_eq!(
            StockVisibility::for_channel("pos"),
            StockVisibility::PerLocation
        );
        assert_eq!(
            StockVisibility::for_channel("kiosk"),
            StockVisibility::Coarse
        );
    }
}

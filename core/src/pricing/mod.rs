//! Pricing: price lists, volume tiers, quantity rules and promotions.
//!
//! [`resolve`] is the rule itself, a pure function over plain data; loading its candidates
//! from the database lives beside it so a page of variants is priced in one round trip.

pub mod admin;
pub mod load;
pub mod resolve;

pub use resolve::{
    AppliedRule, Discount, PriceBreakdown, PriceCandidates, PriceEntry, PriceListInfo, PriceScope,
    PriceTier, PriceViewer, PricedItem, PricingError, PromotionInfo, PromotionTarget, QuantityRule,
    RuleKind, minor_unit_digits, price_tiers, resolve_price, round_to_minor_unit,
};

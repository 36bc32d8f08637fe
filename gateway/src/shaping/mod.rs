//! Query shaping: what each channel may ask for and see.
//!
//! - [`analysis`]: the size of an operation as it would execute (fragments expanded, each
//!   costed once), checked against the channel's limits before validation and before any SQL
//! - [`input`]: bracket nesting, NUL characters and variable defaults, before parsing/SQL
//! - [`persisted`]: per-channel safelists and automatic persisted queries
//! - [`visibility`]: how much of the stock picture each channel sees

pub mod analysis;
pub mod input;
pub mod persisted;
pub mod visibility;

pub use visibility::StockVisibility;

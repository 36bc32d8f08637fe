//! The one error type of the core; the gateway maps each variant to a GraphQL error code.

use sea_orm::DbErr;

/// An error a caller of the core can act on, or a database failure it cannot.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{entity} {key} not found")]
    NotFound { entity: &'static str, key: String },
    /// An input value is malformed or out of range; `field` names it as the caller sent it.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },
    /// Not enough unreserved stock for the request; one line per shortfall.
    #[error("insufficient stock: {}", describe_shortages(lines))]
    InsufficientStock { lines: Vec<StockShortage> },
    /// The request is well-formed but the thing is not in a state that allows it (a
    /// reservation already released, or expired); `field` names the input that points at it.
    #[error("conflict on {field}: {reason}")]
    Conflict { field: String, reason: String },
    /// The caller may not act on the thing `field` points at (someone else's reservation).
    #[error("forbidden {field}: {reason}")]
    Forbidden { field: String, reason: String },
    /// The database failed; details are logged, never shown to clients.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

/// One shortfall of an [`CoreError::InsufficientStock`]: what was asked and what was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockShortage {
    /// The input field that carried the quantity (`quantity`, `lines[2].quantity`).
    pub field: String,
    /// The variant short of stock.
    pub variant_id: i64,
    /// The location short of stock, or `None` for the channel's pooled availability.
    pub location_id: Option<i64>,
    /// Units asked for.
    pub requested: i64,
    /// Units that could be had.
    pub available: i64,
}

fn describe_shortages(lines: &[StockShortage]) -> String {
    lines
        .iter()
        .map(|line| {
            let at = line
                .location_id
                .map_or_else(String::new, |id| format!(" at location {id}"));
            format!(
                "{}: variant {}{at}: {} requested, {} available",
                line.field, line.variant_id, line.requested, line.available
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`CoreError::Conflict`].
    pub fn conflict(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Conflict {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

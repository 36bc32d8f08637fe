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
    /// The database failed; details are logged, never shown to clients.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

impl CoreError {
    /// Shorthand for [`CoreError::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

//! The gateway's one place for error codes (`extensions.code`): every code, the mapping from
//! core errors to codes, and the HTTP status each code answers with when it refuses a whole
//! request ([`request_status`]); field errors always travel in a 200 with `data`.

use async_graphql::ErrorExtensions;
use commerce_core::CoreError;

/// Codes every client can branch on; they never change meaning.
pub mod code {
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const CONFLICT: &str = "CONFLICT";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// An idempotency key sent again with another request (query, operation or variables).
    pub const IDEMPOTENCY_CONFLICT: &str = "IDEMPOTENCY_CONFLICT";
    /// An idempotency key whose first request is still running; retry after `Retry-After`.
    pub const IDEMPOTENCY_IN_PROGRESS: &str = "IDEMPOTENCY_IN_PROGRESS";
    pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
    pub const INTERNAL: &str = "INTERNAL";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const NOT_ACCEPTABLE: &str = "NOT_ACCEPTABLE";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const PERSISTED_QUERY_NOT_ALLOWED: &str = "PERSISTED_QUERY_NOT_ALLOWED";
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    pub const QUANTITY_RULE_VIOLATION: &str = "QUANTITY_RULE_VIOLATION";
    pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const UNKNOWN_CHANNEL: &str = "UNKNOWN_CHANNEL";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
}

/// A failure inside a resolver, already classified for the client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// An argument is malformed or out of range; `field` names the argument path.
    #[error("invalid {field}: {reason}")]
    BadUserInput { field: String, reason: String },
    /// The thing changed is in a state that refuses the change (a reservation already
    /// released or expired); `field` names the input.
    #[error("{reason}")]
    Conflict { field: String, reason: String },
    /// Not enough stock: one line per shortfall, each with what was asked and what is
    /// available (`extensions.shortages`).
    #[error("insufficient stock: {}", describe_shortages(lines))]
    InsufficientStock { lines: Vec<Shortage> },
    /// The viewer may not see this field on this channel.
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something failed on our side; details went to the log, never to the client.
    #[error("internal error")]
    Internal,
}

/// One shortfall of an `INSUFFICIENT_STOCK` error: what was asked and what is available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortage {
    /// The input field that carried the quantity (`input.quantity`).
    pub field: String,
    pub variant_id: i64,
    /// `None` for a channel's pooled stock.
    pub location_id: Option<i64>,
    /// The variant's SKU, when the resolver knows it.
    pub sku: Option<String>,
    /// The location's code, when the resolver knows it.
    pub location: Option<String>,
    pub requested: i64,
    pub available: i64,
}

fn describe_shortages(lines: &[Shortage]) -> String {
    lines
        .iter()
        .map(|line| {
            let what = line
                .sku
                .clone()
                .unwrap_or_else(|| format!("variant {}", line.variant_id));
            let at = match (&line.location, line.location_id) {
                (Some(code), _) => format!(" at {code}"),
                (None, Some(id)) => format!(" at location {id}"),
                (None, None) => String::new(),
            };
            format!(
                "{}: {what}{at}: {} requested, {} available",
                line.field, line.requested, line.available
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Shortage {
    /// The line as `extensions.shortages[i]`.
    fn value(&self) -> async_graphql::Value {
        use crate::graphql::ids::{Kind, encode_id};
        use async_graphql::{Name, Value};
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::from);
        let fields = [
            ("field", Value::from(self.field.as_str())),
            (
                "variantId",
                Value::from(encode_id(Kind::Variant, self.variant_id).to_string()),
            ),
            ("sku", text(&self.sku)),
            (
                "locationId",
                self.location_id.map_or(Value::Null, |id| {
                    Value::from(encode_id(Kind::StockLocation, id).to_string())
                }),
            ),
            ("location", text(&self.location)),
            ("requested", Value::from(self.requested)),
            ("available", Value::from(self.available)),
        ];
        Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (Name::new(name), value))
                .collect(),
        )
    }
}

impl ApiError {
    pub fn bad_input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadUserInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The stable `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput { .. } => code::BAD_USER_INPUT,
            Self::Conflict { .. } => code::CONFLICT,
            Self::InsufficientStock { .. } => code::INSUFFICIENT_STOCK,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Internal => code::INTERNAL,
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::NotFound { entity, key } => {
                Self::NotFound(format!("{entity} {key} not found"))
            }
            CoreError::InvalidInput { field, reason } => Self::BadUserInput { field, reason },
            CoreError::InsufficientStock { lines } => Self::InsufficientStock {
                lines: lines
                    .into_iter()
                    .map(|line| Shortage {
                        field: line.field,
                        variant_id: line.variant_id,
                        location_id: line.location_id,
                        sku: None,
                        location: None,
                        requested: line.requested,
                        available: line.available,
                    })
                    .collect(),
            },
            CoreError::Conflict { field, reason } => Self::Conflict { field, reason },
            CoreError::Forbidden { field, reason } => Self::Forbidden(format!("{field}: {reason}")),
            CoreError::Database(err) => {
                // Bounded per request: a failing pool fails every loader and resolver at once.
                crate::log_budget::database_failure(&err);
                Self::Internal
            }
        }
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                Self::BadUserInput { field, .. } | Self::Conflict { field, .. } => {
                    ext.set("field", field.as_str());
                }
                Self::InsufficientStock { lines } => {
                    if let Some(first) = lines.first() {
                        ext.set("field", first.field.as_str());
                    }
                    let shortages: Vec<_> = lines.iter().map(Shortage::value).collect();
                    ext.set("shortages", shortages);
                }
                _ => {}
            }
        })
    }
}

/// Turns core and API results into GraphQL results that carry their code.
pub trait ApiResultExt<T> {
    fn api(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<ApiError>> ApiResultExt<T> for Result<T, E> {
    fn api(self) -> async_graphql::Result<T> {
        self.map_err(|err| err.into().extend())
    }
}

/// The HTTP status of a request refused with `code` before (or instead of) execution, under
/// `application/graphql-response+json` (`graphql_response`) or legacy `application/json`.
/// The spec's rule: a request that cannot run is 4xx under the new media type and 200 for
/// legacy clients; authentication, permission, rate and transport failures keep their own
/// status under both.
pub fn request_status(code: &str, graphql_response: bool) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match code {
        code::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
        code::FORBIDDEN => StatusCode::FORBIDDEN,
        code::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        code::METHOD_NOT_ALLOWED => StatusCode::METHOD_NOT_ALLOWED,
        code::NOT_ACCEPTABLE => StatusCode::NOT_ACCEPTABLE,
        code::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code::BAD_REQUEST => StatusCode::BAD_REQUEST,
        // A key's state, not the request's shape: the same status for legacy clients, who
        // must not read a 200 as "it ran".
        code::IDEMPOTENCY_CONFLICT | code::IDEMPOTENCY_IN_PROGRESS => StatusCode::CONFLICT,
        code::INTERNAL => StatusCode::INTERNAL_SERVER_ERROR,
        _ if graphql_response => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn request_statuses_follow_the_spec_and_keep_auth_rate_and_transport_statuses() {
        assert_eq!(
            request_status(code::UNKNOWN_CHANNEL, true),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(request_status(code::UNKNOWN_CHANNEL, false), StatusCode::OK);
        assert_eq!(
            request_status(code::QUERY_TOO_COMPLEX, true),
            StatusCode::BAD_REQUEST
        );
        for graphql_response in [true, false] {
            assert_eq!(
                request_status(code::UNAUTHENTICATED, graphql_response),
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                request_status(code::RATE_LIMITED, graphql_response),
                StatusCode::TOO_MANY_REQUESTS
            );
            assert_eq!(
                request_status(code::INTERNAL, graphql_response),
                StatusCode::INTERNAL_SERVER_ERROR
            );
            for idempotency in [code::IDEMPOTENCY_CONFLICT, code::IDEMPOTENCY_IN_PROGRESS] {
                assert_eq!(
                    request_status(idempotency, graphql_response),
                    StatusCode::CONFLICT
                );
            }
        }
    }
}

//! Exact decimal storage.
//!
//! SQLite has no exact decimal type and SeaORM decodes SQLite decimals through `f64`, which
//! silently turns 19.99 into 19.989999…. Money therefore lives in the database as the decimal's
//! canonical text, on SQLite and PostgreSQL alike, and is `rust_decimal::Decimal` everywhere else.

use rust_decimal::Decimal;
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, StringLen, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, DbErr, QueryResult, TryGetError, TryGetable, Value};
use serde::{Deserialize, Serialize};

/// A `Decimal` column stored losslessly as text.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ExactDecimal(pub Decimal);

impl From<Decimal> for ExactDecimal {
    fn from(value: Decimal) -> Self {
        Self(value)
    }
}

impl From<ExactDecimal> for Decimal {
    fn from(value: ExactDecimal) -> Self {
        value.0
    }
}

impl From<ExactDecimal> for Value {
    fn from(value: ExactDecimal) -> Self {
        Value::String(Some(value.0.normalize().to_string()))
    }
}

impl TryGetable for ExactDecimal {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        let text = String::try_get_by(res, index)?;
        text.parse::<Decimal>().map(ExactDecimal).map_err(|err| {
            TryGetError::DbErr(DbErr::Type(format!(
                "stored amount {text:?} is not a decimal: {err}"
            )))
        })
    }
}

impl ValueType for ExactDecimal {
    fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
        match value {
            Value::String(Some(text)) => text.parse().map(ExactDecimal).map_err(|_| ValueTypeErr),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "ExactDecimal".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::String
    }

    fn column_type() -> ColumnType {
        ColumnType::String(StringLen::N(40))
    }
}

impl Nullable for ExactDecimal {
    fn null() -> Value {
        Value::String(None)
    }
}

//! Money: exact amounts with a currency, and how they are stored.
//!
//! Everywhere in the core an amount is a `rust_decimal::Decimal` (never a float), and a priced
//! amount is a [`Money`]: the amount plus an ISO-4217 currency code.
//!
//! In the database every money column is an exact integer at a fixed scale of
//! [`STORED_SCALE`] decimal places (`BIGINT`; 19.99 is stored as 199900), so SQL can sort and
//! sum it on SQLite and PostgreSQL alike. [`StoredAmount`] is the entity field type that does
//! that conversion; no other code sees the stored integer. Writing goes through [`to_stored`]
//! (or [`Money::to_stored`]), which refuses what cannot be stored exactly.

use std::fmt;

use rust_decimal::Decimal;
use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, QueryResult, TryGetError, TryGetable, Value};
use serde::{Deserialize, Serialize};

/// Decimal places of a stored amount: the database holds `amount × 10^4` as a 64-bit integer.
pub const STORED_SCALE: u32 = 4;

/// The largest amount a money column can hold: `i64::MAX / 10^4` = 922337203685477.5807.
pub const MAX_AMOUNT: Decimal =
    Decimal::from_parts(u32::MAX, u32::MAX >> 1, 0, false, STORED_SCALE);

/// Why an amount or a currency is not acceptable as money.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {amount} is negative: money amounts are zero or more")]
    Negative { amount: Decimal },
    #[error(
        "amount {amount} has {places} decimal places: at most {STORED_SCALE} are stored \
         (round it first)"
    )]
    TooManyDecimalPlaces { amount: Decimal, places: u32 },
    #[error("amount {amount} is too large: the largest storable amount is {MAX_AMOUNT}")]
    TooLarge { amount: Decimal },
    #[error("currency {currency:?} is not an ISO-4217 code of three uppercase letters A-Z")]
    InvalidCurrency { currency: String },
}

/// Checks that `amount` can be stored exactly: not negative, at most [`STORED_SCALE`]
/// decimal places (trailing zeros do not count), at most [`MAX_AMOUNT`].
pub fn validate_amount(amount: Decimal) -> Result<(), MoneyError> {
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(MoneyError::Negative { amount });
    }
    let places = amount.normalize().scale();
    if places > STORED_SCALE {
        return Err(MoneyError::TooManyDecimalPlaces { amount, places });
    }
    if amount > MAX_AMOUNT {
        return Err(MoneyError::TooLarge { amount });
    }
    Ok(())
}

/// Checks that `currency` looks like an ISO-4217 code: exactly three ASCII letters A-Z.
pub fn validate_currency(currency: &str) -> Result<(), MoneyError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(MoneyError::InvalidCurrency {
            currency: currency.to_owned(),
        })
    }
}

/// Validates `amount` for a money column (see [`validate_amount`]); call it before writing.
pub fn to_stored(amount: Decimal) -> Result<StoredAmount, MoneyError> {
    StoredAmount::new(amount)
}

/// An exact, non-negative amount with its currency.
///
/// Serializes as `{"amount": "19.99", "currency": "USD"}`: the amount is a decimal string,
/// never a float. Deserializing validates like [`Money::new`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawMoney")]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: String,
}

#[derive(Deserialize)]
struct RawMoney {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: String,
}

impl TryFrom<RawMoney> for Money {
    type Error = MoneyError;

    fn try_from(raw: RawMoney) -> Result<Self, MoneyError> {
        Money::new(raw.amount, raw.currency)
    }
}

impl Money {
    /// `amount` in `currency`; refuses a negative amount, more than four decimal places, an
    /// amount above [`MAX_AMOUNT`] and a currency that is not three uppercase letters.
    pub fn new(amount: Decimal, currency: impl Into<String>) -> Result<Self, MoneyError> {
        let currency = currency.into();
        validate_amount(amount)?;
        validate_currency(&currency)?;
        Ok(Self { amount, currency })
    }

    /// A stored amount with its currency (e.g. a list price and its list's currency).
    pub fn from_stored(
        amount: StoredAmount,
        currency: impl Into<String>,
    ) -> Result<Self, MoneyError> {
        Self::new(amount.amount(), currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The amount as a money column value (always exact: `Money` is validated).
    pub fn to_stored(&self) -> StoredAmount {
        StoredAmount(self.amount)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// The entity field type of every money column: a `Decimal` in Rust, `amount × 10^4` as a
/// `BIGINT` in the database. Only [`to_stored`] / [`StoredAmount::new`] (and reading from the
/// database) make one, so writing it is always exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StoredAmount(#[serde(with = "rust_decimal::serde::str")] Decimal);

impl StoredAmount {
    /// The amount zero.
    pub const ZERO: StoredAmount = StoredAmount(Decimal::ZERO);

    /// Validates `amount` (see [`validate_amount`]).
    pub fn new(amount: Decimal) -> Result<Self, MoneyError> {
        validate_amount(amount)?;
        Ok(Self(amount))
    }

    /// The amount, normalized when read from the database (`199900` reads as `19.99`).
    pub fn amount(self) -> Decimal {
        self.0
    }

    /// `amount × 10^4`, the integer in the database. Exact by construction.
    fn units(self) -> i64 {
        let mut scaled = self.0;
        scaled.rescale(STORED_SCALE);
        <i64 as TryFrom<i128>>::try_from(scaled.mantissa())
            .expect("a validated amount fits the stored integer")
    }

    fn from_units(units: i64) -> Self {
        Self(Decimal::new(units, STORED_SCALE).normalize())
    }
}

impl TryFrom<Decimal> for StoredAmount {
    type Error = MoneyError;

    fn try_from(amount: Decimal) -> Result<Self, MoneyError> {
        Self::new(amount)
    }
}

impl From<StoredAmount> for Decimal {
    fn from(value: StoredAmount) -> Self {
        value.0
    }
}

impl fmt::Display for StoredAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<StoredAmount> for Value {
    fn from(value: StoredAmount) -> Self {
        Value::BigInt(Some(value.units()))
    }
}

impl TryGetable for StoredAmount {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        i64::try_get_by(res, index).map(Self::from_units)
    }
}

impl ValueType for StoredAmount {
    fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
        match value {
            Value::BigInt(Some(units)) => Ok(Self::from_units(units)),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "StoredAmount".to_owned()
    }

    fn array_type() -> ArrayType {
        ArrayType::BigInt
    }

    fn column_type() -> ColumnType {
        ColumnType::BigInteger
    }
}

impl Nullable for StoredAmount {
    fn null() -> Value {
        Value::BigInt(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn the_largest_amount_is_i64_max_at_scale_four() {
        assert_eq!(MAX_AMOUNT, Decimal::new(i64::MAX, 4));
        assert_eq!(MAX_AMOUNT.to_string(), "922337203685477.5807");
        assert_eq!(
            Value::from(StoredAmount::new(MAX_AMOUNT).unwrap()),
            Value::BigInt(Some(i64::MAX))
        );
    }

    #[test]
    fn amounts_are_stored_as_ten_thousandths() {
        for (text, units) in [
            ("19.99", 199_900),
            ("0.1234", 1_234),
            ("100", 1_000_000),
            ("9.5", 95_000),
            ("1234567.5", 12_345_675_000),
            ("0", 0),
            ("1.50000", 15_000),
        ] {
            let stored = to_stored(d(text)).unwrap();
            assert_eq!(Value::from(stored), Value::BigInt(Some(units)), "{text}");
            let back = <StoredAmount as ValueType>::try_from(Value::BigInt(Some(units))).unwrap();
            assert_eq!(back.amount(), d(text), "{text}");
        }
        // Read back normalized: 19.99, not 19.9900.
        let back = <StoredAmount as ValueType>::try_from(Value::BigInt(Some(199_900))).unwrap();
        assert_eq!(back.to_string(), "19.99");
    }

    #[test]
    fn money_refuses_negative_amounts() {
        let err = Money::new(d("-0.01"), "USD").unwrap_err();
        assert_eq!(err, MoneyError::Negative { amount: d("-0.01") });
        assert_eq!(
            err.to_string(),
            "amount -0.01 is negative: money amounts are zero or more"
        );
        assert!(Money::new(d("0"), "USD").is_ok());
        assert!(
            Money::new(-Decimal::ZERO, "USD").is_ok(),
            "minus zero is zero"
        );
    }

    #[test]
    fn money_refuses_more_than_four_decimal_places() {
        let err = Money::new(d("1.23456"), "USD").unwrap_err();
        assert_eq!(
            err,
            MoneyError::TooManyDecimalPlaces {
                amount: d("1.23456"),
                places: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "amount 1.23456 has 5 decimal places: at most 4 are stored (round it first)"
        );
        assert!(Money::new(d("1.2345"), "USD").is_ok());
        assert!(
            Money::new(d("1.234500000"), "USD").is_ok(),
            "trailing zeros do not count"
        );
    }

    #[test]
    fn money_refuses_amounts_beyond_the_stored_range() {
        let too_large = MAX_AMOUNT + Decimal::new(1, 4);
        let err = Money::new(too_large, "USD").unwrap_err();
        assert_eq!(err, MoneyError::TooLarge { amount: too_large });
        assert_eq!(
            err.to_string(),
            "amount 922337203685477.5808 is too large: the largest storable amount is 922337203685477.5807"
        );
        assert!(Money::new(MAX_AMOUNT, "USD").is_ok());
        assert!(to_stored(Decimal::MAX).is_err());
    }

    #[test]
    fn money_refuses_malformed_currencies() {
        for currency in ["usd", "US", "USDX", "", "U5D", "ÜSD", "US "] {
            let err = Money::new(d("1"), currency).unwrap_err();
            assert_eq!(
                err,
                MoneyError::InvalidCurrency {
                    currency: currency.to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "currency {currency:?} is not an ISO-4217 code of three uppercase letters A-Z"
                )
            );
        }
        let money = Money::new(d("19.99"), "EUR").unwrap();
        assert_eq!((money.amount(), money.currency()), (d("19.99"), "EUR"));
    }

    #[test]
    fn money_serializes_the_amount_as_a_decimal_string() {
        let money = Money::new(d("19.99"), "USD").unwrap();
        let json = serde_json::to_value(&money).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount": "19.99", "currency": "USD"})
        );
        assert_eq!(serde_json::from_value::<Money>(json).unwrap(), money);
        let refused =
            serde_json::from_value::<Money>(serde_json::json!({"amount": "-1", "currency": "USD"}));
        assert!(refused.unwrap_err().to_string().contains("negative"));
        assert_eq!(
            serde_json::to_value(to_stored(d("0.1234")).unwrap()).unwrap(),
            serde_json::json!("0.1234")
        );
    }

    /// Any decimal with at most four places within the stored range.
    /// Any decimal with at most four places within the stored range: shop-sized amounts
    /// and the extremes, at every scale from 0 to 4 (as written, not normalized).
    fn storable() -> impl Strategy<Value = Decimal> {
        let units = prop_oneof![0..=10_000_000_i64, 0..=i64::MAX, Just(i64::MAX), Just(0)];
        (units, 0..=STORED_SCALE).prop_map(|(units, scale)| {
            // `units / 10^4` keeps the amount in range; dropping places keeps it there.
            let mut amount = Decimal::new(units, STORED_SCALE).trunc_with_scale(scale);
            amount.rescale(scale);
            amount
        })
    }

    proptest! {
        #[test]
        fn storing_and_reading_an_amount_is_the_identity(amount in storable()) {
            let stored = to_stored(amount).unwrap();
            let value = Value::from(stored);
            let Value::BigInt(Some(units)) = value else {
                panic!("stored as {value:?}");
            };
            prop_assert_eq!(i128::from(units), {
                let mut scaled = amount;
                scaled.rescale(4);
                scaled.mantissa()
            });
            let back = <StoredAmount as ValueType>::try_from(value).unwrap();
            prop_assert_eq!(back.amount(), amount);
            prop_assert_eq!(Money::from_stored(back, "USD").unwrap().amount(), amount);
        }

        #[test]
        fn amounts_with_more_places_are_refused(mantissa in 1..=i64::MAX, scale in 5..=12u32) {
            let amount = Decimal::new(mantissa, scale);
            let result = to_stored(amount);
            if amount.normalize().scale() > 4 {
                let refused = matches!(result, Err(MoneyError::TooManyDecimalPlaces { .. }));
                prop_assert!(refused);
            } else {
                prop_assert!(result.is_ok());
            }
        }
    }
}

//! Opaque ids and cursors. Clients must treat both as strings; the encoding (base64url of
//! `Kind:number`) is ours to change.

use async_graphql::ID;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::errors::ApiError;

/// Kinds of node with a global id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Product,
    Variant,
    Category,
    StockLocation,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Product => "Product",
            Kind::Variant => "Variant",
            Kind::Category => "Category",
            Kind::StockLocation => "StockLocation",
        }
    }
}

/// The global id of a row.
pub fn encode_id(kind: Kind, id: i64) -> ID {
    ID(URL_SAFE_NO_PAD.encode(format!("{}:{id}", kind.name())))
}

/// The row id inside a global id of `kind`; `field` names the argument in the error.
pub fn decode_id(kind: Kind, id: &ID, field: &str) -> Result<i64, ApiError> {
    decode_tagged(kind.name(), id.as_str()).ok_or_else(|| {
        ApiError::bad_input(
            field,
            format!("{:?} is not a {} id", id.as_str(), kind.name()),
        )
    })
}

/// A cursor positioned after the product with this id.
pub fn encode_cursor(product_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("cursor:product:{product_id}"))
}

/// The product id a cursor points after.
pub fn decode_cursor(cursor: &str, field: &str) -> Result<i64, ApiError> {
    decode_tagged("cursor:product", cursor).ok_or_else(|| {
        ApiError::bad_input(
            field,
            format!("{cursor:?} is not a cursor from this connection"),
        )
    })
}

fn decode_tagged(tag: &str, text: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    let (found, number) = decoded.rsplit_once(':')?;
    let number: i64 = number.parse().ok()?;
    (found == tag && number > 0).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_kind() {
        let id = encode_id(Kind::Product, 42);
        assert_eq!(decode_id(Kind::Product, &id, "id").unwrap(), 42);
        let err = decode_id(Kind::Variant, &id, "id").unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(7), "after").unwrap(), 7);
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            &encode_id(Kind::Product, 7).0,
            &URL_SAFE_NO_PAD.encode("cursor:product:-3"),
        ] {
            assert!(decode_cursor(bad, "after").is_err(), "{bad} accepted");
        }
    }
}

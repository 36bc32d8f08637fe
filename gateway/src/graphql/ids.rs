//! Opaque ids and cursors. Clients must treat both as strings; the encoding (base64url of
//! `Kind:number`) is ours to change.

use async_graphql::ID;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use commerce_core::catalog::{ProductCursor, ProductSort, SortKey};

use crate::errors::ApiError;

/// Kinds of node with a global id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Product,
    Variant,
    Category,
    StockLocation,
    PriceList,
    Promotion,
    Reservation,
    Order,
    Shipment,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Product => "Product",
            Kind::Variant => "Variant",
            Kind::Category => "Category",
            Kind::StockLocation => "StockLocation",
            Kind::PriceList => "PriceList",
            Kind::Promotion => "Promotion",
            Kind::Reservation => "Reservation",
            Kind::Order => "Order",
            Kind::Shipment => "Shipment",
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
            format!(
                "{:?} is not {} {} id",
                id.as_str().chars().take(64).collect::<String>(),
                if kind.name().starts_with(['A', 'E', 'I', 'O', 'U']) {
                    "an"
                } else {
                    "a"
                },
                kind.name()
            ),
        )
    })
}

/// The tag of cursors of listings in `sort` order; id-ordered cursors keep their original
/// spelling, so cursors handed out before sorting existed still work.
fn cursor_tag(sort: ProductSort) -> &'static str {
    match sort {
        ProductSort::Id => "cursor:product:",
        ProductSort::Name => "cursor:name:",
        ProductSort::PriceAsc => "cursor:price_asc:",
        ProductSort::PriceDesc => "cursor:price_desc:",
    }
}

/// `sort` as the schema spells it.
fn sort_name(sort: ProductSort) -> &'static str {
    match sort {
        ProductSort::Id => "ID",
        ProductSort::Name => "NAME",
        ProductSort::PriceAsc => "PRICE_ASC",
        ProductSort::PriceDesc => "PRICE_DESC",
    }
}

/// A cursor positioned after a product of a listing in `sort` order: base64url of
/// `cursor:<sort>:<id>[:<key>]`, the key being the name or the price in ten-thousandths
/// (`-` for none). The tag binds the cursor to its order.
pub fn encode_cursor(sort: ProductSort, cursor: &ProductCursor) -> String {
    let tag = cursor_tag(sort);
    let id = cursor.id;
    let text = match &cursor.key {
        SortKey::Id => format!("{tag}{id}"),
        SortKey::Name(name) => format!("{tag}{id}:{name}"),
        SortKey::Price(Some(amount)) => format!("{tag}{id}:{amount}"),
        SortKey::Price(None) => format!("{tag}{id}:-"),
    };
    URL_SAFE_NO_PAD.encode(text)
}

/// Where a cursor of a listing in `sort` order points; a cursor of another order (or
/// anything else) is refused as a bad `field`.
pub fn decode_cursor(
    sort: ProductSort,
    cursor: &str,
    field: &str,
) -> Result<ProductCursor, ApiError> {
    decode_sorted_cursor(sort, cursor).ok_or_else(|| {
        let all = [
            ProductSort::Id,
            ProductSort::Name,
            ProductSort::PriceAsc,
            ProductSort::PriceDesc,
        ];
        let reason = match all
            .into_iter()
            .find(|&other| decode_sorted_cursor(other, cursor).is_some())
        {
            Some(other) => format!(
                "{cursor:?} continues a listing sorted by {}, not {}",
                sort_name(other),
                sort_name(sort)
            ),
            None => format!("{cursor:?} is not a cursor from this connection"),
        };
        ApiError::bad_input(field, reason)
    })
}

fn decode_sorted_cursor(sort: ProductSort, cursor: &str) -> Option<ProductCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim_end_matches('=')).ok()?;
    let decoded = String::from_utf8(bytes).ok()?;
    // A cursor is ours only if it holds what we put in it: never control characters (a NUL
    // would reach the database, which PostgreSQL refuses).
    if decoded.chars().any(char::is_control) {
        return None;
    }
    let rest = decoded.strip_prefix(cursor_tag(sort))?;
    let positive = |id: &str| id.parse::<i64>().ok().filter(|&id| id > 0);
    let (id, key) = match sort {
        ProductSort::Id => (positive(rest)?, SortKey::Id),
        ProductSort::Name => {
            let (id, name) = rest.split_once(':')?;
            (positive(id)?, SortKey::Name(name.to_owned()))
        }
        ProductSort::PriceAsc | ProductSort::PriceDesc => {
            let (id, amount) = rest.split_once(':')?;
            let amount = match amount {
                "-" => None,
                amount => Some(amount.parse().ok()?),
            };
            (positive(id)?, SortKey::Price(amount))
        }
    };
    Some(ProductCursor { id, key })
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
    fn cursors_with_control_characters_are_not_ours() {
        let forged = URL_SAFE_NO_PAD.encode("cursor:name:1:a\u{0}b");
        assert!(decode_cursor(ProductSort::Name, &forged, "after").is_err());
    }

    #[test]
    fn ids_round_trip_and_keep_their_kind() {
        let id = encode_id(Kind::Product, 42);
        assert_eq!(decode_id(Kind::Product, &id, "id").unwrap(), 42);
        let err = decode_id(Kind::Variant, &id, "id").unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
    }

    fn id_cursor(id: i64) -> ProductCursor {
        ProductCursor {
            id,
            key: SortKey::Id,
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = encode_cursor(ProductSort::Id, &id_cursor(7));
        assert_eq!(
            decode_cursor(ProductSort::Id, &cursor, "after").unwrap(),
            id_cursor(7)
        );
        // Id cursors are spelled as before sorting existed.
        assert_eq!(cursor, URL_SAFE_NO_PAD.encode("cursor:product:7"));
        for bad in [
            "",
            "!!!",
            "bm90LWEtY3Vyc29y",
            &encode_id(Kind::Product, 7).0,
            &URL_SAFE_NO_PAD.encode("cursor:product:-3"),
            &URL_SAFE_NO_PAD.encode("cursor:price_asc:3"),
            &URL_SAFE_NO_PAD.encode("cursor:price_asc:3:cheap"),
            &URL_SAFE_NO_PAD.encode("cursor:name:0:Tee"),
        ] {
            for sort in [
                ProductSort::Id,
                ProductSort::Name,
                ProductSort::PriceAsc,
                ProductSort::PriceDesc,
            ] {
                assert!(
                    decode_cursor(sort, bad, "after").is_err(),
                    "{bad} accepted for {sort:?}"
                );
            }
        }
    }

    #[test]
    fn sorted_cursors_round_trip_with_their_keys() {
        let cases = [
            (ProductSort::Id, SortKey::Id),
            (
                ProductSort::Name,
                SortKey::Name("Tee: linen, 100% \u{e9}cru".into()),
            ),
            (ProductSort::Name, SortKey::Name(String::new())),
            (ProductSort::PriceAsc, SortKey::Price(Some(199_900))),
            (ProductSort::PriceAsc, SortKey::Price(None)),
            (ProductSort::PriceDesc, SortKey::Price(Some(0))),
            (ProductSort::PriceDesc, SortKey::Price(None)),
        ];
        for (sort, key) in cases {
            let cursor = ProductCursor { id: 42, key };
            let text = encode_cursor(sort, &cursor);
            assert_eq!(decode_cursor(sort, &text, "after").unwrap(), cursor);
        }
    }

    #[test]
    fn a_cursor_is_refused_by_a_listing_in_another_order() {
        let price_asc = ProductCursor {
            id: 9,
            key: SortKey::Price(Some(1_000)),
        };
        let text = encode_cursor(ProductSort::PriceAsc, &price_asc);
        for other in [ProductSort::Id, ProductSort::Name, ProductSort::PriceDesc] {
            let err = decode_cursor(other, &text, "after").unwrap_err();
            assert_eq!(err.code(), "BAD_USER_INPUT");
            assert!(
                err.to_string().contains("sorted by PRICE_ASC"),
                "{err} for {other:?}"
            );
        }
        let by_id = encode_cursor(ProductSort::Id, &id_cursor(9));
        assert!(decode_cursor(ProductSort::Name, &by_id, "after").is_err());
    }
}

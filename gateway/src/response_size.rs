//! The response-size cap (`http.max_response_bytes`, default 8 MiB).
//!
//! A response is serialized into a buffer that refuses to grow past the cap, so an operation
//! whose result would be 500 MB stops being written at the cap instead of allocating it. Such
//! a response is replaced by a request-style error without `data`, code `RESPONSE_TOO_LARGE`.
//!
//! Its status, with the GraphQL-over-HTTP specification in mind: under `application/json`
//! every well-formed request is answered `200` (the spec's rule for legacy clients), this one
//! too. Under `application/graphql-response+json` a response without `data` must be 4xx or
//! 5xx; `400` would say the request was refused before it ran (the spec's request errors) and
//! `413` is about the request's own body, but here the operation ran (a mutation's changes
//! stand) and the server cannot deliver its result within its limit: `500`, with the code
//! telling clients apart from `INTERNAL` failures. Retrying unchanged gives the same answer;
//! ask for less (a smaller `first`, fewer fields).

use std::io::Write;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use crate::errors::code;
use crate::transport::{ResponseMedia, request_error};

/// Why a response could not be serialized.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsent {
    /// It is larger than the cap (serialization stopped there).
    TooLarge,
    /// Serialization failed (a bug of ours).
    Failed,
}

/// `value` as JSON, unless it is longer than `max_bytes`.
pub fn to_json_capped<T: Serialize>(value: &T, max_bytes: usize) -> Result<String, Unsent> {
    let mut out = CappedBuffer {
        bytes: Vec::with_capacity(128.min(max_bytes)),
        max_bytes,
        over: false,
    };
    match serde_json::to_writer(&mut out, value) {
        Ok(()) => String::from_utf8(out.bytes).map_err(|_| Unsent::Failed),
        Err(_) if out.over => Err(Unsent::TooLarge),
        Err(_) => Err(Unsent::Failed),
    }
}

/// A byte buffer that fails writes past `max_bytes`.
struct CappedBuffer {
    bytes: Vec<u8>,
    max_bytes: usize,
    over: bool,
}

impl Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max_bytes {
            self.over = true;
            return Err(std::io::Error::other(
                "response over http.max_response_bytes",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The status of a `RESPONSE_TOO_LARGE` answer (see the module documentation).
pub fn status(media: ResponseMedia) -> StatusCode {
    match media {
        ResponseMedia::Json => StatusCode::OK,
        ResponseMedia::GraphqlResponseJson => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer that replaces a response over `max_bytes`.
pub fn too_large(media: ResponseMedia, max_bytes: usize) -> Response {
    request_error(
        status(media),
        media,
        code::RESPONSE_TOO_LARGE,
        &too_large_message(max_bytes),
    )
}

/// What a `RESPONSE_TOO_LARGE` error says.
pub fn too_large_message(max_bytes: usize) -> String {
    format!(
        "the response is larger than the limit of {max_bytes} bytes \
         (http.max_response_bytes); the operation ran but its result is not sent: ask for \
         less (a smaller `first`, fewer fields)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responses_up_to_the_cap_are_sent_whole() {
        let value = json!({ "data": { "a": "x".repeat(100) } });
        let whole = serde_json::to_string(&value).unwrap();
        assert_eq!(to_json_capped(&value, whole.len()), Ok(whole.clone()));
        assert_eq!(
            to_json_capped(&value, whole.len() - 1),
            Err(Unsent::TooLarge)
        );
    }

    #[test]
    fn a_huge_response_stops_at_the_cap() {
        let value = json!({ "data": vec!["y".repeat(1000); 10_000] });
        assert_eq!(to_json_capped(&value, 4096), Err(Unsent::TooLarge));
    }

    #[test]
    fn statuses_follow_the_media_type() {
        assert_eq!(status(ResponseMedia::Json), StatusCode::OK);
        assert_eq!(
            status(ResponseMedia::GraphqlResponseJson),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

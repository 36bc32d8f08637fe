//! GraphQL over HTTP, following the GraphQL-over-HTTP specification rather than only its
//! happy path: content negotiation between `application/graphql-response+json` and
//! `application/json`, 4xx without `data` for requests that cannot be parsed or validated
//! (under the new media type), 405 for mutations over GET, 406 and 415 for media types we
//! cannot serve. The schema's executor stays async-graphql's; this module owns the edges.
//!
//! - this file: media types, content negotiation and the request-error body
//! - [`http`]: the `POST` / `GET /graphql` handlers and what a request may carry
//! - [`execute`]: one operation from text to response: persisted operations, parsing, size
//!   limits, the viewer ([`crate::auth::viewer`]), rate and cost limits, execution
//! - [`render`]: the response as the spec shapes it, bounded

mod execute;
mod fanout;
mod http;
mod multipart;
mod rejection;
mod render;
mod ws;

pub use self::execute::execute_as;
use self::execute::{
    Arrival, Caller, Prepared, admit, charge_request, execute, prepare, start_operation,
    start_stream,
};
pub use self::fanout::{Fanout, RefetchProbe};
pub use self::http::{GetParams, graphql_get, graphql_post};
use self::http::{GraphqlParams, params_from_json};
pub(crate) use self::rejection::Rejection;
use self::rejection::bounded;
pub use self::render::{MAX_ERRORS, MAX_MESSAGE_CHARS};
use self::render::{render, render_body};
pub use self::ws::{Sockets, graphql_ws};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::Positioned;
use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{ServerError, Value, Variables};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use commerce_core::channels;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::viewer::{authenticate, resolve_viewer};
use crate::auth::{Claims, Role};
use crate::completion::{complete_response, selected_operation};
use crate::config::GraphqlConfig;
use crate::errors::code;
use crate::graphql::{RequestContext, Viewer};
use crate::limits::{Budget, ClientIp, ClientKey, Limited};
use crate::server::AppState;
use crate::shaping::analysis::{self, OperationSize, SizeLimits};
use crate::shaping::input;
use crate::shaping::persisted::{self, PersistedError};

/// The GraphQL-over-HTTP response media type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
/// The header naming the channel of a request.
pub const CHANNEL_HEADER: &str = "x-channel";
/// The channel of requests without `X-Channel`.
pub const DEFAULT_CHANNEL: &str = "web";

/// The media type a response is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMedia {
    GraphqlResponseJson,
    Json,
}

impl ResponseMedia {
    fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
            Self::Json => "application/json",
        }
    }

    /// The status of a well-formed request that failed before execution: 400 under the new
    /// media type, 200 under `application/json` (the spec's rule for legacy clients). The
    /// rule lives with every other code's status in [`crate::errors::request_status`].
    pub(crate) fn request_error_status(self) -> StatusCode {
        crate::errors::request_status(
            code::GRAPHQL_VALIDATION_FAILED,
            self == Self::GraphqlResponseJson,
        )
    }
}

/// Picks the response media type from `Accept`. A missing header means `application/json`
/// (the spec's legacy rule); wildcards get `application/json` too, so old clients keep
/// receiving 200s; the new type is used when the client names it. `None`: nothing acceptable.
pub fn negotiate(accept: Option<&str>) -> Option<ResponseMedia> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(ResponseMedia::Json);
    };
    let mut best: Option<(f32, ResponseMedia)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => ResponseMedia::GraphqlResponseJson,
            "application/json" | "application/*" | "*/*" => ResponseMedia::Json,
            _ => continue,
        };
        if quality <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((q, m)) => {
                quality > q || (quality == q && m == ResponseMedia::Json && candidate != m)
            }
        };
        if better {
            best = Some((quality, candidate));
        }
    }
    best.map(|(_, media)| media)
}

/// Resolves once the server is stopping ([`AppState::closing`]).
pub(crate) async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|&closing| closing).await;
}

/// The body of every error response without `data`: `{"errors":[{message, extensions.code}]}`.
pub(crate) fn error_body(code: &str, message: &str) -> String {
    json!({ "errors": [{ "message": message, "extensions": { "code": code } }] }).to_string()
}

/// A response carrying only errors, no `data` (a request error in the spec's terms).
pub(crate) fn request_error(
    status: StatusCode,
    media: ResponseMedia,
    code: &str,
    message: &str,
) -> Response {
    crate::metrics::error_code(code);
    with_media(status, media, error_body(code, &bounded(message)))
}

pub(crate) fn with_media(status: StatusCode, media: ResponseMedia, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.content_type()),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::http::{is_json_content_type, parse_post_body};
    use super::*;

    #[test]
    fn negotiation_follows_the_spec() {
        assert_eq!(negotiate(None), Some(ResponseMedia::Json));
        assert_eq!(
            negotiate(Some("application/json")),
            Some(ResponseMedia::Json)
        );
        assert_eq!(
            negotiate(Some(GRAPHQL_RESPONSE_JSON)),
            Some(ResponseMedia::GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(ResponseMedia::GraphqlResponseJson)
        );
        assert_eq!(
            negotiate(Some(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(ResponseMedia::Json)
        );
        assert_eq!(negotiate(Some("*/*")), Some(ResponseMedia::Json));
        assert_eq!(negotiate(Some("text/plain")), None);
        assert_eq!(negotiate(Some("application/json;q=0")), None);
    }

    #[test]
    fn only_utf8_json_bodies_are_accepted() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=UTF-8"));
        assert!(!is_json_content_type("application/json; charset=latin1"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type(""));
    }

    #[test]
    fn post_bodies_are_checked_field_by_field() {
        assert!(parse_post_body(br#"{"query":"{ channel { code } }"}"#).is_ok());
        for (body, expected) in [
            (&b"{not json"[..], "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (b"{}", "has no `query`"),
            (br#"{"query":1}"#, "`query` must be a string"),
            (br#"{"query":"{a}","variables":[1]}"#, "`variables` must be"),
            (
                br#"{"query":"{a}","operationName":3}"#,
                "`operationName` must be",
            ),
        ] {
            let err = parse_post_body(body).err().unwrap();
            assert!(err.contains(expected), "{err}");
        }
    }
}

//! The executed response as the spec shapes it: request errors without `data`, codes on every
//! error, bounded error count and message length.

use super::*;

/// Writes an executed response. A response with errors, `data: null` and no error on a field
/// path failed before execution (validation, operation selection): a request error, sent
/// without `data` and, under the new media type, with 400.
pub(crate) fn render(
    response: async_graphql::Response,
    media: ResponseMedia,
    max_response_bytes: usize,
) -> Response {
    match render_body(response, max_response_bytes) {
        Rendered::Sent {
            body,
            request_failed,
        } => {
            let status = if request_failed {
                media.request_error_status()
            } else {
                StatusCode::OK
            };
            with_media(status, media, body)
        }
        Rendered::TooLarge => crate::response_size::too_large(media, max_response_bytes),
    }
}

/// A response's JSON text, or why it is not sent.
pub(crate) enum Rendered {
    Sent {
        body: String,
        /// It failed before execution (validation): no `data`.
        request_failed: bool,
    },
    /// Over `http.max_response_bytes`.
    TooLarge,
}

/// Whether a response failed before execution (validation, operation selection): errors,
/// `data: null` and no error on a field path.
pub(crate) fn request_failed(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The body of an executed response, for every transport: codes on every error, at most
/// [`MAX_ERRORS`] errors of at most [`MAX_MESSAGE_CHARS`] characters, no `data` for a request
/// that failed before execution, at most `max_response_bytes` bytes.
pub(crate) fn render_body(
    mut response: async_graphql::Response,
    max_response_bytes: usize,
) -> Rendered {
    let request_failed = request_failed(&response);
    // Bounded output: at most MAX_ERRORS errors, each message at most MAX_MESSAGE_CHARS (an
    // error may echo a client's input, such as a 900 KB cursor).
    let omitted = response.errors.len().saturating_sub(MAX_ERRORS);
    response.errors.truncate(MAX_ERRORS);
    if omitted > 0 {
        response
            .extensions
            .insert("errorsOmitted".to_owned(), Value::from(omitted as u64));
    }
    for error in &mut response.errors {
        if error.message.chars().count() > MAX_MESSAGE_CHARS {
            let cut: String = error.message.chars().take(MAX_MESSAGE_CHARS).collect();
            error.message = format!("{cut}…");
        }
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            // Our resolvers always set a code; uncoded errors come from async-graphql itself:
            // validation before execution, argument coercion during it. Anything else is ours
            // to fix: INTERNAL, never blamed on the client.
            let fallback = if request_failed {
                code::GRAPHQL_VALIDATION_FAILED
            } else if is_input_coercion_error(&error.message) {
                code::BAD_USER_INPUT
            } else {
                tracing::error!(message = %error.message, "an error without a code");
                error.message = "internal error".to_owned();
                code::INTERNAL
            };
            extensions.set("code", fallback);
        }
    }
    let body = ResponseBody {
        data: (!request_failed).then_some(&response.data),
        errors: &response.errors,
        extensions: &response.extensions,
    };
    // Bounded size: a body over http.max_response_bytes is not sent (nor fully written).
    let body = match crate::response_size::to_json_capped(&body, max_response_bytes) {
        Ok(body) => body,
        Err(crate::response_size::Unsent::TooLarge) => {
            tracing::warn!(
                limit = max_response_bytes,
                "a response over http.max_response_bytes was replaced by RESPONSE_TOO_LARGE"
            );
            return Rendered::TooLarge;
        }
        Err(crate::response_size::Unsent::Failed) => error_body(code::INTERNAL, "internal error"),
    };
    crate::metrics::graphql_errors(&response.errors);
    Rendered::Sent {
        body,
        request_failed,
    }
}

/// Whether an uncoded error is async-graphql's own complaint about an argument's value (its
/// `InputValueError` messages: expected type, failed parse, invalid value).
pub(crate) fn is_input_coercion_error(message: &str) -> bool {
    ["Failed to parse", "Invalid value", "Expected input type"]
        .iter()
        .any(|prefix| message.starts_with(prefix))
}

/// Most errors one response carries; the rest are counted in `extensions.errorsOmitted`.
pub const MAX_ERRORS: usize = 20;

/// Longest error message sent, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// The response as the spec shapes it; serialized straight from async-graphql's values so
/// fields keep the order of the query.
#[derive(Serialize)]
pub(crate) struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
}

impl<'a> ResponseBody<'a> {
    /// The body of a response that ran without errors, as the response cache keeps it.
    pub(crate) fn data_only(response: &'a async_graphql::Response) -> Self {
        Self {
            data: Some(&response.data),
            errors: &[],
            extensions: &response.extensions,
        }
    }
}

/// `body` (`{"data":…}`) with `extensions.cost` as [`super::execute::report_cost`] writes it:
/// for answers rendered once and sent to many (the response cache, shared subscriptions).
/// Unchanged when it has extensions already.
pub(crate) fn with_cost(
    body: &str,
    requested: u64,
    actual: u64,
    budget: crate::limits::Budget,
) -> String {
    if body.contains("\"extensions\":") || !body.ends_with('}') {
        return body.to_owned();
    }
    format!(
        r#"{},"extensions":{{"cost":{{"requested":{requested},"actual":{actual},"budget":{{"max":{},"remaining":{},"restoreRate":{}}}}}}}}}"#,
        &body[..body.len() - 1],
        budget.max,
        budget.remaining,
        budget.restore_rate
    )
}

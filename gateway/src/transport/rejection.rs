//! An operation refused before it ran, in terms every transport can send: over HTTP a request
//! error (no `data`, a status that follows from the code, `Retry-After` / `Allow` /
//! `WWW-Authenticate` where they apply); over a WebSocket an `error` message with the same
//! GraphQL errors.

use super::*;

/// Why an operation was refused before execution.
#[derive(Debug)]
pub(crate) struct Rejection {
    code: &'static str,
    message: String,
    /// The input that was wrong (`$variable`), in `extensions.field`.
    field: Option<String>,
    /// Whole seconds until a retry can succeed (rate and cost limits).
    retry_after: Option<u64>,
    /// A syntax error as the parser reported it, with its locations.
    parse: Option<Box<ServerError>>,
}

impl Rejection {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            parse: None,
        }
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(code::UNAUTHENTICATED, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(code::FORBIDDEN, message)
    }

    pub(crate) fn internal() -> Self {
        Self::new(code::INTERNAL, "internal error")
    }

    /// Names the input that was wrong.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// `RATE_LIMITED`, counted by kind, with the time until a retry can succeed.
    pub(crate) fn rate_limited(limited: &Limited, kind: crate::metrics::LimitKind) -> Self {
        crate::metrics::rate_limited(kind);
        Self {
            retry_after: Some(limited.retry_after_secs()),
            ..Self::new(code::RATE_LIMITED, limited.to_string())
        }
    }

    /// A document that does not parse (`GRAPHQL_PARSE_FAILED`, with the parser's locations).
    pub(crate) fn parse_failed(err: async_graphql::parser::Error) -> Self {
        let err = ServerError::from(err);
        Self {
            parse: Some(Box::new(err.clone())),
            ..Self::new(code::GRAPHQL_PARSE_FAILED, err.message)
        }
    }

    /// A persisted-operation refusal.
    pub(crate) fn persisted(err: &PersistedError) -> Self {
        let code = match err {
            PersistedError::NotFound => code::PERSISTED_QUERY_NOT_FOUND,
            PersistedError::NotAllowed { .. } => code::PERSISTED_QUERY_NOT_ALLOWED,
            PersistedError::BadRequest(_) => code::BAD_REQUEST,
        };
        Self::new(code, err.to_string())
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// Whole seconds until a retry can succeed, for rate and cost limits.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The `errors` list of the refusal: one error, its message bounded like every other.
    pub(crate) fn errors(&self) -> serde_json::Value {
        let message = bounded(&self.message);
        let mut error = match &self.parse {
            Some(parse) => {
                let mut parse = (**parse).clone();
                parse.message = message.into_owned();
                serde_json::to_value(parse).unwrap_or_else(|_| json!({}))
            }
            None => json!({ "message": message }),
        };
        let mut extensions = json!({ "code": self.code });
        if let Some(field) = &self.field {
            extensions["field"] = json!(field);
        }
        error["extensions"] = extensions;
        json!([error])
    }

    /// The HTTP response: a request error without `data`.
    pub(crate) fn into_response(self, media: ResponseMedia) -> Response {
        crate::metrics::error_code(self.code);
        let status =
            crate::errors::request_status(self.code, media == ResponseMedia::GraphqlResponseJson);
        let body = json!({ "errors": self.errors() }).to_string();
        let mut response = with_media(status, media, body);
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// A message cut to [`MAX_MESSAGE_CHARS`] characters: a refusal may echo a header or a claim.
pub(crate) fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    if message.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}…").into()
    } else {
        message.into()
    }
}

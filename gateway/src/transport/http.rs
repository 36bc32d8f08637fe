//! The `POST /graphql` and `GET /graphql` handlers: what a request may carry, read to the letter
//! of the GraphQL-over-HTTP spec, before it is executed.

use super::*;

/// A GraphQL request as it arrives over HTTP, before execution.
#[derive(Clone)]
pub(crate) struct GraphqlParams {
    /// Absent when the request names a persisted operation by its hash.
    pub(crate) query: Option<String>,
    pub(crate) variables: Option<serde_json::Value>,
    pub(crate) operation_name: Option<String>,
    pub(crate) extensions: Option<serde_json::Value>,
}

impl GraphqlParams {
    /// What names the operation's document: its text, or the hash of a persisted one.
    pub(crate) fn document(&self) -> Option<crate::read_path::cache::Document<'_>> {
        use crate::read_path::cache::Document;
        match &self.query {
            Some(query) => Some(Document::Text(query)),
            None => Some(Document::Hash(
                self.extensions
                    .as_ref()?
                    .pointer("/persistedQuery/sha256Hash")?
                    .as_str()?,
            )),
        }
    }
}

/// `POST /graphql`: a JSON body `{query, variables?, operationName?, extensions?}`.
pub async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(client_ip): ClientIp,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let multipart = multipart::requested(header_str(&headers, header::ACCEPT));
    let Some(media) =
        negotiate(header_str(&headers, header::ACCEPT)).or(multipart.map(|_| ResponseMedia::Json))
    else {
        return not_acceptable();
    };
    let content_type = header_str(&headers, header::CONTENT_TYPE).unwrap_or("");
    if !is_json_content_type(content_type) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            code::UNSUPPORTED_MEDIA_TYPE,
            "send the request body as Content-Type: application/json",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            return request_error(
                status,
                media,
                code::BAD_REQUEST,
                &format!("cannot read the request body: {rejection}"),
            );
        }
    };
    match parse_post_body(&body) {
        Ok(params) => match multipart {
            Some(spec) => multipart::respond(&state, &headers, client_ip, params, spec).await,
            None => execute(&state, &headers, client_ip, params, Arrival::Post, media).await,
        },
        Err(message) => request_error(StatusCode::BAD_REQUEST, media, code::BAD_REQUEST, &message),
    }
}

/// Query-string parameters of `GET /graphql`.
#[derive(Deserialize)]
pub struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`: GraphiQL for browsers, otherwise a query in the query string.
pub async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(client_ip): ClientIp,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let accept = header_str(&headers, header::ACCEPT);
    let wants_html = accept.is_some_and(|a| a.contains("text/html"));
    let has_query = params
        .as_ref()
        .is_ok_and(|p| p.query.is_some() || p.extensions.is_some());
    if wants_html && !has_query {
        return graphiql();
    }
    let Some(media) = negotiate(accept) else {
        return not_acceptable();
    };
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                media,
                code::BAD_REQUEST,
                &rejection.body_text(),
            );
        }
    };
    if params.query.is_none() && params.extensions.is_none() {
        return request_error(
            StatusCode::BAD_REQUEST,
            media,
            code::BAD_REQUEST,
            "missing the `query` parameter",
        );
    }
    let variables = match params
        .variables
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => None,
        Some(Ok(value @ (serde_json::Value::Object(_) | serde_json::Value::Null))) => Some(value),
        Some(_) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                media,
                code::BAD_REQUEST,
                "`variables` must be a JSON object",
            );
        }
    };
    let extensions = match params
        .extensions
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => None,
        Some(Ok(value @ serde_json::Value::Object(_))) => Some(value),
        Some(_) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                media,
                code::BAD_REQUEST,
                "`extensions` must be a JSON object",
            );
        }
    };
    let params = GraphqlParams {
        query: params.query,
        variables,
        operation_name: params.operation_name,
        extensions,
    };
    execute(&state, &headers, client_ip, params, Arrival::Get, media).await
}

pub(crate) fn graphiql() -> Response {
    Html(crate::graphiql::PAGE).into_response()
}

pub(crate) fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ResponseMedia::Json,
        code::NOT_ACCEPTABLE,
        "this endpoint answers application/graphql-response+json or application/json",
    )
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `application/json`, optionally with `charset=utf-8`.
pub(crate) fn is_json_content_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        !name.trim().eq_ignore_ascii_case("charset")
            || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
    })
}

/// Reads the POST body; the error text says exactly what is wrong with it.
pub(crate) fn parse_post_body(body: &[u8]) -> Result<GraphqlParams, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| format!("the request body is not valid JSON: {err}"))?;
    params_from_json(value, "the request body")
}

/// A GraphQL request's fields from a JSON object (a POST body, a WebSocket message's
/// payload, named by `what` in the error text, which says exactly what is wrong).
pub(crate) fn params_from_json(
    value: serde_json::Value,
    what: &str,
) -> Result<GraphqlParams, String> {
    let serde_json::Value::Object(mut object) = value else {
        return Err(format!("{what} must be a JSON object"));
    };
    let query = match object.remove("query") {
        Some(serde_json::Value::String(query)) => Some(query),
        Some(_) => return Err("`query` must be a string".into()),
        None => None,
    };
    let variables = match object.remove("variables") {
        None | Some(serde_json::Value::Null) => None,
        Some(value @ serde_json::Value::Object(_)) => Some(value),
        Some(_) => return Err("`variables` must be an object or null".into()),
    };
    let operation_name = match object.remove("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => Some(name),
        Some(_) => return Err("`operationName` must be a string or null".into()),
    };
    let extensions = match object.remove("extensions") {
        None | Some(serde_json::Value::Null) => None,
        Some(value @ serde_json::Value::Object(_)) => Some(value),
        Some(_) => return Err("`extensions` must be an object or null".into()),
    };
    let persisted = extensions
        .as_ref()
        .is_some_and(|e| e.get("persistedQuery").is_some());
    if query.is_none() && !persisted {
        return Err(format!("{what} has no `query`"));
    }
    Ok(GraphqlParams {
        query,
        variables,
        operation_name,
        extensions,
    })
}

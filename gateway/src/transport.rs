//! GraphQL over HTTP, following the GraphQL-over-HTTP specification rather than only its
//! happy path: content negotiation between `application/graphql-response+json` and
//! `application/json`, 4xx without `data` for requests that cannot be parsed or validated
//! (under the new media type), 405 for mutations over GET, 406 and 415 for media types we
//! cannot serve. The schema's executor stays async-graphql's; this module owns the edges.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::Positioned;
use async_graphql::parser::types::{OperationDefinition, OperationType};
use async_graphql::{ServerError, Value, Variables};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use commerce_core::CoreError;
use commerce_core::channels::{self, ChannelPolicy};
use commerce_core::pricing::load::customer_by_email;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{AuthError, Claims, Role, bearer_token};
use crate::completion::{complete_response, selected_operation};
use crate::config::GraphqlConfig;
use crate::graphql::errors::code;
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
    /// media type, 200 under `application/json` (the spec's rule for legacy clients).
    fn request_error_status(self) -> StatusCode {
        match self {
            Self::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            Self::Json => StatusCode::OK,
        }
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
    with_media(status, media, error_body(code, message))
}

fn with_media(status: StatusCode, media: ResponseMedia, body: String) -> Response {
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

/// A GraphQL request as it arrives over HTTP, before execution.
struct GraphqlParams {
    /// Absent when the request names a persisted operation by its hash.
    query: Option<String>,
    variables: Option<serde_json::Value>,
    operation_name: Option<String>,
    extensions: Option<serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// `POST /graphql`: a JSON body `{query, variables?, operationName?, extensions?}`.
pub async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(client_ip): ClientIp,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(media) = negotiate(header_str(&headers, header::ACCEPT)) else {
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
        Ok(params) => execute(&state, &headers, client_ip, params, Method::Post, media).await,
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
    execute(&state, &headers, client_ip, params, Method::Get, media).await
}

/// A persisted-operation refusal: a request error with its code.
fn persisted_refusal(media: ResponseMedia, err: &PersistedError) -> Response {
    let code = match err {
        PersistedError::NotFound => code::PERSISTED_QUERY_NOT_FOUND,
        PersistedError::NotAllowed { .. } => code::PERSISTED_QUERY_NOT_ALLOWED,
        PersistedError::BadRequest(_) => code::BAD_REQUEST,
    };
    let status = match err {
        PersistedError::BadRequest(_) => StatusCode::BAD_REQUEST,
        _ => media.request_error_status(),
    };
    request_error(status, media, code, &err.to_string())
}

/// 429 with `Retry-After` (whole seconds, at least 1) and `RATE_LIMITED`.
fn rate_limited(
    media: ResponseMedia,
    limited: &Limited,
    kind: crate::metrics::LimitKind,
) -> Response {
    crate::metrics::rate_limited(kind);
    let mut response = request_error(
        StatusCode::TOO_MANY_REQUESTS,
        media,
        code::RATE_LIMITED,
        &limited.to_string(),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limited.retry_after_secs()),
    );
    response
}

fn graphiql() -> Response {
    Html(crate::graphiql::PAGE).into_response()
}

fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ResponseMedia::Json,
        code::NOT_ACCEPTABLE,
        "this endpoint answers application/graphql-response+json or application/json",
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `application/json`, optionally with `charset=utf-8`.
fn is_json_content_type(value: &str) -> bool {
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
fn parse_post_body(body: &[u8]) -> Result<GraphqlParams, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| format!("the request body is not valid JSON: {err}"))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err("the request body must be a JSON object".into());
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
        return Err("the request body has no `query`".into());
    }
    Ok(GraphqlParams {
        query,
        variables,
        operation_name,
        extensions,
    })
}

/// Why a request was refused before execution: a request error with its status and code.
struct Refusal {
    /// `None`: the media type's request-error status (400, or 200 for legacy JSON).
    status: Option<StatusCode>,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            status: Some(StatusCode::UNAUTHORIZED),
            code: code::UNAUTHENTICATED,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: Some(StatusCode::FORBIDDEN),
            code: code::FORBIDDEN,
            message: message.into(),
        }
    }

    fn internal() -> Self {
        Self {
            status: Some(StatusCode::INTERNAL_SERVER_ERROR),
            code: code::INTERNAL,
            message: "internal error".to_owned(),
        }
    }

    fn into_response(self, media: ResponseMedia) -> Response {
        let status = self.status.unwrap_or(media.request_error_status());
        let mut response = request_error(status, media, self.code, &self.message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

/// The channel named by `X-Channel`, if the header is there.
fn header_channel(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    // A header that is present but not visible ASCII is refused, never read as the default.
    match headers.get(CHANNEL_HEADER).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(code)) if !code.trim().is_empty() => Ok(Some(code.trim().to_ascii_lowercase())),
        Some(_) => Err(Refusal {
            status: None,
            code: code::UNKNOWN_CHANNEL,
            message: "the X-Channel header must name a channel such as web, mobile, pos or b2b"
                .to_owned(),
        }),
    }
}

async fn load_channel(state: &AppState, code: &str) -> Result<ChannelPolicy, Refusal> {
    match channels::load_channel_policy(&state.db, code).await {
        Ok(policy) => Ok(policy),
        Err(CoreError::NotFound { .. }) => {
            let known = channels::list_channels(&state.db)
                .await
                .map(|all| {
                    all.into_iter()
                        .map(|c| c.code)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            Err(Refusal {
                status: None,
                code: code::UNKNOWN_CHANNEL,
                message: format!("unknown channel {code:?}; known channels: {known}"),
            })
        }
        Err(err) => {
            tracing::error!(error = %err, channel = %code, "loading the channel failed");
            Err(Refusal::internal())
        }
    }
}

/// The channel and viewer of a request: from a verified bearer token when there is one (its
/// channel is the request's channel), else an anonymous viewer of the `X-Channel` channel.
/// Who claims to ask, and on which channel: the verified token's claims and channel, or the
/// `X-Channel` channel (default `web`) of an anonymous request. No database work.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Option<Claims>), Refusal> {
    let named = header_channel(headers)?;
    let claims = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Refusal::unauthenticated(AuthError::Malformed.to_string()))?;
            let token =
                bearer_token(text).map_err(|err| Refusal::unauthenticated(err.to_string()))?;
            Some(
                state
                    .auth
                    .verify(token)
                    .map_err(|err| Refusal::unauthenticated(err.to_string()))?,
            )
        }
    };
    let Some(claims) = claims else {
        return Ok((named.unwrap_or_else(|| DEFAULT_CHANNEL.to_owned()), None));
    };
    if let Some(named) = named
        && named != claims.channel
    {
        return Err(Refusal::forbidden(format!(
            "the token is for channel {:?} but X-Channel names {named:?}; drop the header or use a token for that channel",
            claims.channel
        )));
    }
    Ok((claims.channel.clone(), Some(claims)))
}

/// The channel policy and viewer of an authenticated request (channel, customer and store
/// lookups).
async fn resolve_viewer(
    state: &AppState,
    channel: &str,
    claims: Option<Claims>,
) -> Result<(ChannelPolicy, Viewer), Refusal> {
    let policy = load_channel(state, channel).await?;
    let Some(claims) = claims else {
        return Ok((policy, Viewer::default()));
    };
    let customer = match &claims.customer {
        None => None,
        Some(email) => match customer_by_email(&state.db, email).await {
            Ok(customer) => Some(customer),
            Err(CoreError::NotFound { .. }) => {
                return Err(Refusal::unauthenticated(
                    "the token names a customer that does not exist",
                ));
            }
            Err(err) => {
                tracing::error!(error = %err, "loading the token's customer failed");
                return Err(Refusal::internal());
            }
        },
    };
    let mut store_id = None;
    match claims.role {
        Role::Shopper if customer.is_none() => {
            return Err(Refusal::forbidden("a shopper token must name its customer"));
        }
        Role::B2bBuyer if customer.as_ref().and_then(|c| c.company_id).is_none() => {
            return Err(Refusal::forbidden(
                "a b2b_buyer token must name a customer who belongs to a company",
            ));
        }
        Role::PosClerk => {
            let store = claims.store.as_deref().unwrap_or_default();
            let location = policy
                .locations
                .iter()
                .find(|l| l.location.code == store && l.location.kind == "store")
                .ok_or_else(|| {
                    Refusal::forbidden(format!(
                        "a pos_clerk token must name a store of channel {:?}; {store:?} is not one",
                        policy.channel.code
                    ))
                })?;
            store_id = Some(location.location.id);
        }
        _ => {}
    }
    let viewer = Viewer {
        subject: Some(claims.sub),
        role: Some(claims.role),
        customer,
        store_id,
        admin: claims.role == Role::Admin,
    };
    Ok((policy, viewer))
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    params: GraphqlParams,
    method: Method,
    media: ResponseMedia,
) -> Response {
    // Who asks, and on which channel: no SQL yet.
    let (channel_code, claims) = match authenticate(state, headers) {
        Ok(authenticated) => authenticated,
        Err(refusal) => return refusal.into_response(media),
    };
    crate::metrics::claimed_channel(&channel_code);
    // The document: the request's text, or a persisted operation named by its hash; on
    // persisted-only channels, safelisted operations only (admins excepted).
    let persisted = match params
        .extensions
        .as_ref()
        .map(persisted::parse_extension)
        .transpose()
    {
        Ok(found) => found.flatten(),
        Err(err) => return persisted_refusal(media, &err),
    };
    let unrestricted = claims.as_ref().is_some_and(|c| c.role == Role::Admin);
    let query = match state
        .persisted
        .resolve(
            &channel_code,
            params.query,
            persisted.as_ref(),
            unrestricted,
        )
        .await
    {
        Ok(query) => query,
        Err(err) => return persisted_refusal(media, &err),
    };
    // Parse once, before any database work: syntax errors and missing variables are request
    // errors, and GET must know the operation type. The executor gets a copy of the parsed
    // document; this one completes the response afterwards.
    if input::nesting_exceeds(&query, input::MAX_NESTING) {
        return request_error(
            media.request_error_status(),
            media,
            code::QUERY_TOO_COMPLEX,
            &format!(
                "the document nests brackets deeper than {} levels",
                input::MAX_NESTING
            ),
        );
    }
    let document = match async_graphql::parser::parse_query(&query) {
        Ok(document) => document,
        Err(err) => {
            let mut err = ServerError::from(err);
            err.extensions
                .get_or_insert_with(Default::default)
                .set("code", code::GRAPHQL_PARSE_FAILED);
            return render(
                async_graphql::Response::from_errors(vec![err]),
                media,
                state.max_response_bytes,
            );
        }
    };
    let mut variables = params
        .variables
        .map(Variables::from_json)
        .unwrap_or_default();
    let operation = selected_operation(&document.operations, params.operation_name.as_deref());
    if let Some(operation) = operation {
        crate::metrics::operation_type(operation.node.ty);
    }
    if let Some((field, message)) = operation.and_then(|op| missing_variable(op, &variables)) {
        let body = json!({ "errors": [{
            "message": message,
            "extensions": { "code": code::BAD_USER_INPUT, "field": field },
        }] });
        return with_media(media.request_error_status(), media, body.to_string());
    }
    if let Some(operation) = operation {
        input::apply_variable_defaults(&operation.node, &mut variables);
        if let Some(field) = input::find_nul(&document, operation, &variables) {
            let body = json!({ "errors": [{
                "message": format!("invalid {field}: text may not contain NUL characters"),
                "extensions": { "code": code::BAD_USER_INPUT, "field": field },
            }] });
            crate::metrics::error_code(code::BAD_USER_INPUT);
            return with_media(media.request_error_status(), media, body.to_string());
        }
    }
    if method == Method::Get
        && matches!(
            operation.map(|op| op.node.ty),
            Some(OperationType::Mutation | OperationType::Subscription)
        )
    {
        let mut response = request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            code::METHOD_NOT_ALLOWED,
            "mutations and subscriptions cannot be sent over GET; use POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    // The operation's size as it would execute, before validation and before any SQL; the
    // cost also within the channel's maximum per operation.
    let graphql_config = state.graphql_for(&channel_code).clone();
    let mut limits = size_limits(&graphql_config);
    limits.max_cost = limits
        .max_cost
        .min(state.limits.max_cost_per_operation(&channel_code));
    let size = match operation.map(|op| {
        analysis::measure(
            &document,
            &op.node,
            &variables,
            graphql_config.default_page_size,
        )
    }) {
        None => None,
        Some(Ok(size)) => {
            if let Err(err) = size.check(&limits) {
                return request_error(
                    media.request_error_status(),
                    media,
                    code::QUERY_TOO_COMPLEX,
                    &err.to_string(),
                );
            }
            Some(size)
        }
        Some(Err(err)) => {
            return request_error(
                media.request_error_status(),
                media,
                code::GRAPHQL_VALIDATION_FAILED,
                &err.to_string(),
            );
        }
    };
    let (policy, viewer) = match resolve_viewer(state, &channel_code, claims).await {
        Ok(resolved) => resolved,
        Err(refusal) => return refusal.into_response(media),
    };
    crate::metrics::resolved_channel(&policy.channel.code);
    // The schema is documentation for admins (and everyone in demo mode), not for scrapers.
    if !state.introspection_for_all
        && !viewer.admin
        && operation.is_some_and(|op| input::selects_introspection(&document, &op.node))
    {
        return Refusal::forbidden(
            "introspection (__schema, __type) needs an admin token outside demo mode",
        )
        .into_response(media);
    }
    let client = ClientKey::of(viewer.subject.as_deref(), client_ip);
    if let Err(limited) = state
        .limits
        .check_request(&policy.channel.code, &client)
        .await
    {
        return rate_limited(media, &limited, crate::metrics::LimitKind::Rate);
    }
    // The cost budget is charged the requested cost before the operation runs.
    let budget = match size {
        Some(size) => match state
            .limits
            .charge_cost(&policy.channel.code, &client, size.cost)
            .await
        {
            Ok(budget) => {
                crate::metrics::cost_charged(size.cost);
                Some(budget)
            }
            Err(limited) => {
                return rate_limited(media, &limited, crate::metrics::LimitKind::Cost);
            }
        },
        None => None,
    };
    let mut request = async_graphql::Request::new(query).variables(variables);
    if let Some(name) = &params.operation_name {
        request = request.operation_name(name.clone());
    }
    request.set_parsed_query(document.clone());
    let context = RequestContext {
        db: state.db.clone(),
        channel: Arc::new(policy),
        config: graphql_config,
        viewer,
        bus: state.bus.clone(),
    };
    let mut response = state
        .schema
        .execute(context.into_request_data(request))
        .await;
    if let Some(operation) = operation {
        complete_response(&mut response, &document, &operation.node);
    }
    if let Some(size) = size {
        report_cost(&mut response, &size, budget);
    }
    render(response, media, state.max_response_bytes)
}

/// Runs one operation in process as `viewer` on the channel `channel_code`, completed like an
/// HTTP response. For tests and tools: over HTTP every request is anonymous until JWT viewers
/// land, and no header may claim a customer.
pub async fn execute_as(
    state: &AppState,
    channel_code: &str,
    viewer: Viewer,
    query: &str,
    variables: serde_json::Value,
) -> async_graphql::Response {
    let document = match async_graphql::parser::parse_query(query) {
        Ok(document) => document,
        Err(err) => return async_graphql::Response::from_errors(vec![err.into()]),
    };
    let policy = match channels::load_channel_policy(&state.db, channel_code).await {
        Ok(policy) => policy,
        Err(err) => {
            return async_graphql::Response::from_errors(vec![ServerError::new(
                err.to_string(),
                None,
            )]);
        }
    };
    let mut request = async_graphql::Request::new(query).variables(Variables::from_json(variables));
    request.set_parsed_query(document.clone());
    let context = RequestContext {
        db: state.db.clone(),
        channel: Arc::new(policy),
        config: state.graphql_config.clone(),
        viewer,
        bus: state.bus.clone(),
    };
    let mut response = state
        .schema
        .execute(context.into_request_data(request))
        .await;
    if let Some(operation) = selected_operation(&document.operations, None) {
        complete_response(&mut response, &document, &operation.node);
    }
    response
}

/// The configured operation limits.
fn size_limits(config: &GraphqlConfig) -> SizeLimits {
    SizeLimits {
        max_selections: config.max_selections,
        max_depth: config.max_depth as u64,
        max_aliases: config.max_aliases,
        max_root_fields: config.max_root_fields,
        max_cost: config.max_cost,
    }
}

/// `extensions.cost { requested, actual }`: the estimate the operation was admitted on and the
/// objects its response really holds.
fn report_cost(
    response: &mut async_graphql::Response,
    size: &OperationSize,
    budget: Option<Budget>,
) {
    let mut cost = async_graphql::indexmap::IndexMap::new();
    cost.insert(
        async_graphql::Name::new("requested"),
        Value::from(size.cost),
    );
    cost.insert(
        async_graphql::Name::new("actual"),
        Value::from(analysis::actual_cost(&response.data)),
    );
    if let Some(budget) = budget {
        let mut bucket = async_graphql::indexmap::IndexMap::new();
        bucket.insert(async_graphql::Name::new("max"), Value::from(budget.max));
        bucket.insert(
            async_graphql::Name::new("remaining"),
            Value::from(budget.remaining),
        );
        bucket.insert(
            async_graphql::Name::new("restoreRate"),
            Value::from(budget.restore_rate),
        );
        cost.insert(async_graphql::Name::new("budget"), Value::Object(bucket));
    }
    response
        .extensions
        .insert("cost".to_owned(), Value::Object(cost));
}

/// Variable coercion is part of the request in the spec: a required variable without a value
/// fails the whole request. (async-graphql would report it later, as a field error.)
fn missing_variable(
    operation: &Positioned<OperationDefinition>,
    variables: &Variables,
) -> Option<(String, String)> {
    operation
        .node
        .variable_definitions
        .iter()
        .find_map(|definition| {
            let definition = &definition.node;
            let provided = variables
                .get(&definition.name.node)
                .is_some_and(|v| *v != Value::Null);
            let required = !definition.var_type.node.nullable && definition.default_value.is_none();
            (required && !provided).then(|| {
                (
                    format!("${}", definition.name.node),
                    format!(
                        "variable ${} of required type {} was not provided",
                        definition.name.node, definition.var_type.node
                    ),
                )
            })
        })
}

/// Writes an executed response. A response with errors, `data: null` and no error on a field
/// path failed before execution (validation, operation selection): a request error, sent
/// without `data` and, under the new media type, with 400.
fn render(
    mut response: async_graphql::Response,
    media: ResponseMedia,
    max_response_bytes: usize,
) -> Response {
    let request_failed = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
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
            } else if error.message.starts_with("Failed to parse")
                || error.message.starts_with("Invalid value")
            {
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
            return crate::response_size::too_large(media, max_response_bytes);
        }
        Err(crate::response_size::Unsent::Failed) => error_body(code::INTERNAL, "internal error"),
    };
    crate::metrics::graphql_errors(&response.errors);
    let status = if request_failed {
        media.request_error_status()
    } else {
        StatusCode::OK
    };
    with_media(status, media, body)
}

/// Most errors one response carries; the rest are counted in `extensions.errorsOmitted`.
pub const MAX_ERRORS: usize = 20;
/// Longest error message sent, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// The response as the spec shapes it; serialized straight from async-graphql's values so
/// fields keep the order of the query.
#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
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

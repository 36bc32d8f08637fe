//! One operation, from the request's text to its response, in the order that keeps refused
//! requests cheap: who asks (no SQL), persisted operations, nesting, parsing, variables, size
//! limits, then the viewer, rate and cost limits, execution and completion.

use super::*;

use tracing::Instrument;

/// Who asks, on which channel, as which client: what the token says (verified, no SQL yet),
/// admitted by the request-rate limit.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) channel: String,
    pub(crate) claims: Option<Claims>,
    pub(crate) client: ClientKey,
    /// The `Idempotency-Key` header, read (and checked) only for mutations.
    idempotency_header: Result<Option<String>, crate::idempotency::BadKey>,
}

/// Reads who asks from the request's `Authorization` and `X-Channel` headers and charges one
/// request to their rate bucket. A client sending bad tokens is limited by its address like any
/// other, so a flood of them gets 429s, not free 401s.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Caller, Rejection> {
    let (channel, claims) = match authenticate(state, headers) {
        Ok(authenticated) => authenticated,
        Err(refusal) => {
            let client = ClientKey::of(None, client_ip);
            if let Err(limited) = state.limits.check_request("default", &client).await {
                return Err(Rejection::rate_limited(
                    &limited,
                    crate::metrics::LimitKind::Rate,
                ));
            }
            return Err(refusal);
        }
    };
    crate::metrics::claimed_channel(&channel);
    // The request rate, before any parsing or SQL: what a client is refused for later
    // (syntax, size, unknown channel) still counts against its bucket.
    let client = ClientKey::of(claims.as_ref().map(|c| c.sub.as_str()), client_ip);
    charge_request(state, &channel, &client).await?;
    Ok(Caller {
        channel,
        claims,
        client,
        idempotency_header: crate::idempotency::header_key(headers),
    })
}

/// One request against the caller's rate bucket (each operation of a WebSocket counts as one).
pub(crate) async fn charge_request(
    state: &AppState,
    channel: &str,
    client: &ClientKey,
) -> Result<(), Rejection> {
    state
        .limits
        .check_request(state.limits.bucket_channel(channel), client)
        .await
        .map_err(|limited| Rejection::rate_limited(&limited, crate::metrics::LimitKind::Rate))
}

/// How an operation arrived, which decides what it may be: queries only over `GET`; no
/// subscription over a plain (one-response) `POST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    Get,
    Post,
    /// A transport that sends many results: `multipart/mixed` or a WebSocket.
    Stream,
}

/// An operation admitted to run: what the transport needs to finish its responses (the request
/// for the executor travels beside it).
pub(crate) struct Prepared {
    pub(crate) document: ExecutableDocument,
    pub(crate) operation_name: Option<String>,
    pub(crate) operation_type: Option<OperationType>,
    pub(crate) size: Option<OperationSize>,
    pub(crate) budget: Option<Budget>,
    /// An automatic persisted query sent with its text: `(channel, hash, text)`, kept once it
    /// has run.
    apq: Option<(String, String, String)>,
    /// A mutation sent with an idempotency key: its scope, key and request hash.
    pub(crate) idempotency: Option<crate::idempotency::Keyed>,
    /// An anonymous query of catalog root fields over plain HTTP: what its response shows,
    /// recorded while it runs, for the response cache.
    tags: Option<Arc<crate::read_path::TagCollector>>,
}

impl Prepared {
    /// Completes an executed response as the spec shapes it (selection order, null
    /// propagation) and, when `with_cost`, reports the operation's cost.
    pub(crate) fn finish(&self, response: &mut async_graphql::Response, with_cost: bool) {
        if let Some(operation) =
            selected_operation(&self.document.operations, self.operation_name.as_deref())
        {
            complete_response(response, &self.document, &operation.node);
        }
        if with_cost {
            self.report_cost(response);
        }
    }

    /// Reports the operation's cost and the caller's budget in `extensions.cost`.
    fn report_cost(&self, response: &mut async_graphql::Response) {
        if let Some(size) = &self.size {
            report_cost(response, size, self.budget);
        }
    }

    /// Keeps an automatic persisted query once it has run with data.
    pub(crate) async fn register_apq(&self, state: &AppState, response: &async_graphql::Response) {
        if let Some((channel, hash, text)) = &self.apq
            && response.data != Value::Null
        {
            state.persisted.register(channel, hash, text).await;
        }
    }
}

/// Everything between an admitted caller and execution, in the order that keeps refused
/// operations cheap: persisted operations, nesting, parsing, variables, size limits, the
/// viewer (SQL), introspection, the cost budget.
pub(crate) async fn prepare(
    state: &AppState,
    caller: &Caller,
    params: GraphqlParams,
    arrival: Arrival,
    scope: &crate::read_path::ReadScope,
) -> Result<(async_graphql::Request, Prepared), Rejection> {
    let channel_code = caller.channel.as_str();
    // The document: the request's text, or a persisted operation named by its hash; on
    // persisted-only channels, safelisted operations only (admins excepted).
    let persisted = params
        .extensions
        .as_ref()
        .map(persisted::parse_extension)
        .transpose()
        .map_err(|err| Rejection::persisted(&err))?
        .flatten();
    let unrestricted = caller
        .claims
        .as_ref()
        .is_some_and(|c| c.role == Role::Admin);
    let sent_text = params.query.is_some();
    let query = state
        .persisted
        .resolve(channel_code, params.query, persisted.as_ref(), unrestricted)
        .await
        .map_err(|err| Rejection::persisted(&err))?;
    // Parse once, before any database work: syntax errors and missing variables are request
    // errors, and GET must know the operation type. The executor gets a copy of the parsed
    // document; this one completes the response afterwards.
    if input::nesting_exceeds(&query, input::MAX_NESTING) {
        return Err(Rejection::new(
            code::QUERY_TOO_COMPLEX,
            format!(
                "the document nests brackets deeper than {} levels",
                input::MAX_NESTING
            ),
        ));
    }
    let document = async_graphql::parser::parse_query(&query).map_err(Rejection::parse_failed)?;
    let mut variables = params
        .variables
        .map(Variables::from_json)
        .unwrap_or_default();
    let operation = selected_operation(&document.operations, params.operation_name.as_deref());
    if let Some(operation) = operation {
        crate::metrics::operation_type(operation.node.ty);
    }
    if let Some((field, message)) = operation.and_then(|op| missing_variable(op, &variables)) {
        return Err(Rejection::new(code::BAD_USER_INPUT, message).with_field(field));
    }
    if let Some(operation) = operation {
        input::apply_variable_defaults(&operation.node, &mut variables);
        if let Some(field) = input::find_nul(&document, operation, &variables) {
            return Err(Rejection::new(
                code::BAD_USER_INPUT,
                format!("invalid {field}: text may not contain NUL characters"),
            )
            .with_field(field));
        }
    }
    let operation_type = operation.map(|op| op.node.ty);
    // The spec's single-root-field rule for subscriptions (async-graphql runs them all).
    if let Some(op) = operation
        && op.node.ty == OperationType::Subscription
        && root_fields(&document, &op.node.selection_set.node) != 1
    {
        return Err(Rejection::new(
            code::GRAPHQL_VALIDATION_FAILED,
            "a subscription selects exactly one root field",
        ));
    }
    match (arrival, operation_type) {
        (Arrival::Get, Some(OperationType::Mutation | OperationType::Subscription)) => {
            return Err(Rejection::new(
                code::METHOD_NOT_ALLOWED,
                "mutations and subscriptions cannot be sent over GET; use POST",
            ));
        }
        (Arrival::Post, Some(OperationType::Subscription)) => {
            return Err(Rejection::new(
                code::BAD_REQUEST,
                "a subscription sends many results: send it with `Accept: multipart/mixed`, or over the WebSocket at /graphql/ws",
            ));
        }
        _ => {}
    }
    // The operation's size as it would execute, before validation and before any SQL; the
    // cost also within the channel's maximum per operation.
    let graphql_config = state.graphql_for(channel_code).clone();
    let mut limits = size_limits(&graphql_config);
    limits.max_cost = limits
        .max_cost
        .min(state.limits.max_cost_per_operation(channel_code));
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
            size.check(&limits)
                .map_err(|err| Rejection::new(code::QUERY_TOO_COMPLEX, err.to_string()))?;
            Some(size)
        }
        Some(Err(err)) => {
            return Err(Rejection::new(
                code::GRAPHQL_VALIDATION_FAILED,
                err.to_string(),
            ));
        }
    };
    let idempotency = match operation {
        Some(op) if op.node.ty == OperationType::Mutation => {
            idempotency_key(caller, &document, &op.node, &variables, arrival)?.map(|key| {
                crate::idempotency::Keyed {
                    scope: crate::idempotency::scope(channel_code, caller.client.as_str()),
                    key,
                    request_hash: crate::idempotency::request_hash(
                        &query,
                        params.operation_name.as_deref(),
                        &variables,
                    ),
                }
            })
        }
        _ => None,
    };
    // A key names one mutation: two root fields under one key would share one outcome.
    if idempotency.is_some()
        && operation.is_some_and(|op| root_fields(&document, &op.node.selection_set.node) > 1)
    {
        return Err(Rejection::new(
            code::BAD_REQUEST,
            "a request with an idempotency key runs exactly one mutation field; send each mutation with its own key",
        ));
    }
    let (policy, viewer) = resolve_viewer(
        state,
        scope.model.as_deref(),
        channel_code,
        caller.claims.clone(),
    )
    .await?;
    crate::metrics::resolved_channel(&policy.channel.code);
    // The schema is documentation for admins (and everyone in demo mode), not for scrapers.
    if !state.introspection_for_all
        && !viewer.admin
        && operation.is_some_and(|op| input::selects_introspection(&document, &op.node))
    {
        return Err(Rejection::forbidden(
            "introspection (__schema, __type) needs an admin token outside demo mode",
        ));
    }
    // The cost budget is charged the requested cost before the operation runs.
    let budget = match &size {
        Some(size) => {
            let budget = state
                .limits
                .charge_cost(&policy.channel.code, &caller.client, size.cost)
                .await
                .map_err(|limited| {
                    Rejection::rate_limited(&limited, crate::metrics::LimitKind::Cost)
                })?;
            crate::metrics::cost_charged(size.cost);
            Some(budget)
        }
        None => None,
    };
    let apq = persisted
        .filter(|_| sent_text)
        .map(|p| (channel_code.to_owned(), p.sha256, query.clone()));
    let mut request = async_graphql::Request::new(query).variables(variables);
    if let Some(name) = &params.operation_name {
        request = request.operation_name(name.clone());
    }
    request.set_parsed_query(document.clone());
    // The response cache takes anonymous queries of catalog root fields over plain HTTP.
    let tags = (scope.cache.is_some()
        && caller.claims.is_none()
        && arrival != Arrival::Stream
        && operation.is_some_and(|op| {
            op.node.ty == OperationType::Query
                && root_field_names(&document, &op.node.selection_set.node)
                    .into_iter()
                    .all(crate::read_path::cache::cacheable_root)
        }))
    .then(Arc::default);
    let context = RequestContext {
        db: state.db.clone(),
        channel: policy,
        config: graphql_config,
        viewer,
        bus: state.bus.clone(),
        sku_names: state.sku_names.clone(),
        idempotency_key: idempotency.as_ref().map(|keyed| keyed.key.clone()),
        read: scope.model.clone(),
        tags: tags.clone(),
        order_batches: state.order_batches.clone(),
    };
    Ok((
        context.into_request_data(request),
        Prepared {
            document,
            operation_name: params.operation_name,
            operation_type,
            size,
            budget,
            apq,
            idempotency,
            tags,
        },
    ))
}

/// The idempotency key of a mutation (header or `input.idempotencyKey`), checked. Honoured on
/// plain HTTP only: a transport of many results has no one response to store and replay.
fn idempotency_key(
    caller: &Caller,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
    arrival: Arrival,
) -> Result<Option<String>, Rejection> {
    let key = crate::idempotency::key_of(
        caller.idempotency_header.clone(),
        document,
        operation,
        variables,
    )
    .map_err(|bad| match bad.field {
        Some(field) => Rejection::new(code::BAD_USER_INPUT, bad.message).with_field(field),
        None => Rejection::new(code::BAD_REQUEST, bad.message),
    })?;
    if key.is_some() && arrival == Arrival::Stream {
        return Err(Rejection::new(
            code::BAD_REQUEST,
            "idempotency keys are honoured for mutations sent as a plain POST (one response), not over multipart/mixed or the WebSocket",
        ));
    }
    Ok(key)
}

/// One operation over plain HTTP: admitted, prepared, executed, completed and rendered.
pub(crate) async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    params: GraphqlParams,
    arrival: Arrival,
    media: ResponseMedia,
) -> Response {
    let caller = match admit(state, headers, client_ip).await {
        Ok(caller) => caller,
        Err(rejection) => return rejection.into_response(media),
    };
    let scope = state.read_path.scope().await;
    // An anonymous request may be answered from the response cache, before anything else.
    // `Cache-Control: no-cache` asks for a fresh answer (kept for the next one);
    // `no-store` keeps the cache out of the request altogether.
    let directive = cache_directive(headers);
    let cached = scope
        .cache
        .as_ref()
        .filter(|_| caller.claims.is_none() && directive != Some(Directive::NoStore))
        .and_then(|cache| Some((cache.clone(), cache_key(&caller, &params)?)));
    if let Some((cache, key)) = &cached {
        if directive.is_none()
            && let Some(entry) = cache.get(key)
        {
            return cached_response(state, &caller, &entry, headers, media).await;
        }
        crate::metrics::response_cache("miss");
    }
    // Taken before the operation reads anything: a change applied while it runs keeps its
    // response out of the cache.
    let ticket = cached.as_ref().map(|(cache, _)| cache.ticket());
    let (request, mut prepared) = match prepare(state, &caller, params, arrival, &scope).await {
        Ok(prepared) => prepared,
        Err(rejection) => return rejection.into_response(media),
    };
    // A mutation with an idempotency key: admitted like any other, then run once per key.
    if let Some(keyed) = prepared.idempotency.take() {
        return execute_once(state, request, prepared, keyed, media).await;
    }
    let mut response = state.schema.execute(request).await;
    if prepared.operation_type == Some(OperationType::Mutation) {
        // Its events have reached Redis before the client can read from another instance.
        state.bus.flushed().await;
    }
    prepared.finish(&mut response, false);
    let stored = match (cached, ticket, prepared.tags.take()) {
        (Some((cache, key)), Some(ticket), Some(tags)) if response.errors.is_empty() => {
            let cost = crate::read_path::cache::Cost {
                requested: prepared.size.as_ref().map_or(0, |size| size.cost),
                actual: analysis::actual_cost(&response.data),
            };
            store(state, &cache, ticket, key, &response, cost, tags.take()).await
        }
        _ => None,
    };
    prepared.report_cost(&mut response);
    prepared.register_apq(state, &response).await;
    if let Some(entry) = stored {
        crate::metrics::response_cache("stored");
        if holds_entry(headers, &entry) {
            // The client already holds what was just stored.
            let mut sent = StatusCode::NOT_MODIFIED.into_response();
            validators(&mut sent, &entry, "fwd=uri-miss; stored");
            return sent;
        }
        let mut sent = render(response, media, state.max_response_bytes);
        validators(&mut sent, &entry, "fwd=uri-miss; stored");
        return sent;
    }
    render(response, media, state.max_response_bytes)
}

/// Whether the request's `If-None-Match` names the entry's `ETag`.
fn holds_entry(headers: &HeaderMap, entry: &crate::read_path::cache::Entry) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| crate::read_path::cache::matches_if_none_match(value, &entry.etag))
}

/// What a request's `Cache-Control` asks of the response cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directive {
    /// `no-cache` (or `max-age=0`): not answered from the cache.
    NoCache,
    /// `no-store`: neither answered from nor kept in the cache.
    NoStore,
}

fn cache_directive(headers: &HeaderMap) -> Option<Directive> {
    let mut found = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("").split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            match directive.as_str() {
                "no-store" => return Some(Directive::NoStore),
                "no-cache" | "max-age=0" => found = Some(Directive::NoCache),
                _ => {}
            }
        }
    }
    found
}

/// The cache key of an anonymous request: its channel, document (or persisted hash),
/// operation name and variables. `None`: nothing to key on.
fn cache_key(caller: &Caller, params: &GraphqlParams) -> Option<String> {
    crate::read_path::cache::key(
        &caller.channel,
        params.document()?,
        params.operation_name.as_deref(),
        params.variables.as_ref(),
    )
}

/// Keeps an executed response (completed, without its cost report) in the cache, unless a
/// change came in while it ran. Its entry ends at the next price window edge when it shows
/// prices or a list-price order.
async fn store(
    state: &AppState,
    cache: &crate::read_path::ResponseCache,
    ticket: crate::read_path::memo::Ticket,
    key: String,
    response: &async_graphql::Response,
    cost: crate::read_path::cache::Cost,
    tags: crate::read_path::Tags,
) -> Option<Arc<crate::read_path::cache::Entry>> {
    let body = render::ResponseBody::data_only(response);
    let body = crate::response_size::to_json_capped(&body, state.max_response_bytes).ok()?;
    let until = if tags.priced || tags.price_sorted {
        let edge = match &state.read_path.model {
            Some(model) => model.price_horizon_instant(&state.db).await,
            None => crate::read_path::model::price_horizon(&state.db).await,
        };
        match edge {
            Ok(edge) => edge,
            Err(err) => {
                tracing::warn!(error = %err, "reading the next price window edge failed; the response is not cached");
                return None;
            }
        }
    } else {
        None
    };
    cache.put(ticket, key, body.into(), cost, tags, until)
}

/// A cached response: `304 Not Modified` when the client holds it (`If-None-Match`), else
/// the stored body with this answer's cost report. The cost is charged like a run's (the
/// budget is the caller's, whoever did the work), so a refusal is the same as without the
/// cache.
async fn cached_response(
    state: &AppState,
    caller: &Caller,
    entry: &crate::read_path::cache::Entry,
    headers: &HeaderMap,
    media: ResponseMedia,
) -> Response {
    crate::metrics::resolved_channel(&caller.channel);
    crate::metrics::operation_type(OperationType::Query);
    let budget = match state
        .limits
        .charge_cost(&caller.channel, &caller.client, entry.requested_cost)
        .await
    {
        Ok(budget) => budget,
        Err(limited) => {
            return Rejection::rate_limited(&limited, crate::metrics::LimitKind::Cost)
                .into_response(media);
        }
    };
    crate::metrics::cost_charged(entry.requested_cost);
    let mut response = if holds_entry(headers, entry) {
        crate::metrics::response_cache("not_modified");
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        crate::metrics::response_cache("hit");
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(media.content_type()),
            )],
            render::with_cost(
                std::str::from_utf8(&entry.body).unwrap_or_default(),
                entry.requested_cost,
                entry.actual_cost,
                budget,
            ),
        )
            .into_response()
    };
    validators(&mut response, entry, "hit");
    response
}

/// The `ETag` of a cacheable response, and `Cache-Status` (RFC 9211) saying how it was served.
/// `Cache-Control: no-cache` lets a browser or shared cache keep it but ask again each time
/// (a `304` costs little), and `Vary` names the request headers the answer depends on, so no
/// cache in front hands one channel's answer to another or to a signed-in viewer.
fn validators(response: &mut Response, entry: &crate::read_path::cache::Entry, status: &str) {
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&entry.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.append(
        header::VARY,
        HeaderValue::from_static("x-channel, authorization"),
    );
    if let Ok(status) = HeaderValue::from_str(&format!("gateway; {status}")) {
        headers.insert(CACHE_STATUS, status);
    }
}

/// The `Cache-Status` response header (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A keyed mutation ([`crate::idempotency`]): claims its key (waiting while a first request
/// with it runs), replays a stored response, or runs it and stores the response as sent. The
/// claim and the run are a task of their own, so a client that hangs up (or a request timeout)
/// cannot cut them between the claim and the run, nor between the run's commit and the stored
/// response.
async fn execute_once(
    state: &AppState,
    request: async_graphql::Request,
    prepared: Prepared,
    keyed: crate::idempotency::Keyed,
    media: ResponseMedia,
) -> Response {
    // Set once this request holds the key: only then may a failed task free it.
    let claimed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = {
        let (state, keyed, claimed) = (state.clone(), keyed.clone(), claimed.clone());
        async move {
            if let Some(answer) = claim_or_answer(&state, &keyed, media).await {
                return Ran::Answered(answer);
            }
            claimed.store(true, std::sync::atomic::Ordering::SeqCst);
            Ran::Rendered(run_keyed(&state, request, prepared, &keyed).await)
        }
    };
    let span = tracing::Span::current();
    let task = match crate::metrics::current_scope() {
        Some(scope) => tokio::spawn(crate::metrics::in_scope(scope, run).instrument(span)),
        None => tokio::spawn(run.instrument(span)),
    };
    match task.await {
        Ok(Ran::Answered(response)) => response,
        Ok(Ran::Rendered(render::Rendered::Sent {
            body,
            request_failed,
        })) => {
            let status = if request_failed {
                media.request_error_status()
            } else {
                StatusCode::OK
            };
            with_media(status, media, body)
        }
        Ok(Ran::Rendered(render::Rendered::TooLarge)) => {
            crate::response_size::too_large(media, state.max_response_bytes)
        }
        Err(err) => {
            tracing::error!(error = %err, "a keyed mutation's task failed");
            if claimed.load(std::sync::atomic::Ordering::SeqCst) {
                let batches = state.idempotency_batches.as_deref();
                crate::idempotency::settle(&state.db, &keyed, None, batches).await;
            }
            Rejection::internal().into_response(media)
        }
    }
}

/// What a keyed mutation's task ended with.
enum Ran {
    /// Answered without running (a replay or a refusal of the key).
    Answered(Response),
    /// It ran: its rendered response (stored already).
    Rendered(render::Rendered),
}

/// Claims the key: `None` when the request is to run, else its answer (a replay, a conflict,
/// still in progress).
async fn claim_or_answer(
    state: &AppState,
    keyed: &crate::idempotency::Keyed,
    media: ResponseMedia,
) -> Option<Response> {
    use crate::idempotency::{Claim, REPLAYED_HEADER, Refusal};
    let batches = state.idempotency_batches.as_deref();
    let answer = match crate::idempotency::claim(&state.db, keyed, &state.idempotency, batches)
        .await
    {
        Ok(Claim::Run) => return None,
        Ok(Claim::Replay(body)) => {
            let mut response = with_media(StatusCode::OK, media, body);
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            response
        }
        Err(Refusal::Conflict) => Rejection::new(
            code::IDEMPOTENCY_CONFLICT,
            format!(
                "the idempotency key {:?} was used with a different request (query, operation name or variables); use a new key for a new request",
                keyed.key
            ),
        )
        .into_response(media),
        Err(Refusal::InProgress) => {
            let mut response = Rejection::new(
                code::IDEMPOTENCY_IN_PROGRESS,
                format!(
                    "the first request with the idempotency key {:?} is still running; retry after Retry-After seconds to get its response",
                    keyed.key
                ),
            )
            .into_response(media);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
            response
        }
        Err(Refusal::Internal) => Rejection::internal().into_response(media),
    };
    Some(answer)
}

/// Runs a claimed mutation and stores its response (see [`execute_once`]).
async fn run_keyed(
    state: &AppState,
    request: async_graphql::Request,
    prepared: Prepared,
    keyed: &crate::idempotency::Keyed,
) -> render::Rendered {
    // The run heartbeats its record so that a slow run (a lock wait) is never taken over by a
    // retry while it is alive: "never a second run".
    let heartbeat = {
        let (db, keyed) = (state.db.clone(), keyed.clone());
        let every = (state.idempotency.lifetime.stale_after / 4)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_millis(100));
        async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(err) =
                    commerce_core::idempotency::touch(&db, &keyed.scope, &keyed.key).await
                {
                    tracing::warn!(error = %err, "refreshing an idempotency key's run failed");
                }
            }
        }
    };
    let mut response = tokio::select! {
        response = state.schema.execute(request) => response,
        () = heartbeat => unreachable!("the heartbeat never ends"),
    };
    // Its events have reached Redis before the client can read from another instance.
    state.bus.flushed().await;
    prepared.finish(&mut response, true);
    prepared.register_apq(state, &response).await;
    let rendered = render_body(response, state.max_response_bytes);
    // Stored: what was sent, also RESPONSE_TOO_LARGE (the mutation ran). Not stored: a request
    // that failed validation (it did not run) or failed on our side.
    let stored = match &rendered {
        render::Rendered::Sent {
            body,
            request_failed: false,
        } if !crate::idempotency::failed_internally(body) => Some(body.clone()),
        render::Rendered::Sent { .. } => None,
        render::Rendered::TooLarge => Some(error_body(
            code::RESPONSE_TOO_LARGE,
            &crate::response_size::too_large_message(state.max_response_bytes),
        )),
    };
    crate::idempotency::settle(
        &state.db,
        keyed,
        stored.as_deref(),
        state.idempotency_batches.as_deref(),
    )
    .await;
    rendered
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
        sku_names: state.sku_names.clone(),
        idempotency_key: None,
        read: state.read_path.scope().await.model,
        tags: None,
        order_batches: state.order_batches.clone(),
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

/// How many fields a selection set selects at its own level, fragments expanded (each
/// fragment counted once, so a cycle cannot loop).
fn root_fields(
    document: &ExecutableDocument,
    set: &async_graphql::parser::types::SelectionSet,
) -> usize {
    root_field_names(document, set).len()
}

/// The names of the fields an operation selects at its root, fragments followed (each
/// fragment once).
pub(crate) fn root_field_names<'a>(
    document: &'a ExecutableDocument,
    set: &'a async_graphql::parser::types::SelectionSet,
) -> Vec<&'a str> {
    fn collect<'a>(
        document: &'a ExecutableDocument,
        set: &'a async_graphql::parser::types::SelectionSet,
        seen: &mut Vec<&'a str>,
        names: &mut Vec<&'a str>,
    ) {
        use async_graphql::parser::types::Selection;
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => names.push(field.node.name.node.as_str()),
                Selection::InlineFragment(inline) => {
                    collect(document, &inline.node.selection_set.node, seen, names);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name);
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node)
                    {
                        collect(document, &fragment.node.selection_set.node, seen, names);
                    }
                }
            }
        }
    }
    let mut names = Vec::new();
    collect(document, set, &mut Vec::new(), &mut names);
    names
}

/// The configured operation limits.
pub(crate) fn size_limits(config: &GraphqlConfig) -> SizeLimits {
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
pub(crate) fn report_cost(
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
pub(crate) fn missing_variable(
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

/// A prepared operation started on a transport that sends many results (`multipart/mixed`, a
/// WebSocket): `Err` with the `errors` list when it failed validation (a request error, or the
/// WebSocket's `error` message: never a result followed by `complete`), else its results, each
/// completed and rendered to its JSON text (the first with the operation's cost).
/// Prepares an operation that arrived on a stream transport (WebSocket, `multipart/mixed`)
/// and starts its results: a live `stockChanged` joins the execution it shares with identical
/// subscriptions ([`super::fanout`]); anything else runs on its own. Errors: the refusal.
pub(crate) async fn start_operation(
    state: &AppState,
    caller: &Caller,
    params: GraphqlParams,
) -> Result<futures_util::stream::BoxStream<'static, String>, serde_json::Value> {
    use futures_util::StreamExt;

    let scope = state.read_path.scope().await;
    let shared_params = params.clone();
    let (request, prepared) = match prepare(state, caller, params, Arrival::Stream, &scope).await {
        Ok(prepared) => prepared,
        Err(rejection) => {
            crate::metrics::error_code(rejection.code());
            return Err(rejection.errors());
        }
    };
    match super::fanout::key(caller, &shared_params, &prepared) {
        Some(key) => super::fanout::join(state, key, request, prepared).await,
        None => start_stream(state, request, prepared).map(StreamExt::boxed),
    }
}

pub(crate) fn start_stream(
    state: &AppState,
    request: async_graphql::Request,
    prepared: Prepared,
) -> Result<impl futures_util::Stream<Item = String> + Send + 'static, serde_json::Value> {
    use futures_util::{FutureExt, StreamExt};

    let max_bytes = state.max_response_bytes;
    let mut results = state.schema.execute_stream(request);
    // Validation runs on the stream's first poll, before any resolver: a failure is ready at
    // once. A result that is not ready yet is a resolver at work (or a subscription waiting for
    // its first event).
    let first = match results.next().now_or_never() {
        Some(Some(response)) if render::request_failed(&response) => {
            return Err(match render_body(response, max_bytes) {
                render::Rendered::Sent { body, .. } => {
                    serde_json::from_str::<serde_json::Value>(&body)
                        .map(|mut body| body["errors"].take())
                        .unwrap_or_else(|_| Rejection::internal().errors())
                }
                render::Rendered::TooLarge => Rejection::internal().errors(),
            });
        }
        Some(Some(response)) => Some(response),
        Some(None) | None => None,
    };
    let state = state.clone();
    let prepared = Arc::new(prepared);
    Ok(futures_util::stream::iter(first)
        .chain(results)
        .enumerate()
        .then(move |(index, mut response)| {
            let (state, prepared) = (state.clone(), prepared.clone());
            async move {
                prepared.finish(&mut response, index == 0);
                if index == 0 {
                    prepared.register_apq(&state, &response).await;
                }
                match render_body(response, max_bytes) {
                    render::Rendered::Sent { body, .. } => body,
                    render::Rendered::TooLarge => error_body(
                        code::RESPONSE_TOO_LARGE,
                        &crate::response_size::too_large_message(max_bytes),
                    ),
                }
            }
        }))
}

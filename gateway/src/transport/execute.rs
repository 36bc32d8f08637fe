//! One operation, from the request's text to its response, in the order that keeps refused
//! requests cheap: who asks (no SQL), persisted operations, nesting, parsing, variables, size
//! limits, then the viewer, rate and cost limits, execution and completion.

use super::*;

/// A persisted-operation refusal: a request error with its code.
pub(crate) fn persisted_refusal(media: ResponseMedia, err: &PersistedError) -> Response {
    let code = match err {
        PersistedError::NotFound => code::PERSISTED_QUERY_NOT_FOUND,
        PersistedError::NotAllowed { .. } => code::PERSISTED_QUERY_NOT_ALLOWED,
        PersistedError::BadRequest(_) => code::BAD_REQUEST,
    };
    let status = crate::errors::request_status(code, media == ResponseMedia::GraphqlResponseJson);
    request_error(status, media, code, &err.to_string())
}

/// 429 with `Retry-After` (whole seconds, at least 1) and `RATE_LIMITED`.
pub(crate) fn rate_limited(
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

pub(crate) async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    params: GraphqlParams,
    method: Method,
    media: ResponseMedia,
) -> Response {
    // Who asks, and on which channel: no SQL yet. A client sending bad tokens is limited by
    // its address like any other, so a flood of them gets 429s, not free 401s.
    let (channel_code, claims) = match authenticate(state, headers) {
        Ok(authenticated) => authenticated,
        Err(refusal) => {
            let client = ClientKey::of(None, client_ip);
            if let Err(limited) = state.limits.check_request("default", &client).await {
                return rate_limited(media, &limited, crate::metrics::LimitKind::Rate);
            }
            return refusal.into_response(media);
        }
    };
    crate::metrics::claimed_channel(&channel_code);
    // The request rate, before any parsing or SQL: what a client is refused for later
    // (syntax, size, unknown channel) still counts against its bucket.
    let client = ClientKey::of(claims.as_ref().map(|c| c.sub.as_str()), client_ip);
    if let Err(limited) = state
        .limits
        .check_request(state.limits.bucket_channel(&channel_code), &client)
        .await
    {
        return rate_limited(media, &limited, crate::metrics::LimitKind::Rate);
    }
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
    let sent_text = params.query.is_some();
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
    let apq_text = if persisted.is_some() && sent_text {
        query.clone()
    } else {
        String::new()
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
    // An automatic persisted query sent with its text is kept once it has run.
    if let Some(persisted) = &persisted
        && sent_text
        && response.data != Value::Null
    {
        state
            .persisted
            .register(&channel_code, &persisted.sha256, &apq_text)
            .await;
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

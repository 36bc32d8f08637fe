//! Subscriptions over plain HTTP, for clients that cannot open a WebSocket: `POST /graphql`
//! with `Accept: multipart/mixed` answers a `multipart/mixed` body, one JSON part per result,
//! that stays open while the subscription lives.
//!
//! Two flavours, chosen by the `Accept` header:
//! - `multipart/mixed;subscriptionSpec="1.0"` (Apollo Client and Router): each part is
//!   `{"payload": <result>}`, and a heartbeat part `{}` goes out every
//!   [`HEARTBEAT_EVERY`] so proxies keep the response open;
//! - plain `multipart/mixed` (the GraphQL-over-HTTP incremental delivery format, as GraphiQL's
//!   fetcher and graphql-yoga read it): each part is the result itself.
//!
//! A request that fails before it runs (token, limits, syntax, validation) is an ordinary
//! request error in JSON, with its status. When the client accepts JSON too, queries and
//! mutations are answered in JSON; only subscriptions stream.

use futures_util::StreamExt;

use super::*;

/// The boundary between parts.
const BOUNDARY: &str = "graphql";
/// How often a `subscriptionSpec` stream sends its heartbeat.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Which multipart flavour the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spec {
    /// Apollo's multipart subscription protocol (`subscriptionSpec="1.0"`).
    Apollo,
    /// The incremental delivery format: each part a result.
    Incremental,
}

/// The multipart flavour `Accept` names, if it names `multipart/mixed` (with a non-zero
/// quality).
pub(crate) fn requested(accept: Option<&str>) -> Option<Spec> {
    accept?.split(',').find_map(|item| {
        let mut params = item.split(';');
        let media = params.next()?.trim();
        if !media.eq_ignore_ascii_case("multipart/mixed") {
            return None;
        }
        let mut spec = Spec::Incremental;
        for param in params {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.eq_ignore_ascii_case("q") && value.parse::<f32>().is_ok_and(|q| q <= 0.0) {
                return None;
            }
            if name.eq_ignore_ascii_case("subscriptionSpec") {
                spec = Spec::Apollo;
            }
        }
        Some(spec)
    })
}

/// Answers one operation as `multipart/mixed` (or, for a query or mutation when the client
/// accepts JSON too, as JSON).
pub(crate) async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    params: GraphqlParams,
    spec: Spec,
) -> Response {
    let json = negotiate(http::header_str(headers, header::ACCEPT));
    let media = json.unwrap_or(ResponseMedia::Json);
    let shared_params = params.clone();
    let prepared = match admit(state, headers, client_ip).await {
        Ok(caller) => {
            let scope = state.read_path.scope().await;
            prepare(state, &caller, params, Arrival::Stream, &scope)
                .await
                .map(|prepared| (caller, prepared))
        }
        Err(rejection) => Err(rejection),
    };
    let (caller, (request, prepared)) = match prepared {
        Ok(prepared) => prepared,
        Err(rejection) => return rejection.into_response(media),
    };
    if json.is_some() && prepared.operation_type != Some(OperationType::Subscription) {
        let mut response = state.schema.execute(request).await;
        prepared.finish(&mut response, true);
        prepared.register_apq(state, &response).await;
        return render(response, media, state.max_response_bytes);
    }
    // A live `stockChanged` shares its execution with identical subscriptions.
    let started = match super::fanout::key(&caller, &shared_params, &prepared) {
        Some(key) => super::fanout::join(state, key, request, prepared).await,
        None => start_stream(state, request, prepared).map(StreamExt::boxed),
    };
    let results = match started {
        Ok(results) => results,
        Err(errors) => {
            crate::metrics::error_code(code::GRAPHQL_VALIDATION_FAILED);
            return with_media(
                media.request_error_status(),
                media,
                json!({ "errors": errors }).to_string(),
            );
        }
    };
    let heartbeat = spec == Spec::Apollo;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + HEARTBEAT_EVERY,
        HEARTBEAT_EVERY,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The body is pulled as the client reads it: a client that stops reading stops the
    // subscription's stream, whose bounded event buffer then tells it to refetch.
    let closing = state.closing.clone();
    let body =
        futures_util::stream::unfold(Some((results, ticker, closing)), move |state| async move {
            let (mut results, mut ticker, mut closing) = state?;
            // Each part ends with the next delimiter; the last one is closed.
            let end = || "--\r\n".to_owned();
            tokio::select! {
                // The server is stopping: the stream ends (the client reconnects elsewhere).
                () = until_closing(&mut closing) => Some((Ok(end()), None)),
                result = results.next() => match result {
                    Some(body) => {
                        let part = part(spec, &body);
                        let next = Some((results, ticker, closing));
                        Some((Ok::<_, std::convert::Infallible>(part), next))
                    }
                    None => Some((Ok(end()), None)),
                },
                _ = ticker.tick(), if heartbeat => {
                    let next = Some((results, ticker, closing));
                    Some((Ok(part(Spec::Incremental, "{}")), next))
                }
            }
        });
    let content_type = match spec {
        Spec::Apollo => format!("multipart/mixed;boundary=\"{BOUNDARY}\";subscriptionSpec=\"1.0\""),
        Spec::Incremental => format!("multipart/mixed; boundary=\"{BOUNDARY}\""),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        axum::body::Body::from_stream(
            futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(format!("\r\n--{BOUNDARY}"))
            })
            .chain(body),
        ),
    )
        .into_response()
}

/// One part after the delimiter sent before it: its header, the JSON text (wrapped as
/// `{"payload": …}` for Apollo's protocol) and the delimiter after it at once, since clients
/// (Apollo Client, Relay's fetcher) hand a part over only when its closing delimiter arrives.
fn part(spec: Spec, body: &str) -> String {
    let body = match spec {
        Spec::Apollo => format!("{{\"payload\":{body}}}"),
        Spec::Incremental => body.to_owned(),
    };
    format!("\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{body}\r\n--{BOUNDARY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_picks_the_flavour() {
        assert_eq!(requested(None), None);
        assert_eq!(requested(Some("application/json")), None);
        assert_eq!(requested(Some("multipart/mixed")), Some(Spec::Incremental));
        assert_eq!(
            requested(Some("application/json, multipart/mixed; boundary=\"-\"")),
            Some(Spec::Incremental)
        );
        assert_eq!(
            requested(Some(
                "multipart/mixed;boundary=\"graphql\";subscriptionSpec=\"1.0\",application/json"
            )),
            Some(Spec::Apollo)
        );
        assert_eq!(requested(Some("multipart/mixed;q=0")), None);
    }

    #[test]
    fn parts_are_framed_by_the_boundary() {
        assert_eq!(
            part(Spec::Apollo, "{\"data\":{}}"),
            "\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{\"payload\":{\"data\":{}}}\r\n--graphql"
        );
        assert_eq!(
            part(Spec::Incremental, "{}"),
            "\r\nContent-Type: application/json; charset=utf-8\r\n\r\n{}\r\n--graphql"
        );
    }
}

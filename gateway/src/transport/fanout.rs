//! Shared subscriptions: subscribers whose `stockChanged` would compute the same events share
//! one execution, and each event is rendered once for all of them.
//!
//! A thousand POS screens or dashboards watching the same SKUs of the same channel differ
//! only in their socket: executing the selection set, completing and serializing each event a
//! thousand times is what saturated a core. So a live subscription (no `since`: a catch-up is
//! per subscriber) joins a hub keyed by its channel, the role it is authorized by, the
//! normalized document, the operation name and the variables; the first subscriber's stream
//! runs in the hub's task and every event's JSON goes to every member through a bounded
//! broadcast. A member that falls more than [`BUFFER`] events behind gets the document's
//! `REFETCH` event (rendered once per hub), then the live events again, as an unshared
//! subscription would. A member's first event carries its own cost report. The hub's task
//! ends when its last member leaves (or the server stops, which ends the stream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};

use super::*;

/// Events a member may fall behind before it is told to refetch.
pub const BUFFER: usize = 1024;

/// One event as every member receives it: its JSON and its actual cost; `None` when the
/// stream ended (an error that ends it, or the end of the server).
#[derive(Clone, Debug)]
struct Shared {
    body: Option<Arc<str>>,
    actual_cost: u64,
}

/// One shared execution.
struct Hub {
    events: broadcast::Sender<Shared>,
    /// Set when its stream ended: nobody joins it any more.
    ended: Arc<std::sync::atomic::AtomicBool>,
    /// The document's answer to a `REFETCH` event.
    refetch: Arc<str>,
    task: tokio::task::AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The hubs of one gateway, by key; a hub lives while a member holds it.
#[derive(Default)]
pub struct Fanout {
    hubs: Mutex<HashMap<String, Weak<Hub>>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").finish_non_exhaustive()
    }
}

impl Fanout {
    /// Hubs running now.
    pub fn hubs(&self) -> usize {
        self.lock()
            .values()
            .filter(|hub| hub.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Hub>>> {
        self.hubs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hub key of an operation that may share its execution: a subscription selecting only
/// `stockChanged`, without `since` anywhere in its document. `None`: it runs on its own.
pub(crate) fn key(caller: &Caller, params: &GraphqlParams, prepared: &Prepared) -> Option<String> {
    if prepared.operation_type != Some(OperationType::Subscription) {
        return None;
    }
    let operation = selected_operation(
        &prepared.document.operations,
        prepared.operation_name.as_deref(),
    )?;
    let roots = root_field_names(&prepared.document, &operation.node.selection_set.node);
    let query = params.query.as_deref()?;
    if roots != ["stockChanged"] || query.contains("since") {
        return None;
    }
    let role = caller
        .claims
        .as_ref()
        .map_or_else(String::new, |claims| format!("{:?}", claims.role));
    crate::read_path::cache::key(
        &format!("{}/{role}", caller.channel),
        crate::read_path::cache::Document::Text(query),
        params.operation_name.as_deref(),
        params.variables.as_ref(),
    )
}

/// Joins the hub of `key`, starting it with this subscriber's `request` when there is none.
/// Errors are the refusal of a stream that failed validation, as [`start_stream`] returns
/// them.
pub(crate) async fn join(
    state: &AppState,
    key: String,
    request: async_graphql::Request,
    prepared: Prepared,
) -> Result<futures_util::stream::BoxStream<'static, String>, serde_json::Value> {
    let existing = state
        .fanout
        .lock()
        .get(&key)
        .and_then(Weak::upgrade)
        .filter(|hub| !hub.ended.load(std::sync::atomic::Ordering::Acquire));
    let cost = (
        prepared.size.as_ref().map(|size| size.cost),
        prepared.budget,
    );
    let hub = match existing {
        Some(hub) => {
            crate::metrics::subscription_shared(true);
            hub
        }
        None => {
            crate::metrics::subscription_shared(false);
            let hub = match start(state, request, prepared).await? {
                Started::Hub(hub) => hub,
                Started::Failed(body) => {
                    return Ok(futures_util::stream::once(async { body }).boxed());
                }
            };
            let mut hubs = state.fanout.lock();
            // Two first subscribers may have raced: keep the one already there, if any.
            if let Some(other) = hubs
                .get(&key)
                .and_then(Weak::upgrade)
                .filter(|hub| !hub.ended.load(std::sync::atomic::Ordering::Acquire))
            {
                other
            } else {
                hubs.retain(|_, hub| hub.strong_count() > 0);
                hubs.insert(key, Arc::downgrade(&hub));
                hub
            }
        }
    };
    let events = hub.events.subscribe();
    Ok(futures_util::stream::unfold(
        (hub, events, Some(cost)),
        |(hub, mut events, mut cost)| async move {
            let (body, actual) = match events.recv().await {
                Ok(Shared {
                    body: Some(body),
                    actual_cost,
                }) => (body, Some(actual_cost)),
                Ok(Shared { body: None, .. }) | Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(_)) => (hub.refetch.clone(), None),
            };
            // The member's first event reports its own cost, as an unshared one would.
            let body = match (cost.take(), actual) {
                (Some((Some(requested), Some(budget))), Some(actual)) => {
                    render::with_cost(&body, requested, actual, budget)
                }
                _ => body.to_string(),
            };
            Some((body, (hub, events, cost)))
        },
    )
    .boxed())
}

/// How a hub's start went.
enum Started {
    Hub(Arc<Hub>),
    /// The subscription failed as it started (a field error, e.g. `FORBIDDEN`): its one
    /// event, with its cost report, for this subscriber alone.
    Failed(String),
}

/// Runs the first subscriber's stream in a task of its own, every event rendered once (without
/// a cost report) and broadcast. The stream's first event is the document's `REFETCH` answer
/// ([`RefetchProbe`]), kept for members that fall behind.
async fn start(
    state: &AppState,
    request: async_graphql::Request,
    prepared: Prepared,
) -> Result<Started, serde_json::Value> {
    let max_bytes = state.max_response_bytes;
    let mut results = state.schema.execute_stream(request.data(RefetchProbe));
    let refetch = match results.next().await {
        None => return Err(Rejection::internal().errors()),
        Some(response) if render::request_failed(&response) => {
            return Err(refusal(response, max_bytes));
        }
        Some(mut response) if !response.errors.is_empty() => {
            prepared.finish(&mut response, true);
            return Ok(Started::Failed(rendered(response, max_bytes)));
        }
        Some(mut response) => {
            prepared.finish(&mut response, false);
            prepared.register_apq(state, &response).await;
            Arc::<str>::from(rendered(response, max_bytes))
        }
    };
    let (events, _) = broadcast::channel(BUFFER);
    let sender = events.clone();
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = ended.clone();
    let task = tokio::spawn(async move {
        while let Some(mut response) = results.next().await {
            prepared.finish(&mut response, false);
            let actual_cost = analysis::actual_cost(&response.data);
            // No member right now is not an end: one may join before the next event.
            let _ = sender.send(Shared {
                body: Some(rendered(response, max_bytes).into()),
                actual_cost,
            });
        }
        end.store(true, std::sync::atomic::Ordering::Release);
        let _ = sender.send(Shared {
            body: None,
            actual_cost: 0,
        });
    });
    Ok(Started::Hub(Arc::new(Hub {
        events,
        ended,
        refetch,
        task: task.abort_handle(),
    })))
}

/// A completed response's JSON, or `RESPONSE_TOO_LARGE`.
fn rendered(response: async_graphql::Response, max_bytes: usize) -> String {
    match render_body(response, max_bytes) {
        render::Rendered::Sent { body, .. } => body,
        render::Rendered::TooLarge => error_body(
            code::RESPONSE_TOO_LARGE,
            &crate::response_size::too_large_message(max_bytes),
        ),
    }
}

/// The errors of a stream refused at validation, as [`start_stream`] returns them.
fn refusal(response: async_graphql::Response, max_bytes: usize) -> serde_json::Value {
    match render_body(response, max_bytes) {
        render::Rendered::Sent { body, .. } => serde_json::from_str::<serde_json::Value>(&body)
            .map(|mut body| body["errors"].take())
            .unwrap_or_else(|_| Rejection::internal().errors()),
        render::Rendered::TooLarge => Rejection::internal().errors(),
    }
}

/// Request data that makes `stockChanged` answer a `REFETCH` event first, before its live
/// events: how a hub renders the event its lagging members get.
#[derive(Clone, Copy, Debug)]
pub struct RefetchProbe;

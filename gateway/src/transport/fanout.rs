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
    /// The document's answer to a `REFETCH` event, and its actual cost.
    refetch: Arc<str>,
    refetch_cost: u64,
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

/// The hub key of an operation that may share its execution: a subscription whose one root
/// field is `stockChanged` (written directly in the operation) without a `since` value.
/// `None`: it runs on its own.
pub(crate) fn key(caller: &Caller, params: &GraphqlParams, prepared: &Prepared) -> Option<String> {
    use crate::read_path::cache::key;
    use async_graphql::parser::types::Selection;

    if prepared.operation_type != Some(OperationType::Subscription) {
        return None;
    }
    let operation = selected_operation(
        &prepared.document.operations,
        prepared.operation_name.as_deref(),
    )?;
    let [item] = operation.node.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &item.node else {
        return None;
    };
    if field.node.name.node != "stockChanged" {
        return None;
    }
    // `since` asks for a catch-up of this subscriber's own: given as a literal, or as a
    // variable with a value (a declared variable left out or null is no catch-up).
    let catching_up = field.node.get_argument("since").is_some_and(|since| {
        let value = since.node.clone().into_const_with(|name| {
            Ok::<_, std::convert::Infallible>(
                params
                    .variables
                    .as_ref()
                    .and_then(|v| v.get(name.as_str()))
                    .and_then(|v| async_graphql::Value::from_json(v.clone()).ok())
                    .unwrap_or(async_graphql::Value::Null),
            )
        });
        !matches!(value, Ok(async_graphql::Value::Null))
    });
    if catching_up {
        return None;
    }
    let document = params.document()?;
    let role = caller
        .claims
        .as_ref()
        .map_or_else(String::new, |claims| format!("{:?}", claims.role));
    key(
        &format!("{}/{role}", caller.channel),
        document,
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
                crate::metrics::subscription_shared(true);
                other
            } else {
                crate::metrics::subscription_shared(false);
                hubs.retain(|_, hub| hub.strong_count() > 0);
                hubs.insert(key, Arc::downgrade(&hub));
                hub
            }
        }
    };
    let events = hub.events.subscribe();
    // Its stream ended between the lookup and the subscription: the end marker went out
    // before this receiver existed, so this member ends here.
    if hub.ended.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(futures_util::stream::empty().boxed());
    }
    Ok(futures_util::stream::unfold(
        (hub, events, Some(cost)),
        |(hub, mut events, mut cost)| async move {
            let (body, actual) = match events.recv().await {
                Ok(Shared {
                    body: Some(body),
                    actual_cost,
                }) => (body, actual_cost),
                Ok(Shared { body: None, .. }) | Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(_)) => (hub.refetch.clone(), hub.refetch_cost),
            };
            // The member's first event reports its own cost, as an unshared one would.
            let body = match cost.take() {
                Some((Some(requested), Some(budget))) => {
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
            let cost = analysis::actual_cost(&response.data);
            (Arc::<str>::from(rendered(response, max_bytes)), cost)
        }
    };
    let (refetch, refetch_cost) = refetch;
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
        refetch_cost,
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

//! GraphQL over WebSocket at `/graphql/ws`: the `graphql-transport-ws` protocol to the letter,
//! and the legacy `graphql-ws` (subscriptions-transport-ws) protocol for older clients.
//!
//! `graphql-transport-ws` (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>):
//! - the client sends `connection_init` within `websocket.connection_init_timeout_secs`, or the
//!   socket closes with **4408**; its payload may carry `Authorization` (`"Bearer <token>"`) and
//!   `X-Channel` (browsers cannot set headers on a socket; the upgrade request's own headers
//!   are read too). A token that does not verify closes with **4403**; otherwise
//!   `connection_ack`. A second `connection_init` closes with **4429**.
//! - `subscribe` before `connection_ack` closes with **4401**; an id already running closes
//!   with **4409**; a message that is not valid JSON, has an unknown `type` or lacks its fields
//!   closes with **4400** (binary frames too).
//! - an operation refused before it runs (limits, syntax, validation) gets one `error` message
//!   with its GraphQL errors, never `next` + `complete`; otherwise `next` per result and
//!   `complete` when it ends. The client's `complete` stops an operation.
//! - `ping` is answered with `pong`. The server pings (WebSocket ping frames) every
//!   `websocket.keep_alive_secs`; a socket silent for three intervals is closed.
//!
//! Legacy `graphql-ws`: `connection_init` → `connection_ack` (or `connection_error`, then a
//! 4403 close) and `ka` keep-alives; `start` / `stop` / `connection_terminate`; results as
//! `data`, refusals as `error`, then `complete`.
//!
//! Every operation is prepared like an HTTP request (rate and cost limits, persisted
//! operations, size limits, the viewer). Buffers are bounded: each socket queues at most
//! [`OUTBOX`] messages; an operation whose socket cannot keep up stops pulling its events, and
//! a subscription that falls behind the event bus gets an event telling it to refetch.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::*;

/// The modern subprotocol.
pub const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy subprotocol (subscriptions-transport-ws).
pub const LEGACY_WS: &str = "graphql-ws";
/// Messages one socket may have queued for sending.
pub const OUTBOX: usize = 64;
/// The read buffer of a socket, in bytes.
const READ_BUFFER: usize = 4 * 1024;
/// The longest operation id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Which protocol a socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Transport,
    Legacy,
}

impl Protocol {
    fn result(self) -> &'static str {
        match self {
            Self::Transport => "next",
            Self::Legacy => "data",
        }
    }
}

/// Close codes of graphql-transport-ws.
mod close {
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const SUBPROTOCOL: u16 = 4406;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const DUPLICATE: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
    pub const INTERNAL: u16 = 4500;
    /// RFC 6455: the endpoint is going away (shutdown, or a peer that stopped answering).
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455: try again later (rate limited at `connection_init`).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// RFC 6455: a message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// `GET /graphql/ws`: upgrades to a WebSocket speaking `graphql-transport-ws` (preferred) or
/// `graphql-ws`, as the client offers in `Sec-WebSocket-Protocol`.
pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientIp(client_ip): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let status = rejection.status();
            return request_error(
                status,
                ResponseMedia::Json,
                code::BAD_REQUEST,
                &format!(
                    "/graphql/ws is a WebSocket endpoint (subprotocol graphql-transport-ws or graphql-ws): {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let slot = match state
        .sockets
        .admit(ClientKey::of(None, client_ip), &state.websocket)
    {
        Ok(slot) => slot,
        Err(cap) => {
            let (status, code) = if cap == "websocket.max_sockets" {
                (StatusCode::SERVICE_UNAVAILABLE, code::INTERNAL)
            } else {
                (StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED)
            };
            let mut response = request_error(
                status,
                ResponseMedia::Json,
                code,
                &format!("too many sockets open ({cap}); close one or retry later"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
    };
    let max_message = state.websocket.max_message_bytes;
    upgrade
        .protocols([TRANSPORT_WS, LEGACY_WS])
        .max_message_size(max_message)
        .max_frame_size(max_message)
        // Small buffers: most sockets are idle subscribers; a large message still fits, as
        // the codec grows the buffer to the frame's length.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let protocol = match socket.protocol().and_then(|p| p.to_str().ok()) {
                Some(TRANSPORT_WS) => Some(Protocol::Transport),
                Some(LEGACY_WS) => Some(Protocol::Legacy),
                _ => None,
            };
            let mut socket = socket;
            let Some(protocol) = protocol else {
                let _ = socket
                    .send(close_message(
                        close::SUBPROTOCOL,
                        "Subprotocol not acceptable: offer graphql-transport-ws or graphql-ws",
                    ))
                    .await;
                return;
            };
            crate::metrics::websocket_opened();
            Connection::new(state, protocol, headers, client_ip)
                .serve(socket)
                .await;
            crate::metrics::websocket_closed();
        })
}

/// The sockets open at `/graphql/ws`, in all and per client address: sockets are long-lived and
/// each holds a connection, so they have caps of their own (`websocket.max_sockets`,
/// `websocket.max_sockets_per_client`) below the HTTP connection cap.
#[derive(Debug, Default)]
pub struct Sockets {
    open: std::sync::Mutex<(usize, HashMap<ClientKey, usize>)>,
}

/// One open socket's place in [`Sockets`], given back when dropped.
struct SocketSlot {
    sockets: Arc<Sockets>,
    client: ClientKey,
}

impl Sockets {
    /// Takes a place for a socket of `client`, or says which cap is reached.
    fn admit(
        self: &Arc<Self>,
        client: ClientKey,
        limits: &crate::config::WebsocketConfig,
    ) -> Result<SocketSlot, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= limits.max_sockets {
            return Err("websocket.max_sockets");
        }
        let of_client = open.1.entry(client.clone()).or_default();
        if *of_client >= limits.max_sockets_per_client {
            return Err("websocket.max_sockets_per_client");
        }
        *of_client += 1;
        open.0 += 1;
        Ok(SocketSlot {
            sockets: self.clone(),
            client,
        })
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.sockets.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 -= 1;
        if let Some(count) = open.1.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

/// A close frame; the reason is cut to the 123 bytes a close frame can carry.
fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }))
}

/// What an operation's task hands to the socket.
enum Outgoing {
    Result {
        id: String,
        run: u64,
        body: String,
    },
    Refused {
        id: String,
        run: u64,
        errors: serde_json::Value,
    },
    Done {
        id: String,
        run: u64,
    },
}

/// What the socket does after a client message.
enum Next {
    Continue,
    Close(u16, String),
}

/// One socket's state.
struct Connection {
    state: AppState,
    protocol: Protocol,
    /// The upgrade request's `Authorization` and `X-Channel` (a payload may override them).
    headers: HeaderMap,
    client_ip: Option<std::net::IpAddr>,
    /// Set by `connection_init`; `Some` once acknowledged.
    caller: Option<Caller>,
    /// When the token of `caller` expires (with the leeway): the socket closes then.
    expires: Option<Instant>,
    initialised: bool,
    /// Running operations by id, with the run number that tells a finished run's late messages
    /// from a newer run of the same id.
    operations: HashMap<String, (u64, AbortHandle)>,
    runs: u64,
    outbox: mpsc::Sender<Outgoing>,
    inbox: mpsc::Receiver<Outgoing>,
}

impl Connection {
    fn new(
        state: AppState,
        protocol: Protocol,
        upgrade_headers: HeaderMap,
        client_ip: Option<std::net::IpAddr>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        for name in [
            header::AUTHORIZATION,
            header::HeaderName::from_static(CHANNEL_HEADER),
        ] {
            if let Some(value) = upgrade_headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        Self {
            state,
            protocol,
            headers,
            client_ip,
            caller: None,
            expires: None,
            initialised: false,
            operations: HashMap::new(),
            runs: 0,
            outbox,
            inbox,
        }
    }

    async fn serve(mut self, mut socket: WebSocket) {
        let limits = self.state.websocket.clone();
        let init_deadline =
            tokio::time::sleep(Duration::from_secs(limits.connection_init_timeout_secs));
        tokio::pin!(init_deadline);
        let keep_alive = Duration::from_secs(limits.keep_alive_secs);
        let mut ticker = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
        let mut last_heard = Instant::now();
        let mut closing = self.state.closing.clone();
        let ended = loop {
            tokio::select! {
                () = until_closing(&mut closing) => {
                    break Some((close::GOING_AWAY, "the server is shutting down; reconnect".to_owned()));
                }
                message = socket.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        // Over websocket.max_message_bytes: 1009, with the limit.
                        Some(Err(err)) if err.to_string().contains("too long") => {
                            break Some((
                                close::TOO_BIG,
                                format!(
                                    "Message too big: the limit is {} bytes (websocket.max_message_bytes)",
                                    self.state.websocket.max_message_bytes
                                ),
                            ));
                        }
                        _ => break None,
                    };
                    last_heard = Instant::now();
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Binary(_) => {
                            break self.malformed("binary messages are not part of the protocol", &mut socket).await;
                        }
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Close(_) => break None,
                    };
                    // Boxed: the handling of a message (token checks, SQL) is large and short;
                    // the socket's own future, which lives as long as the socket, stays small.
                    match Box::pin(self.on_message(text.as_str(), &mut socket)).await {
                        Next::Continue => {}
                        Next::Close(code, reason) => break Some((code, reason)),
                    }
                }
                Some(outgoing) = self.inbox.recv() => {
                    if let Some(text) = self.on_outgoing(outgoing)
                        && !sent_in_time(&mut socket, Message::text(text), keep_alive).await
                    {
                        break None;
                    }
                }
                () = sleep_until(self.expires), if self.expires.is_some() => {
                    break Some((close::FORBIDDEN, "UNAUTHENTICATED: the token has expired".to_owned()));
                }
                () = &mut init_deadline, if !self.initialised => {
                    break Some((close::INIT_TIMEOUT, "Connection initialisation timeout".to_owned()));
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > keep_alive * 3 {
                        break Some((close::GOING_AWAY, "no message or pong for three keep-alive intervals".to_owned()));
                    }
                    // A ping frame, which every client answers with a pong (legacy clients
                    // also get the `ka` message their libraries expect).
                    if !sent_in_time(&mut socket, Message::Ping(Default::default()), keep_alive).await {
                        break None;
                    }
                    if self.protocol == Protocol::Legacy
                        && self.caller.is_some()
                        && !sent_in_time(&mut socket, Message::text(r#"{"type":"ka"}"#), keep_alive).await
                    {
                        break None;
                    }
                }
            }
        };
        for (_, (_, task)) in self.operations.drain() {
            task.abort();
        }
        if let Some((code, reason)) = ended {
            sent_in_time(&mut socket, close_message(code, &reason), keep_alive).await;
        }
    }

    /// A message that breaks the protocol: 4400 (legacy: an `error` message, the socket stays).
    async fn malformed(&mut self, reason: &str, socket: &mut WebSocket) -> Option<(u16, String)> {
        match self.protocol {
            Protocol::Transport => Some((
                close::BAD_REQUEST,
                format!("Invalid message received: {reason}"),
            )),
            Protocol::Legacy => {
                let message = json!({ "type": "error", "payload": { "message": reason } });
                socket
                    .send(Message::text(message.to_string()))
                    .await
                    .err()
                    .map(|_| (close::GOING_AWAY, String::new()))
            }
        }
    }

    async fn on_message(&mut self, text: &str, socket: &mut WebSocket) -> Next {
        let message = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(message)) => message,
            Ok(_) => {
                return self
                    .invalid("a message must be a JSON object", socket)
                    .await;
            }
            Err(err) => {
                return self
                    .invalid(&format!("not valid JSON: {err}"), socket)
                    .await;
            }
        };
        let Some(kind) = message.get("type").and_then(|t| t.as_str()) else {
            return self
                .invalid("a message needs a string `type`", socket)
                .await;
        };
        let id = message.get("id");
        let payload = message.get("payload").cloned();
        match (self.protocol, kind) {
            (_, "connection_init") => self.on_init(payload, socket).await,
            (Protocol::Transport, "ping") => {
                let pong = match payload {
                    Some(payload @ serde_json::Value::Object(_)) => {
                        json!({ "type": "pong", "payload": payload })
                    }
                    _ => json!({ "type": "pong" }),
                };
                send_or_close(socket, pong).await
            }
            (Protocol::Transport, "pong") => Next::Continue,
            (Protocol::Transport, "subscribe") | (Protocol::Legacy, "start") => {
                let Some(id) = id.and_then(|id| id.as_str()).filter(|id| !id.is_empty()) else {
                    return self
                        .invalid(&format!("`{kind}` needs a non-empty string `id`"), socket)
                        .await;
                };
                if id.len() > MAX_ID_BYTES {
                    return self
                        .invalid(&format!("an `id` is at most {MAX_ID_BYTES} bytes"), socket)
                        .await;
                }
                self.on_subscribe(id.to_owned(), payload, socket).await
            }
            (Protocol::Transport, "complete") | (Protocol::Legacy, "stop") => {
                let Some(id) = id.and_then(|id| id.as_str()) else {
                    return self
                        .invalid(&format!("`{kind}` needs a string `id`"), socket)
                        .await;
                };
                if let Some((_, task)) = self.operations.remove(id) {
                    task.abort();
                    if self.protocol == Protocol::Legacy {
                        return send_or_close(socket, json!({ "type": "complete", "id": id }))
                            .await;
                    }
                }
                Next::Continue
            }
            (Protocol::Legacy, "connection_terminate") => {
                Next::Close(1000, "connection_terminate".to_owned())
            }
            _ => {
                self.invalid(&format!("unknown message type {kind:?}"), socket)
                    .await
            }
        }
    }

    async fn invalid(&mut self, reason: &str, socket: &mut WebSocket) -> Next {
        match self.malformed(reason, socket).await {
            Some((code, reason)) => Next::Close(code, reason),
            None => Next::Continue,
        }
    }

    async fn on_init(
        &mut self,
        payload: Option<serde_json::Value>,
        socket: &mut WebSocket,
    ) -> Next {
        if self.initialised {
            return match self.protocol {
                Protocol::Transport => Next::Close(
                    close::TOO_MANY_INITS,
                    "Too many initialisation requests".to_owned(),
                ),
                Protocol::Legacy => Next::Continue,
            };
        }
        self.initialised = true;
        let payload = match payload {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(payload)) => payload,
            Some(_) => {
                return self
                    .invalid("the `connection_init` payload must be an object", socket)
                    .await;
            }
        };
        let mut headers = self.headers.clone();
        for (key, value) in &payload {
            let name = match key.to_ascii_lowercase().as_str() {
                "authorization" => header::AUTHORIZATION,
                "x-channel" | "channel" => header::HeaderName::from_static(CHANNEL_HEADER),
                // Only the two names an identity can come from; anything else is ignored.
                _ => continue,
            };
            let Some(value) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok()) else {
                return self.refuse_init(
                    Rejection::unauthenticated(format!(
                        "`{key}` in the connection_init payload must be a string of visible ASCII"
                    )),
                    socket,
                )
                .await;
            };
            headers.insert(name, value);
        }
        let admitted = match admit(&self.state, &headers, self.client_ip).await {
            // The channel and the token's customer and store must resolve too: a socket is
            // refused at once, not at its first operation.
            Ok(caller) => {
                let read = self.state.read_path.scope().await.model;
                resolve_viewer(
                    &self.state,
                    read.as_deref(),
                    &caller.channel,
                    caller.claims.clone(),
                )
                .await
                .map(|_| caller)
            }
            Err(rejection) => Err(rejection),
        };
        match admitted {
            Ok(caller) => {
                self.expires = caller.claims.as_ref().map(|claims| {
                    let at = std::time::UNIX_EPOCH
                        + Duration::from_secs(claims.exp + self.state.auth.leeway_secs());
                    let left = at
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    Instant::now() + left
                });
                self.caller = Some(caller);
                let ack = send_or_close(socket, json!({ "type": "connection_ack" })).await;
                if self.protocol == Protocol::Legacy && matches!(ack, Next::Continue) {
                    return send_or_close(socket, json!({ "type": "ka" })).await;
                }
                ack
            }
            Err(rejection) => self.refuse_init(rejection, socket).await,
        }
    }

    async fn refuse_init(&mut self, rejection: Rejection, socket: &mut WebSocket) -> Next {
        crate::metrics::error_code(rejection.code());
        let code = if rejection.code() == code::RATE_LIMITED {
            close::TRY_AGAIN_LATER
        } else if rejection.code() == code::INTERNAL {
            close::INTERNAL
        } else {
            close::FORBIDDEN
        };
        if self.protocol == Protocol::Legacy {
            let error = rejection.errors()[0].take();
            if let Next::Close(code, reason) = send_or_close(
                socket,
                json!({ "type": "connection_error", "payload": error }),
            )
            .await
            {
                return Next::Close(code, reason);
            }
        }
        // A close reason holds 123 bytes: the retry time goes first.
        let reason = match rejection.retry_after() {
            Some(seconds) => format!("{}: retry after {seconds} s", rejection.code()),
            None => format!("{}: {}", rejection.code(), bounded(rejection.message())),
        };
        Next::Close(code, reason)
    }

    async fn on_subscribe(
        &mut self,
        id: String,
        payload: Option<serde_json::Value>,
        socket: &mut WebSocket,
    ) -> Next {
        let Some(caller) = self.caller.clone() else {
            return match self.protocol {
                Protocol::Transport => Next::Close(close::UNAUTHORIZED, "Unauthorized".to_owned()),
                Protocol::Legacy => {
                    refused(
                        socket,
                        self.protocol,
                        &id,
                        &Rejection::unauthenticated(
                            "send connection_init (and wait for connection_ack) before start",
                        ),
                    )
                    .await
                }
            };
        };
        let params = match params_from_json(payload.unwrap_or_default(), "the payload") {
            Ok(params) => params,
            Err(reason) => return self.invalid(&reason, socket).await,
        };
        let replacing = self.operations.contains_key(&id);
        if replacing && self.protocol == Protocol::Transport {
            return Next::Close(
                close::DUPLICATE,
                format!("Subscriber for {} already exists", bounded(&id)),
            );
        }
        // (The old protocol's servers replaced a running operation of the same id.)
        if self.operations.len() - usize::from(replacing) >= self.state.websocket.max_operations {
            let rejection = Rejection::new(
                code::BAD_REQUEST,
                format!(
                    "a socket runs at most {} operations at once (websocket.max_operations); complete one first",
                    self.state.websocket.max_operations
                ),
            );
            return refused(socket, self.protocol, &id, &rejection).await;
        }
        if let Some((_, running)) = self.operations.remove(&id) {
            running.abort();
        }
        self.runs += 1;
        let run = self.runs;
        let outbox = self.outbox.clone();
        let operation = run_operation(
            self.state.clone(),
            caller,
            params,
            id.clone(),
            run,
            outbox.clone(),
        );
        let failed_id = id.clone();
        let task = tokio::spawn(async move {
            // A panic of ours ends the operation with INTERNAL, never silently.
            if futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(operation))
                .await
                .is_err()
            {
                tracing::error!(id = %failed_id, "a WebSocket operation panicked");
                let errors = Rejection::internal().errors();
                let _ = outbox
                    .send(Outgoing::Refused {
                        id: failed_id,
                        run,
                        errors,
                    })
                    .await;
            }
        });
        self.operations.insert(id, (run, task.abort_handle()));
        Next::Continue
    }

    /// The text to send for an operation's message, if its run is still the current one.
    fn on_outgoing(&mut self, outgoing: Outgoing) -> Option<String> {
        let (id, run) = match &outgoing {
            Outgoing::Result { id, run, .. }
            | Outgoing::Refused { id, run, .. }
            | Outgoing::Done { id, run } => (id, *run),
        };
        if self.operations.get(id).map(|(current, _)| *current) != Some(run) {
            return None;
        }
        let id_json = serde_json::Value::from(id.as_str()).to_string();
        Some(match outgoing {
            Outgoing::Result { body, .. } => format!(
                r#"{{"id":{id_json},"type":"{}","payload":{body}}}"#,
                self.protocol.result()
            ),
            Outgoing::Refused { id, errors, .. } => {
                self.operations.remove(&id);
                error_message(self.protocol, &id, errors).to_string()
            }
            Outgoing::Done { id, .. } => {
                self.operations.remove(&id);
                format!(r#"{{"id":{id_json},"type":"complete"}}"#)
            }
        })
    }
}

/// The `error` message of an operation refused before it ran.
fn error_message(protocol: Protocol, id: &str, errors: serde_json::Value) -> serde_json::Value {
    match protocol {
        Protocol::Transport => json!({ "id": id, "type": "error", "payload": errors }),
        // Legacy clients read one error object.
        Protocol::Legacy => {
            let first = errors.get(0).cloned().unwrap_or_else(|| json!({}));
            json!({ "id": id, "type": "error", "payload": first })
        }
    }
}

async fn refused(
    socket: &mut WebSocket,
    protocol: Protocol,
    id: &str,
    rejection: &Rejection,
) -> Next {
    crate::metrics::error_code(rejection.code());
    send_or_close(socket, error_message(protocol, id, rejection.errors())).await
}

async fn send_or_close(socket: &mut WebSocket, message: serde_json::Value) -> Next {
    if sent_in_time(socket, Message::text(message.to_string()), SEND_TIMEOUT).await {
        Next::Continue
    } else {
        Next::Close(close::GOING_AWAY, String::new())
    }
}

/// How long an answer to a client's own message may take to be written.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `message` unless the client has stopped reading for `within`: a socket whose
/// client does not read is given up, not waited on.
async fn sent_in_time(socket: &mut WebSocket, message: Message, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Sleeps until `at` (never, without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One operation of a socket: prepared like an HTTP request (its own rate charge), then its
/// results to the socket's outbox until it ends or the client stops it. A full outbox makes
/// the task wait, so a slow socket slows only its own operations.
async fn run_operation(
    state: AppState,
    caller: Caller,
    params: GraphqlParams,
    id: String,
    run: u64,
    outbox: mpsc::Sender<Outgoing>,
) {
    let results = match charge_request(&state, &caller.channel, &caller.client).await {
        // Boxed: preparing is large and short; a subscription's task lives long.
        Ok(()) => Box::pin(start_operation(&state, &caller, params)).await,
        Err(rejection) => {
            crate::metrics::error_code(rejection.code());
            Err(rejection.errors())
        }
    };
    let mut results = match results {
        Ok(results) => results,
        Err(errors) => {
            let _ = outbox.send(Outgoing::Refused { id, run, errors }).await;
            return;
        }
    };
    while let Some(body) = results.next().await {
        let result = Outgoing::Result {
            id: id.clone(),
            run,
            body,
        };
        if outbox.send(result).await.is_err() {
            return;
        }
    }
    let _ = outbox.send(Outgoing::Done { id, run }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let Message::Close(Some(frame)) = close_message(4400, &long) else {
            panic!("not a close frame");
        };
        assert!(frame.reason.as_str().len() <= 123);
        assert_eq!(frame.code, 4400);
    }
}

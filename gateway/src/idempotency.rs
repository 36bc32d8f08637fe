//! One idempotency scheme for every mutation. A mutation sent over plain HTTP with an
//! `Idempotency-Key` header (or, without the header, an `idempotencyKey` field in the `input`
//! argument of its root field) runs once per key and viewer: its response is stored with a
//! hash of the request, a repeat of the same request gets that response again (with
//! `Idempotency-Replayed: true`) without running, the same key with another request is
//! `IDEMPOTENCY_CONFLICT`, and a repeat while the first still runs waits for it, then gets
//! `IDEMPOTENCY_IN_PROGRESS`. Queries ignore keys.
//!
//! The records live in the database ([`commerce_core::idempotency`]), so every instance of
//! a cluster sees the same keys. This module reads the key, names its scope, hashes the
//! request and drives the claim; the transport ([`crate::transport`]) runs the operation
//! between the claim and [`settle`].

use std::collections::HashSet;
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, Selection};
use async_graphql::{Name, Positioned, Value as ConstValue, Variables};
use axum::http::HeaderMap;
use commerce_core::idempotency::{self, Begin, KeyLifetime, NewClaim};
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::config::IdempotencyConfig;

/// The request header that carries the key.
pub const KEY_HEADER: &str = "idempotency-key";
/// The response header of a replayed response (`true`).
pub const REPLAYED_HEADER: &str = "idempotency-replayed";
/// The field of a root field's `input` argument that carries the key.
pub const INPUT_FIELD: &str = "idempotencyKey";
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = idempotency::MAX_KEY_CHARS;
/// How often a repeat looks whether the first request with its key has finished.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// `[idempotency]` as the transport uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub lifetime: KeyLifetime,
    /// How long a repeat waits for the first request with its key.
    pub wait: Duration,
}

impl Settings {
    /// A run still unfinished after twice the request timeout is lost (its instance died):
    /// a request cannot run longer than its timeout.
    pub fn new(config: &IdempotencyConfig, request_timeout_secs: u64) -> Self {
        Self {
            lifetime: KeyLifetime {
                ttl: chrono::Duration::seconds(config.ttl_secs as i64),
                stale_after: chrono::Duration::seconds(2 * request_timeout_secs.max(1) as i64),
            },
            wait: Duration::from_secs(config.wait_secs),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(&IdempotencyConfig::default(), 30)
    }
}

/// A mutation that runs at most once: whose key it is, the key, and the request's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyed {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// Why a key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadKey {
    pub message: String,
    /// The input that carried it (`input.idempotencyKey`); `None` for the header.
    pub field: Option<String>,
}

impl BadKey {
    fn header(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: None,
        }
    }
}

/// The key of a mutation: the `Idempotency-Key` header, else `input.idempotencyKey` of its
/// root fields (literal or from variables, after their defaults were applied). Both present
/// must agree; root fields with different keys are refused.
pub fn key_of(
    header: Result<Option<String>, BadKey>,
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
) -> Result<Option<String>, BadKey> {
    let header = header?;
    let input = input_key(document, operation, variables)?;
    match (header, input) {
        (Some(header), Some(input)) if header != input => Err(BadKey {
            message: format!(
                "the Idempotency-Key header and input.{INPUT_FIELD} differ: send one key"
            ),
            field: Some(format!("input.{INPUT_FIELD}")),
        }),
        (Some(key), _) | (None, Some(key)) => Ok(Some(key)),
        (None, None) => Ok(None),
    }
}

/// The `Idempotency-Key` header: one value of 1 to 255 visible ASCII characters.
pub fn header_key(headers: &HeaderMap) -> Result<Option<String>, BadKey> {
    let mut values = headers.get_all(KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BadKey::header(
            "send one Idempotency-Key header, not several",
        ));
    }
    check_key(value.as_bytes())
        .map(Some)
        .map_err(|why| BadKey::header(format!("invalid Idempotency-Key header: {why}")))
}

/// A key as sent: 1 to [`MAX_KEY_CHARS`] visible ASCII characters (`!` to `~`, no spaces).
pub fn check_key(key: &[u8]) -> Result<String, String> {
    let rule = format!("a key is 1 to {MAX_KEY_CHARS} visible ASCII characters (no spaces)");
    if key.is_empty() {
        return Err(format!("it is empty; {rule}"));
    }
    if key.len() > MAX_KEY_CHARS {
        return Err(format!("it has {} characters; {rule}", key.len()));
    }
    if !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(format!("it holds a character that is not allowed; {rule}"));
    }
    Ok(String::from_utf8_lossy(key).into_owned())
}

/// `input.idempotencyKey` of the operation's root fields (through fragments), with variables
/// substituted.
pub fn input_key(
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
) -> Result<Option<String>, BadKey> {
    let mut keys = Vec::new();
    let mut seen = HashSet::new();
    collect_input_keys(
        document,
        &operation.selection_set.node.items,
        variables,
        &mut seen,
        &mut keys,
    )?;
    match keys.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(key.clone())),
        _ => Err(BadKey {
            message: format!(
                "the root fields carry different input.{INPUT_FIELD} values: one request has one key"
            ),
            field: Some(format!("input.{INPUT_FIELD}")),
        }),
    }
}

fn collect_input_keys<'a>(
    document: &'a ExecutableDocument,
    selections: &'a [Positioned<Selection>],
    variables: &Variables,
    seen: &mut HashSet<&'a Name>,
    keys: &mut Vec<String>,
) -> Result<(), BadKey> {
    let field_name = format!("input.{INPUT_FIELD}");
    let bad = |why: &str| BadKey {
        message: format!("invalid {field_name}: {why}"),
        field: Some(field_name.clone()),
    };
    for selection in selections {
        match &selection.node {
            Selection::Field(field) => {
                let Some((_, input)) = field
                    .node
                    .arguments
                    .iter()
                    .find(|(name, _)| name.node == "input")
                else {
                    continue;
                };
                let input = input.node.clone().into_const_with(|name| {
                    Ok::<_, std::convert::Infallible>(
                        variables.get(&name).cloned().unwrap_or(ConstValue::Null),
                    )
                });
                let Ok(ConstValue::Object(input)) = input else {
                    continue;
                };
                match input.get(INPUT_FIELD) {
                    None | Some(ConstValue::Null) => {}
                    Some(ConstValue::String(key)) => {
                        let key = check_key(key.as_bytes()).map_err(|why| bad(&why))?;
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                    Some(_) => return Err(bad("must be a string")),
                }
            }
            Selection::InlineFragment(fragment) => collect_input_keys(
                document,
                &fragment.node.selection_set.node.items,
                variables,
                seen,
                keys,
            )?,
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if let Some(fragment) = document.fragments.get(name)
                    && seen.insert(name)
                {
                    collect_input_keys(
                        document,
                        &fragment.node.selection_set.node.items,
                        variables,
                        seen,
                        keys,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Whose keys these are: the channel, and the token's subject or, for anonymous callers,
/// their client address (`web:sub:alice`, `web:ip:203.0.113.9`). A longer identity than the
/// table holds is replaced by its hash.
pub fn scope(channel: &str, client: &str) -> String {
    let scope = format!("{channel}:{client}");
    if scope.chars().count() <= idempotency::MAX_SCOPE_CHARS {
        return scope;
    }
    let channel: String = channel.chars().take(64).collect();
    format!("{channel}:sha256:{}", hex::encode(Sha256::digest(client)))
}

/// SHA-256 (hex) of the request as canonical JSON (`{"operationName", "query", "variables"}`,
/// object keys sorted): the same request hashes the same whatever the order of its
/// variables.
pub fn request_hash(query: &str, operation_name: Option<&str>, variables: &Variables) -> String {
    let request = serde_json::json!({
        "query": query,
        "operationName": operation_name,
        "variables": serde_json::to_value(variables).unwrap_or(serde_json::Value::Null),
    });
    let mut canonical = String::new();
    write_canonical(&request, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (name, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(name.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What the transport does with a keyed mutation.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Run it, then [`settle`].
    Run,
    /// Answer this stored response body; run nothing.
    Replay(String),
}

/// Why a keyed mutation is answered without running.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key was used with another request.
    Conflict,
    /// The first request with the key still runs after [`Settings::wait`].
    InProgress,
    /// The records could not be read (logged).
    Internal,
}

/// Most claims (or stored responses) written in one statement.
pub const MAX_BATCH: usize = 64;

/// One request's part of a batch, and where its outcome goes (`None`: the batch failed).
type Batched<T> = (T, oneshot::Sender<Option<bool>>);

/// Claims and stored responses of many requests written together, on PostgreSQL: a request
/// that comes while a batch is being written joins the next one, which carries every request
/// that came meanwhile (at most [`MAX_BATCH`]). Under load the records cost the database one
/// statement and one commit per batch instead of one per request; alone, a request waits for
/// nothing. Each request still gets its own outcome; keys already held go on to
/// [`idempotency::begin`] one by one, and so does every request of a batch that failed.
pub struct Batches {
    claims: mpsc::Sender<Batched<NewClaim>>,
    responses: mpsc::Sender<Batched<(String, String, String)>>,
}

impl Batches {
    /// The batch writers (tasks of the current runtime; they end with the last handle).
    pub fn new(db: DatabaseConnection, lifetime: KeyLifetime) -> Self {
        let claims = {
            let db = db.clone();
            batch_writer("claiming idempotency keys", move |claims| {
                let db = db.clone();
                async move { idempotency::claim_free(&db, &claims, lifetime, chrono::Utc::now()).await }
            })
        };
        let responses = batch_writer("storing idempotent responses", move |responses| {
            let db = db.clone();
            async move { idempotency::finish_many(&db, &responses).await }
        });
        Self { claims, responses }
    }

    /// Whether the key was claimed for this request (`None`: the batch failed), and the
    /// claim's token.
    async fn claim(&self, keyed: &Keyed) -> (Option<bool>, String) {
        let token = uuid::Uuid::new_v4().to_string();
        let claim = NewClaim {
            scope: keyed.scope.clone(),
            key: keyed.key.clone(),
            request_hash: keyed.request_hash.clone(),
            token: token.clone(),
        };
        (send(&self.claims, claim).await, token)
    }

    async fn finish(&self, keyed: &Keyed, body: &str) -> Option<bool> {
        let response = (keyed.scope.clone(), keyed.key.clone(), body.to_owned());
        send(&self.responses, response).await
    }
}

async fn send<T>(writer: &mpsc::Sender<Batched<T>>, item: T) -> Option<bool> {
    let (reply, outcome) = oneshot::channel();
    writer.send((item, reply)).await.ok()?;
    outcome.await.ok().flatten()
}

/// A task that writes what is sent to it in batches with `write` (one outcome per item, in
/// order), one batch at a time.
fn batch_writer<T, W, F>(what: &'static str, write: W) -> mpsc::Sender<Batched<T>>
where
    T: Send + 'static,
    W: Fn(Vec<T>) -> F + Send + 'static,
    F: Future<Output = Result<Vec<bool>, commerce_core::CoreError>> + Send,
{
    let (sender, mut queue) = mpsc::channel::<Batched<T>>(4 * MAX_BATCH);
    tokio::spawn(async move {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
            match write(items).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Some(outcome));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "{what} in a batch failed; each is written alone");
                    for reply in replies {
                        let _ = reply.send(None);
                    }
                }
            }
        }
    });
    sender
}

/// Claims the key, waiting up to `settings.wait` (polling every [`POLL_EVERY`]) while the
/// first request with it runs. Expired records are deleted on the way. With `batches` (on
/// PostgreSQL), a free key is claimed in a batch; a held one goes on one by one.
pub async fn claim(
    db: &DatabaseConnection,
    keyed: &Keyed,
    settings: &Settings,
    batches: Option<&Batches>,
) -> Result<Claim, Refusal> {
    // A key the batch did not claim goes on one by one; so does a batch that failed (the
    // writer logged why; say the connection dropped), once it is known that this request's
    // row was not written after all (its token is not there).
    if let Some(batches) = batches {
        match batches.claim(keyed).await {
            (Some(true), _) => return Ok(Claim::Run),
            (Some(false), _) => {}
            (None, token) => {
                match idempotency::claimed_by(db, &keyed.scope, &keyed.key, &token).await {
                    Ok(true) => return Ok(Claim::Run),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(error = %err, "claiming an idempotency key failed");
                        return Err(Refusal::Internal);
                    }
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + settings.wait;
    loop {
        let begun = idempotency::begin(
            db,
            &keyed.scope,
            &keyed.key,
            &keyed.request_hash,
            settings.lifetime,
            chrono::Utc::now(),
        )
        .await;
        match begun {
            Ok(Begin::Run) => return Ok(Claim::Run),
            Ok(Begin::Replay(body)) => return Ok(Claim::Replay(body)),
            Ok(Begin::Conflict) => return Err(Refusal::Conflict),
            Ok(Begin::InProgress) if tokio::time::Instant::now() + POLL_EVERY <= deadline => {
                tokio::time::sleep(POLL_EVERY).await;
            }
            Ok(Begin::InProgress) => return Err(Refusal::InProgress),
            Err(err) => {
                tracing::error!(error = %err, "claiming an idempotency key failed");
                return Err(Refusal::Internal);
            }
        }
    }
}

/// After the run: stores `body` (the response as sent) for replays, or with `None` frees the
/// key so a retry runs again (the run failed on our side, or was refused before running).
/// With `batches` (on PostgreSQL), a response is stored in a batch.
pub async fn settle(
    db: &DatabaseConnection,
    keyed: &Keyed,
    body: Option<&str>,
    batches: Option<&Batches>,
) {
    let lost = || {
        tracing::warn!(
            "an idempotency key lost its record while its request ran; the response was not stored"
        );
    };
    let settled = match (body, batches) {
        (Some(body), batches) => {
            // A batch that failed (logged by the writer) is written again alone.
            let stored = match batches {
                Some(batches) => batches.finish(keyed, body).await,
                None => None,
            };
            match stored {
                Some(stored) => Ok(stored),
                None => idempotency::finish(db, &keyed.scope, &keyed.key, body).await,
            }
            .map(|stored| {
                if !stored {
                    lost();
                }
            })
        }
        (None, _) => idempotency::abandon(db, &keyed.scope, &keyed.key).await,
    };
    if let Err(err) = settled {
        // The record stays `running`: repeats wait, then are told to retry, until it is
        // taken over as lost.
        tracing::error!(error = %err, "storing an idempotency key's outcome failed");
    }
}

/// Whether a rendered response should run again on a retry rather than be replayed: it
/// carries an `INTERNAL` error (a failure on our side), or every root field failed (a mutation
/// that failed changed nothing — its transaction rolled back — so a retry after the cause is
/// fixed, say a restock after `INSUFFICIENT_STOCK`, must be able to run).
pub fn failed_internally(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).map_or(true, |body| {
        let errors = body["errors"]
            .as_array()
            .filter(|errors| !errors.is_empty());
        let Some(errors) = errors else {
            return false;
        };
        let internal = errors
            .iter()
            .any(|e| e["extensions"]["code"] == crate::errors::code::INTERNAL);
        let nothing_done = match &body["data"] {
            serde_json::Value::Object(fields) => fields.values().all(serde_json::Value::is_null),
            _ => true,
        };
        internal || nothing_done
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;
    use axum::http::HeaderValue;

    fn key_in(query: &str, variables: serde_json::Value) -> Result<Option<String>, BadKey> {
        let document = parse_query(query).unwrap();
        let operation = crate::completion::selected_operation(&document.operations, None)
            .unwrap()
            .node
            .clone();
        input_key(
            &document,
            &operation,
            &Variables::from_json(variables.clone()),
        )
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(check_key(b"order-1:a/b").unwrap(), "order-1:a/b");
        assert!(check_key(&[b'k'; MAX_KEY_CHARS]).is_ok());
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", b"tab\there", &[b'k'; 256]] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_header_gives_the_key_once() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_key(&headers), Ok(None));
        headers.insert(KEY_HEADER, HeaderValue::from_static("k-1"));
        assert_eq!(header_key(&headers), Ok(Some("k-1".to_owned())));
        headers.append(KEY_HEADER, HeaderValue::from_static("k-2"));
        assert!(header_key(&headers).is_err());
        headers.insert(KEY_HEADER, HeaderValue::from_static("with space"));
        let err = header_key(&headers).unwrap_err();
        assert!(err.message.contains("Idempotency-Key"), "{err:?}");
        assert_eq!(err.field, None);
    }

    #[test]
    fn the_input_field_gives_the_key_literal_or_from_variables() {
        assert_eq!(
            key_in(
                r#"mutation { placeOrder(input: { idempotencyKey: "lit-1", lines: [] }) { id } }"#,
                serde_json::json!({})
            ),
            Ok(Some("lit-1".to_owned()))
        );
        assert_eq!(
            key_in(
                "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id } }",
                serde_json::json!({ "input": { "idempotencyKey": "var-1" } })
            ),
            Ok(Some("var-1".to_owned()))
        );
        assert_eq!(
            key_in(
                "mutation($k: String) { placeOrder(input: { idempotencyKey: $k }) { id } }",
                serde_json::json!({ "k": "inner-1" })
            ),
            Ok(Some("inner-1".to_owned()))
        );
        assert_eq!(
            key_in(
                "mutation($k: String) { ...F } fragment F on Mutation { placeOrder(input: { idempotencyKey: $k }) { id } }",
                serde_json::json!({ "k": "frag-1" })
            ),
            Ok(Some("frag-1".to_owned()))
        );
        // None, null, or the same key twice.
        assert_eq!(
            key_in(
                "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { sku } }",
                serde_json::json!({ "input": { "sku": "X" } })
            ),
            Ok(None)
        );
        assert_eq!(
            key_in(
                "mutation { a: placeOrder(input: { idempotencyKey: null }) { id } }",
                serde_json::json!({})
            ),
            Ok(None)
        );
        assert_eq!(
            key_in(
                r#"mutation { a: x(input: { idempotencyKey: "k" }) { id } b: y(input: { idempotencyKey: "k" }) { id } }"#,
                serde_json::json!({})
            ),
            Ok(Some("k".to_owned()))
        );
        // Refused: different keys, a non-string, a bad key.
        for (query, variables) in [
            (
                r#"mutation { a: x(input: { idempotencyKey: "k1" }) { id } b: y(input: { idempotencyKey: "k2" }) { id } }"#,
                serde_json::json!({}),
            ),
            (
                "mutation { x(input: { idempotencyKey: 5 }) { id } }",
                serde_json::json!({}),
            ),
            (
                "mutation($input: I!) { x(input: $input) { id } }",
                serde_json::json!({ "input": { "idempotencyKey": "" } }),
            ),
        ] {
            let err = key_in(query, variables).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some("input.idempotencyKey"),
                "{query}"
            );
        }
    }

    #[test]
    fn header_and_input_must_agree() {
        let document =
            parse_query(r#"mutation { x(input: { idempotencyKey: "in" }) { id } }"#).unwrap();
        let operation = crate::completion::selected_operation(&document.operations, None)
            .unwrap()
            .node
            .clone();
        let variables = Variables::default();
        let header = |key: Option<&str>| Ok(key.map(str::to_owned));
        assert_eq!(
            key_of(header(None), &document, &operation, &variables),
            Ok(Some("in".to_owned()))
        );
        assert_eq!(
            key_of(header(Some("in")), &document, &operation, &variables),
            Ok(Some("in".to_owned()))
        );
        assert!(key_of(header(Some("other")), &document, &operation, &variables).is_err());
    }

    #[test]
    fn the_hash_ignores_the_order_of_variables_but_not_their_values() {
        let vars = |json: &str| Variables::from_json(serde_json::from_str(json).unwrap());
        let a = request_hash("q", None, &vars(r#"{"a":1,"b":{"x":1,"y":2}}"#));
        let b = request_hash("q", None, &vars(r#"{"b":{"y":2,"x":1},"a":1}"#));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            request_hash("q", None, &vars(r#"{"a":2,"b":{"x":1,"y":2}}"#))
        );
        assert_ne!(
            a,
            request_hash("q", Some("Op"), &vars(r#"{"a":1,"b":{"x":1,"y":2}}"#))
        );
        assert_ne!(
            a,
            request_hash("q2", None, &vars(r#"{"a":1,"b":{"x":1,"y":2}}"#))
        );
    }

    #[test]
    fn scopes_fit_the_table() {
        assert_eq!(scope("web", "sub:alice"), "web:sub:alice");
        let long = scope("web", &format!("sub:{}", "a".repeat(400)));
        assert!(long.starts_with("web:sha256:"), "{long}");
        assert!(long.len() <= idempotency::MAX_SCOPE_CHARS);
        assert_ne!(long, scope("web", &format!("sub:{}", "b".repeat(400))));
    }

    #[test]
    fn internal_errors_are_not_stored() {
        assert!(failed_internally(
            r#"{"data":null,"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}"#
        ));
        // A mutation whose every root field failed changed nothing: a retry runs again.
        assert!(failed_internally(
            r#"{"data":{"x":null},"errors":[{"message":"no","extensions":{"code":"NOT_FOUND"}}]}"#
        ));
        // One field ran: kept, so the retry does not run it twice.
        assert!(!failed_internally(
            r#"{"data":{"x":null,"y":{"id":1}},"errors":[{"message":"no","extensions":{"code":"NOT_FOUND"}}]}"#
        ));
        assert!(!failed_internally(r#"{"data":{"x":1}}"#));
    }
}

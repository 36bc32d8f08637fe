//! Idempotency keys: the first request sent with a key runs and its response is stored; a
//! repeat with the same request gets the stored response, a repeat with another request is a
//! conflict, and a repeat while the first still runs waits for it.
//!
//! One row per (scope, key) in `idempotency_record`; the UNIQUE(scope, key) index decides who
//! runs: a key is claimed by inserting its row, so of any number of concurrent requests (on
//! any number of gateways) exactly one inserts it. Plain statements, no transaction: the same
//! on SQLite and PostgreSQL.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, SqlErr, Value,
};

use crate::CoreError;
use crate::entities::idempotency_record::{self, Column, Entity as Record};

/// Longest scope (the channel and the caller) a record holds.
pub const MAX_SCOPE_CHARS: usize = 300;
/// Longest key a record holds.
pub const MAX_KEY_CHARS: usize = 255;
/// Longest claim token a record holds (a UUID's 36 characters).
pub const MAX_TOKEN_CHARS: usize = 36;
/// Expired records deleted per statement by [`purge_expired`].
pub const PURGE_BATCH: u64 = 500;

const RUNNING: &str = "running";
const DONE: &str = "done";

/// How long keys live and when a run is given up for lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLifetime {
    /// After this a key may be used again (for any request).
    pub ttl: Duration,
    /// A record still `running` this long after it was claimed belongs to a run that died
    /// (a crashed instance): the next request with the key takes it over and runs.
    pub stale_after: Duration,
}

/// What the caller of [`begin`] is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The key is claimed for this request: run it, then [`finish`] (or [`abandon`]).
    Run,
    /// The same request ran already: answer its stored response (JSON text), run nothing.
    Replay(String),
    /// The key was used with another request.
    Conflict,
    /// The same request is running right now (elsewhere): wait, or tell the client to retry.
    InProgress,
}

/// Claims `key` in `scope` for the request whose hash is `request_hash` (SHA-256, 64 hex
/// digits), or says why not. An expired record is deleted and the claim tried again; a
/// `running` record older than `lifetime.stale_after` is taken over by a conditional update,
/// so of two takers only one wins.
pub async fn begin<C: ConnectionTrait>(
    db: &C,
    scope: &str,
    key: &str,
    request_hash: &str,
    lifetime: KeyLifetime,
    now: DateTime<Utc>,
) -> Result<Begin, CoreError> {
    check(scope, key)?;
    check_hash(request_hash)?;
    // Two rounds: an expired record found in the first is deleted and the key claimed anew.
    // A record that vanishes between the insert and the read (finished and expired, or
    // abandoned) also gets a second round.
    for _ in 0..2 {
        // A plain insert, its unique violation caught: `ON CONFLICT (scope, key)` would be
        // resolved against the connection's cached schema, which SQLite does not refresh
        // for that check (a pooled connection that last looked before the migration fails).
        let claimed = Record::insert(idempotency_record::ActiveModel {
            scope: Set(scope.to_owned()),
            key: Set(key.to_owned()),
            request_hash: Set(request_hash.to_owned()),
            state: Set(RUNNING.to_owned()),
            response: Set(None),
            expires_at: Set(now + lifetime.ttl),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(db)
        .await;
        match claimed {
            Ok(_) => return Ok(Begin::Run),
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {}
            Err(err) => return Err(err.into()),
        }
        let Some(record) = find(db, scope, key).await? else {
            continue;
        };
        if record.expires_at <= now {
            // Only if it is still that expired record: a fresh claim by someone else stays.
            Record::delete_many()
                .filter(Column::Id.eq(record.id))
                .filter(Column::ExpiresAt.lte(now))
                .exec(db)
                .await?;
            continue;
        }
        if record.request_hash != request_hash {
            return Ok(Begin::Conflict);
        }
        if record.state == DONE {
            return Ok(Begin::Replay(record.response.unwrap_or_default()));
        }
        let stale_before = now - lifetime.stale_after;
        if record.updated_at <= stale_before {
            // Taking over sets `updated_at` to now, after the bound: a second taker's
            // condition no longer holds.
            let taken = Record::update_many()
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .col_expr(Column::ExpiresAt, Expr::value(now + lifetime.ttl))
                .filter(Column::Id.eq(record.id))
                .filter(Column::State.eq(RUNNING))
                .filter(Column::UpdatedAt.lte(stale_before))
                .exec(db)
                .await?;
            if taken.rows_affected == 1 {
                tracing::warn!(
                    scope,
                    key,
                    "took over an idempotency key whose run was lost"
                );
                return Ok(Begin::Run);
            }
        }
        return Ok(Begin::InProgress);
    }
    Ok(Begin::InProgress)
}

/// A key to claim with [`claim_free`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewClaim {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    /// Unique to this claim (a UUID): written with the record, so that after a failed batch
    /// [`claimed_by`] tells whether this claim's row is the one there.
    pub token: String,
}

/// PostgreSQL only: claims, in one statement, each of `claims` whose key no record holds; for
/// each, whether it was claimed ([`Begin::Run`]). A key held already (by any record: running,
/// done or expired), or repeated within `claims` (the first wins), is not claimed here: give
/// it to [`begin`], which says why and handles expiry and lost runs. Many requests claiming
/// at once then cost the database one statement and one commit instead of one each.
pub async fn claim_free<C: ConnectionTrait>(
    db: &C,
    claims: &[NewClaim],
    lifetime: KeyLifetime,
    now: DateTime<Utc>,
) -> Result<Vec<bool>, CoreError> {
    for claim in claims {
        check(&claim.scope, &claim.key)?;
        check_hash(&claim.request_hash)?;
        if claim.token.is_empty() || claim.token.len() > MAX_TOKEN_CHARS {
            return Err(CoreError::invalid(
                "token",
                format!("must be 1 to {MAX_TOKEN_CHARS} characters (a UUID)"),
            ));
        }
    }
    // In key order: two batches (of two instances) that share keys then wait for each other
    // in the same order, never in a cycle (a deadlock). The sort is stable, so of a key sent
    // twice the first is inserted.
    let mut ordered: Vec<&NewClaim> = claims.iter().collect();
    ordered.sort_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
    let rows = ordered
        .into_iter()
        .map(|c| {
            [&c.scope, &c.key, &c.request_hash, &c.token]
                .map(|text| Value::from(text.clone()))
                .to_vec()
        })
        .collect();
    keyed_batch(
        db,
        "claiming keys",
        "INSERT INTO idempotency_record \
         (scope, key, request_hash, claim_token, state, expires_at, created_at, updated_at) \
         VALUES ",
        vec![Value::from(now + lifetime.ttl), Value::from(now)],
        rows,
        |p| {
            format!(
                "(${}, ${}, ${}, ${}, '{RUNNING}', $1, $2, $2)",
                p[0], p[1], p[2], p[3]
            )
        },
        " ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key",
        claims.iter().map(|c| (c.scope.as_str(), c.key.as_str())),
    )
    .await
}

/// Whether the record of `key` is the running one `token`'s claim inserted: after a batch
/// of [`claim_free`] failed (its insert may have committed before the answer was lost).
pub async fn claimed_by<C: ConnectionTrait>(
    db: &C,
    scope: &str,
    key: &str,
    token: &str,
) -> Result<bool, CoreError> {
    Ok(find(db, scope, key).await?.is_some_and(|record| {
        record.state == RUNNING && record.claim_token.as_deref() == Some(token)
    }))
}

/// PostgreSQL only: [`finish`] for several keys in one statement (keys given once each); for
/// each, whether its running record was there to store the response in.
pub async fn finish_many<C: ConnectionTrait>(
    db: &C,
    responses: &[(String, String, String)],
) -> Result<Vec<bool>, CoreError> {
    let rows = responses
        .iter()
        .map(|(scope, key, response)| {
            [scope, key, response]
                .map(|text| Value::from(text.clone()))
                .to_vec()
        })
        .collect();
    keyed_batch(
        db,
        "storing responses",
        "UPDATE idempotency_record AS r SET state = 'done', response = v.response, \
         updated_at = $1 FROM (VALUES ",
        vec![Value::from(Utc::now())],
        rows,
        |p| format!("(${}, ${}, ${})", p[0], p[1], p[2]),
        &format!(
            ") AS v (scope, key, response) WHERE r.scope = v.scope AND r.key = v.key \
             AND r.state = '{RUNNING}' RETURNING r.scope, r.key"
        ),
        responses.iter().map(|(s, k, _)| (s.as_str(), k.as_str())),
    )
    .await
}

/// One PostgreSQL statement over a batch of keyed rows: `head`, the `shared` values as `$1`…,
/// each row's values spelled by `row` from their placeholder numbers, then `tail`, which
/// returns `scope, key` of the rows it wrote. For each of `keys` (in the caller's order),
/// whether a returned row names it (the first of repeated keys).
#[allow(clippy::too_many_arguments)]
async fn keyed_batch<'k, C: ConnectionTrait>(
    db: &C,
    what: &str,
    head: &str,
    shared: Vec<Value>,
    rows: Vec<Vec<Value>>,
    row: impl Fn(&[usize]) -> String,
    tail: &str,
    keys: impl Iterator<Item = (&'k str, &'k str)>,
) -> Result<Vec<bool>, CoreError> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Err(CoreError::invalid(
            "database",
            format!("{what} in one statement needs PostgreSQL"),
        ));
    }
    let keys: Vec<(&str, &str)> = keys.collect();
    let mut written = vec![false; keys.len()];
    if rows.is_empty() {
        return Ok(written);
    }
    let returned = db
        .query_all_raw(crate::db::rows_statement(head, shared, rows, row, tail))
        .await?;
    for returned in returned {
        let scope: String = returned.try_get("", "scope")?;
        let key: String = returned.try_get("", "key")?;
        if let Some(i) = keys
            .iter()
            .position(|k| *k == (scope.as_str(), key.as_str()))
        {
            written[i] = true;
        }
    }
    Ok(written)
}

/// Stores the response of the run that claimed `key` (JSON text): later requests replay it.
/// `false` when the key had no running record (it was abandoned, or expired and purged).
pub async fn finish<C: ConnectionTrait>(
    db: &C,
    scope: &str,
    key: &str,
    response: &str,
) -> Result<bool, CoreError> {
    let stored = Record::update_many()
        .col_expr(Column::State, Expr::value(DONE))
        .col_expr(Column::Response, Expr::value(response))
        .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(Column::Scope.eq(scope))
        .filter(Column::Key.eq(key))
        .filter(Column::State.eq(RUNNING))
        .exec(db)
        .await?;
    Ok(stored.rows_affected == 1)
}

/// Keeps a running record alive: a run that is still going (waiting on a lock, say) is never
/// taken for lost while it heartbeats more often than `stale_after`.
pub async fn touch<C: ConnectionTrait>(db: &C, scope: &str, key: &str) -> Result<(), CoreError> {
    Record::update_many()
        .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(Column::Scope.eq(scope))
        .filter(Column::Key.eq(key))
        .filter(Column::State.eq(RUNNING))
        .exec(db)
        .await?;
    Ok(())
}

/// Frees a key whose run failed on our side, so a retry runs again. A finished record stays.
pub async fn abandon<C: ConnectionTrait>(db: &C, scope: &str, key: &str) -> Result<(), CoreError> {
    Record::delete_many()
        .filter(Column::Scope.eq(scope))
        .filter(Column::Key.eq(key))
        .filter(Column::State.eq(RUNNING))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes the records expired at `now`, [`PURGE_BATCH`] per statement; the number deleted.
pub async fn purge_expired<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
) -> Result<u64, CoreError> {
    let mut purged = 0;
    loop {
        let ids: Vec<i64> = Record::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::ExpiresAt.lte(now))
            .order_by_asc(Column::Id)
            .limit(PURGE_BATCH)
            .into_tuple()
            .all(db)
            .await?;
        if ids.is_empty() {
            return Ok(purged);
        }
        let batch = ids.len() as u64;
        let deleted = Record::delete_many()
            .filter(Column::Id.is_in(ids))
            .filter(Column::ExpiresAt.lte(now))
            .exec(db)
            .await?;
        purged += deleted.rows_affected;
        if batch < PURGE_BATCH {
            return Ok(purged);
        }
    }
}

/// The record of `key` in `scope`, whatever its state.
pub async fn find<C: ConnectionTrait>(
    db: &C,
    scope: &str,
    key: &str,
) -> Result<Option<idempotency_record::Model>, CoreError> {
    Ok(Record::find()
        .filter(Column::Scope.eq(scope))
        .filter(Column::Key.eq(key))
        .one(db)
        .await?)
}

/// A request hash is SHA-256 in hex.
fn check_hash(request_hash: &str) -> Result<(), CoreError> {
    if request_hash.len() != 64 || !request_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CoreError::invalid(
            "requestHash",
            "must be 64 hexadecimal digits (SHA-256)",
        ));
    }
    Ok(())
}

/// Scopes and keys the table can hold.
fn check(scope: &str, key: &str) -> Result<(), CoreError> {
    if scope.is_empty() || scope.chars().count() > MAX_SCOPE_CHARS {
        return Err(CoreError::invalid(
            "scope",
            format!("must be 1 to {MAX_SCOPE_CHARS} characters"),
        ));
    }
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(CoreError::invalid(
            "idempotencyKey",
            format!("must be 1 to {MAX_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_keys_are_bounded() {
        assert!(check("web:sub:a", "k").is_ok());
        assert!(check("", "k").is_err());
        assert!(check("web:sub:a", "").is_err());
        assert!(check("web:sub:a", &"k".repeat(MAX_KEY_CHARS)).is_ok());
        assert!(check("web:sub:a", &"k".repeat(MAX_KEY_CHARS + 1)).is_err());
        assert!(check(&"s".repeat(MAX_SCOPE_CHARS + 1), "k").is_err());
    }
}

//! `idempotency_record` table: the outcome of a mutation sent with an idempotency key.

use sea_orm::entity::prelude::*;

/// One idempotency key of one scope (channel and caller): the hash of the request first sent
/// with it, whether that request is still running, and its stored response.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_record")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Whose key it is: the channel and the caller.
    pub scope: String,
    pub key: String,
    /// SHA-256 (hex) of the request first sent with the key.
    pub request_hash: String,
    /// `running` until the first request has its response, then `done`.
    pub state: String,
    /// The stored response (JSON text), once `done`.
    pub response: Option<String>,
    /// After this the key may be used again.
    pub expires_at: DateTimeUtc,
    /// The token of the batched claim that inserted the record (PostgreSQL), if any.
    pub claim_token: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

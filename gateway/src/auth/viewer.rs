//! The viewer of a request: the verified token's claims and channel, or an anonymous viewer of
//! the `X-Channel` channel; then the channel policy, the token's customer and store.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use commerce_core::CoreError;
use commerce_core::channels::{self, ChannelPolicy};

use super::tokens::{AuthError, Claims, Role, bearer_token};
use crate::errors::code;
use crate::graphql::Viewer;
use crate::read_path::ReadModel;
use crate::read_path::model::Reads;
use crate::server::AppState;
use crate::transport::{CHANNEL_HEADER, DEFAULT_CHANNEL};

/// Why a request was refused before execution (the transport's rejection: a request error
/// over HTTP, an `error` message over a WebSocket).
pub(crate) use crate::transport::Rejection as Refusal;

/// The channel named by `X-Channel`, if the header is there.
pub(crate) fn header_channel(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    // A header that is present but not visible ASCII is refused, never read as the default.
    match headers.get(CHANNEL_HEADER).map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(code)) if !code.trim().is_empty() => Ok(Some(code.trim().to_ascii_lowercase())),
        Some(_) => Err(Refusal::new(
            code::UNKNOWN_CHANNEL,
            "the X-Channel header must name a channel such as web, mobile, pos or b2b",
        )),
    }
}

pub(crate) async fn load_channel(
    state: &AppState,
    read: Option<&ReadModel>,
    code: &str,
) -> Result<Arc<ChannelPolicy>, Refusal> {
    let unknown = |known: Vec<String>| {
        Refusal::new(
            code::UNKNOWN_CHANNEL,
            format!(
                "unknown channel {code:?}; known channels: {}",
                known.join(", ")
            ),
        )
    };
    let failed = |err: CoreError| {
        tracing::error!(error = %err, channel = %code, "loading the channel failed");
        Refusal::internal()
    };
    if let Some(read) = read {
        let all = read.channels(&state.db).await.map_err(failed)?;
        return match all.by_code.get(code) {
            Some(policy) => Ok(policy.clone()),
            None => Err(unknown(all.codes.clone())),
        };
    }
    match channels::load_channel_policy(&state.db, code).await {
        Ok(policy) => Ok(Arc::new(policy)),
        Err(CoreError::NotFound { .. }) => {
            let known = channels::list_channels(&state.db)
                .await
                .map(|all| all.into_iter().map(|c| c.code).collect())
                .unwrap_or_default();
            Err(unknown(known))
        }
        Err(err) => Err(failed(err)),
    }
}

/// The channel and viewer of a request: from a verified bearer token when there is one (its
/// channel is the request's channel), else an anonymous viewer of the `X-Channel` channel.
/// Who claims to ask, and on which channel: the verified token's claims and channel, or the
/// `X-Channel` channel (default `web`) of an anonymous request. No database work.
pub(crate) fn authenticate(
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
pub(crate) async fn resolve_viewer(
    state: &AppState,
    read: Option<&ReadModel>,
    channel: &str,
    claims: Option<Claims>,
) -> Result<(Arc<ChannelPolicy>, Viewer), Refusal> {
    let policy = load_channel(state, read, channel).await?;
    let Some(claims) = claims else {
        return Ok((policy, Viewer::default()));
    };
    let customer = match &claims.customer {
        None => None,
        Some(email) => match (Reads {
            model: read,
            db: &state.db,
        })
        .customer(email)
        .await
        {
            Ok(Some(customer)) => Some(customer),
            Ok(None) => {
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

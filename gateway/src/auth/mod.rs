//! Who is asking.
//!
//! - [`tokens`]: JWTs checked and minted (HS256 secret, RS256 / ES256 provider keys), roles
//! - [`viewer`]: a request's channel and viewer from its token or `X-Channel`

pub mod tokens;
pub mod viewer;

pub use tokens::*;

//! The error codes and their mapping live in [`crate::errors`]; resolvers import them here.

pub use crate::errors::*;

//! Orders (DESIGN.md §4, §5): the routing policy that decides where each line ships from
//! ([`routing`], pure), and the order service that prices, reserves and records orders and
//! moves them through their lifecycle.

pub mod batch;
pub mod routing;
pub mod service;

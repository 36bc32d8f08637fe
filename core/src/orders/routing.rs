//! Order routing (being written).

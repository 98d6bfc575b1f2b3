//! WebSub subscriptions: requests (W3C WebSub 5.1), verification of intent (5.3, carried out by the callback
//! deliverer as outbox jobs), denial (5.2), leases, rate limits, custom headers, content filters, and the store that applies the lifecycle state
//! machine ([`crate::lifecycle`], a leaf of its own so that the outbox can read a subscription's state without
//! depending on this module) and appends every transition to the event log.

pub mod filter;
pub mod headers;
pub mod rate;
pub mod request;
pub mod store;

pub use crate::lifecycle as state;

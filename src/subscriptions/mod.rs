//! WebSub subscriptions: requests (W3C WebSub 5.1), verification of intent (5.3, carried out by the callback
//! deliverer as outbox jobs), denial (5.2), leases, and the lifecycle state machine whose every transition is
//! appended to the event log.

pub mod api;
pub mod rate;
pub mod request;
pub mod state;
pub mod store;

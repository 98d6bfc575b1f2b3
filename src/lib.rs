//! Tidings: an event-sourced WebSub hub backed by PostgreSQL.
//!
//! Publishers append events to a log ([`events`]); subscribers register callbacks through WebSub
//! ([`subscriptions`]); the callbacks spreader ([`spreader`]) fans every event into the outbox ([`outbox`]);
//! the callback deliverer ([`deliverer`]) claims due jobs and calls subscribers with durable retries.

pub mod app;
pub mod callback;
pub mod config;
pub mod db;
pub mod deliverer;
pub mod events;
pub mod fetcher;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod operations;
pub mod ops_server;
pub mod outbox;
pub mod partitions;
pub mod policies;
pub mod portal;
pub mod retry;
pub mod spreader;
pub mod stats;
pub mod subscriptions;
pub mod telemetry;
pub mod topic;
pub mod wakeup;

//! Integration tests: Tidings against a real PostgreSQL and real HTTP peers on 127.0.0.1.

mod console;
mod delivery;
mod disable;
mod filters;
mod headers;
#[allow(dead_code)] // shared by the test modules; not every module uses every helper
mod helpers;
mod hostile;
mod isolation;
mod observability;
mod operational;
mod operations;
mod plans;
mod portal;
mod publish;
mod rate_limit;
mod read_replica;
#[allow(dead_code)]
mod receiver;
mod retention;
mod secrets;
#[allow(dead_code)]
mod spreader;
mod subscriptions;

//! Integration tests: Tidings against a real PostgreSQL and real HTTP peers on 127.0.0.1.

#[allow(dead_code)] // shared by the test modules; not every module uses every helper
mod helpers;
mod publish;
#[allow(dead_code)]
mod receiver;
mod spreader;
mod subscriptions;

//! The JSON API: the WebSub hub endpoint (`POST /`), publishing, the admin/query API and health checks. Every
//! response body it writes is described in openapi.yaml.

pub mod admin;
pub mod auth;
pub mod deliveries;
pub mod health;
pub mod hub;
pub mod operations;
pub mod portal;
pub mod publish;
pub mod subscriptions;

pub use admin::page_limit;

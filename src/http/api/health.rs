//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use crate::http::AppState;

/// The process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Prometheus metrics of this process.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render(&state.pool).await)
}

/// The database is reachable and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match crate::db::is_ready(&state.pool).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("{reason}\n")),
    }
}

//! Liveness and readiness.

use actix_web::{web, HttpResponse};

use super::AppState;

/// The process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The database is reachable and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match crate::db::is_ready(&state.pool).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("{reason}\n")),
    }
}

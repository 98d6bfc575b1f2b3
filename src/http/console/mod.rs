//! The web console: server-rendered pages under `/console` for looking at subscriptions, events and deliveries
//! and acting on them, behind the admin token.
//!
//! Pages are askama templates (`templates/console/`) compiled into the binary, as are the stylesheet and the
//! small script (`src/console/assets/`); nothing is fetched from elsewhere, so the console works offline. Reads
//! go to `read_pool`, actions to the primary pool through the same functions as the admin API. Every list pages
//! with a keyset cursor on an indexed key. Login and CSRF: see [`session`].

mod charts;
mod pages;
mod queries;
pub mod session;
mod views;

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};
use askama::Template;

use crate::http::AppState;

/// Rows on one page of a list.
pub const PAGE: i64 = 50;

/// Everything under `/console`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use web::{get, post, resource};
    cfg.service(resource("/console").route(get().to(pages::overview)))
        .service(resource("/console/").route(get().to(pages::overview)))
        .service(resource("/console/login").route(get().to(pages::login_form)).route(post().to(pages::login)))
        .service(resource("/console/logout").route(post().to(pages::logout)))
        .service(resource("/console/assets/console.css").route(get().to(stylesheet)))
        .service(resource("/console/assets/console.js").route(get().to(script)))
        .service(resource("/console/topics").route(get().to(pages::topics)))
        .service(resource("/console/subscriptions").route(get().to(pages::subscriptions)))
        .service(resource("/console/subscriptions/{id}").route(get().to(pages::subscription)))
        .service(resource("/console/subscriptions/{id}/replay").route(post().to(pages::replay)))
        .service(resource("/console/subscriptions/{id}/redeliver-dead").route(post().to(pages::redeliver_dead)))
        .service(resource("/console/subscriptions/{id}/end").route(post().to(pages::end)))
        .service(resource("/console/subscriptions/{id}/enable").route(post().to(pages::enable)))
        .service(resource("/console/subscriptions/{id}/filter").route(post().to(pages::set_filter)))
        .service(resource("/console/subscriptions/{id}/headers").route(post().to(pages::set_headers)))
        .service(resource("/console/subscriptions/{id}/rate").route(post().to(pages::set_rate)))
        .service(resource("/console/subscriptions/{id}/secret").route(post().to(pages::set_secret)))
        .service(resource("/console/subscriptions/{id}/portal-link").route(post().to(pages::portal_link)))
        // The subscriber portal: opened by a signed link, not by a console session.
        .service(resource("/console/subscriber").route(get().to(pages::subscriber)))
        .service(resource("/console/subscriber/redeliver-dead").route(post().to(pages::subscriber_redeliver_dead)))
        .service(resource("/console/events").route(get().to(pages::events)))
        .service(resource("/console/events/{id}").route(get().to(pages::event)))
        .service(resource("/console/deliveries").route(get().to(pages::deliveries)))
        .service(resource("/console/deliveries/{id}").route(get().to(pages::delivery)))
        .service(resource("/console/deliveries/{id}/redeliver").route(post().to(pages::redeliver)));
}

async fn stylesheet() -> HttpResponse {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", include_str!("assets/console.js"))
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(body)
}

/// What a console request can end in besides its page: a page explaining what went wrong, or a redirect.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{1}")]
    Page(StatusCode, String),
    #[error("redirect to {0}")]
    SeeOther(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database request failed"))
    }
}

/// An action the console offered but could not carry out, said as a sentence on the error page.
impl From<crate::operations::OperationError> for ConsoleError {
    fn from(e: crate::operations::OperationError) -> Self {
        use crate::operations::OperationError as E;
        match e {
            E::NoSubscription(id) => Self::not_found(format!("There is no subscription {id}.")),
            E::NotActive { id, state } => Self::conflict(format!("Subscription {id} is {state}, not active.")),
            E::NotDisabled { id, state } => Self::conflict(format!("Subscription {id} is {state}, not disabled.")),
            E::NoDelivery(id) => Self::not_found(format!("There is no delivery {id}.")),
            E::NotRedeliverable(id) => Self::conflict(format!(
                "Delivery {id} is still pending, or it is not an event delivery: there is nothing to redeliver."
            )),
            E::Limit => Self::bad_request(format!("Replay at most {} events at once.", crate::outbox::MAX_BULK)),
            E::Database(e) => e.into(),
        }
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("rendering a console page failed"))
    }
}

impl ConsoleError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::Page(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::Page(StatusCode::NOT_FOUND, msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::Page(StatusCode::CONFLICT, msg.into())
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::Page(status, _) => *status,
            ConsoleError::SeeOther(_) => StatusCode::SEE_OTHER,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ConsoleError::SeeOther(to) => see_other(to),
            ConsoleError::Page(status, message) => error_page(*status, message),
            ConsoleError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "console request failed");
                error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on the server; the log says what.")
            }
        }
    }
}

fn error_page(status: StatusCode, message: &str) -> HttpResponse {
    let page = views::ErrorPage {
        chrome: views::Chrome::new(status.canonical_reason().unwrap_or("Error"), "", ""),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
        login: status == StatusCode::UNAUTHORIZED,
    };
    let body = page.render().unwrap_or_else(|_| message.to_owned());
    html(status, body)
}

/// An HTML response that is never cached and never framed.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// The session cookie's value, when the request carries one.
fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether the session cookie gets the Secure attribute.
fn secure(state: &AppState, req: &HttpRequest) -> bool {
    state.config.http.console_secure_cookie.unwrap_or_else(|| req.connection_info().scheme() == "https")
}

fn session_cookie_header(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", session::COOKIE)
}

/// The logged-in session, or a redirect to the login form.
async fn require_session(state: &AppState, req: &HttpRequest) -> Result<(String, session::Session), ConsoleError> {
    if state.config.http.admin_token.is_none() {
        return Err(ConsoleError::Page(
            StatusCode::UNAUTHORIZED,
            "The console is disabled: set TIDINGS_ADMIN_TOKEN to use it.".into(),
        ));
    }
    let Some(id) = session_cookie(req) else {
        return Err(ConsoleError::SeeOther("/console/login".into()));
    };
    match session::find(&state.pool, &id).await? {
        Some(s) => Ok((id, s)),
        None => Err(ConsoleError::SeeOther("/console/login?expired=1".into())),
    }
}

/// Checks the form's CSRF token against the session's.
fn check_csrf(session: &session::Session, given: &str) -> Result<(), ConsoleError> {
    if session::same(given, &session.csrf_token) {
        Ok(())
    } else {
        Err(ConsoleError::Page(
            StatusCode::FORBIDDEN,
            "This form is out of date or did not come from the console. Reload the page and try again.".into(),
        ))
    }
}

//! Logging in with the admin token, and logging out (the session is revoked server-side).

use super::*;

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

/// `GET /console/login`
pub async fn login_form(q: web::Query<LoginQuery>) -> Page {
    let message = q.expired.as_ref().map(|_| "Your session has ended. Log in again.".to_owned());
    render(views::LoginPage { chrome: Chrome::new("Log in", "", ""), message })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: the admin token for a session cookie.
pub async fn login(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LoginForm>) -> Page {
    let Some(expected) = &state.config.http.admin_token else {
        return Err(ConsoleError::Page(
            StatusCode::UNAUTHORIZED,
            "The console is disabled: set TIDINGS_ADMIN_TOKEN to use it.".into(),
        ));
    };
    let given = form.token.trim();
    if given.is_empty() || !session::same(given, expected.expose()) {
        tracing::warn!("console login refused: wrong admin token");
        let page = views::LoginPage {
            chrome: Chrome::new("Log in", "", ""),
            message: Some("That is not the admin token. Check TIDINGS_ADMIN_TOKEN and try again.".into()),
        };
        return Ok(html(StatusCode::UNAUTHORIZED, page.render()?));
    }
    let id = session::create(&state.pool).await?;
    let cookie = session_cookie_header(&id, session::SESSION_HOURS * 3600, secure(&state, &req));
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/console")).insert_header(("Set-Cookie", cookie)).finish())
}

/// `POST /console/logout`: revokes the session server-side and clears the cookie.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, form: web::Form<CsrfForm>) -> Page {
    let (id, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    session::revoke(&state.pool, &id).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/console/login"))
        .insert_header(("Set-Cookie", session_cookie_header("", 0, secure(&state, &req))))
        .finish())
}

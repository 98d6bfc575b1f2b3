//! The subscriber portal's page: one subscription's recent deliveries with their attempts, opened by a signed
//! link instead of a console session, and its one action (redeliver the dead ones). The token in the link is
//! the credential and, in the form, the proof that the form came from this page.

use super::*;
use crate::portal::{self, PortalError};

/// Every refusal looks the same, so a forged, expired or borrowed link learns nothing.
impl From<PortalError> for ConsoleError {
    fn from(e: PortalError) -> Self {
        match e {
            PortalError::Refused | PortalError::NoSubscription(_) | PortalError::Lifetime => Self::Page(
                StatusCode::FORBIDDEN,
                "This link is not valid: it has expired or was not issued by this hub. Ask for a new one.".into(),
            ),
            PortalError::Operation(e) => e.into(),
            PortalError::Database(e) => e.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscriberQuery {
    token: Option<String>,
    before: Option<String>,
    done: Option<String>,
    n: Option<String>,
}

/// The page never sends its address (which holds the token) to another site.
fn private(mut page: HttpResponse) -> HttpResponse {
    page.headers_mut().insert(
        actix_web::http::header::REFERRER_POLICY,
        actix_web::http::header::HeaderValue::from_static("no-referrer"),
    );
    page
}

/// `GET /console/subscriber?token=&before=`
pub async fn subscriber(state: web::Data<AppState>, q: web::Query<SubscriberQuery>) -> Page {
    let token = field(&q.token).unwrap_or_default();
    let before = field(&q.before).and_then(|b| b.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let log = portal::log(&state.pool, &token, before, portal::PAGE).await.map_err(ConsoleError::from)?;
    let can_redeliver = log.subscription.state == "active" && log.deliveries.iter().any(|d| d.delivery.state == "dead");
    let next = log.next_before.map(|b| format!("/console/subscriber?token={token}&before={b}"));
    let page = views::SubscriberPage {
        chrome: Chrome::new(format!("Deliveries to {}", log.subscription.callback), "", "")
            .with_flash(flash(&q.done, &q.n)),
        topic: log.subscription.topic,
        callback: log.subscription.callback,
        state_class: views::outcome_class(&log.subscription.state),
        state: log.subscription.state,
        expires: views::when(log.subscription.expires_at),
        deliveries: log
            .deliveries
            .into_iter()
            .map(|d| views::OwnDelivery {
                delivery: d.delivery.into(),
                attempts: d.attempts.into_iter().map(views::AttemptRow::from).collect(),
            })
            .collect(),
        token,
        can_redeliver,
        next,
    };
    render(page).map(private)
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/subscriber/redeliver-dead`
pub async fn subscriber_redeliver_dead(state: web::Data<AppState>, form: web::Form<TokenForm>) -> Page {
    let n = portal::redeliver_dead(&state.pool, &form.token).await?;
    // The token was just checked: it is the hub's own spelling, safe in a URL as it stands.
    Err(ConsoleError::SeeOther(format!("/console/subscriber?token={}&done=redelivered-dead&n={n}", form.token)))
}

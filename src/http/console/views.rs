//! The console's templates and the display values they show. Values are formatted here, in Rust; the templates
//! only lay them out, and askama escapes everything they print.

use askama::Template;
use chrono::{DateTime, Utc};

pub use super::charts::{Chart, Share};
use crate::outbox::{AttemptView, Delivery};

/// What every page around its content needs.
pub struct Chrome {
    pub title: String,
    /// Which navigation entry is current ("" for none).
    pub active: &'static str,
    /// The session's CSRF token, for forms ("" when logged out).
    pub csrf: String,
    /// A notice after an action.
    pub flash: Option<String>,
    pub logged_in: bool,
}

impl Chrome {
    pub fn new(title: impl Into<String>, active: &'static str, csrf: &str) -> Self {
        Self { title: title.into(), active, csrf: csrf.to_owned(), flash: None, logged_in: !csrf.is_empty() }
    }
    pub fn with_flash(mut self, flash: Option<String>) -> Self {
        self.flash = flash;
        self
    }
}

/// An instant: machine-readable for the script that shows it in the viewer's zone, and readable without it.
#[derive(Clone)]
pub struct When {
    pub iso: String,
    pub text: String,
}

impl From<DateTime<Utc>> for When {
    fn from(t: DateTime<Utc>) -> Self {
        Self { iso: t.to_rfc3339(), text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string() }
    }
}

pub fn when(t: Option<DateTime<Utc>>) -> Option<When> {
    t.map(When::from)
}

pub fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into())
}

/// A count that was capped: "100000+" when it reached the cap.
pub fn capped(n: i64, cap: i64) -> String {
    if n >= cap {
        format!("{cap}+")
    } else {
        n.to_string()
    }
}

/// How long ago (or ahead) an instant is, roughly.
pub fn ago(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds();
    let (n, future) = (secs.abs(), secs < 0);
    let text = match n {
        0..=59 => format!("{n}s"),
        60..=3599 => format!("{}m {}s", n / 60, n % 60),
        3600..=86_399 => format!("{}h {}m", n / 3600, (n % 3600) / 60),
        _ => format!("{}d {}h", n / 86_400, (n % 86_400) / 3600),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Shortens text for a table cell.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage<'a> {
    pub chrome: Chrome,
    pub status: u16,
    pub reason: &'a str,
    pub message: &'a str,
    pub login: bool,
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub message: Option<String>,
}

pub fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "delivered" | "verified" | "notified" | "active" => "ok",
        "retry" | "pending" => "warn",
        "dead" | "gone" | "refused" | "denied" | "disabled" => "bad",
        _ => "muted",
    }
}

#[derive(Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub events: Chart,
    pub deliveries: Chart,
    pub outcomes: Vec<Share>,
    pub pending: String,
    pub due_now: String,
    pub oldest_due: Option<When>,
    pub oldest_due_ago: String,
    pub head: i64,
    pub cursor: i64,
    pub behind: i64,
    /// How much of the log the spreader has covered, in percent.
    pub spread_percent: f64,
    pub oldest_unspread: Option<When>,
}

pub struct TopicRow {
    pub topic: String,
    pub last_position: i64,
    pub last_published: When,
    pub subscribers: String,
    pub events_link: String,
    pub subscriptions_link: String,
}

#[derive(Template)]
#[template(path = "console/topics.html")]
pub struct TopicsPage {
    pub chrome: Chrome,
    pub rows: Vec<TopicRow>,
    pub next: Option<String>,
}

pub struct SubscriptionRow {
    pub id: String,
    pub topic: String,
    pub callback: String,
    pub state: String,
    pub state_class: &'static str,
    pub expires: Option<When>,
    pub success_rate: String,
    pub dead: i64,
    pub last_attempt: Option<When>,
    pub last_outcome: String,
}

#[derive(Template)]
#[template(path = "console/subscriptions.html")]
pub struct SubscriptionsPage {
    pub chrome: Chrome,
    pub rows: Vec<SubscriptionRow>,
    pub topic: String,
    pub state: String,
    pub states: &'static [&'static str],
    pub next: Option<String>,
}

pub struct HistoryRow {
    pub position: i64,
    pub at: When,
    pub state: String,
    pub state_class: &'static str,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/subscription.html")]
pub struct SubscriptionPage {
    pub chrome: Chrome,
    pub row: SubscriptionRow,
    pub lease_seconds: String,
    pub has_secret: bool,
    /// While a rotation's grace period lasts.
    pub previous_secret_until: Option<When>,
    /// "50/s, bursts of 10", or "none".
    pub rate_limit: String,
    /// The custom headers' names ("X-Tenant, Authorization"), or "none"; values may be credentials, so the
    /// console never shows them.
    pub custom_headers: String,
    /// The content filter as JSON, if any.
    pub filter: Option<String>,
    pub created: When,
    pub updated: When,
    pub active: bool,
    /// Disabled for failing: the operator may enable it.
    pub disabled: bool,
    pub history: Vec<HistoryRow>,
    pub history_next: Option<String>,
    pub history_first: bool,
    pub deliveries_link: String,
    pub dead_link: String,
}

pub struct EventRow {
    pub position: i64,
    pub id: String,
    pub topic: String,
    pub tags: String,
    pub group_id: String,
    pub published: When,
    pub size: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
pub struct EventsPage {
    pub chrome: Chrome,
    pub rows: Vec<EventRow>,
    pub topic: String,
    pub tag: String,
    pub group_id: String,
    pub since: String,
    pub until: String,
    pub filtered: bool,
    pub next: Option<String>,
}

pub struct DeliveryRow {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub state_class: &'static str,
    pub attempts: i32,
    pub last_status: String,
    pub last_error: String,
    pub subscription_id: String,
    pub event_id: Option<String>,
    pub created: When,
    pub due: Option<When>,
    pub finished: Option<When>,
}

impl From<Delivery> for DeliveryRow {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            state_class: outcome_class(&d.state),
            state: d.status.clone(),
            kind: d.kind,
            attempts: d.attempts,
            last_status: d.last_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            last_error: d.last_error.as_deref().map(|e| excerpt(e, 80)).unwrap_or_default(),
            subscription_id: d.subscription_id.to_string(),
            event_id: d.event_id.map(|e| e.to_string()),
            created: d.created_at.into(),
            due: (d.state == "pending").then(|| d.due_at.into()),
            finished: when(d.finished_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/event.html")]
pub struct EventPage {
    pub chrome: Chrome,
    pub event: EventRow,
    pub content_type: String,
    pub body: String,
    pub body_truncated: bool,
    pub deliveries: Vec<DeliveryRow>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "console/deliveries.html")]
pub struct DeliveriesPage {
    pub chrome: Chrome,
    pub rows: Vec<DeliveryRow>,
    pub state: String,
    pub states: &'static [&'static str],
    pub subscription_id: String,
    pub next: Option<String>,
}

pub struct AttemptRow {
    pub attempt: i32,
    pub started: When,
    pub duration: String,
    pub status: String,
    pub error: String,
    pub outcome: String,
    pub outcome_class: &'static str,
    pub excerpt: String,
}

impl From<AttemptView> for AttemptRow {
    fn from(a: AttemptView) -> Self {
        Self {
            attempt: a.attempt,
            started: a.started_at.into(),
            duration: format!("{} ms", a.duration_ms),
            status: a.status_code.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            error: a.error_class.unwrap_or_default(),
            outcome_class: outcome_class(&a.outcome),
            outcome: a.outcome,
            excerpt: a.response_excerpt.unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
pub struct DeliveryPage {
    pub chrome: Chrome,
    pub delivery: DeliveryRow,
    pub callback: String,
    pub topic: String,
    pub can_redeliver: bool,
    pub attempts: Vec<AttemptRow>,
}

/// One of a subscriber's deliveries with its attempts.
pub struct OwnDelivery {
    pub delivery: DeliveryRow,
    pub attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "console/subscriber.html")]
pub struct SubscriberPage {
    pub chrome: Chrome,
    pub topic: String,
    pub callback: String,
    pub state: String,
    pub state_class: &'static str,
    pub expires: Option<When>,
    pub deliveries: Vec<OwnDelivery>,
    /// The link's token, carried by the page's form and its next-page link.
    pub token: String,
    pub can_redeliver: bool,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "console/portal_link.html")]
pub struct PortalLinkPage {
    pub chrome: Chrome,
    pub subscription_id: String,
    pub url: String,
    pub expires: When,
}

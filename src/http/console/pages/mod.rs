//! The console's handlers, one per page or action, and what they share: parsing form and query fields, links
//! with cursors, and the notices shown after an action.

mod deliveries;
mod events;
mod login;
mod overview;
mod settings;
mod subscriber;
mod subscriptions;

pub use deliveries::{deliveries, delivery, redeliver};
pub use events::{event, events};
pub use login::{login, login_form, logout};
pub use overview::{overview, topics};
pub use settings::{portal_link, set_filter, set_headers, set_rate, set_secret};
pub use subscriber::{subscriber, subscriber_redeliver_dead};
pub use subscriptions::{enable, end, redeliver_dead, replay, subscription, subscriptions};

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    check_csrf, html, queries, require_session, secure, see_other, session, session_cookie_header,
    views::{self, Chrome},
    ConsoleError, PAGE,
};
use crate::{
    http::AppState,
    operations::{self, ReplayFrom},
    outbox, spreader,
    subscriptions::store,
};

type Page = Result<HttpResponse, ConsoleError>;

/// A form whose only field is the session's CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn render(page: impl Template) -> Page {
    Ok(html(StatusCode::OK, page.render()?))
}

/// A query-string or form field: absent and blank are the same.
fn field(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A text filter compared with stored text: PostgreSQL text never holds a NUL, so one is refused up front.
fn text(v: &Option<String>) -> Result<Option<String>, ConsoleError> {
    match field(v) {
        Some(t) if t.contains('\0') => Err(ConsoleError::bad_request("A search field cannot contain a NUL character.")),
        other => Ok(other),
    }
}

fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ConsoleError::bad_request(format!("The {what} must be a UUID.")))
}

/// A time typed into a form: RFC 3339, or a `datetime-local` value in the viewer's zone (`tz`: minutes east of
/// UTC, filled in by the page's script; UTC without it).
fn parse_time(raw: &str, tz_minutes: i64) -> Result<DateTime<Utc>, ConsoleError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc() - Duration::minutes(tz_minutes))
        .ok_or_else(|| ConsoleError::bad_request(format!("“{raw}” is not a time: use YYYY-MM-DDTHH:MM.")))
}

fn tz(raw: &Option<String>) -> i64 {
    field(raw).and_then(|t| t.parse().ok()).filter(|m: &i64| m.abs() <= 24 * 60).unwrap_or(0)
}

/// A link to `path` with these query parameters (blank ones left out).
/// The link to the page after `rows` when they fill a page: the filters kept, `cursor` set to the last row's `key`.
fn next_page<T>(
    rows: &[T],
    path: &str,
    filters: &[(&str, &str)],
    cursor: &str,
    key: impl Fn(&T) -> String,
) -> Option<String> {
    let last = rows.last().filter(|_| rows.len() as i64 == PAGE)?;
    let position = key(last);
    let mut params = filters.to_vec();
    params.push((cursor, &position));
    Some(link(path, &params))
}

fn link(path: &str, params: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

/// The notice shown after an action, from the fixed set the actions redirect with.
fn flash(done: &Option<String>, n: &Option<String>) -> Option<String> {
    let n = field(n).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
    Some(match done.as_deref()? {
        "redelivered" => "The delivery is back in the queue; it is attempted again now.".to_owned(),
        "redelivered-dead" => format!("{n} dead deliveries are back in the queue."),
        "replayed" => format!("Replay created {n} new deliveries."),
        "ended" => "The subscription is ended; it receives nothing more.".to_owned(),
        "filter-set" => "The content filter is set; it applies to events spread from now on.".to_owned(),
        "filter-removed" => "The content filter is removed: every event of the topic is delivered.".to_owned(),
        "headers-set" => "The custom headers are replaced; the next delivery carries them.".to_owned(),
        "headers-removed" => "The custom headers are removed.".to_owned(),
        "rate-set" => "The rate limit is set; every deliverer keeps to it.".to_owned(),
        "rate-removed" => "The rate limit is removed.".to_owned(),
        "secret-set" => "The secret is replaced; the old one also signs until its grace period ends.".to_owned(),
        "enabled" => {
            "The subscription is active again; redeliver its dead deliveries to send what it missed.".to_owned()
        }
        _ => return None,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    n: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_time_is_read_in_the_viewers_zone() {
        let utc = parse_time("2026-11-23T10:30", 0).unwrap();
        assert_eq!(utc.to_rfc3339(), "2026-11-23T10:30:00+00:00");
        let berlin = parse_time("2026-11-23T10:30", 60).unwrap();
        assert_eq!(berlin.to_rfc3339(), "2026-11-23T09:30:00+00:00");
        let explicit = parse_time("2026-11-23T10:30:00-05:00", 60).unwrap();
        assert_eq!(explicit.to_rfc3339(), "2026-11-23T15:30:00+00:00", "an explicit offset wins");
        assert!(parse_time("yesterday", 0).is_err());
    }

    #[test]
    fn an_implausible_zone_offset_is_ignored() {
        assert_eq!(tz(&Some("-300".into())), -300);
        assert_eq!(tz(&Some("100000".into())), 0);
        assert_eq!(tz(&Some("east".into())), 0);
    }

    #[test]
    fn links_encode_their_parameters_and_leave_out_blank_ones() {
        assert_eq!(
            link("/console/events", &[("topic", "a b&c"), ("tag", ""), ("before", "7")]),
            "/console/events?topic=a+b%26c&before=7"
        );
        assert_eq!(link("/console/events", &[("topic", "")]), "/console/events");
    }

    #[test]
    fn notices_come_only_from_the_fixed_set() {
        assert_eq!(flash(&Some("replayed".into()), &Some("3".into())).unwrap(), "Replay created 3 new deliveries.");
        assert_eq!(flash(&Some("<script>".into()), &None), None);
        assert!(text(&Some("a\0b".into())).is_err());
        assert_eq!(text(&Some("  ".into())).unwrap(), None);
    }
}

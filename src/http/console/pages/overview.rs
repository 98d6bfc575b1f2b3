//! The overview (charts of the last hour, outbox, spreader) and the topics list.

use super::*;

/// `GET /console`
pub async fn overview(state: web::Data<AppState>, req: HttpRequest) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let pool = &state.read_pool;
    let minutes = queries::per_minute(pool, 60).await?;
    let outcomes = queries::outcomes_last_hour(pool).await?;
    let (pending, due_now) = queries::outbox_depth(pool).await?;
    let oldest_due = outbox::next_due(pool).await?;
    let lag = spreader::lag(pool).await?;

    let events_series: Vec<_> = minutes.iter().map(|m| (m.minute, m.events, 0)).collect();
    let delivery_series: Vec<_> = minutes.iter().map(|m| (m.minute, m.delivered, m.failed)).collect();
    let widest = outcomes.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let spread_percent = if lag.head_position == 0 {
        100.0
    } else {
        (lag.cursor_position as f64 / lag.head_position as f64 * 100.0).clamp(0.0, 100.0)
    };
    render(views::OverviewPage {
        chrome: Chrome::new("Overview", "overview", &s.csrf_token),
        events: views::Chart::new(&events_series, |n, _| format!("{n} events")),
        deliveries: views::Chart::new(&delivery_series, |ok, failed| format!("{ok} delivered, {failed} failed")),
        outcomes: outcomes
            .into_iter()
            .map(|(name, count)| views::Share {
                class: views::outcome_class(&name),
                width: count as f64 / widest as f64 * 100.0,
                name,
                count,
            })
            .collect(),
        pending: views::capped(pending, queries::COUNT_CAP),
        due_now: views::capped(due_now, queries::COUNT_CAP),
        oldest_due_ago: oldest_due.map(views::ago).unwrap_or_default(),
        oldest_due: views::when(oldest_due),
        head: lag.head_position,
        cursor: lag.cursor_position,
        behind: lag.behind_events,
        spread_percent,
        oldest_unspread: views::when(lag.oldest_unspread_at),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct TopicsQuery {
    after: Option<String>,
}

/// `GET /console/topics?after=`
pub async fn topics(state: web::Data<AppState>, req: HttpRequest, q: web::Query<TopicsQuery>) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let after = text(&q.after)?.unwrap_or_default();
    let rows = queries::topics(&state.read_pool, &after, PAGE).await?;
    let next = next_page(&rows, "/console/topics", &[], "after", |r| r.topic.clone());
    render(views::TopicsPage {
        chrome: Chrome::new("Topics", "topics", &s.csrf_token),
        rows: rows
            .into_iter()
            .map(|r| views::TopicRow {
                events_link: link("/console/events", &[("topic", &r.topic)]),
                subscriptions_link: link("/console/subscriptions", &[("topic", &r.topic)]),
                subscribers: views::capped(r.subscribers, 1001),
                last_published: r.last_published_at.into(),
                last_position: r.last_position,
                topic: r.topic,
            })
            .collect(),
        next,
    })
}

//! The event log: appending (idempotently, in one transaction per request) and reading by position.
//!
//! Owns the `events` table. Rows are never updated or deleted (a trigger refuses it); retention drops whole
//! time partitions ([`crate::partitions`]). An event id may be given by the publisher; appending an id again with
//! identical content returns the original row and writes nothing, while different content under the same id is a
//! conflict and the whole request writes nothing. Ids stay unique across partitions although no unique index can
//! span them: an append carrying ids from a publisher holds [`ID_CHECK_LOCK`] while it looks for them and inserts,
//! so two such appends never both find an id missing; ids the hub generates itself (UUIDv7) need no check.
//! Failure policy: every error rolls the request's transaction back; nothing is partially appended.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::topic::Topic;

/// The channel the spreaders listen on; whatever appends events wakes it through [`wake`] after its commit.
pub const EVENTS_CHANNEL: &str = "tidings_events";

/// Wakes the spreaders after events were appended. Call it once the appending transaction has committed: a NOTIFY
/// inside a durable commit holds a lock that serialises every other commit until the disk answers.
pub async fn wake(pool: &PgPool) {
    crate::wakeup::notify(pool, EVENTS_CHANNEL).await;
}

/// The SQL that appends content events the hub writes itself inside another statement of its own (operational
/// events): `$select` yields (topic, content type, body, tags, group id). Their ids are random (`gen_random_uuid`),
/// never a publisher's, so they need no [`ID_CHECK_LOCK`]. Returns one row per event appended.
macro_rules! append_generated {
    ($($select:expr),+ $(,)?) => {
        concat!(
            "INSERT INTO events (id, kind, topic, content_type, body, tags, group_id) ",
            "SELECT gen_random_uuid(), 'content', g.topic, g.content_type, g.body, g.tags, g.group_id FROM (",
            $($select),+,
            ") AS g(topic, content_type, body, tags, group_id) RETURNING 1"
        )
    };
}
pub(crate) use append_generated;

pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 128;
pub const MAX_GROUP_ID_BYTES: usize = 256;
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// Which of the ids `$1` the log already holds (run under [`ID_CHECK_LOCK`]).
pub const TAKEN_IDS_SQL: &str = "SELECT id FROM events WHERE id = ANY($1::uuid[])";

/// The transaction-level advisory lock held by appends whose ids came from publishers (`hashtext` of
/// `tidings_event_ids`, a fixed key no other lock uses).
pub const ID_CHECK_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('tidings_event_ids', 0))";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Content published for subscribers.
    Content,
    /// A subscription lifecycle change (never delivered; read as a subscription's history).
    Subscription,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Content => "content",
            EventKind::Subscription => "subscription",
        }
    }
}

/// An event ready to append: every field already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    /// The id came from the publisher (or a retried fetch), so the log may already hold it; a fresh id the hub
    /// generated cannot be there and is not looked up.
    pub id_from_publisher: bool,
    pub topic: Topic,
    pub content_type: String,
    pub body: Vec<u8>,
    pub tags: Vec<String>,
    pub group_id: Option<String>,
}

/// What the log answered for one appended event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Appended {
    pub id: Uuid,
    pub position: i64,
    pub published_at: DateTime<Utc>,
    /// True when the id was already in the log with the same content (nothing was written).
    #[serde(skip)]
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("event {0} already exists with different content")]
    Conflict(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub position: i64,
    pub id: Uuid,
    pub kind: String,
    pub topic: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub tags: Vec<String>,
    pub group_id: Option<String>,
    pub published_at: DateTime<Utc>,
}

/// A content type that is not `type/subtype` in printable ASCII; holds the first 64 characters for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid content type (expected type/subtype)")]
pub struct ContentTypeError(String);

/// Tags or a group id out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("at most {MAX_TAGS} tags are allowed")]
    TooManyTags,
    #[error("tag `{0}` must be 1 to {MAX_TAG_BYTES} bytes without control characters")]
    Tag(String),
    #[error("group_id must be 1 to {MAX_GROUP_ID_BYTES} bytes without control characters")]
    GroupId,
}

/// Validates a content type: `type/subtype` with optional parameters, printable ASCII.
pub fn validate_content_type(raw: &str) -> Result<String, ContentTypeError> {
    let raw = raw.trim();
    let essence = raw.split(';').next().unwrap_or("").trim();
    let valid_token =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c));
    let ok = raw.len() <= MAX_CONTENT_TYPE_BYTES
        && raw.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
        && essence.split_once('/').is_some_and(|(t, s)| valid_token(t) && valid_token(s));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ContentTypeError(raw.chars().take(64).collect()))
    }
}

/// Validates tags and a group id.
pub fn validate_labels(tags: &[String], group_id: Option<&str>) -> Result<(), LabelError> {
    if tags.len() > MAX_TAGS {
        return Err(LabelError::TooManyTags);
    }
    if let Some(tag) = tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_BYTES || t.chars().any(char::is_control))
    {
        return Err(LabelError::Tag(tag.chars().take(32).collect()));
    }
    if group_id.is_some_and(|g| g.is_empty() || g.len() > MAX_GROUP_ID_BYTES || g.chars().any(char::is_control)) {
        return Err(LabelError::GroupId);
    }
    Ok(())
}

/// Events as one array per column, for the `unnest` of the append statements.
struct Columns<'a> {
    ids: Vec<Uuid>,
    topics: Vec<&'a str>,
    content_types: Vec<&'a str>,
    bodies: Vec<&'a [u8]>,
    tags: Vec<serde_json::Value>,
    groups: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(events: impl Iterator<Item = &'a NewEvent> + Clone) -> Self {
        Self {
            ids: events.clone().map(|e| e.id).collect(),
            topics: events.clone().map(|e| e.topic.as_str()).collect(),
            content_types: events.clone().map(|e| e.content_type.as_str()).collect(),
            bodies: events.clone().map(|e| e.body.as_slice()).collect(),
            tags: events.clone().map(|e| serde_json::json!(e.tags)).collect(),
            groups: events.map(|e| e.group_id.as_deref()).collect(),
        }
    }
}

/// Appends content events in one transaction (all or none). The caller wakes the spreader after it, unless every
/// event was a replay ([`Appended::replayed`]).
#[tracing::instrument(skip_all, fields(count = events.len()))]
pub async fn append(pool: &PgPool, events: &[NewEvent]) -> Result<Vec<Appended>, AppendError> {
    let mut tx = pool.begin().await?;
    let appended = append_in(&mut tx, EventKind::Content, events).await?;
    tx.commit().await?;
    Ok(appended)
}

/// Why [`append_new`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("an event id of the group is already in the log or appears twice")]
    NotNew,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Appends content events that must all be new, in one durable transaction (the caller wakes the spreader):
/// positions follow the order given. All or none: if any id is already in the log (or appears twice), nothing is
/// written; the caller then appends request by request with [`append`], which tells replays from conflicts. A
/// group of fresh ids is one statement; a group holding ids from publishers first takes [`ID_CHECK_LOCK`] and
/// looks for them. See the `ingest` module.
#[tracing::instrument(skip_all, fields(count = events.len()))]
pub async fn append_new(pool: &PgPool, events: &[&NewEvent]) -> Result<Vec<Appended>, GroupError> {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    if !events.iter().all(|e| seen.insert(e.id)) {
        return Err(GroupError::NotNew);
    }
    let given: Vec<Uuid> = events.iter().filter(|e| e.id_from_publisher).map(|e| e.id).collect();
    if given.is_empty() {
        // Fresh ids only: one statement, its own transaction.
        return Ok(insert_group(pool, events).await?);
    }
    let mut tx = pool.begin().await?;
    sqlx::query(ID_CHECK_LOCK).execute(&mut *tx).await?;
    let taken: Vec<Uuid> = sqlx::query_scalar(TAKEN_IDS_SQL).bind(&given).fetch_all(&mut *tx).await?;
    if !taken.is_empty() {
        return Err(GroupError::NotNew);
    }
    let appended = insert_group(&mut *tx, events).await?;
    tx.commit().await?;
    Ok(appended)
}

/// The INSERT of a group, in order.
async fn insert_group<'c>(
    db: impl sqlx::Executor<'c, Database = Postgres>,
    events: &[&NewEvent],
) -> Result<Vec<Appended>, sqlx::Error> {
    let c = Columns::of(events.iter().map(|e| &**e));
    let rows: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH inserted AS (
             INSERT INTO events (id, kind, topic, content_type, body, tags, group_id)
             SELECT t.id, 'content', t.topic, t.content_type, t.body,
                    ARRAY(SELECT jsonb_array_elements_text(t.tags)), t.group_id
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[], $6::text[])
                  WITH ORDINALITY AS t(id, topic, content_type, body, tags, group_id, n)
             ORDER BY t.n
             RETURNING id, position, published_at
         )
         SELECT i.id, i.position, i.published_at FROM inserted i",
    )
    .bind(&c.ids)
    .bind(&c.topics)
    .bind(&c.content_types)
    .bind(&c.bodies)
    .bind(&c.tags)
    .bind(&c.groups)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, position, published_at)| Appended { id, position, published_at, replayed: false })
        .collect())
}

/// Appends events inside a caller's transaction, in order, returning one answer per input event.
pub async fn append_in(
    tx: &mut Transaction<'_, Postgres>,
    kind: EventKind,
    events: &[NewEvent],
) -> Result<Vec<Appended>, AppendError> {
    let given: Vec<Uuid> = events.iter().filter(|e| e.id_from_publisher).map(|e| e.id).collect();
    let mut taken: Vec<Uuid> = Vec::new();
    if !given.is_empty() {
        sqlx::query(ID_CHECK_LOCK).execute(&mut **tx).await?;
        taken = sqlx::query_scalar(TAKEN_IDS_SQL).bind(&given).fetch_all(&mut **tx).await?;
    }
    // Each id once, and none the log already holds: the rest are answered from the log below.
    let mut seen: std::collections::HashSet<Uuid> = taken.into_iter().collect();
    let fresh: Vec<&NewEvent> = events.iter().filter(|e| seen.insert(e.id)).collect();
    let c = Columns::of(fresh.iter().copied());
    let inserted: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO events (id, kind, topic, content_type, body, tags, group_id)
         SELECT t.id, $1, t.topic, t.content_type, t.body,
                ARRAY(SELECT jsonb_array_elements_text(t.tags)), t.group_id
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[], $6::jsonb[], $7::text[])
              WITH ORDINALITY AS t(id, topic, content_type, body, tags, group_id, n)
         ORDER BY t.n
         RETURNING id, position, published_at",
    )
    .bind(kind.as_str())
    .bind(&c.ids)
    .bind(&c.topics)
    .bind(&c.content_types)
    .bind(&c.bodies)
    .bind(&c.tags)
    .bind(&c.groups)
    .fetch_all(&mut **tx)
    .await?;

    let mut answers = Vec::with_capacity(events.len());
    let mut existing: Option<Vec<StoredEvent>> = None;
    for event in events {
        if let Some((id, position, published_at)) = inserted.iter().find(|(id, ..)| *id == event.id) {
            if !answers.iter().any(|a: &Appended| a.id == *id) {
                answers.push(Appended { id: *id, position: *position, published_at: *published_at, replayed: false });
                continue;
            }
        }
        // The id was already taken (earlier, or earlier in this same request): same content or conflict.
        if existing.is_none() {
            existing = Some(
                sqlx::query_as("SELECT * FROM events WHERE id = ANY($1)")
                    .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
                    .fetch_all(&mut **tx)
                    .await?,
            );
        }
        let stored = existing.as_ref().and_then(|rows| rows.iter().find(|r| r.id == event.id));
        match stored {
            Some(row) if row.kind == kind.as_str() && row.same_content_as(event) => answers.push(Appended {
                id: row.id,
                position: row.position,
                published_at: row.published_at,
                replayed: true,
            }),
            _ => return Err(AppendError::Conflict(event.id)),
        }
    }
    Ok(answers)
}

impl StoredEvent {
    fn same_content_as(&self, event: &NewEvent) -> bool {
        self.topic == event.topic.as_str()
            && self.content_type == event.content_type
            && self.body == event.body
            && self.tags == event.tags
            && self.group_id == event.group_id
    }
}

/// Filters for reading the log; every field is optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Cursor: only events after this position.
    #[serde(default)]
    pub after: i64,
    pub topic: Option<String>,
    pub tag: Option<String>,
    pub group_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
}

/// Where a page of the log starts: oldest first after a position, or newest first before one.
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    After(i64),
    Before(i64),
}

/// The filters of [`EventFilter`] on content events, as SQL over `$2`..`$6`.
macro_rules! content_filter {
    () => {
        "kind = 'content' AND ($2::text IS NULL OR topic = $2)
           AND ($3::text IS NULL OR tags @> ARRAY[$3]) AND ($4::text IS NULL OR group_id = $4)
           AND ($5::timestamptz IS NULL OR published_at >= $5) AND ($6::timestamptz IS NULL OR published_at < $6)"
    };
}

/// A page of the log in position order, after `f.after`.
pub async fn search(pool: &PgPool, f: &EventFilter, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    search_page(pool, f, Cursor::After(f.after), limit).await
}

/// A page of the log from `cursor` (`f.after` is not used).
#[tracing::instrument(skip(pool))]
pub async fn search_page(
    pool: &PgPool,
    f: &EventFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let (sql, position) = match cursor {
        Cursor::After(p) => (
            concat!("SELECT * FROM events WHERE position > $1 AND ", content_filter!(), " ORDER BY position LIMIT $7"),
            p,
        ),
        Cursor::Before(p) => (
            concat!(
                "SELECT * FROM events WHERE position < $1 AND ",
                content_filter!(),
                " ORDER BY position DESC LIMIT $7"
            ),
            p,
        ),
    };
    sqlx::query_as(sql)
        .bind(position)
        .bind(f.topic.as_deref())
        .bind(f.tag.as_deref())
        .bind(f.group_id.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// One event by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<StoredEvent>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM events WHERE id = $1").bind(id).fetch_optional(pool).await
}

/// The highest position in the log (0 when empty).
pub async fn head_position(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_need_a_type_and_subtype() {
        assert!(validate_content_type("application/json").is_ok());
        assert!(validate_content_type("application/atom+xml; charset=utf-8").is_ok());
        assert!(validate_content_type("json").is_err());
        assert!(validate_content_type("text/").is_err());
        assert!(validate_content_type("text/plain\r\nX-Evil: 1").is_err());
    }

    #[test]
    fn labels_are_bounded() {
        assert!(validate_labels(&["a".into()], Some("g")).is_ok());
        assert!(validate_labels(&["".into()], None).is_err());
        assert!(validate_labels(&vec!["a".into(); 65], None).is_err());
        assert!(validate_labels(&[], Some("")).is_err());
    }
}

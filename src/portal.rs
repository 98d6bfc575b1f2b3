//! The subscriber portal's credentials: a signed, expiring link that opens one subscription's delivery log, and
//! the nonce a subscriber answers (an HMAC under its `hub.secret`) to obtain such a link without an operator.
//!
//! A link token is `{subscription id}.{expiry, unix seconds}.{HMAC-SHA256 under the portal key}`; a nonce is
//! `{subscription id}.{expiry}.{random}.{HMAC}`. Both are checked without state: only the key lives in the
//! database (`portal_keys`, owned here), read on every check so that deleting its row revokes every link and
//! nonce issued so far in every replica. The signature binds the id, so a token opens that one subscription and
//! no other; any token that fails a check gets the same refusal, so a caller learns nothing about which check or
//! which subscription.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    operations,
    outbox::{self, AttemptView, Delivery},
    subscriptions::store,
};

type HmacSha256 = Hmac<Sha256>;

/// How long an operator's link opens the log unless the request says otherwise.
pub const ADMIN_LINK_DEFAULT: Duration = Duration::hours(24);
/// The longest an operator's link may live: a link is a bearer credential, so it must end.
pub const ADMIN_LINK_MAX: Duration = Duration::days(30);
/// How long a link obtained by proving the secret lives; the subscriber can prove it again at any time.
pub const SELF_SERVICE_LINK: Duration = Duration::hours(1);
/// How long a nonce can be answered: long enough for a person with a script, short enough that a leaked one is
/// soon useless.
pub const NONCE_LIFETIME: Duration = Duration::minutes(5);

/// Deliveries on one page of the log.
pub const PAGE: i64 = 50;

/// The portal key's row in `portal_keys`.
const KEY_NAME: &str = "portal";
/// Domain separation: a link's signature can never pass as a nonce's, or the other way round.
const LINK_CONTEXT: &str = "tidings-portal-link";
const NONCE_CONTEXT: &str = "tidings-portal-nonce";

/// Why a portal request was not served.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The token, nonce or proof is malformed, forged, expired or for a subscription that cannot use it. One
    /// message for all, so the answer tells nothing about the subscription.
    #[error("this portal link or proof is not valid: it is malformed, expired or not signed by this hub")]
    Refused,
    /// Only the operator's issuing call says this; a subscriber's request is refused instead.
    #[error("no subscription {0}")]
    NoSubscription(Uuid),
    #[error("expires_in_seconds must be between 60 and {}", ADMIN_LINK_MAX.num_seconds())]
    Lifetime,
    /// The subscriber's action was refused as the operator's would be (a subscription that is not active).
    #[error(transparent)]
    Operation(#[from] crate::operations::OperationError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A link to one subscription's delivery log.
#[derive(Debug, Clone)]
pub struct Link {
    pub subscription_id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl Link {
    /// The portal page this link opens, under the hub's public URL.
    pub fn url(&self, hub_url: &url::Url) -> Result<url::Url, url::ParseError> {
        let mut url = hub_url.join("console/subscriber")?;
        url.query_pairs_mut().append_pair("token", &self.token);
        Ok(url)
    }
}

/// A nonce for a subscriber to answer.
#[derive(Debug, Clone)]
pub struct Nonce {
    pub nonce: String,
    pub expires_at: DateTime<Utc>,
}

/// The portal key, created by the first process that needs it and shared by every replica.
async fn key(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    const SELECT: &str = "SELECT key FROM portal_keys WHERE name = $1";
    if let Some(key) = sqlx::query_scalar(SELECT).bind(KEY_NAME).fetch_optional(pool).await? {
        return Ok(key);
    }
    let fresh: [u8; 32] = rand::random();
    // Two processes may race to create it; the first insert wins and both then read the same key.
    sqlx::query("INSERT INTO portal_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(KEY_NAME)
        .bind(&fresh[..])
        .execute(pool)
        .await?;
    sqlx::query_scalar(SELECT).bind(KEY_NAME).fetch_one(pool).await
}

fn mac(key: &[u8], context: &str, parts: &[&str]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(context.as_bytes());
    for part in parts {
        mac.update(b"\0");
        mac.update(part.as_bytes());
    }
    mac
}

fn sign(key: &[u8], context: &str, parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, context, parts).finalize().into_bytes())
}

/// Whether `signature` is this key's signature of `parts`, compared in constant time.
fn signed(key: &[u8], context: &str, parts: &[&str], signature: &str) -> bool {
    URL_SAFE_NO_PAD.decode(signature).is_ok_and(|raw| mac(key, context, parts).verify_slice(&raw).is_ok())
}

/// An expiry in unix seconds that is still ahead of `now`.
fn unexpired(raw: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Digits only: `i64::from_str` would also take a sign, and one token must have one spelling.
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = Utc.timestamp_opt(raw.parse().ok()?, 0).single()?;
    (at > now).then_some(at)
}

/// The token of a link to `subscription_id`'s log that expires at `expires_at` (whole seconds).
pub fn link_token(key: &[u8], subscription_id: Uuid, expires_at: DateTime<Utc>) -> String {
    let (id, exp) = (subscription_id.to_string(), expires_at.timestamp().to_string());
    format!("{id}.{exp}.{}", sign(key, LINK_CONTEXT, &[&id, &exp]))
}

/// The subscription a link token opens, when it is well formed, signed by `key` and not expired at `now`.
pub fn open_link(key: &[u8], token: &str, now: DateTime<Utc>) -> Option<Uuid> {
    let [id, exp, signature] = split(token)?;
    let subscription_id = canonical_uuid(id)?;
    unexpired(exp, now)?;
    signed(key, LINK_CONTEXT, &[id, exp], signature).then_some(subscription_id)
}

/// A nonce for `subscription_id`, expiring at `expires_at`, with `random` making each one different.
pub fn nonce(key: &[u8], subscription_id: Uuid, expires_at: DateTime<Utc>, random: [u8; 16]) -> String {
    let (id, exp, random) = (subscription_id.to_string(), expires_at.timestamp().to_string(), hex::encode(random));
    format!("{id}.{exp}.{random}.{}", sign(key, NONCE_CONTEXT, &[&id, &exp, &random]))
}

/// The subscription a nonce was issued for, when it is well formed, signed by `key` and not expired at `now`.
pub fn open_nonce(key: &[u8], nonce: &str, now: DateTime<Utc>) -> Option<Uuid> {
    let [id, exp, random, signature] = split(nonce)?;
    let subscription_id = canonical_uuid(id)?;
    unexpired(exp, now)?;
    signed(key, NONCE_CONTEXT, &[id, exp, random], signature).then_some(subscription_id)
}

/// The proof a subscriber sends for a nonce: hex HMAC-SHA256 of the nonce under its `hub.secret`, as it would
/// compute `X-Hub-Signature` over a body.
pub fn proof(secret: &str, nonce: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(nonce.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the proof of `nonce` under `secret`, compared in constant time.
pub fn proves(secret: &str, nonce: &str, given: &str) -> bool {
    let Ok(raw) = hex::decode(given.trim()) else { return false };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(nonce.as_bytes());
    mac.verify_slice(&raw).is_ok()
}

fn split<const N: usize>(s: &str) -> Option<[&str; N]> {
    let parts: Vec<&str> = s.split('.').collect();
    parts.try_into().ok()
}

/// A UUID in its one hyphenated lower-case spelling, the one tokens are issued with.
fn canonical_uuid(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok().filter(|id| id.to_string() == raw)
}

/// The operator's link to a subscription's log, living `lifetime` (default [`ADMIN_LINK_DEFAULT`]).
#[tracing::instrument(skip(pool))]
pub async fn issue_link(pool: &PgPool, subscription_id: Uuid, lifetime: Option<Duration>) -> Result<Link, PortalError> {
    let lifetime = lifetime.unwrap_or(ADMIN_LINK_DEFAULT);
    if lifetime < Duration::minutes(1) || lifetime > ADMIN_LINK_MAX {
        return Err(PortalError::Lifetime);
    }
    if store::get(pool, subscription_id).await?.is_none() {
        return Err(PortalError::NoSubscription(subscription_id));
    }
    let link = make_link(&key(pool).await?, subscription_id, Utc::now() + lifetime);
    tracing::info!(subscription_id = %subscription_id, expires_at = %link.expires_at, "issued a portal link");
    Ok(link)
}

/// An instant cut to whole seconds, as a token carries it, so `expires_at` says exactly what the token says.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp(), 0).single().unwrap_or(t)
}

fn make_link(key: &[u8], subscription_id: Uuid, expires_at: DateTime<Utc>) -> Link {
    let expires_at = whole_seconds(expires_at);
    Link { subscription_id, token: link_token(key, subscription_id, expires_at), expires_at }
}

/// A nonce for whoever asks about `subscription_id`. Issued without looking the subscription up, so asking tells
/// nothing about whether it exists; only a proof under its secret turns a nonce into a link.
pub async fn issue_nonce(pool: &PgPool, subscription_id: Uuid) -> Result<Nonce, PortalError> {
    let expires_at = whole_seconds(Utc::now() + NONCE_LIFETIME);
    Ok(Nonce { nonce: nonce(&key(pool).await?, subscription_id, expires_at, rand::random()), expires_at })
}

/// A link for a subscriber that answered a nonce with the HMAC of it under its current `hub.secret` (during a
/// rotation's grace period only the new secret counts: proving is for the holder of the secret now in force).
#[tracing::instrument(skip(pool, nonce, given))]
pub async fn redeem(pool: &PgPool, nonce: &str, given: &str) -> Result<Link, PortalError> {
    let key = key(pool).await?;
    let subscription_id = open_nonce(&key, nonce, Utc::now()).ok_or(PortalError::Refused)?;
    match store::current_secret(pool, subscription_id).await?.flatten() {
        Some(secret) if proves(&secret, nonce, given) => {}
        _ => return Err(PortalError::Refused),
    }
    let link = make_link(&key, subscription_id, Utc::now() + SELF_SERVICE_LINK);
    tracing::info!(subscription_id = %subscription_id, "a subscriber proved its secret for a portal link");
    Ok(link)
}

/// The subscription a link token opens now, or [`PortalError::Refused`].
pub async fn open(pool: &PgPool, token: &str) -> Result<Uuid, PortalError> {
    open_link(&key(pool).await?, token, Utc::now()).ok_or(PortalError::Refused)
}

/// What a subscriber sees of its own subscription: no secret, headers or operator settings.
#[derive(Debug, Serialize)]
pub struct OwnSubscription {
    pub id: Uuid,
    pub topic: String,
    pub callback: String,
    pub state: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A delivery with every attempt it has had, in order.
#[derive(Debug, Serialize)]
pub struct DeliveryWithAttempts {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<AttemptView>,
}

/// One page of a subscription's delivery log, newest first.
#[derive(Debug, Serialize)]
pub struct Log {
    pub subscription: OwnSubscription,
    pub deliveries: Vec<DeliveryWithAttempts>,
    /// Pass as `before` for the next (older) page; none on the last page.
    pub next_before: Option<i64>,
}

/// The log a token opens: its subscription and up to `limit` of its jobs with ids below `before`, each with its
/// attempts. Read from the primary, so a redelivery the subscriber just asked for shows at once.
pub async fn log(pool: &PgPool, token: &str, before: i64, limit: i64) -> Result<Log, PortalError> {
    let id = open(pool, token).await?;
    let sub = store::get(pool, id).await?.ok_or(PortalError::Refused)?;
    let jobs = outbox::recent(pool, id, before, limit).await?;
    let ids: Vec<i64> = jobs.iter().map(|d| d.id).collect();
    let mut by_job: std::collections::HashMap<i64, Vec<AttemptView>> = std::collections::HashMap::new();
    for (job, attempt) in outbox::attempts_of(pool, &ids).await? {
        by_job.entry(job).or_default().push(attempt);
    }
    let next_before = if jobs.len() as i64 == limit { jobs.last().map(|d| d.id) } else { None };
    let deliveries = jobs
        .into_iter()
        .map(|delivery| DeliveryWithAttempts { attempts: by_job.remove(&delivery.id).unwrap_or_default(), delivery })
        .collect();
    let subscription = OwnSubscription {
        id: sub.id,
        topic: sub.topic,
        callback: sub.callback,
        state: sub.state,
        expires_at: sub.expires_at,
    };
    Ok(Log { subscription, deliveries, next_before })
}

/// Puts the dead deliveries of the subscription a token opens back in the queue, as the operator's
/// redeliver-dead would (the subscription must be active); how many.
pub async fn redeliver_dead(pool: &PgPool, token: &str) -> Result<i64, PortalError> {
    let id = open(pool, token).await?;
    let redelivered = match operations::redeliver_dead(pool, id, None, None).await {
        Err(operations::OperationError::NoSubscription(_)) => return Err(PortalError::Refused),
        other => other?,
    };
    tracing::info!(subscription_id = %id, redelivered, "a subscriber redelivered its dead deliveries");
    Ok(redelivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn a_link_opens_its_own_subscription_until_it_expires() {
        let id = Uuid::new_v4();
        let token = link_token(KEY, id, at(2_000));
        assert_eq!(open_link(KEY, &token, at(1_999)), Some(id));
        assert_eq!(open_link(KEY, &token, at(2_000)), None);
    }

    #[test]
    fn a_link_with_another_id_an_extended_expiry_or_another_key_opens_nothing() {
        let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
        let token = link_token(KEY, id, at(2_000));
        let [_, exp, sig] = split::<3>(&token).unwrap();
        assert_eq!(open_link(KEY, &format!("{other}.{exp}.{sig}"), at(1_000)), None);
        assert_eq!(open_link(KEY, &format!("{id}.9999999999.{sig}"), at(1_000)), None);
        assert_eq!(open_link(b"another key of thirty-two bytes!", &token, at(1_000)), None);
        assert_eq!(open_link(KEY, &format!("{}.{exp}.{sig}", id.to_string().to_uppercase()), at(1_000)), None);
        assert_eq!(open_link(KEY, &format!("{id}.+{exp}.{sig}"), at(1_000)), None);
    }

    #[test]
    fn a_nonce_never_passes_as_a_link_nor_a_link_as_a_nonce() {
        let id = Uuid::new_v4();
        let n = nonce(KEY, id, at(2_000), [7; 16]);
        assert_eq!(open_nonce(KEY, &n, at(1_000)), Some(id));
        let [nid, exp, _, sig] = split::<4>(&n).unwrap();
        assert_eq!(open_link(KEY, &format!("{nid}.{exp}.{sig}"), at(1_000)), None);
        let token = link_token(KEY, id, at(2_000));
        assert_eq!(open_nonce(KEY, &token, at(1_000)), None);
    }

    #[test]
    fn only_the_hmac_under_the_secret_proves_it() {
        let n = nonce(KEY, Uuid::new_v4(), at(2_000), [1; 16]);
        let good = proof("s3cret", &n);
        assert!(proves("s3cret", &n, &good));
        assert!(proves("s3cret", &n, &good.to_uppercase()));
        assert!(!proves("other", &n, &good));
        assert!(!proves("s3cret", &n, "not hex"));
        assert!(!proves("s3cret", &n, &good[..62]));
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        for token in ["", ".", "..", "a.b.c", "a.b.c.d.e", "\u{0}.1.x", &"9".repeat(40)] {
            assert_eq!(open_link(KEY, token, at(0)), None);
            assert_eq!(open_nonce(KEY, token, at(0)), None);
        }
        let id = Uuid::new_v4();
        assert_eq!(open_link(KEY, &format!("{id}.99999999999999999999999.x"), at(0)), None);
    }
}

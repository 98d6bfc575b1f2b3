//! Console login sessions.
//!
//! Logging in with the admin token creates a session: a random 256-bit id goes to the browser in an HttpOnly,
//! SameSite=Strict cookie (Secure over https), and only its SHA-256 is stored in `console_sessions`, with an
//! expiry. The session is kept server-side rather than in a signed cookie so that logging out really ends it:
//! a copied cookie stops working the moment its row is revoked, and a stolen database row cannot be turned back
//! into a cookie. Each session also has its own CSRF token, rendered into every form and checked on every POST
//! (SameSite=Strict already keeps other sites' requests from carrying the cookie; the token is the second lock).

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// How long a console session lasts after login.
pub const SESSION_HOURS: i64 = 12;

/// The name of the session cookie.
pub const COOKIE: &str = "tidings_console";

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// Whether two secrets are equal, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Starts a session; returns the id for the cookie. Expired sessions are swept out on the way.
pub async fn create(pool: &PgPool) -> Result<String, sqlx::Error> {
    let id = random_hex();
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now() - interval '1 day'").execute(&mut *tx).await?;
    sqlx::query("INSERT INTO console_sessions (id_hash, csrf_token, expires_at) VALUES ($1, $2, $3)")
        .bind(hash(&id))
        .bind(random_hex())
        .bind(Utc::now() + Duration::hours(SESSION_HOURS))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// The session with this id, when it exists, is not revoked and has not expired.
pub async fn find(pool: &PgPool, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT csrf_token, expires_at FROM console_sessions
         WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
    )
    .bind(hash(id))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(csrf_token, expires_at)| Session { csrf_token, expires_at }))
}

/// Ends a session for good.
pub async fn revoke(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE console_sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL")
        .bind(hash(id))
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (random_hex(), random_hex());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(hash(&a), a.as_bytes());
        assert_eq!(hash(&a), hash(&a));
    }
}

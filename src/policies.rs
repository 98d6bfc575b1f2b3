//! Topic policies (owns `topic_policies`): per topic or pattern, an optional JSON Schema for the content, a
//! maximum size and the content types allowed. Checked at publish time, before anything is written; a breach is
//! reported naming the event, the policy and what failed.
//!
//! Policies are cached per process and re-read at most a second after a change made by another process (at
//! once after a change made through this one).

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::{events::NewEvent, topic::Topic};

const CACHE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub topic: String,
    pub json_schema: Option<serde_json::Value>,
    pub max_bytes: Option<i32>,
    pub content_types: Option<Vec<String>>,
    #[serde(default = "Utc::now", skip_deserializing)]
    pub updated_at: DateTime<Utc>,
}

/// Why a policy cannot be stored: the reason, for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPolicy(String);

/// The first event of a batch that a topic's policy refuses, and why.
#[derive(Debug, thiserror::Error)]
#[error("{which}the policy for {policy} refuses it: {reason}")]
pub struct Breach {
    /// `event {i}: ` in a batch of several, empty for one event.
    which: String,
    policy: String,
    reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Refused(#[from] Breach),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

struct Compiled {
    topic: Topic,
    policy: Policy,
    validator: Option<jsonschema::Validator>,
}

/// Whether any key or string in a JSON value holds U+0000.
fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

impl Compiled {
    fn new(policy: Policy) -> Result<Self, InvalidPolicy> {
        let invalid = InvalidPolicy;
        let topic = Topic::parse(&policy.topic).map_err(|e| invalid(format!("topic: {e}")))?;
        let validator = match &policy.json_schema {
            Some(schema) if !schema.is_object() => {
                return Err(invalid("json_schema must be a JSON Schema object".into()))
            }
            Some(schema) if contains_nul(schema) => {
                return Err(invalid(
                    "json_schema must not contain NUL characters (PostgreSQL's jsonb cannot store them)".into(),
                ))
            }
            Some(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| invalid(format!("json_schema is not a valid JSON Schema: {e}")))?,
            ),
            None => None,
        };
        if policy.max_bytes.is_some_and(|m| m <= 0) {
            return Err(invalid("max_bytes must be positive".into()));
        }
        for content_type in policy.content_types.iter().flatten() {
            crate::events::validate_content_type(content_type).map_err(|e| invalid(format!("content_types: {e}")))?;
        }
        Ok(Self { topic, policy, validator })
    }

    fn applies_to(&self, topic: &str) -> bool {
        self.topic.matches(topic)
    }

    /// The first way the event breaks this policy, if any.
    fn breach(&self, event: &NewEvent) -> Option<String> {
        let p = &self.policy;
        if let Some(max) = p.max_bytes {
            if event.body.len() > max as usize {
                return Some(format!("the content is {} bytes, more than the {max} allowed", event.body.len()));
            }
        }
        if let Some(allowed) = &p.content_types {
            let essence = event.content_type.split(';').next().unwrap_or("").trim();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(essence)) {
                return Some(format!("content type {essence} is not one of {}", allowed.join(", ")));
            }
        }
        if let Some(validator) = &self.validator {
            let Ok(instance) = serde_json::from_slice::<serde_json::Value>(&event.body) else {
                return Some("the content is not JSON, and the policy has a JSON Schema".into());
            };
            let errors: Vec<String> = validator
                .iter_errors(&instance)
                .take(3)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    format!("{}: {e}", if at.is_empty() { "/".to_owned() } else { at })
                })
                .collect();
            if !errors.is_empty() {
                return Some(format!("the content does not match the JSON Schema ({})", errors.join("; ")));
            }
        }
        None
    }
}

pub struct Policies {
    pool: PgPool,
    cache: RwLock<Option<(Instant, Arc<Vec<Compiled>>)>>,
}

impl Policies {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, cache: RwLock::new(None) }
    }

    async fn current(&self) -> Result<Arc<Vec<Compiled>>, sqlx::Error> {
        if let Some((at, compiled)) = self.cache.read().expect("policy cache lock").as_ref() {
            if at.elapsed() < CACHE_TTL {
                return Ok(compiled.clone());
            }
        }
        let compiled: Vec<Compiled> = list(&self.pool)
            .await?
            .into_iter()
            .filter_map(|p| match Compiled::new(p) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "a stored topic policy cannot be compiled; it is skipped");
                    None
                }
            })
            .collect();
        let compiled = Arc::new(compiled);
        *self.cache.write().expect("policy cache lock") = Some((Instant::now(), compiled.clone()));
        Ok(compiled)
    }

    /// Checks every event against every policy for its topic: [`CheckError::Refused`] names the first breach.
    pub async fn check(&self, events: &[NewEvent]) -> Result<(), CheckError> {
        let policies = self.current().await?;
        if policies.is_empty() {
            return Ok(());
        }
        for (i, event) in events.iter().enumerate() {
            for policy in policies.iter().filter(|p| p.applies_to(event.topic.as_str())) {
                if let Some(reason) = policy.breach(event) {
                    let which = if events.len() > 1 { format!("event {i}: ") } else { String::new() };
                    return Err(Breach { which, policy: policy.policy.topic.clone(), reason }.into());
                }
            }
        }
        Ok(())
    }

    /// Creates or replaces the policy for its topic; an invalid policy is [`PutError::Invalid`] and stores nothing.
    pub async fn put(&self, policy: Policy) -> Result<Policy, PutError> {
        Compiled::new(policy.clone())?;
        let stored = sqlx::query_as(
            "INSERT INTO topic_policies (topic, json_schema, max_bytes, content_types) VALUES ($1, $2, $3, $4)
             ON CONFLICT (topic) DO UPDATE SET json_schema = $2, max_bytes = $3, content_types = $4, updated_at = now()
             RETURNING topic, json_schema, max_bytes, content_types, updated_at",
        )
        .bind(&policy.topic)
        .bind(&policy.json_schema)
        .bind(policy.max_bytes)
        .bind(&policy.content_types)
        .fetch_one(&self.pool)
        .await?;
        self.invalidate();
        Ok(stored)
    }

    pub async fn delete(&self, topic: &str) -> Result<bool, sqlx::Error> {
        let gone = sqlx::query("DELETE FROM topic_policies WHERE topic = $1").bind(topic).execute(&self.pool).await?;
        self.invalidate();
        Ok(gone.rows_affected() == 1)
    }

    fn invalidate(&self) {
        *self.cache.write().expect("policy cache lock") = None;
    }
}

pub async fn list(pool: &PgPool) -> Result<Vec<Policy>, sqlx::Error> {
    sqlx::query_as("SELECT topic, json_schema, max_bytes, content_types, updated_at FROM topic_policies ORDER BY topic")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn event(topic: &str, content_type: &str, body: &[u8]) -> NewEvent {
        NewEvent {
            id: Uuid::now_v7(),
            id_from_publisher: false,
            topic: Topic::parse(topic).unwrap(),
            content_type: content_type.into(),
            body: body.to_vec(),
            tags: vec![],
            group_id: None,
        }
    }

    fn compiled(json: serde_json::Value) -> Compiled {
        Compiled::new(serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn a_schema_breach_names_the_failing_field() {
        let p = compiled(serde_json::json!({"topic": "orders.*", "json_schema": {
            "type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}}));
        assert!(p.applies_to("orders.created"));
        assert!(!p.applies_to("invoices.created"));
        let breach = p.breach(&event("orders.created", "application/json", br#"{"amount": "ten"}"#)).unwrap();
        assert!(breach.contains("/amount"), "{breach}");
        assert!(p.breach(&event("orders.created", "application/json", br#"{"amount": 10}"#)).is_none());
        assert!(p.breach(&event("orders.created", "text/plain", b"x")).unwrap().contains("not JSON"));
    }

    #[test]
    fn size_and_content_type_limits_apply() {
        let p = compiled(serde_json::json!({"topic": "t", "max_bytes": 4, "content_types": ["text/plain"]}));
        for bad in [
            serde_json::json!({"topic": "t", "content_types": ["text/plain\u{0}"]}),
            serde_json::json!({"topic": "t", "content_types": ["\u{a5}"]}),
            serde_json::json!({"topic": "t", "json_schema": {"const": "a\u{0}"}}),
        ] {
            assert!(Compiled::new(serde_json::from_value(bad.clone()).unwrap()).is_err(), "{bad}");
        }
        assert!(p.breach(&event("t", "text/plain; charset=utf-8", b"1234")).is_none());
        assert!(p.breach(&event("t", "text/plain", b"12345")).unwrap().contains("more than the 4"));
        assert!(p.breach(&event("t", "application/json", b"1")).unwrap().contains("not one of"));
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        let p: Policy = serde_json::from_value(serde_json::json!({"topic": "t", "json_schema": {"type": 12}})).unwrap();
        assert!(Compiled::new(p).is_err());
    }

    #[test]
    fn a_policy_postgres_could_not_store_is_refused_as_invalid() {
        let nul_in_schema: Policy =
            serde_json::from_value(serde_json::json!({"topic": "t", "json_schema": {"properties": {"a\0": {}}}}))
                .unwrap();
        assert!(Compiled::new(nul_in_schema).is_err());
        let nul_in_type: Policy =
            serde_json::from_value(serde_json::json!({"topic": "t", "content_types": ["text/plain\0"]})).unwrap();
        assert!(Compiled::new(nul_in_type).is_err());
    }
}

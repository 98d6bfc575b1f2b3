//! Topics and topic patterns, parsed at the edge.
//!
//! Matching rules (also in README):
//! - A topic is any string of 1 to 1024 bytes without whitespace or control characters — usually a URL
//!   (`https://example.com/feed`), or a dotted name (`UN.CEFACT.trade`).
//! - An exact subscription topic matches an event topic that is byte-for-byte equal (URLs are case-sensitive).
//! - A pattern is a topic that ends with `.*` (`UN.CEFACT.*`), or `*` alone. It matches every event topic whose
//!   dot-separated elements start with the pattern's elements, compared case-insensitively, followed by at least
//!   one more element: `UN.CEFACT.*` matches `un.cefact.trade` and `UN.CEFACT.trade.x`, not `UN.CEFACT` nor
//!   `UN.CEFACTS.x`. `*` matches every topic.
//!
//! In SQL a pattern is stored as its lowercase prefix including the final dot (`un.cefact.`; `*` as the empty
//! prefix), and matching looks the topic's own prefixes up in an index: `pattern_prefix =
//! ANY(tidings_pattern_prefixes(topic))` (see the migration that defines it).

use std::fmt;

pub const MAX_TOPIC_BYTES: usize = 1024;

/// Topics starting with this prefix (compared case-insensitively) are the hub's own: Tidings publishes its
/// operational events there (`tidings.subscription.disabled`, `tidings.delivery.dead`, ...). Nobody can publish
/// to them, subscribing to them needs the admin token (their events name other subscribers' callbacks), and an
/// event on one reaches only subscriptions whose own topic is reserved: a `*` subscription never sees them.
pub const RESERVED_PREFIX: &str = "tidings.";

/// The SQL test for "`$topic` is reserved" (see [`RESERVED_PREFIX`]).
macro_rules! is_reserved {
    ($topic:literal) => {
        concat!("(lower(left(", $topic, ", 8)) = 'tidings.')")
    };
}
pub(crate) use is_reserved;

/// A validated topic (exact or pattern).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("the topic is empty")]
    Empty,
    #[error("the topic is longer than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
    #[error("the topic contains whitespace or a control character")]
    BadCharacter,
}

impl Topic {
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        if raw.is_empty() {
            return Err(TopicError::Empty);
        }
        if raw.len() > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong);
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TopicError::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a pattern, its lowercase prefix as stored in SQL (`un.cefact.`; `""` for `*`); `None` for an exact topic.
    pub fn pattern_prefix(&self) -> Option<String> {
        if self.0 == "*" {
            return Some(String::new());
        }
        self.0.strip_suffix('*').filter(|p| p.ends_with('.')).map(str::to_lowercase)
    }

    /// Whether this topic (or pattern) is one of the hub's own ([`RESERVED_PREFIX`]).
    pub fn is_reserved(&self) -> bool {
        self.0
            .as_bytes()
            .get(..RESERVED_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
    }

    pub fn is_pattern(&self) -> bool {
        self.pattern_prefix().is_some()
    }

    /// Whether an event published on `event_topic` reaches a subscription to this topic.
    pub fn matches(&self, event_topic: &str) -> bool {
        match self.pattern_prefix() {
            None => self.0 == event_topic,
            Some(prefix) => {
                let topic = event_topic.to_lowercase();
                topic.starts_with(&prefix) && topic.len() > prefix.len()
            }
        }
    }

    /// Whether every topic this one matches is also matched by `other` (used by the allow list).
    pub fn is_covered_by(&self, other: &Topic) -> bool {
        match (self.pattern_prefix(), other.pattern_prefix()) {
            (_, None) => self == other,
            (None, Some(_)) => other.matches(&self.0),
            (Some(mine), Some(theirs)) => mine.starts_with(&theirs),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", self.0)
    }
}

/// Why `TIDINGS_TOPIC_ALLOW` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowListError {
    #[error("`{entry}`: {error}")]
    Topic { entry: String, error: TopicError },
    #[error("name at least one topic or pattern (`*` allows every topic)")]
    Empty,
}

/// The topics subscribers may subscribe to (`TIDINGS_TOPIC_ALLOW`).
#[derive(Debug, Clone)]
pub struct TopicAllowList(Vec<Topic>);

impl TopicAllowList {
    pub fn parse(raw: &str) -> Result<Self, AllowListError> {
        let topics = raw
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Topic::parse(t).map_err(|error| AllowListError::Topic { entry: t.to_owned(), error }))
            .collect::<Result<Vec<_>, _>>()?;
        if topics.is_empty() {
            return Err(AllowListError::Empty);
        }
        Ok(Self(topics))
    }

    pub fn allows(&self, topic: &Topic) -> bool {
        self.0.iter().any(|allowed| topic.is_covered_by(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn exact_topics_match_byte_for_byte() {
        assert!(t("https://example.com/Feed").matches("https://example.com/Feed"));
        assert!(!t("https://example.com/Feed").matches("https://example.com/feed"));
    }

    #[test]
    fn patterns_match_deeper_topics_case_insensitively() {
        let p = t("UN.CEFACT.*");
        assert!(p.is_pattern());
        assert!(p.matches("un.cefact.trade"));
        assert!(p.matches("UN.CEFACT.trade.x"));
        assert!(!p.matches("UN.CEFACT"));
        assert!(!p.matches("UN.CEFACTS.x"));
        assert!(!p.matches("AU.UN.CEFACT.x"));
    }

    #[test]
    fn a_lone_star_matches_everything() {
        assert!(t("*").matches("anything/at/all"));
        assert_eq!(t("*").pattern_prefix(), Some(String::new()));
    }

    #[test]
    fn a_star_inside_a_topic_is_not_a_pattern() {
        assert!(!t("a*").is_pattern());
        assert!(!t("a.*.b").is_pattern());
    }

    #[test]
    fn the_hubs_own_topics_are_recognised_whatever_their_case() {
        assert!(t("tidings.delivery.dead").is_reserved());
        assert!(t("Tidings.subscription.*").is_reserved());
        assert!(!t("tidings").is_reserved());
        assert!(!t("*").is_reserved());
        assert!(!t("https://tidings.example/feed").is_reserved());
        assert!(!t("tidingsé.x").is_reserved());
    }

    #[test]
    fn bad_topics_are_refused() {
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse("a b"), Err(TopicError::BadCharacter));
        assert_eq!(Topic::parse(&"x".repeat(1025)), Err(TopicError::TooLong));
    }

    #[test]
    fn the_allow_list_covers_exact_topics_and_narrower_patterns() {
        let allow = TopicAllowList::parse("UN.*, https://example.com/feed").unwrap();
        assert!(allow.allows(&t("un.cefact.*")));
        assert!(allow.allows(&t("UN.x")));
        assert!(allow.allows(&t("https://example.com/feed")));
        assert!(!allow.allows(&t("*")));
        assert!(!allow.allows(&t("AU.x")));
        assert!(!allow.allows(&t("https://example.com/other")));
        assert!(TopicAllowList::parse(" , ").is_err());
    }
}

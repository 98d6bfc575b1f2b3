//! A subscription's content filter: a small JSON predicate over the event's tags and, for JSON bodies, its
//! fields. Asked for with the optional `hub.x-filter` parameter of a subscribe request (applied when its
//! verification succeeds) or set by the admin API; parsed and checked here, so a malformed one is refused before
//! anything is stored, and compiled to a PostgreSQL `jsonpath` that the spreader evaluates when it writes jobs: an
//! event the filter leaves out never becomes a delivery.
//!
//! Every node is one JSON object:
//!
//! | node | true when |
//! | --- | --- |
//! | `{"tag": "paid"}` | the event carries the tag |
//! | `{"field": "order.status", "eq": "paid"}` | the body's field equals the string, number, boolean or null |
//! | `{"field": "order.status", "in": ["paid", "refunded"]}` | it equals one of them |
//! | `{"field": "customer.id", "exists": true}` | the field is present (`false`: absent) |
//! | `{"field": "amount", "gt": 100}` (`gte`, `lt`, `lte`) | it is a number and compares so |
//! | `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` | all, any, not |
//!
//! A field is a dot-separated path of keys; where the path meets an array, any element may match. A body that is
//! not JSON (by content type, or unparseable) has no fields: field nodes are false for it (and `exists: false`
//! true), tag nodes still apply. The compiled path is evaluated over the document `{"tags": [...], "body": ...}`
//! (`tidings_event_document` in the migration that adds filters).

use serde_json::{Map, Value};

/// The filter's JSON at most, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Nodes at most.
pub const MAX_NODES: usize = 64;
/// Nesting at most (a leaf alone is depth 1).
pub const MAX_DEPTH: usize = 8;
/// Values of one `in` at most.
pub const MAX_IN: usize = 100;
/// Keys of one field path at most, and the bytes of one key.
pub const MAX_PATH_KEYS: usize = 16;
pub const MAX_KEY_BYTES: usize = 128;

/// A checked filter: the predicate as given (shown back by the API) and the jsonpath it compiles to.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    source: Value,
    path: String,
}

/// Why a filter was refused; the message says where (`and[1].not`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the filter is not JSON: {0}")]
    NotJson(String),
    #[error("the filter is longer than {MAX_FILTER_BYTES} bytes")]
    TooLong,
    #[error("the filter has more than {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("the filter nests deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("at {at}: {reason}")]
    Node { at: String, reason: String },
}

const COMPARISONS: [(&str, &str); 4] = [("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")];

impl Filter {
    /// Parses the text of `hub.x-filter` (or an admin request's body).
    pub fn parse(raw: &str) -> Result<Self, FilterError> {
        if raw.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong);
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| FilterError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(source: Value) -> Result<Self, FilterError> {
        if serde_json::to_string(&source).map_or(true, |s| s.len() > MAX_FILTER_BYTES) {
            return Err(FilterError::TooLong);
        }
        let mut nodes = 0;
        let path = compile(&source, "filter", 1, &mut nodes)?;
        Ok(Self { source, path })
    }

    /// The predicate as given.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// The PostgreSQL `jsonpath` predicate it compiles to.
    pub fn jsonpath(&self) -> &str {
        &self.path
    }
}

fn refuse(at: &str, reason: impl Into<String>) -> FilterError {
    FilterError::Node { at: at.to_owned(), reason: reason.into() }
}

fn compile(node: &Value, at: &str, depth: usize, nodes: &mut usize) -> Result<String, FilterError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(FilterError::TooManyNodes);
    }
    if depth > MAX_DEPTH {
        return Err(FilterError::TooDeep);
    }
    let Some(object) = node.as_object() else {
        return Err(refuse(at, "each node is an object such as {\"tag\": \"paid\"} or {\"and\": [...]}"));
    };
    for combinator in ["and", "or"] {
        if let Some(children) = object.get(combinator) {
            only(object, &[combinator], at)?;
            let children = children
                .as_array()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| refuse(at, format!("`{combinator}` takes a non-empty array of nodes")))?;
            let parts = children
                .iter()
                .enumerate()
                .map(|(i, child)| compile(child, &format!("{at}.{combinator}[{i}]"), depth + 1, nodes))
                .collect::<Result<Vec<_>, _>>()?;
            let joiner = if combinator == "and" { " && " } else { " || " };
            return Ok(format!("({})", parts.join(joiner)));
        }
    }
    if let Some(child) = object.get("not") {
        only(object, &["not"], at)?;
        return Ok(format!("!({})", compile(child, &format!("{at}.not"), depth + 1, nodes)?));
    }
    if let Some(tag) = object.get("tag") {
        only(object, &["tag"], at)?;
        let tag = tag.as_str().filter(|t| !t.is_empty()).ok_or_else(|| refuse(at, "`tag` takes a non-empty string"))?;
        return Ok(format!("$.\"tags\"[*] == {}", literal(&Value::from(tag))));
    }
    let Some(field) = object.get("field") else {
        return Err(refuse(at, "a node is one of tag, field, and, or, not"));
    };
    let field =
        field.as_str().ok_or_else(|| refuse(at, "`field` takes a dot-separated path such as \"order.status\""))?;
    let path = field_path(field, at)?;
    let tests: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| k.as_str() != "field").collect();
    let [(test, operand)] = tests.as_slice() else {
        return Err(refuse(at, "a field node has one test: eq, in, exists, gt, gte, lt or lte"));
    };
    match test.as_str() {
        "eq" => scalar(operand, at, "eq").map(|lit| format!("{path} == {lit}")),
        "in" => {
            let values = operand
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= MAX_IN)
                .ok_or_else(|| refuse(at, format!("`in` takes an array of 1 to {MAX_IN} values")))?;
            let alternatives = values
                .iter()
                .map(|v| scalar(v, at, "in").map(|lit| format!("{path} == {lit}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(format!("({})", alternatives.join(" || ")))
        }
        "exists" => match operand.as_bool() {
            Some(true) => Ok(format!("exists({path})")),
            Some(false) => Ok(format!("!(exists({path}))")),
            None => Err(refuse(at, "`exists` takes true or false")),
        },
        other => {
            let Some((_, op)) = COMPARISONS.iter().find(|(name, _)| *name == other) else {
                return Err(refuse(at, format!("unknown test `{other}`: use eq, in, exists, gt, gte, lt or lte")));
            };
            if !operand.is_number() {
                return Err(refuse(at, format!("`{other}` takes a number")));
            }
            Ok(format!("{path} {op} {}", literal(operand)))
        }
    }
}

/// Refuses keys other than `allowed` next to a combinator or a tag.
fn only(object: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), FilterError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(refuse(at, format!("`{extra}` cannot stand beside `{}` in one node", allowed[0]))),
        None => Ok(()),
    }
}

/// The jsonpath of a field under the body: every key quoted, so no key can be read as jsonpath syntax.
fn field_path(field: &str, at: &str) -> Result<String, FilterError> {
    let refused = |reason: String| refuse(at, format!("field {field:?}: {reason}"));
    let keys: Vec<&str> = field.split('.').collect();
    if keys.len() > MAX_PATH_KEYS {
        return Err(refused(format!("at most {MAX_PATH_KEYS} keys")));
    }
    let mut path = String::from("$.\"body\"");
    for key in keys {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(refused(format!("each key is 1 to {MAX_KEY_BYTES} bytes without control characters")));
        }
        path.push('.');
        path.push_str(&literal(&Value::from(key)));
    }
    Ok(path)
}

fn scalar(value: &Value, at: &str, test: &str) -> Result<String, FilterError> {
    if value.is_array() || value.is_object() {
        return Err(refuse(at, format!("`{test}` compares with strings, numbers, booleans or null")));
    }
    Ok(literal(value))
}

/// A JSON scalar as a jsonpath literal: jsonpath strings take JSON's escapes, and its numbers, booleans and null
/// are written as in JSON.
fn literal(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(raw: &str) -> String {
        Filter::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}")).jsonpath().to_owned()
    }

    fn refused(raw: &str) -> String {
        Filter::parse(raw).expect_err(raw).to_string()
    }

    #[test]
    fn each_node_compiles_to_a_jsonpath_predicate_over_tags_and_body() {
        assert_eq!(compiled(r#"{"tag": "paid"}"#), r#"$."tags"[*] == "paid""#);
        assert_eq!(compiled(r#"{"field": "order.status", "eq": "paid"}"#), r#"$."body"."order"."status" == "paid""#);
        assert_eq!(compiled(r#"{"field": "n", "in": [1, null]}"#), r#"($."body"."n" == 1 || $."body"."n" == null)"#);
        assert_eq!(compiled(r#"{"field": "a", "exists": false}"#), r#"!(exists($."body"."a"))"#);
        assert_eq!(compiled(r#"{"field": "amount", "gte": -2.5}"#), r#"$."body"."amount" >= -2.5"#);
        assert_eq!(
            compiled(r#"{"and": [{"tag": "x"}, {"not": {"or": [{"tag": "y"}, {"field": "b", "eq": true}]}}]}"#),
            r#"($."tags"[*] == "x" && !(($."tags"[*] == "y" || $."body"."b" == true)))"#
        );
    }

    #[test]
    fn keys_and_strings_are_quoted_so_they_cannot_change_the_expression() {
        assert_eq!(
            compiled(r#"{"field": "a\" || true || \"", "eq": "x\" || true"}"#),
            r#"$."body"."a\" || true || \"" == "x\" || true""#
        );
    }

    #[test]
    fn malformed_filters_are_refused_saying_where_and_why() {
        assert!(refused("{").contains("not JSON"));
        assert!(refused("[]").contains("each node is an object"));
        assert!(refused(r#"{"and": []}"#).contains("non-empty array"));
        assert!(refused(r#"{"and": [{"tag": 1}]}"#).contains("filter.and[0]: `tag` takes a non-empty string"));
        assert!(refused(r#"{"field": "a", "gt": "5"}"#).contains("`gt` takes a number"));
        assert!(refused(r#"{"field": "a", "eq": 1, "gt": 2}"#).contains("one test"));
        assert!(refused(r#"{"field": "a..b", "eq": 1}"#).contains("each key"));
        assert!(refused(r#"{"field": "a", "like": "x"}"#).contains("unknown test `like`"));
        assert!(refused(r#"{"field": "a", "in": [[1]]}"#).contains("strings, numbers"));
        assert!(refused(r#"{"tag": "a", "field": "b"}"#).contains("cannot stand beside"));
        assert!(refused(r#"{"what": 1}"#).contains("one of tag, field"));
        let deep = (0..9).fold(r#"{"tag": "x"}"#.to_owned(), |inner, _| format!(r#"{{"not": {inner}}}"#));
        assert_eq!(refused(&deep), FilterError::TooDeep.to_string());
        let wide = format!(r#"{{"or": [{}]}}"#, vec![r#"{"tag": "x"}"#; 64].join(","));
        assert_eq!(refused(&wide), FilterError::TooManyNodes.to_string());
        assert_eq!(refused(&format!(r#"{{"tag": "{}"}}"#, "x".repeat(5000))), FilterError::TooLong.to_string());
    }
}

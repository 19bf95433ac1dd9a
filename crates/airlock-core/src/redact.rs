//! Policy `redact` paths: what policy keeps out of what leaves airlock (exported telemetry and
//! webhook bodies).
//!
//! A path names a value in an action's `arguments` or in its `result` (the result's `output`):
//! `arguments.password`, `arguments.db.conn_string`, `arguments.users.*.token`,
//! `result.structuredContent.secret`. Segments are separated by dots; each is an object key, an
//! array index (digits, which also match an object key of that name), or `*` for every key or
//! element at that level. `arguments` or `result` alone covers the whole value, and `*` alone
//! covers both. The value a path reaches, whatever its type, is replaced by `[REDACTED]`; a
//! path that reaches nothing changes nothing. A text block of the result that repeats
//! `structuredContent` as JSON is redacted along with it.
//!
//! A `redact` rule that can't be read — it fails, is not a set of strings, or holds a path that
//! does not parse — redacts everything ([`REDACT_ALL`]): content is never exported because a
//! redaction was broken.

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";
/// The path that covers all content, arguments and result alike.
pub const REDACT_ALL: &str = "*";
/// Rule name of the warning recorded when policy `redact` could not be read.
pub const RULE_REDACT_ERROR: &str = "airlock.redact_error";

/// Why a policy's `redact` value can't be used (the caller then redacts everything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    /// `redact` is not a set (nor undefined).
    #[error("`redact` must be a set of path strings, got `{value}`")]
    NotASet {
        /// What it is instead.
        value: Value,
    },
    /// An element of `redact` is not a string.
    #[error("`redact` must be a set of path strings; `{item}` is not a string")]
    NotAString {
        /// The element.
        item: Value,
    },
    /// A path starts with something other than `arguments` or `result`.
    #[error("redact path `{path}` must start with `arguments` or `result` (or be `*` for everything)")]
    UnknownRoot {
        /// The path.
        path: String,
    },
    /// A path has two dots in a row, or ends with one.
    #[error("redact path `{path}` has an empty segment")]
    EmptySegment {
        /// The path.
        path: String,
    },
}

/// Which value of an action a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// The call's arguments.
    Arguments,
    /// What the call returned (`result.output`).
    Result,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

impl Segment {
    fn matches_key(&self, key: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Key(k) => k == key,
        }
    }

    fn matches_index(&self, index: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Key(k) => k.parse::<usize>().is_ok_and(|i| i == index),
        }
    }
}

/// A parsed path: `None` as the root means every root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Path {
    root: Option<Root>,
    segments: Vec<Segment>,
}

fn parse(path: &str) -> Result<Path, RedactError> {
    if path == REDACT_ALL {
        return Ok(Path { root: None, segments: Vec::new() });
    }
    let mut parts = path.split('.');
    let root = match parts.next() {
        Some("arguments") => Root::Arguments,
        Some("result") => Root::Result,
        _ => return Err(RedactError::UnknownRoot { path: path.to_string() }),
    };
    let mut segments = Vec::new();
    for part in parts {
        if part.is_empty() {
            return Err(RedactError::EmptySegment { path: path.to_string() });
        }
        segments.push(if part == "*" { Segment::Any } else { Segment::Key(part.to_string()) });
    }
    Ok(Path { root: Some(root), segments })
}

/// Reads the value of policy `redact` (a set of path strings; undefined is empty) into sorted,
/// distinct paths. `Err` says why it can't be used; the caller then redacts everything.
pub fn paths_from_policy(value: Option<&Value>) -> Result<Vec<String>, RedactError> {
    let items = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(RedactError::NotASet { value: other.clone() }),
    };
    let mut paths = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(path) = item else {
            return Err(RedactError::NotAString { item: item.clone() });
        };
        parse(path)?;
        paths.push(path.clone());
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// `value` (the action's `root`) with every path of `paths` that starts at `root` replaced by
/// [`REDACTED`]. A path that does not parse redacts the whole value, as does [`REDACT_ALL`].
pub fn redact(value: &Value, root: Root, paths: &[String]) -> Value {
    let mut out = value.clone();
    for path in paths {
        match parse(path) {
            Ok(Path { root: None, .. }) | Err(_) => return Value::String(REDACTED.into()),
            Ok(Path { root: Some(r), segments }) if r == root => {
                if segments.is_empty() {
                    return Value::String(REDACTED.into());
                }
                apply(&mut out, &segments);
            }
            Ok(_) => {}
        }
    }
    if root == Root::Result {
        redact_text_copies(value, &mut out);
    }
    out
}

/// MCP servers (and rmcp's `CallToolResult::structured`) repeat `structuredContent` as JSON text
/// in a `content` block for older clients. When redaction changed the structured copy, a text
/// block holding the same JSON gets the redacted JSON, so the secret does not leave through it.
fn redact_text_copies(original: &Value, out: &mut Value) {
    let Some(structured) = original.get("structuredContent") else { return };
    let Some(redacted) = out.get("structuredContent").cloned() else { return };
    if &redacted == structured {
        return;
    }
    let Some(blocks) = out.get_mut("content").and_then(Value::as_array_mut) else { return };
    for block in blocks {
        let is_copy = block
            .get("text")
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|parsed| &parsed == structured);
        if is_copy && let Some(text) = block.get_mut("text") {
            *text = Value::String(redacted.to_string());
        }
    }
}

fn apply(value: &mut Value, segments: &[Segment]) {
    let Some((first, rest)) = segments.split_first() else {
        *value = Value::String(REDACTED.into());
        return;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if first.matches_key(key) {
                    apply(child, rest);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                if first.matches_index(i) {
                    apply(child, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value, root: Root, paths: &[&str], expected: Value) {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        assert_eq!(redact(&value, root, &paths), expected, "paths {paths:?}");
    }

    #[test]
    fn paths_replace_what_they_reach() {
        let args = json!({"user": "ann", "password": "hunter2", "db": {"conn_string": "pg://x", "name": "orders"}});
        check(
            args.clone(),
            Root::Arguments,
            &["arguments.password", "arguments.db.conn_string"],
            json!({"user": "ann", "password": "[REDACTED]", "db": {"conn_string": "[REDACTED]", "name": "orders"}}),
        );
        // Objects are replaced whole; missing paths change nothing; other roots are left alone.
        check(
            args.clone(),
            Root::Arguments,
            &["arguments.db", "arguments.nope.deeper", "result.password"],
            json!({"user": "ann", "password": "hunter2", "db": "[REDACTED]"}),
        );
        check(args.clone(), Root::Arguments, &["arguments"], json!("[REDACTED]"));
        check(args.clone(), Root::Result, &["arguments"], args.clone());
        check(args, Root::Result, &["*"], json!("[REDACTED]"));
    }

    #[test]
    fn wildcards_and_indices_walk_arrays_and_objects() {
        let v = json!({"users": [{"name": "a", "token": "t1"}, {"name": "b", "token": "t2"}], "m": {"x": 1, "y": 2}});
        check(
            v.clone(),
            Root::Result,
            &["result.users.*.token", "result.m.*"],
            json!({"users": [{"name": "a", "token": "[REDACTED]"}, {"name": "b", "token": "[REDACTED]"}], "m": {"x": "[REDACTED]", "y": "[REDACTED]"}}),
        );
        check(
            v,
            Root::Result,
            &["result.users.1"],
            json!({"users": [{"name": "a", "token": "t1"}, "[REDACTED]"], "m": {"x": 1, "y": 2}}),
        );
    }

    #[test]
    fn policy_values_are_validated() {
        assert_eq!(paths_from_policy(None), Ok(vec![]));
        assert_eq!(
            paths_from_policy(Some(&json!(["arguments.b", "arguments.a", "arguments.b"]))),
            Ok(vec!["arguments.a".to_string(), "arguments.b".to_string()])
        );
        assert_eq!(paths_from_policy(Some(&json!(["*"]))), Ok(vec!["*".to_string()]));
        let cases = [
            (json!("arguments.a"), "`redact` must be a set of path strings, got `\"arguments.a\"`"),
            (json!([42]), "`redact` must be a set of path strings; `42` is not a string"),
            (
                json!(["password"]),
                "redact path `password` must start with `arguments` or `result` (or be `*` for everything)",
            ),
            (json!(["arguments..a"]), "redact path `arguments..a` has an empty segment"),
            (
                json!(["args.x"]),
                "redact path `args.x` must start with `arguments` or `result` (or be `*` for everything)",
            ),
        ];
        for (bad, why) in cases {
            assert_eq!(paths_from_policy(Some(&bad)).map_err(|e| e.to_string()), Err(why.to_string()), "{bad}");
        }
    }

    #[test]
    fn the_text_copy_of_structured_content_is_redacted_with_it() {
        let result = serde_json::json!({
            "content": [{"type": "text", "text": "{\"token\":\"abc\",\"id\":1}"}, {"type": "text", "text": "note"}],
            "structuredContent": {"token": "abc", "id": 1}
        });
        let out = redact(&result, Root::Result, &["result.structuredContent.token".to_string()]);
        assert_eq!(out["structuredContent"], serde_json::json!({"token": REDACTED, "id": 1}));
        let copy: Value = serde_json::from_str(out["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(copy, serde_json::json!({"token": REDACTED, "id": 1}));
        assert_eq!(out["content"][1]["text"], "note");
        assert!(!out.to_string().contains("abc"));
    }
}

//! Canonical JSON and action digests.
//!
//! Two calls are "the same call" when their tool name and arguments are equal as JSON values,
//! whatever the key order, white space or number spelling (`1.0` and `1`). The digest is
//! `sha256:` + hex of the canonical JSON of `{"arguments": …, "tool": …}`.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Writes `value` as canonical JSON: object keys sorted by their UTF-16 code units (as RFC 8785
/// does), no insignificant white space, and integral floats written as integers.
///
/// The key order is imposed here rather than relied upon from `serde_json::Map`, because another
/// crate in the build may switch that map to insertion order.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&canonical_number(n)),
        Value::String(s) => out.push_str(&quote(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&quote(k));
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn quote(s: &str) -> String {
    // serde_json's string escaping is already minimal and deterministic.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        // 2^53: beyond it an f64 no longer names one integer.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
            format!("{}", f as i64)
        }
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

/// The digest that identifies a call: `sha256:<hex>` of the canonical JSON of tool and arguments.
pub fn action_digest(tool: &str, arguments: &Value) -> String {
    let doc = serde_json::json!({ "tool": tool, "arguments": arguments });
    sha256_prefixed(canonical_json(&doc).as_bytes())
}

/// `sha256:` followed by the lowercase hex SHA-256 of `bytes`.
pub fn sha256_prefixed(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_digest() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(action_digest("t", &a), action_digest("t", &b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
    }

    #[test]
    fn integral_floats_equal_integers() {
        assert_eq!(action_digest("t", &json!({"n": 3.0})), action_digest("t", &json!({"n": 3})));
        assert_ne!(action_digest("t", &json!({"n": 3.5})), action_digest("t", &json!({"n": 3})));
    }

    #[test]
    fn tool_and_arguments_both_count() {
        let args = json!({"count": 3});
        assert_ne!(action_digest("a", &args), action_digest("b", &args));
        assert_ne!(action_digest("a", &args), action_digest("a", &json!({"count": 4})));
        assert!(action_digest("a", &args).starts_with("sha256:"));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-z\\u{e9}\"\\\\]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_]{1,5}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_json_round_trips_to_an_equal_value(v in arb_json()) {
            let text = canonical_json(&v);
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn canonical_json_is_a_fixed_point(v in arb_json()) {
            let once = canonical_json(&v);
            let again = canonical_json(&serde_json::from_str(&once).unwrap());
            prop_assert_eq!(once, again);
        }

        #[test]
        fn pretty_printing_does_not_change_the_digest(v in arb_json()) {
            let pretty: Value = serde_json::from_str(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
            prop_assert_eq!(action_digest("x", &v), action_digest("x", &pretty));
        }
    }
}

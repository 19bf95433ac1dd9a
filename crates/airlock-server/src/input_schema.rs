//! A call's arguments checked against the `inputSchema` its upstream lists for the tool, before
//! policy sees them. The guard itself (what a failed check decides) is
//! `airlock_core::guard::input_schema`; this module holds the compiled schemas and runs them, so
//! that HTTP and MCP calls get the same check from [`crate::engine::Engine::submit`].
//!
//! Each tool's schema is compiled once: when its upstream's tool list is loaded or refreshed
//! ([`InputSchemas::refresh`], driven by `serve`), and again only when the schema itself changes.
//! A call that arrives before the refresh has caught up compiles the new schema then, so no call
//! is ever checked against a schema its upstream no longer lists.
//!
//! Schemas come from upstream servers, so they are input airlock does not control:
//!
//! - they are compiled offline: a `$ref` to anything outside the schema is a compile error, never
//!   fetched over the network or read from disk;
//! - a schema that does not compile denies every call to its tool (fail closed), and is listed
//!   with its error in `GET /v1/upstreams`;
//! - a panic while compiling or checking is caught and denies the call, instead of taking the
//!   request down;
//! - the problems reported never contain the offending value (it may be a secret, and a
//!   decision's reasons are exported where arguments are not).
//!
//! See docs/adr/0013-input-schema-validation.md.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use airlock_core::guard::{InputCheck, InputViolation};
use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// Longest problem or compile error kept, in characters: an `enum` of a thousand values must
/// not make a reason of a thousand values.
const MAX_PROBLEM_CHARS: usize = 300;

/// Where the engine finds the tools the upstreams list now.
pub trait ListedTools: Send + Sync {
    /// Tool `name` of `upstream`, if the upstream is connected and lists it.
    fn tool(&self, upstream: &str, name: &str) -> Option<Tool>;
    /// Every tool listed now, as `(upstream, tool)`.
    fn tools(&self) -> Vec<(String, Tool)>;
}

impl ListedTools for airlock_mcp::Upstreams {
    fn tool(&self, upstream: &str, name: &str) -> Option<Tool> {
        airlock_mcp::Upstreams::tool(self, upstream, name)
    }

    fn tools(&self) -> Vec<(String, Tool)> {
        airlock_mcp::Upstreams::tools(self)
    }
}

/// One tool's schema and what compiling it gave.
struct Compiled {
    /// The schema as listed (compared by pointer first: a refresh makes new ones).
    schema: Arc<JsonObject>,
    /// The validator, or why the schema does not compile.
    validator: Result<Arc<jsonschema::Validator>, String>,
}

/// A tool whose schema does not compile, as `GET /v1/upstreams` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnusableSchema {
    /// The upstream.
    pub upstream: String,
    /// The tool's name at the upstream.
    pub tool: String,
    /// Why it does not compile.
    pub error: String,
}

/// The compiled input schemas of every listed tool.
#[derive(Default)]
pub struct InputSchemas {
    compiled: Mutex<HashMap<(String, String), Arc<Compiled>>>,
}

impl std::fmt::Debug for InputSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchemas").field("tools", &crate::engine::lock(&self.compiled).len()).finish()
    }
}

impl InputSchemas {
    /// Compiles the schemas of `tools` (the tools listed now) that are new or changed, keeps the
    /// rest, and forgets tools no longer listed.
    pub fn refresh(&self, tools: &[(String, Tool)]) {
        let known = crate::engine::lock(&self.compiled).clone();
        let mut next = HashMap::with_capacity(tools.len());
        for (upstream, tool) in tools {
            let key = (upstream.clone(), tool.name.to_string());
            let entry = match known.get(&key) {
                Some(c) if Arc::ptr_eq(&c.schema, &tool.input_schema) => c.clone(),
                // Listed again unchanged (a reconnect): keep the validator, take the new
                // allocation so that calls find it by pointer.
                Some(c) if c.schema == tool.input_schema => {
                    Arc::new(Compiled { schema: tool.input_schema.clone(), validator: c.validator.clone() })
                }
                _ => {
                    let compiled = Arc::new(compile(&tool.input_schema));
                    if let Err(error) = &compiled.validator {
                        warn_unusable(upstream, &tool.name, error);
                    }
                    compiled
                }
            };
            next.insert(key, entry);
        }
        *crate::engine::lock(&self.compiled) = next;
    }

    /// Checks `arguments` of a call to `tool` of `upstream` (the tool as listed now) against its
    /// input schema.
    pub fn check(&self, upstream: &str, tool: &Tool, arguments: &Value) -> InputCheck {
        let compiled = self.compiled(upstream, tool);
        let validator = match &compiled.validator {
            Ok(v) => v,
            Err(error) => return InputCheck::Unusable { error: error.clone() },
        };
        let checked = catch_unwind(AssertUnwindSafe(|| {
            validator
                .iter_errors(arguments)
                .map(|e| InputViolation {
                    path: argument_path(e.instance_path()),
                    problem: clip(e.masked().to_string()),
                })
                .collect::<Vec<_>>()
        }));
        match checked {
            Ok(violations) if violations.is_empty() => InputCheck::Valid,
            Ok(violations) => InputCheck::Invalid(violations),
            Err(_) => InputCheck::Unusable { error: "checking the arguments against it failed".into() },
        }
    }

    /// The tools whose schema does not compile, by upstream and tool.
    pub fn unusable(&self) -> Vec<UnusableSchema> {
        let mut out: Vec<UnusableSchema> = crate::engine::lock(&self.compiled)
            .iter()
            .filter_map(|((upstream, tool), c)| {
                c.validator.as_ref().err().map(|error| UnusableSchema {
                    upstream: upstream.clone(),
                    tool: tool.clone(),
                    error: error.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.upstream, &a.tool).cmp(&(&b.upstream, &b.tool)));
        out
    }

    /// The compiled schema of `tool`, compiling it now if the refresh has not seen this schema.
    fn compiled(&self, upstream: &str, tool: &Tool) -> Arc<Compiled> {
        let key = (upstream.to_string(), tool.name.to_string());
        if let Some(c) = crate::engine::lock(&self.compiled).get(&key)
            && same(&c.schema, &tool.input_schema)
        {
            return c.clone();
        }
        // Outside the lock: other tools' calls need not wait for this compilation.
        let compiled = Arc::new(compile(&tool.input_schema));
        if let Err(error) = &compiled.validator {
            warn_unusable(upstream, &tool.name, error);
        }
        crate::engine::lock(&self.compiled).insert(key, compiled.clone());
        compiled
    }
}

fn warn_unusable(upstream: &str, tool: &str, error: &str) {
    tracing::warn!(upstream, tool, error, "the tool's input schema does not compile; calls to it are denied");
}

/// Whether two listed schemas are the same: the same allocation (nothing was refreshed), or equal.
fn same(a: &Arc<JsonObject>, b: &Arc<JsonObject>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Compiles one schema offline: references outside it are refused, not fetched.
fn compile(schema: &Arc<JsonObject>) -> Compiled {
    let value = Value::Object((**schema).clone());
    let built = catch_unwind(AssertUnwindSafe(|| jsonschema::options().offline().build(&value)));
    let validator = match built {
        Ok(Ok(v)) => Ok(Arc::new(v)),
        Ok(Err(e)) => Err(clip(e.to_string())),
        Err(_) => Err("the schema compiler failed on it".into()),
    };
    // The listed allocation itself, so that the next call finds it by pointer.
    Compiled { schema: schema.clone(), validator }
}

/// A JSON pointer into the arguments, written as a `redact` path: `/hosts/0` is `arguments.hosts.0`.
fn argument_path(location: &jsonschema::paths::Location) -> String {
    let mut path = String::from("arguments");
    for segment in location.segments() {
        path.push('.');
        path.push_str(&segment.to_string());
    }
    path
}

/// `text` cut to [`MAX_PROBLEM_CHARS`] characters.
fn clip(text: String) -> String {
    if text.chars().count() <= MAX_PROBLEM_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, schema: Value) -> Tool {
        let Value::Object(schema) = schema else { panic!("a schema is an object") };
        Tool::new(name.to_string(), "a tool", Arc::new(schema))
    }

    fn port_tool() -> Tool {
        tool(
            "scan",
            json!({"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535},
                   "hosts": {"type": "array", "items": {"type": "string"}}}, "required": ["port"]}),
        )
    }

    #[test]
    fn arguments_are_checked_and_problems_say_where_without_the_value() {
        let schemas = InputSchemas::default();
        let t = port_tool();
        schemas.refresh(&[("fake".into(), t.clone())]);
        assert_eq!(schemas.check("fake", &t, &json!({"port": 22})), InputCheck::Valid);
        let InputCheck::Invalid(v) = schemas.check("fake", &t, &json!({"port": "hunter2", "hosts": ["a", 7]})) else {
            panic!("a string port is not an integer");
        };
        let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"arguments.port") && paths.contains(&"arguments.hosts.1"), "{v:?}");
        assert!(v.iter().all(|v| !v.problem.contains("hunter2")), "the value is not repeated: {v:?}");
        assert!(v.iter().any(|v| v.problem.contains("integer")), "{v:?}");
        let InputCheck::Invalid(v) = schemas.check("fake", &t, &json!({})) else { panic!("`port` is required") };
        assert_eq!(v[0].path, "arguments", "{v:?}");
        assert!(v[0].problem.contains("port"), "{v:?}");
    }

    #[test]
    fn a_schema_that_does_not_compile_makes_calls_unusable_and_is_listed() {
        let schemas = InputSchemas::default();
        let bad_type = tool("bad", json!({"type": "object", "properties": {"n": {"type": "integr"}}}));
        let remote = tool("remote", json!({"$ref": "http://127.0.0.1:9/schema.json"}));
        let file = tool("file", json!({"$ref": "file:///etc/passwd"}));
        let tools: Vec<(String, Tool)> =
            [&bad_type, &remote, &file].into_iter().map(|t| ("fake".to_string(), t.clone())).collect();
        schemas.refresh(&tools);
        for t in [&bad_type, &remote, &file] {
            assert!(matches!(schemas.check("fake", t, &json!({"n": 1})), InputCheck::Unusable { .. }), "{}", t.name);
        }
        let listed: Vec<String> = schemas.unusable().into_iter().map(|u| u.tool).collect();
        assert_eq!(listed, ["bad", "file", "remote"]);
    }

    #[test]
    fn each_schema_is_compiled_once_per_version() {
        let schemas = InputSchemas::default();
        let t = port_tool();
        schemas.refresh(&[("fake".into(), t.clone())]);
        let first = schemas.compiled("fake", &t);
        // A refresh that lists the same schema again (a reconnect) keeps the compiled one.
        let again = tool("scan", Value::Object((*t.input_schema).clone()));
        schemas.refresh(&[("fake".into(), again.clone())]);
        let kept = schemas.compiled("fake", &again);
        let validator = |c: &Compiled| c.validator.as_ref().ok().cloned().expect("a validator");
        assert!(Arc::ptr_eq(&validator(&first), &validator(&kept)), "not compiled again");
        assert!(Arc::ptr_eq(&kept.schema, &again.input_schema), "found by pointer from now on");
        // A changed schema is compiled when a call meets it, before any refresh.
        let changed = tool("scan", json!({"type": "object", "properties": {"port": {"type": "string"}}}));
        assert_eq!(schemas.check("fake", &changed, &json!({"port": "22"})), InputCheck::Valid);
        assert!(!Arc::ptr_eq(&first, &schemas.compiled("fake", &changed)));
        // The listed schema is kept as it is, so later calls find it by pointer.
        assert!(Arc::ptr_eq(&schemas.compiled("fake", &changed).schema, &changed.input_schema));
        // Tools no longer listed are forgotten.
        schemas.refresh(&[]);
        assert!(crate::engine::lock(&schemas.compiled).is_empty());
    }

    #[test]
    fn long_problems_are_clipped() {
        let options: Vec<String> = (0..500).map(|i| format!("option-{i}")).collect();
        let schemas = InputSchemas::default();
        let t = tool("pick", json!({"type": "object", "properties": {"o": {"enum": options}}}));
        let InputCheck::Invalid(v) = schemas.check("fake", &t, &json!({"o": "none"})) else { panic!("not an option") };
        assert!(v[0].problem.chars().count() <= MAX_PROBLEM_CHARS + 1, "{}", v[0].problem);
    }
}

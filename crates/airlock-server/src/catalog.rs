//! What airlock knows about a tool: which upstream serves it, its annotations after local
//! overrides, whether it is read-only, what it costs.
//!
//! Annotations from an MCP server are hints, not guarantees, so local configuration wins:
//! a `[[tools]]` entry first, then the upstream's `read_only` / `destructive` lists, then what
//! the server reported.

use std::collections::HashMap;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use crate::config::{Config, ToolConfig};

/// Separator between an upstream's name and its tool's name (`{upstream}__{tool}`).
pub use airlock_mcp::front::TOOL_SEPARATOR;

/// A tool as the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// The upstream that serves it, if any.
    pub upstream: Option<String>,
    /// Name at the upstream, or the full name for agent-executed tools.
    pub name: String,
    /// Annotations after overrides (`readOnlyHint`, `destructiveHint`, …).
    pub annotations: Value,
    /// Whether it is read-only after overrides.
    pub read_only: bool,
    /// Cost of one call from the catalog.
    pub cost_usd: Option<f64>,
}

struct UpstreamRules {
    read_only: GlobSet,
    destructive: GlobSet,
}

/// Resolves tool names to [`ToolInfo`].
pub struct Catalog {
    tools: Vec<(GlobMatcher, ToolConfig)>,
    upstreams: HashMap<String, UpstreamRules>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("tools", &self.tools.len()).finish()
    }
}

fn glob_set(patterns: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        if let Ok(g) = Glob::new(p) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Catalog {
    /// Builds the catalog from validated configuration.
    pub fn new(config: &Config) -> Catalog {
        let tools = config
            .tools
            .iter()
            .filter_map(|t| Glob::new(&t.name).ok().map(|g| (g.compile_matcher(), t.clone())))
            .collect();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    UpstreamRules { read_only: glob_set(&u.read_only), destructive: glob_set(&u.destructive) },
                )
            })
            .collect();
        Catalog { tools, upstreams }
    }

    /// Whether `name` is a configured upstream.
    pub fn is_upstream(&self, name: &str) -> bool {
        self.upstreams.contains_key(name)
    }

    /// Resolves a full tool name; `reported` are the annotations the upstream server gave.
    pub fn resolve(&self, tool: &str, reported: Option<&Value>) -> ToolInfo {
        let (upstream, name) = match tool.split_once(TOOL_SEPARATOR) {
            Some((u, n)) if self.upstreams.contains_key(u) => (Some(u.to_string()), n.to_string()),
            _ => (None, tool.to_string()),
        };
        let mut annotations: Map<String, Value> = match reported {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if let Some(rules) = upstream.as_deref().and_then(|u| self.upstreams.get(u)) {
            if rules.read_only.is_match(&name) {
                annotations.insert("readOnlyHint".into(), Value::Bool(true));
            }
            if rules.destructive.is_match(&name) {
                annotations.insert("destructiveHint".into(), Value::Bool(true));
                annotations.insert("readOnlyHint".into(), Value::Bool(false));
            }
        }
        let mut cost_usd = None;
        if let Some((_, entry)) = self.tools.iter().find(|(m, _)| m.is_match(tool)) {
            if let Some(ro) = entry.read_only {
                annotations.insert("readOnlyHint".into(), Value::Bool(ro));
            }
            if let Some(d) = entry.destructive {
                annotations.insert("destructiveHint".into(), Value::Bool(d));
            }
            cost_usd = entry.cost_usd;
        }
        let read_only = annotations.get("readOnlyHint").and_then(Value::as_bool).unwrap_or(false);
        ToolInfo { upstream, name, annotations: Value::Object(annotations), read_only, cost_usd }
    }
}

/// Whether an agent's allowlist (globs; `None` = everything) covers `tool`.
pub fn allowlist_covers(allowlist: Option<&[String]>, tool: &str) -> bool {
    match allowlist {
        None => true,
        Some(globs) => {
            globs.iter().any(|g| g == tool || Glob::new(g).is_ok_and(|g| g.compile_matcher().is_match(tool)))
        }
    }
}

//! `[[servers]]`: virtual MCP servers, each at `/mcp/{name}`. Besides the form of every key, this
//! checks what can be known before any upstream connects: that no two tools the file names
//! (in an upstream's `read_only` or `destructive`, a `[[tools]]` entry, an allowlist, a server's
//! `tools` or `overrides`) would be offered under one name. What the file does not name is only
//! known at run time, where the server withholds a shared name (see `crate::servers`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::raw::{RawToolOverride, RawVirtualServer};
use super::validate::Problems;
use super::{AgentConfig, ServerSelect, ToolConfig, ToolOverride, UpstreamConfig, VirtualServerConfig};
use crate::catalog::TOOL_SEPARATOR;
use crate::servers::VirtualServer;

/// `[[servers]]`, checked against the upstreams and the tools the rest of the file names.
pub(super) fn servers(
    raw: Vec<RawVirtualServer>,
    upstreams: &[UpstreamConfig],
    tools: &[ToolConfig],
    agents: &[AgentConfig],
    problems: &mut Problems,
) -> Vec<VirtualServerConfig> {
    let upstream_names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut servers = Vec::new();
    // The servers whose keys are sound, for the check of names below.
    let mut sound = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("servers[{i}].{k}");
        let before = problems.len();
        if let Err(message) = check_name(&s.name) {
            problems.push(&key("name"), message);
        } else if !names.insert(s.name.clone()) {
            problems.push(&key("name"), format!("`{}` is used twice", s.name));
        }
        let before_select = problems.len();
        let select = select(i, s.upstreams, s.tools, &upstream_names, problems);
        let config =
            VirtualServerConfig { name: s.name, select, prefix: s.prefix.unwrap_or(true), overrides: BTreeMap::new() };
        // Whether an override's tool is offered can only be told when the choice is sound.
        let server = (problems.len() == before_select).then(|| VirtualServer::new(&config));
        let overrides = overrides(i, s.overrides, server.as_ref(), &upstream_names, problems);
        let config = VirtualServerConfig { overrides, ..config };
        if problems.len() == before {
            sound.push((i, config.clone()));
        }
        servers.push(config);
    }
    let known = Known::collect(upstreams, tools, agents, &servers, &upstream_names);
    for (i, config) in sound {
        collisions(i, &config, &known, problems);
    }
    servers
}

/// A server's name is a segment of its path: 1 to 64 letters, digits, `-` or `_`.
fn check_name(name: &str) -> Result<(), String> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` must be 1-64 letters, digits, `-` or `_` (it is served at /mcp/{{name}})"))
    }
}

/// A tool name a client can call: 1 to 128 letters, digits, `_`, `-` or `.` (the MCP
/// specification's rule, which LLM function names also satisfy).
fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok { Ok(()) } else { Err(format!("`{name}` must be 1-128 letters, digits, `_`, `-` or `.`")) }
}

/// Whether a glob is a plain name (no glob syntax).
fn is_literal(glob: &str) -> bool {
    !glob.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// `upstreams` or `tools`, exactly one, each entry sound.
fn select(
    i: usize,
    upstreams: Option<Vec<String>>,
    tools: Option<Vec<String>>,
    known: &[&str],
    problems: &mut Problems,
) -> ServerSelect {
    let key = |k: &str| format!("servers[{i}].{k}");
    match (upstreams, tools) {
        (Some(list), None) => {
            if list.is_empty() {
                problems.push(&key("upstreams"), "must name at least one upstream".into());
            }
            let mut seen = HashSet::new();
            for (j, name) in list.iter().enumerate() {
                if !known.contains(&name.as_str()) {
                    problems.push(&format!("servers[{i}].upstreams[{j}]"), unknown_upstream(name, known));
                } else if !seen.insert(name) {
                    problems.push(&format!("servers[{i}].upstreams[{j}]"), format!("`{name}` is listed twice"));
                }
            }
            ServerSelect::Upstreams(list)
        }
        (None, Some(globs)) => {
            if globs.is_empty() {
                problems.push(&key("tools"), "must hold at least one glob".into());
            }
            for (j, glob) in globs.iter().enumerate() {
                if let Some(message) = glob_problem(glob, known) {
                    problems.push(&format!("servers[{i}].tools[{j}]"), message);
                }
            }
            ServerSelect::Tools(globs)
        }
        (Some(_), Some(_)) => {
            problems.push(&key("tools"), "set either `upstreams` or `tools`, not both".into());
            ServerSelect::Tools(Vec::new())
        }
        (None, None) => {
            problems.push(
                &key("upstreams"),
                "set `upstreams` (upstream names) or `tools` (globs over `{upstream}__{tool}`) to choose what the \
                 server offers"
                    .into(),
            );
            ServerSelect::Tools(Vec::new())
        }
    }
}

fn unknown_upstream(name: &str, known: &[&str]) -> String {
    format!("`{name}` is not the `name` of an `[[upstreams]]` entry ({})", upstream_list(known))
}

fn upstream_list(known: &[&str]) -> String {
    if known.is_empty() {
        "there are no `[[upstreams]]`".into()
    } else {
        format!("the upstreams are {}", known.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", "))
    }
}

/// What is wrong with a glob of a server's `tools`, which is matched against full names: it must
/// compile, and it must be able to match `{upstream}__{tool}` for some configured upstream.
fn glob_problem(glob: &str, known: &[&str]) -> Option<String> {
    if glob.is_empty() || globset::Glob::new(glob).is_err() {
        return Some(format!("`{glob}` is not a valid glob"));
    }
    match glob.split_once(TOOL_SEPARATOR) {
        Some((upstream, _)) if is_literal(upstream) && !known.contains(&upstream) => {
            Some(format!("`{glob}` matches no tool: no upstream is named `{upstream}` ({})", upstream_list(known)))
        }
        None if is_literal(glob) => Some(format!(
            "`{glob}` matches no tool: globs are matched against full names `{{upstream}}__{{tool}}` (`fs__{glob}`)"
        )),
        _ => None,
    }
}

/// `[servers.overrides."{upstream}__{tool}"]`: a tool this server offers, a new name or
/// description (or both) for it, and no two tools renamed alike.
fn overrides(
    i: usize,
    raw: BTreeMap<String, RawToolOverride>,
    server: Option<&VirtualServer>,
    known: &[&str],
    problems: &mut Problems,
) -> BTreeMap<String, ToolOverride> {
    let mut out = BTreeMap::new();
    for (full, o) in raw {
        let key = format!("servers[{i}].overrides.{full}");
        match full.split_once(TOOL_SEPARATOR) {
            Some((upstream, tool)) if known.contains(&upstream) && !tool.is_empty() => {
                if let Some(server) = server
                    && !server.selects(&full)
                {
                    let by = match server.config().select {
                        ServerSelect::Upstreams(_) => "its `upstreams` do not include",
                        ServerSelect::Tools(_) => "its `tools` do not match",
                    };
                    problems.push(&key, format!("this server does not offer `{full}` ({by} it)"));
                }
            }
            _ => problems
                .push(&key, format!("`{full}` must be the full name `{{upstream}}__{{tool}}` of an upstream's tool")),
        }
        if o.rename.is_none() && o.description.is_none() {
            problems.push(&key, "set `rename`, `description` or both".into());
        }
        if let Some(rename) = &o.rename
            && let Err(message) = check_tool_name(rename)
        {
            problems.push(&format!("{key}.rename"), message);
        }
        if o.description.as_deref().is_some_and(|d| d.trim().is_empty()) {
            problems
                .push(&format!("{key}.description"), "must not be empty; leave it out to keep the upstream's".into());
        }
        out.insert(full, ToolOverride { rename: o.rename, description: o.description });
    }
    out
}

/// Tools the file names, by `(upstream, tool)`, with the first key that names each.
struct Known(BTreeMap<(String, String), String>);

impl Known {
    fn collect(
        upstreams: &[UpstreamConfig],
        tools: &[ToolConfig],
        agents: &[AgentConfig],
        servers: &[VirtualServerConfig],
        upstream_names: &[&str],
    ) -> Known {
        let mut known = Known(BTreeMap::new());
        for (i, u) in upstreams.iter().enumerate() {
            for (field, list) in [("read_only", &u.read_only), ("destructive", &u.destructive)] {
                for (j, tool) in list.iter().enumerate().filter(|(_, t)| is_literal(t)) {
                    known.add(&u.name, tool, format!("upstreams[{i}].{field}[{j}]"));
                }
            }
        }
        let mut full = |name: &str, key: String| {
            if let Some((upstream, tool)) = name.split_once(TOOL_SEPARATOR)
                && is_literal(name)
                && upstream_names.contains(&upstream)
            {
                known.add(upstream, tool, key);
            }
        };
        for (i, t) in tools.iter().enumerate() {
            full(&t.name, format!("tools[{i}].name"));
        }
        for (i, a) in agents.iter().enumerate() {
            for (j, t) in a.tools.iter().flatten().enumerate() {
                full(t, format!("agents[{i}].tools[{j}]"));
            }
        }
        for (i, s) in servers.iter().enumerate() {
            if let ServerSelect::Tools(globs) = &s.select {
                for (j, t) in globs.iter().enumerate() {
                    full(t, format!("servers[{i}].tools[{j}]"));
                }
            }
            for name in s.overrides.keys() {
                full(name, format!("servers[{i}].overrides.{name}"));
            }
        }
        known
    }

    fn add(&mut self, upstream: &str, tool: &str, key: String) {
        if !tool.is_empty() {
            self.0.entry((upstream.to_string(), tool.to_string())).or_insert(key);
        }
    }
}

/// Names that two tools the file names would share on server `i`.
fn collisions(i: usize, config: &VirtualServerConfig, known: &Known, problems: &mut Problems) {
    let server = VirtualServer::new(config);
    let naming = server.naming(known.0.keys().map(|(u, t)| (u.as_str(), t.as_str())));
    for collision in naming.withheld {
        let named_at = |full: &String| {
            let at = full
                .split_once(TOOL_SEPARATOR)
                .and_then(|(u, t)| known.0.get(&(u.to_string(), t.to_string())))
                .map(|key| format!(" (named at {key})"))
                .unwrap_or_default();
            format!("`{full}`{at}")
        };
        let tools: Vec<String> = collision.tools.iter().map(named_at).collect();
        let renamed: BTreeSet<&String> =
            collision.tools.iter().filter(|t| server.override_of(t).is_some_and(|o| o.rename.is_some())).collect();
        let (key, fix) = match renamed.first() {
            Some(full) => (
                format!("servers[{i}].overrides.{full}.rename"),
                "rename it to a name no other tool of this server has".to_string(),
            ),
            None => {
                let last = collision.tools.last().map(String::as_str).unwrap_or_default();
                (
                    format!("servers[{i}].prefix"),
                    format!(
                        "rename one (`[servers.overrides.{last}]` with `rename = \"…\"`), leave one upstream out, or set \
                         `prefix = true`"
                    ),
                )
            }
        };
        problems.push(
            &key,
            format!(
                "`{}` would be the name of {} on server `{}`; {fix}",
                collision.name,
                tools.join(" and "),
                config.name
            ),
        );
    }
}

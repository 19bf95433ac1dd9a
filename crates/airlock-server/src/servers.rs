//! Virtual servers (`[[servers]]`): MCP endpoints at `/mcp/{name}` that offer a chosen part of
//! the upstreams, under names of their own.
//!
//! A virtual server changes names and nothing else. Behind it every call is the same action as
//! on `/mcp`: its tool is the full name `{upstream}__{tool}`, which agents' allowlists, kill
//! switches, the catalog and the journal use; policy also sees the server's name
//! (`input.action.server`). So this module only answers two questions, for the tools the
//! upstreams list right now: which name does a server offer each chosen tool under, and which
//! tool does a name reach.
//!
//! A name must reach one tool. With `prefix = false`, two upstreams may list a tool of the same
//! name (or a `rename` may give a tool the name of another); the configuration refuses that when
//! the file names both tools, but tools are only known for sure once upstreams connect, and an
//! upstream may add one later (`tools/list_changed`). Then the server withholds the name: it
//! offers neither tool under it, a call to it is refused with the tools that claim it, and
//! `GET /v1/servers` and the log say so ([ADR 0014](../../../docs/adr/0014-virtual-servers.md)).
//! Which upstream answers first, or which one the file lists first, never decides it.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rmcp::model::Tool;
use serde::Serialize;

use crate::catalog::TOOL_SEPARATOR;
use crate::config::{ServerSelect, ToolOverride, VirtualServerConfig};

/// One virtual server, ready to name tools.
#[derive(Debug, Clone)]
pub struct VirtualServer {
    config: VirtualServerConfig,
    select: Select,
}

#[derive(Debug, Clone)]
enum Select {
    Upstreams(BTreeSet<String>),
    Tools(GlobSet),
}

/// Two or more tools that a server would offer under one name: it offers none of them under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collision {
    /// The name they would share.
    pub name: String,
    /// Their full names (`{upstream}__{tool}`), sorted.
    pub tools: Vec<String>,
}

/// The names a server gives a set of upstream tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    /// Each offered name and the full name of the one tool it reaches.
    pub offered: BTreeMap<String, String>,
    /// Names more than one tool would have, sorted by name.
    pub withheld: Vec<Collision>,
}

impl VirtualServer {
    /// A server as configured. Globs were validated with the configuration; one that does not
    /// compile selects nothing.
    pub fn new(config: &VirtualServerConfig) -> VirtualServer {
        let select = match &config.select {
            ServerSelect::Upstreams(names) => Select::Upstreams(names.iter().cloned().collect()),
            ServerSelect::Tools(globs) => {
                let mut set = GlobSetBuilder::new();
                for glob in globs.iter().filter_map(|g| Glob::new(g).ok()) {
                    set.add(glob);
                }
                Select::Tools(set.build().unwrap_or_else(|_| GlobSet::empty()))
            }
        };
        VirtualServer { config: config.clone(), select }
    }

    /// Its name (`/mcp/{name}`).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &VirtualServerConfig {
        &self.config
    }

    /// Whether names carry the `{upstream}__` prefix.
    pub fn prefixed(&self) -> bool {
        self.config.prefix
    }

    /// Whether it offers the tool, prompt, resource or template with the full name
    /// `{upstream}__{name}`.
    pub fn selects(&self, full: &str) -> bool {
        match &self.select {
            Select::Upstreams(names) => full.split_once(TOOL_SEPARATOR).is_some_and(|(u, _)| names.contains(u)),
            Select::Tools(globs) => globs.is_match(full),
        }
    }

    /// Whether `name` could be this server's name for a tool of `upstream` that is not listed
    /// right now (its upstream is down): by a `rename`, or by the server's prefix rule.
    pub fn could_name(&self, upstream: &str, name: &str) -> bool {
        let prefix = format!("{upstream}{TOOL_SEPARATOR}");
        let renamed = self
            .config
            .overrides
            .iter()
            .any(|(full, o)| o.rename.as_deref() == Some(name) && full.starts_with(&prefix));
        let full = if self.config.prefix { name.to_string() } else { format!("{prefix}{name}") };
        renamed || (full.starts_with(&prefix) && self.selects(&full))
    }

    /// The override of the tool with full name `full`, if any.
    pub fn override_of(&self, full: &str) -> Option<&ToolOverride> {
        self.config.overrides.get(full)
    }

    /// The name it offers the tool `tool` (full name `full`) under, if it offers it: its
    /// `rename`, else the full name or the upstream's own.
    fn name_of(&self, tool: &str, full: &str) -> String {
        match self.override_of(full).and_then(|o| o.rename.as_deref()) {
            Some(rename) => rename.to_string(),
            None if self.config.prefix => full.to_string(),
            None => tool.to_string(),
        }
    }

    /// The names it gives the tools among `tools` (`(upstream, tool)` pairs) that it selects.
    pub fn naming<'a>(&self, tools: impl IntoIterator<Item = (&'a str, &'a str)>) -> Naming {
        let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (upstream, tool) in tools {
            let full = format!("{upstream}{TOOL_SEPARATOR}{tool}");
            if self.selects(&full) {
                by_name.entry(self.name_of(tool, &full)).or_default().insert(full);
            }
        }
        let mut naming = Naming::default();
        for (name, fulls) in by_name {
            let mut fulls = fulls.into_iter();
            match (fulls.next(), fulls.next()) {
                (Some(full), None) => {
                    naming.offered.insert(name, full);
                }
                (Some(first), Some(second)) => {
                    let tools = [first, second].into_iter().chain(fulls).collect();
                    naming.withheld.push(Collision { name, tools });
                }
                (None, _) => {}
            }
        }
        naming
    }
}

/// What every virtual server offers, in configuration order, shared while the tool lists don't
/// change.
pub type Offers = std::sync::Arc<Vec<std::sync::Arc<Offer>>>;

/// What a name asked for on a virtual server reaches.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// This tool, by its full name.
    Tool(&'a str),
    /// Nothing: the name is withheld because these tools claim it.
    Withheld(&'a Collision),
    /// Nothing: the server offers no such name.
    Unknown,
}

/// What one virtual server offers right now: its naming of the tools the upstreams list, and
/// those tools as clients see them.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The names.
    pub naming: Naming,
    /// The offered tools, under their offered names and descriptions, sorted by name.
    pub tools: Vec<Tool>,
}

impl Offer {
    /// What `server` offers of `tools` (`(upstream, tool)` as the upstreams list them). `shown`
    /// turns an upstream's tool into the tool clients see under its full name (annotations after
    /// local overrides); the server then gives it its own name and description.
    pub fn new(server: &VirtualServer, tools: &[(String, Tool)], shown: &dyn Fn(&str, &Tool) -> Tool) -> Offer {
        let naming = server.naming(tools.iter().map(|(u, t)| (u.as_str(), t.name.as_ref())));
        let by_full: BTreeMap<String, &Tool> =
            tools.iter().map(|(u, t)| (format!("{u}{TOOL_SEPARATOR}{}", t.name), t)).collect();
        let tools = naming
            .offered
            .iter()
            .filter_map(|(name, full)| {
                let mut tool = shown(full, by_full.get(full)?);
                tool.name = name.clone().into();
                if let Some(description) = server.override_of(full).and_then(|o| o.description.clone()) {
                    tool.description = Some(description.into());
                }
                Some(tool)
            })
            .collect();
        Offer { naming, tools }
    }

    /// What `name` reaches.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if let Some(full) = self.naming.offered.get(name) {
            return Lookup::Tool(full);
        }
        match self.naming.withheld.iter().find(|c| c.name == name) {
            Some(collision) => Lookup::Withheld(collision),
            None => Lookup::Unknown,
        }
    }
}

/// What an agent is told when a name on a virtual server reaches no tool.
pub fn not_offered(server: &str, name: &str, lookup: &Lookup<'_>, down: &[String]) -> String {
    match lookup {
        Lookup::Withheld(c) => format!(
            "airlock: server `{server}` does not offer `{name}`: it is the name of {} at once, and a name must reach \
             one tool; an operator can rename one of them (`[servers.overrides]`)",
            c.tools.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" and ")
        ),
        _ if !down.is_empty() => format!(
            "airlock: server `{server}` offers no tool `{name}` right now; upstream {} is not connected, so its tools \
             are not known (see tools/list, and retry shortly)",
            down.iter().map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ")
        ),
        _ => format!("airlock: server `{server}` offers no tool `{name}` (see tools/list)"),
    }
}

/// Logs each name a virtual server withholds when it starts to (at start too) and when it
/// stops, as the upstreams' tool lists change, until `shutdown`.
pub async fn log_collisions(
    gateway: std::sync::Arc<crate::gateway::McpGateway>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if gateway.servers().is_empty() {
        return;
    }
    let mut changed = gateway.upstreams().subscribe();
    let mut logged: BTreeMap<String, Vec<Collision>> = BTreeMap::new();
    loop {
        let offers = gateway.offers();
        for (server, offer) in gateway.servers().iter().zip(offers.iter()) {
            let before = logged.remove(server.name()).unwrap_or_default();
            let now = &offer.naming.withheld;
            for c in now.iter().filter(|c| !before.contains(c)) {
                tracing::warn!(
                    server = server.name(),
                    name = %c.name,
                    tools = %c.tools.join(", "),
                    "a virtual server withholds a tool name that several tools have; rename one of them \
                     ([servers.overrides]) to offer it"
                );
            }
            for c in before.iter().filter(|c| !now.contains(c)) {
                tracing::info!(server = server.name(), name = %c.name, "a withheld tool name reaches one tool again");
            }
            logged.insert(server.name().to_string(), now.clone());
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One line of `GET /v1/servers`.
pub fn status(server: &VirtualServer, offer: Option<&Offer>) -> serde_json::Value {
    let config = server.config();
    let mut v = serde_json::json!({
        "name": config.name,
        "path": format!("/mcp/{}", config.name),
        "prefix": config.prefix,
    });
    if let serde_json::Value::Object(map) = &mut v {
        match &config.select {
            ServerSelect::Upstreams(u) => map.insert("upstreams".into(), serde_json::json!(u)),
            ServerSelect::Tools(t) => map.insert("tools".into(), serde_json::json!(t)),
        };
        let renamed: BTreeMap<&String, &String> =
            config.overrides.iter().filter_map(|(full, o)| o.rename.as_ref().map(|r| (full, r))).collect();
        map.insert("renamed".into(), serde_json::json!(renamed));
        map.insert("offered".into(), serde_json::json!(offer.map_or(0, |o| o.naming.offered.len())));
        let withheld = offer.map(|o| o.naming.withheld.clone()).unwrap_or_default();
        map.insert("withheld".into(), serde_json::json!(withheld));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(select: ServerSelect, prefix: bool, overrides: &[(&str, Option<&str>, Option<&str>)]) -> VirtualServer {
        VirtualServer::new(&VirtualServerConfig {
            name: "s".into(),
            select,
            prefix,
            overrides: overrides
                .iter()
                .map(|(full, rename, description)| {
                    let o = ToolOverride {
                        rename: rename.map(str::to_string),
                        description: description.map(str::to_string),
                    };
                    (full.to_string(), o)
                })
                .collect(),
        })
    }

    fn upstreams(names: &[&str]) -> ServerSelect {
        ServerSelect::Upstreams(names.iter().map(|s| s.to_string()).collect())
    }

    const LISTED: &[(&str, &str)] =
        &[("fs", "read"), ("fs", "write"), ("every", "echo"), ("every", "read"), ("time", "now")];

    fn offered(n: &Naming) -> Vec<(&str, &str)> {
        n.offered.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn upstreams_and_globs_choose_and_prefix_names() {
        let s = server(upstreams(&["fs", "time"]), true, &[]);
        let n = s.naming(LISTED.iter().copied());
        assert_eq!(offered(&n), [("fs__read", "fs__read"), ("fs__write", "fs__write"), ("time__now", "time__now")]);
        assert!(n.withheld.is_empty());
        let s = server(ServerSelect::Tools(vec!["fs__r*".into(), "every__echo".into()]), false, &[]);
        let n = s.naming(LISTED.iter().copied());
        assert_eq!(offered(&n), [("echo", "every__echo"), ("read", "fs__read")]);
        assert!(s.selects("fs__read_text_file") && !s.selects("fs__write") && !s.selects("every__read"));
    }

    /// Two chosen tools with one name: neither is offered under it, whatever the order they
    /// were listed in; a rename settles it.
    #[test]
    fn a_shared_name_is_withheld_until_renamed() {
        let s = server(upstreams(&["fs", "every"]), false, &[]);
        let n = s.naming(LISTED.iter().copied());
        assert_eq!(offered(&n), [("echo", "every__echo"), ("write", "fs__write")]);
        let read = Collision { name: "read".into(), tools: vec!["every__read".into(), "fs__read".into()] };
        assert_eq!(n.withheld, vec![read]);
        assert_eq!(s.naming(LISTED.iter().rev().copied()), n, "the order of the lists decides nothing");

        let s = server(upstreams(&["fs", "every"]), false, &[("every__read", Some("every_read"), None)]);
        let n = s.naming(LISTED.iter().copied());
        assert_eq!(n.offered.get("every_read").map(String::as_str), Some("every__read"));
        assert_eq!(n.offered.get("read").map(String::as_str), Some("fs__read"));
        assert!(n.withheld.is_empty());

        // A rename onto another tool's name collides too, prefixed or not.
        let s = server(upstreams(&["fs", "every"]), true, &[("every__echo", Some("fs__read"), None)]);
        let n = s.naming(LISTED.iter().copied());
        assert_eq!(n.withheld[0].tools, ["every__echo", "fs__read"]);
    }

    #[test]
    fn offers_rename_and_describe_tools_and_look_names_up() {
        let s = server(upstreams(&["fs", "every"]), false, &[("fs__read", Some("cat"), Some("Read one file"))]);
        let tools: Vec<(String, Tool)> = LISTED
            .iter()
            .map(|(u, t)| {
                let tool = Tool::new(t.to_string(), format!("{t} at {u}"), serde_json::Map::new());
                (u.to_string(), tool)
            })
            .collect();
        let shown = |full: &str, t: &Tool| {
            let mut t = t.clone();
            t.name = full.to_string().into();
            t
        };
        let offer = Offer::new(&s, &tools, &shown);
        let names: Vec<&str> = offer.tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["cat", "echo", "read", "write"]);
        assert_eq!(offer.tools[0].description.as_deref(), Some("Read one file"));
        assert_eq!(offer.tools[2].description.as_deref(), Some("read at every"));
        assert_eq!(offer.lookup("cat"), Lookup::Tool("fs__read"));
        assert_eq!(offer.lookup("read"), Lookup::Tool("every__read"));
        assert_eq!(offer.lookup("fs__read"), Lookup::Unknown, "only offered names reach tools");
        assert!(s.could_name("fs", "cat") && s.could_name("fs", "anything") && !s.could_name("time", "now"));
        let prefixed = server(upstreams(&["fs"]), true, &[]);
        assert!(prefixed.could_name("fs", "fs__x") && !prefixed.could_name("fs", "x"));
        let text = not_offered("s", "nope", &offer.lookup("nope"), &["time".into()]);
        assert!(text.contains("upstream `time` is not connected"), "{text}");
    }
}

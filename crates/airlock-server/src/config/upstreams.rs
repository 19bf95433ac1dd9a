//! `[[upstreams]]` and `[[tools]]`: the MCP servers airlock stands in front of, and what the
//! catalog says of their tools whatever the servers say.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use super::money::{Zero, check_usd};
use super::raw::{RawTool, RawUpstream};
use super::secrets::Env;
use super::validate::Problems;
use super::{ToolConfig, UpstreamConfig, UpstreamTransport};

/// `[[upstreams]]`: unique names, exactly one transport each, `env:` references read.
pub(super) fn upstreams(raw: Vec<RawUpstream>, env: &dyn Env, problems: &mut Problems) -> Vec<UpstreamConfig> {
    let mut names = HashSet::new();
    let mut upstreams = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        let RawUpstream {
            name,
            command,
            args,
            env: vars,
            url,
            headers,
            read_only,
            destructive,
            timeout_ms,
            validate_input,
        } = u;
        if let Err(message) = check_name(&name) {
            problems.push(&key("name"), message);
        } else if !names.insert(name.clone()) {
            problems.push(&key("name"), format!("`{name}` is used twice"));
        }
        // Header and environment values may be `env:NAME`, so tokens stay out of the file.
        let vars = from_env(&key("env"), vars, env, problems);
        let headers = from_env(&key("headers"), headers, env, problems);
        let transport = transport(&key, command, url, args, vars, headers, problems);
        for (field, list) in [("read_only", &read_only), ("destructive", &destructive)] {
            for (j, g) in list.iter().enumerate() {
                if globset::Glob::new(g).is_err() {
                    problems.push(&format!("upstreams[{i}].{field}[{j}]"), format!("`{g}` is not a valid glob"));
                }
            }
        }
        let timeout_ms = timeout_ms.unwrap_or(30_000);
        if !(1..=3_600_000).contains(&timeout_ms) {
            problems.push(&key("timeout_ms"), format!("must be between 1 and 3600000, got {timeout_ms}"));
        }
        upstreams.push(UpstreamConfig {
            name,
            transport,
            read_only,
            destructive,
            timeout: Duration::from_millis(timeout_ms),
            validate_input: validate_input.unwrap_or(true),
        });
    }
    upstreams
}

/// Whether `name` can prefix its tools. Agents see them as `{name}__{tool}` and airlock routes a
/// call by cutting the name at its first `__`, so a name must not contain `__` and must not end
/// with `_`: upstream `fs_`'s tool `x` would be `fs___x`, which is upstream `fs`'s tool `_x`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("`{name}` must be 1-32 letters, digits, `-` or `_`"));
    }
    if name.contains("__") {
        return Err(format!(
            "`{name}` must not contain `__`: tools are offered as `{{upstream}}__{{tool}}` and a call is routed \
             by the first `__` in its name"
        ));
    }
    if let Some(stem) = name.strip_suffix('_') {
        return Err(format!(
            "`{name}` must not end with `_`: its tool `x` would be offered as `{name}__x`, which routes to \
             upstream `{stem}`'s tool `_x`"
        ));
    }
    Ok(())
}

/// The values of `map` at `prefix` with each `env:NAME` replaced by the variable's value (which
/// may be empty); an unset variable is reported and leaves an empty value.
fn from_env(
    prefix: &str,
    map: BTreeMap<String, String>,
    env: &dyn Env,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    map.into_iter()
        .map(|(name, value)| match value.strip_prefix("env:") {
            Some(var) => match env.var(var) {
                Some(v) => (name, v),
                None => {
                    problems.push(&format!("{prefix}.{name}"), format!("environment variable `{var}` is not set"));
                    (name, String::new())
                }
            },
            None => (name, value),
        })
        .collect()
}

/// The variables of airlock's environment that a stdio upstream inherits, when set; everything
/// else in airlock's environment stays there. airlock's environment holds secrets (`env:`
/// references: tokens, TOTP seeds, the audit key, webhook secrets, other upstreams'
/// credentials), so a child starts from an empty environment plus these, plus its own `env`
/// table. Each is needed to start ordinary programs and none is a secret:
///
/// - `PATH`: finding `node`, `npx`, `python3`, `uvx` and the programs a server runs itself;
/// - `HOME`, `USER`, `LOGNAME`: package caches (`npx`, `uv`), user site-packages, the user's
///   name for libraries that ask;
/// - `LANG`, `LC_ALL`, `LC_CTYPE`: the text encoding of stdio (Python picks it from the locale);
/// - `TZ`: the local time zone, for servers that print local times;
/// - `TMPDIR`, and on Windows `TEMP` and `TMP`: where temporary files go;
/// - on Windows, `SYSTEMROOT`, `WINDIR`, `COMSPEC`, `PATHEXT`, `USERPROFILE`: without them many
///   programs do not start there.
///
/// `SHELL`, proxies (`HTTPS_PROXY` may hold a password), `NODE_OPTIONS`, `PYTHONPATH`,
/// `LD_PRELOAD` and the like are left out: a server that needs one gets it from its `env` table
/// (`env = { HTTPS_PROXY = "env:HTTPS_PROXY" }`).
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "WINDIR",
    "COMSPEC",
    "PATHEXT",
    "USERPROFILE",
];

/// Fills in what each stdio upstream inherits: the [`INHERITED_ENV`] variables that are set in
/// `env`, except any the file reads a secret from (`secrets`, even `PATH`): a value read with
/// `env:` reaches a child only under the name its own `env` table gives it.
pub(super) fn inherit(upstreams: &mut [UpstreamConfig], env: &dyn Env, secrets: &BTreeSet<String>) {
    let inherited: BTreeMap<String, String> = INHERITED_ENV
        .iter()
        .filter(|name| !secrets.contains(**name))
        .filter_map(|name| env.var(name).map(|value| (name.to_string(), value)))
        .collect();
    for u in upstreams {
        if let UpstreamTransport::Stdio { inherited: slot, .. } = &mut u.transport {
            slot.clone_from(&inherited);
        }
    }
}

/// How an upstream is reached: `command` (stdio) or `url` (streamable HTTP), never both, with
/// only the keys that apply to it.
fn transport(
    key: &dyn Fn(&str) -> String,
    command: Option<String>,
    url: Option<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    problems: &mut Problems,
) -> UpstreamTransport {
    match (command, url) {
        (Some(command), None) => {
            if !headers.is_empty() {
                problems.push(&key("headers"), "only applies to `url` upstreams".into());
            }
            UpstreamTransport::Stdio { command, args, env, inherited: BTreeMap::new() }
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(&key("url"), format!("`{url}` must start with http:// or https://"));
            }
            if !args.is_empty() || !env.is_empty() {
                problems.push(&key("args"), "`args` and `env` only apply to `command` upstreams".into());
            }
            UpstreamTransport::Http { url, headers }
        }
        (Some(_), Some(_)) => {
            problems.push(&key("command"), "set either `command` (stdio) or `url` (streamable HTTP), not both".into());
            UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new() }
        }
        (None, None) => {
            problems.push(&key("command"), "set `command` (a stdio MCP server) or `url` (streamable HTTP)".into());
            UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new() }
        }
    }
}

/// `[[tools]]`: catalog entries by tool name or glob, each with an optional cost.
pub(super) fn tools(raw: Vec<RawTool>, problems: &mut Problems) -> Vec<ToolConfig> {
    let mut tools = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        if globset::Glob::new(&t.name).is_err() || t.name.is_empty() {
            problems.push(&format!("tools[{i}].name"), format!("`{}` is not a valid tool name or glob", t.name));
        }
        if let Some(c) = t.cost_usd {
            check_usd(&format!("tools[{i}].cost_usd"), c, Zero::Plain, problems);
        }
        tools.push(ToolConfig {
            name: t.name,
            read_only: t.read_only,
            destructive: t.destructive,
            cost_usd: t.cost_usd,
        });
    }
    tools
}

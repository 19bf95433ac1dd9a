//! `[[upstreams]]` and `[[tools]]`: the MCP servers airlock stands in front of, and what the
//! catalog says of their tools whatever the servers say.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use super::money::{Zero, check_usd};
use super::raw::{RawClientCredentials, RawTool, RawUpstream};
use super::secrets::{Env, env_secret};
use super::validate::Problems;
use super::{ToolConfig, UpstreamConfig, UpstreamTransport};
use airlock_identity::{ClientCredentialsOptions, TokenEndpoint, fetchable};

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
            client_credentials,
        } = u;
        if let Err(message) = check_name(&name) {
            problems.push(&key("name"), message);
        } else if !names.insert(name.clone()) {
            problems.push(&key("name"), format!("`{name}` is used twice"));
        }
        // Header and environment values may be `env:NAME`, so tokens stay out of the file.
        let vars = from_env(&key("env"), vars, env, problems);
        let headers = from_env(&key("headers"), headers, env, problems);
        let credentials = client_credentials.map(|c| credentials(&key("client_credentials"), c, env, problems));
        let transport = transport(&key, command, url, args, vars, headers, credentials, problems);
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
#[allow(clippy::too_many_arguments)]
fn transport(
    key: &dyn Fn(&str) -> String,
    command: Option<String>,
    url: Option<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    client_credentials: Option<ClientCredentialsOptions>,
    problems: &mut Problems,
) -> UpstreamTransport {
    match (command, url) {
        (Some(command), None) => {
            if !headers.is_empty() {
                problems.push(&key("headers"), "only applies to `url` upstreams".into());
            }
            if client_credentials.is_some() {
                problems.push(
                    &key("client_credentials"),
                    "only applies to `url` upstreams (a stdio server takes its credentials from `env`)".into(),
                );
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
            if client_credentials.is_some()
                && let Some(name) = headers.keys().find(|h| h.eq_ignore_ascii_case("authorization"))
            {
                problems.push(
                    &format!("{}.{name}", key("headers")),
                    "conflicts with `client_credentials`, whose access token is the `Authorization` header".into(),
                );
            }
            UpstreamTransport::Http { url, headers, client_credentials }
        }
        (Some(_), Some(_)) => {
            problems.push(&key("command"), "set either `command` (stdio) or `url` (streamable HTTP), not both".into());
            UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new(), client_credentials: None }
        }
        (None, None) => {
            problems.push(&key("command"), "set `command` (a stdio MCP server) or `url` (streamable HTTP)".into());
            UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new(), client_credentials: None }
        }
    }
}

/// `[upstreams.client_credentials]`: where tokens come from (`token_endpoint`, or the issuer's
/// discovery document), airlock's client id and its secret (an `env:` reference).
fn credentials(
    prefix: &str,
    raw: RawClientCredentials,
    env: &dyn Env,
    problems: &mut Problems,
) -> ClientCredentialsOptions {
    let key = |k: &str| format!("{prefix}.{k}");
    let endpoint = match (raw.token_endpoint, raw.issuer) {
        (Some(url), None) => {
            if !fetchable(&url) {
                problems.push(
                    &key("token_endpoint"),
                    format!("`{url}` must be https:// (http:// only to this machine): the client secret is sent there"),
                );
            }
            TokenEndpoint::Url(url)
        }
        (None, Some(issuer)) => {
            if !fetchable(&issuer) {
                problems.push(&key("issuer"), format!("`{issuer}` must be https:// (http:// only to this machine)"));
            }
            TokenEndpoint::Issuer(issuer)
        }
        (Some(url), Some(_)) => {
            problems
                .push(&key("issuer"), "set either `token_endpoint` or `issuer` (found by discovery), not both".into());
            TokenEndpoint::Url(url)
        }
        (None, None) => {
            problems.push(
                &key("token_endpoint"),
                "set `token_endpoint`, or `issuer` to find it in the issuer's discovery document".into(),
            );
            TokenEndpoint::Url(String::new())
        }
    };
    if raw.client_id.trim().is_empty() {
        problems.push(&key("client_id"), "must not be empty".into());
    }
    let client_secret = env_secret(
        &raw.client_secret,
        env,
        "must be `env:NAME`, the environment variable that holds the secret; never the secret itself",
    )
    .unwrap_or_else(|message| {
        problems.push(&key("client_secret"), message);
        String::new()
    });
    for (name, value) in [("scope", &raw.scope), ("resource", &raw.resource), ("audience", &raw.audience)] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            problems.push(&key(name), "must not be empty (leave it out instead)".into());
        }
    }
    ClientCredentialsOptions {
        endpoint,
        client_id: raw.client_id,
        client_secret,
        scope: raw.scope,
        resource: raw.resource,
        audience: raw.audience,
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

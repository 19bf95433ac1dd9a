//! Reading a file into a [`Config`]: TOML syntax, unknown keys and type errors, each reported with
//! the path of its key (`agents[1].tier`), then [`RawConfig::validate`] for everything else.

use std::path::Path;

use super::raw::RawConfig;
use super::secrets::{Env, ProcessEnv};
use super::validate::Problems;
use super::{Config, ConfigError};

impl Config {
    /// Reads, parses and validates `path` with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, &ProcessEnv)
    }

    /// Reads, parses and validates `path`.
    pub fn load_with_env(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![(String::new(), format!("cannot read the file: {e}"))],
        })?;
        Config::parse(&text, path, env)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { path: path.to_path_buf(), problems };
        // Collect every unknown key first, so one run names all of them.
        let mut unknown = Vec::new();
        let value: toml::Value = toml::from_str(text).map_err(|e| fail(vec![(String::new(), toml_message(&e))]))?;
        let raw: RawConfig = match serde_ignored::deserialize(value.clone(), |p| unknown.push(p.to_string())) {
            Ok(raw) => raw,
            Err(e) => {
                // Report the typed error with its key path.
                let mut problems = type_problems(&value);
                if problems.is_empty() {
                    problems.extend(unknown.iter().map(|k| (fix_path(k), unknown_key_message(k))));
                    problems.push((String::new(), e.to_string()));
                }
                return Err(fail(problems));
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut problems =
            Problems::from(unknown.iter().map(|k| (fix_path(k), unknown_key_message(k))).collect::<Vec<_>>());
        let config = raw.validate(&base, env, &mut problems);
        let problems = problems.into_vec();
        if problems.is_empty() {
            let mut config = config;
            config.file = path.to_path_buf();
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }
}

/// Every type error in the file, not only the first: each field of each section (and of each
/// array element) is checked on its own, then each element whole for missing fields.
fn type_problems(value: &toml::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(root) = value.as_table() else { return out };
    for (section, v) in root {
        match v {
            toml::Value::Array(items) => {
                for (j, item) in items.iter().enumerate() {
                    let mut found = Vec::new();
                    match item.as_table() {
                        Some(t) => check_table(section, t, &|x| toml::Value::Array(vec![x]), &mut found),
                        None => found.extend(first_error(section, toml::Value::Array(vec![item.clone()]))),
                    }
                    let (from, to) = (format!("{section}[0]"), format!("{section}[{j}]"));
                    out.extend(found.into_iter().map(|(k, m)| (k.replacen(&from, &to, 1), m)));
                }
            }
            toml::Value::Table(t) => check_table(section, t, &|x| x, &mut out),
            other => out.extend(first_error(section, other.clone())),
        }
    }
    out.sort();
    out.dedup();
    out
}

fn toml_message(e: &toml::de::Error) -> String {
    e.to_string().trim_end().replace('\n', "\n    ")
}

/// Deserialises `{section: value}` and returns its first error, if any.
/// Unknown keys met on the way are reported too: the full pass stopped before most of them.
fn first_error(section: &str, value: toml::Value) -> Option<(String, String)> {
    let mut root = toml::Table::new();
    root.insert(section.to_string(), value);
    let mut unknown = Vec::new();
    let mut note = |p: serde_ignored::Path| unknown.push(p.to_string());
    let result = serde_path_to_error::deserialize::<_, RawConfig>(serde_ignored::Deserializer::new(
        toml::Value::Table(root),
        &mut note,
    ));
    if let Some(k) = unknown.first() {
        return Some((fix_path(k), unknown_key_message(k)));
    }
    result.err().map(|e| {
        let message = e.inner().to_string();
        // toml appends its own `in `a.b`` location; the key path is reported already.
        let message = message.split("\nin `").next().unwrap_or(&message).trim_end().to_string();
        (fix_path(&e.path().to_string()), message)
    })
}

/// Each field alone, then the table without the fields already reported, for missing fields.
fn check_table(
    section: &str,
    table: &toml::Table,
    wrap: &dyn Fn(toml::Value) -> toml::Value,
    out: &mut Vec<(String, String)>,
) {
    let mut rest = table.clone();
    for (field, v) in table {
        let mut one = toml::Table::new();
        one.insert(field.clone(), v.clone());
        if let Some(problem) =
            first_error(section, wrap(toml::Value::Table(one))).filter(|(_, m)| !m.starts_with("missing field"))
        {
            out.push(problem);
            rest.remove(field);
        }
    }
    if let Some((key, message)) = first_error(section, wrap(toml::Value::Table(rest))) {
        let removed = table.keys().any(|f| message.starts_with(&format!("missing field `{f}`")));
        if message.starts_with("missing field") && !removed {
            out.push((key, message));
        }
    }
}

/// serde_ignored and serde_path_to_error write `agents.0.tier`; we write `agents[0].tier`.
fn fix_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.') {
        // serde_ignored writes `?` for an optional section (`identity.?.issuers`).
        if part == "?" {
            continue;
        }
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn unknown_key_message(path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let hint = match key {
        "port" | "address" | "bind" => " (did you mean `listen`?)",
        "policies" | "path" => " (did you mean `dir`?)",
        "token_hash" | "secret" => " (did you mean `token`?)",
        "group" => " (did you mean `groups`?)",
        "role" => " (did you mean `roles`?)",
        _ => "",
    };
    format!("unknown key{hint}")
}

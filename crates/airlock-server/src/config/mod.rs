//! `airlock.toml`: raw serde types → [`validate`](RawConfig::validate) → an immutable [`Config`].
//!
//! Every problem is reported at once, each with the path of the key it is about
//! (`agents[1].tier`). Unknown keys are errors. Paths in the file are relative to the file.
//! Secrets are never written in the file: tokens are `sha256:<hex>` hashes or `env:NAME`
//! references read at start.
//!
//! Unknown keys are rejected through `serde_ignored` rather than `#[serde(deny_unknown_fields)]`:
//! the latter stops at the first unknown key, the former lets one run name all of them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_core::limits::{GuardLimits, OnBudgetExceeded};
use airlock_core::{Agent, Human, Role, Tier};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a configuration was refused: every problem found, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// `(key path, message)` pairs; the key path is empty for file-level problems.
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "`{}` has {n} problem{}:", self.path.display(), if n == 1 { "" } else { "s" })?;
        for (key, msg) in &self.problems {
            if key.is_empty() {
                writeln!(f, "  - {msg}")?;
            } else {
                writeln!(f, "  - {key}: {msg}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    approvals: RawApprovals,
    #[serde(default)]
    mcp: RawMcp,
    #[serde(default)]
    agents: Vec<RawAgent>,
    #[serde(default)]
    humans: Vec<RawHuman>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    tools: Vec<RawTool>,
    #[serde(default)]
    notify: Vec<RawNotify>,
    #[serde(default)]
    guards: RawGuards,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    telemetry: RawTelemetry,
}

#[derive(Debug, Default, Deserialize)]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<String>,
    capture_content: Option<bool>,
    service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAudit {
    signing_key: Option<String>,
    checkpoint_interval_seconds: Option<u64>,
    origin: Option<String>,
}

/// `[audit]`
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Base64 or hex Ed25519 seed read from the environment; `None` = key file in `data_dir`.
    pub signing_key: Option<String>,
    /// How often a checkpoint is signed (and once at shutdown).
    pub checkpoint_interval: Duration,
    /// Origin line of checkpoint notes, and the key name.
    pub origin: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct RawGuards {
    loop_repeats: Option<u32>,
    loop_window_seconds: Option<u64>,
    max_consecutive_failures: Option<u32>,
    max_consecutive_denials: Option<u32>,
    actions_per_minute: Option<u32>,
    budget_usd_per_day: Option<f64>,
    budget_usd_per_session: Option<f64>,
    on_budget_exceeded: Option<OnBudgetExceeded>,
    breaker_failures: Option<u32>,
    breaker_cooldown_seconds: Option<u64>,
    breaker_error_rate: Option<f64>,
    breaker_window_seconds: Option<u64>,
    breaker_min_calls: Option<u32>,
}

impl RawGuards {
    /// `self` over `base`.
    fn over(&self, base: &GuardLimits) -> GuardLimits {
        GuardLimits {
            loop_repeats: self.loop_repeats.unwrap_or(base.loop_repeats),
            loop_window_seconds: self.loop_window_seconds.unwrap_or(base.loop_window_seconds),
            max_consecutive_failures: self.max_consecutive_failures.unwrap_or(base.max_consecutive_failures),
            max_consecutive_denials: self.max_consecutive_denials.unwrap_or(base.max_consecutive_denials),
            actions_per_minute: self.actions_per_minute.unwrap_or(base.actions_per_minute),
            budget_usd_per_day: self.budget_usd_per_day.unwrap_or(base.budget_usd_per_day),
            budget_usd_per_session: self.budget_usd_per_session.unwrap_or(base.budget_usd_per_session),
            on_budget_exceeded: self.on_budget_exceeded.unwrap_or(base.on_budget_exceeded),
            breaker_failures: self.breaker_failures.unwrap_or(base.breaker_failures),
            breaker_cooldown_seconds: self.breaker_cooldown_seconds.unwrap_or(base.breaker_cooldown_seconds),
            breaker_error_rate: self.breaker_error_rate.unwrap_or(base.breaker_error_rate),
            breaker_window_seconds: self.breaker_window_seconds.unwrap_or(base.breaker_window_seconds),
            breaker_min_calls: self.breaker_min_calls.unwrap_or(base.breaker_min_calls),
        }
    }
}

fn check_limits(prefix: &str, l: &GuardLimits, push: &mut dyn FnMut(&str, String)) {
    if l.loop_repeats == 1 {
        push(&format!("{prefix}.loop_repeats"), "must be 0 (off) or at least 2".into());
    }
    if l.loop_window_seconds == 0 || l.loop_window_seconds > 7 * 86_400 {
        push(
            &format!("{prefix}.loop_window_seconds"),
            format!("must be between 1 and 604800, got {}", l.loop_window_seconds),
        );
    }
    for (k, v) in [("budget_usd_per_day", l.budget_usd_per_day), ("budget_usd_per_session", l.budget_usd_per_session)] {
        if !(v.is_finite() && v >= 0.0) {
            push(&format!("{prefix}.{k}"), format!("must be a non-negative number (0 = no limit), got {v}"));
        }
    }
    if l.breaker_cooldown_seconds == 0 || l.breaker_cooldown_seconds > 86_400 {
        push(
            &format!("{prefix}.breaker_cooldown_seconds"),
            format!("must be between 1 and 86400, got {}", l.breaker_cooldown_seconds),
        );
    }
    if !(l.breaker_error_rate.is_finite() && (0.0..=1.0).contains(&l.breaker_error_rate)) {
        push(
            &format!("{prefix}.breaker_error_rate"),
            format!("must be a fraction between 0 (off) and 1, got {}", l.breaker_error_rate),
        );
    }
    if l.breaker_window_seconds == 0 || l.breaker_window_seconds > 86_400 {
        push(
            &format!("{prefix}.breaker_window_seconds"),
            format!("must be between 1 and 86400, got {}", l.breaker_window_seconds),
        );
    }
    if l.breaker_min_calls == 0 || l.breaker_min_calls > 1_000_000 {
        push(
            &format!("{prefix}.breaker_min_calls"),
            format!("must be between 1 and 1000000, got {}", l.breaker_min_calls),
        );
    }
}

#[derive(Debug, Deserialize)]
struct RawNotify {
    name: Option<String>,
    url: String,
    events: Option<Vec<String>>,
    secret: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<String>,
    max_body_bytes: Option<u64>,
    public_url: Option<String>,
    max_wait_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPolicy {
    dir: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawApprovals {
    default_ttl_seconds: Option<u64>,
    allow_requester: Option<bool>,
    execute_within_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMcp {
    approval_wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawAgent {
    id: String,
    token: String,
    owner: String,
    oncall: Option<String>,
    tier: Tier,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    tools: Option<Vec<String>>,
    #[serde(default)]
    guards: RawGuards,
}

#[derive(Debug, Deserialize)]
struct RawHuman {
    id: String,
    token: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    roles: Vec<Role>,
    totp: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawUpstream {
    name: String,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    read_only: Vec<String>,
    #[serde(default)]
    destructive: Vec<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawTool {
    name: String,
    read_only: Option<bool>,
    destructive: Option<bool>,
    cost_usd: Option<f64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (empty for built-in configs).
    pub file: PathBuf,
    /// `[server]`
    pub server: ServerConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[approvals]`
    pub approvals: ApprovalsConfig,
    /// `[mcp]`
    pub mcp: McpConfig,
    /// `[[agents]]`
    pub agents: Vec<AgentConfig>,
    /// `[[humans]]`
    pub humans: Vec<HumanConfig>,
    /// `[[upstreams]]`
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[tools]]`
    pub tools: Vec<ToolConfig>,
    /// `[[notify]]`
    pub notify: Vec<NotifyConfig>,
    /// `[guards]`: the defaults every agent starts from.
    pub guards: GuardLimits,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[telemetry]`
    pub telemetry: crate::otel::TelemetryConfig,
}

/// Events a `[[notify]]` webhook can subscribe to.
pub const NOTIFY_EVENTS: &[&str] =
    &["approval.requested", "approval.resolved", "approval.expired", "session.paused", "breaker.opened"];

/// One `[[notify]]` webhook.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Name (defaults to `notify[N]`), used in logs and the outbox.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Events it receives.
    pub events: Vec<String>,
    /// HMAC-SHA256 key for `X-Airlock-Signature-256`.
    pub secret: Option<String>,
    /// Limit of one delivery attempt.
    pub timeout: Duration,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the journal.
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Base URL used in links (notifications, CLI output).
    pub public_url: Option<String>,
    /// Longest long-poll a client may ask for.
    pub max_wait: Duration,
}

/// `[policy]`
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory of `.rego` files.
    pub dir: PathBuf,
    /// Limit of one evaluation.
    pub timeout: Duration,
}

/// `[approvals]`
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    /// Expiry when policy names none.
    pub default_ttl_seconds: u64,
    /// Whether the human a session acts for may approve its actions.
    pub allow_requester: bool,
    /// How long an approved action stays runnable; after that it expires unused.
    pub execute_within_seconds: u64,
}

/// `[mcp]`
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// How long a `tools/call` that needs approval is held open.
    pub approval_wait: Duration,
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent.
    pub agent: Agent,
    /// SHA-256 of its bearer token.
    pub token_hash: [u8; 32],
    /// Tool allowlist (globs); `None` means all tools.
    pub tools: Option<Vec<String>>,
    /// Guard thresholds: `[guards]` with the agent's own `[agents.guards]` over it.
    pub limits: GuardLimits,
}

/// One `[[humans]]` entry.
#[derive(Debug, Clone)]
pub struct HumanConfig {
    /// The human.
    pub human: Human,
    /// SHA-256 of their bearer token.
    pub token_hash: [u8; 32],
    /// Base32 TOTP secret, read from the environment.
    pub totp_secret: Option<String>,
}

/// How an upstream is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTransport {
    /// A child process speaking MCP over stdio.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
    },
    /// Streamable HTTP.
    Http {
        /// Endpoint.
        url: String,
        /// Extra headers.
        headers: BTreeMap<String, String>,
    },
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Prefix of its tools (`{name}__{tool}`).
    pub name: String,
    /// How it is reached.
    pub transport: UpstreamTransport,
    /// Tools (names or globs) treated as read-only whatever the server says.
    pub read_only: Vec<String>,
    /// Tools (names or globs) treated as destructive whatever the server says.
    pub destructive: Vec<String>,
    /// Limit of one call.
    pub timeout: Duration,
}

/// One `[[tools]]` catalog entry.
#[derive(Debug, Clone)]
pub struct ToolConfig {
    /// Tool name or glob.
    pub name: String,
    /// Known read-only.
    pub read_only: Option<bool>,
    /// Known destructive.
    pub destructive: Option<bool>,
    /// Cost of one call.
    pub cost_usd: Option<f64>,
}

/// The SHA-256 of a bearer token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Where `env:` references are looked up; tests pass a map, the binary the process environment.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

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
        let mut problems: Vec<(String, String)> =
            unknown.iter().map(|k| (fix_path(k), unknown_key_message(k))).collect();
        let config = raw.validate(&base, env, &mut problems);
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
    // Each field alone, then the table without the fields already reported, for missing fields.
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

/// serde_ignored and serde_path_to_error write `agents.0.tier`; we write `agents[0].tier`.
fn fix_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.') {
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

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// Reads a `sha256:<hex>` or `env:NAME` token into its hash.
fn token_hash(value: &str, key: &str, env: &dyn Env, problems: &mut Vec<(String, String)>) -> [u8; 32] {
    if let Some(hex_part) = value.strip_prefix("sha256:") {
        let mut out = [0u8; 32];
        match hex::decode(hex_part) {
            Ok(bytes) if bytes.len() == 32 => out.copy_from_slice(&bytes),
            _ => problems.push((key.into(), "a `sha256:` token must be followed by 64 hex digits".into())),
        }
        return out;
    }
    if let Some(name) = value.strip_prefix("env:") {
        match env.var(name) {
            Some(v) if !v.is_empty() => return hash_token(&v),
            _ => problems.push((key.into(), format!("environment variable `{name}` is not set"))),
        }
        return [0; 32];
    }
    problems.push((
        key.into(),
        "must be `sha256:<hex>` (the SHA-256 of the token) or `env:NAME`; never the token itself. \
         `airlock token new` makes a token and prints its hash"
            .into(),
    ));
    [0; 32]
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

impl RawConfig {
    fn validate(self, base: &Path, env: &dyn Env, problems: &mut Vec<(String, String)>) -> Config {
        let mut push = |k: &str, m: String| problems.push((k.to_string(), m));

        let listen_text = self.server.listen.unwrap_or_else(|| "127.0.0.1:7878".into());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            push(
                "server.listen",
                format!("`{listen_text}` is not an address; write IP:PORT such as `127.0.0.1:7878` (port 0 picks a free port)"),
            );
            SocketAddr::from(([127, 0, 0, 1], 7878))
        });
        let max_body = self.server.max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body) {
            push("server.max_body_bytes", format!("must be between 1024 and 67108864, got {max_body}"));
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            push("server.public_url", format!("`{url}` must start with http:// or https://"));
        }
        let max_wait = self.server.max_wait_seconds.unwrap_or(60);
        if !(1..=3600).contains(&max_wait) {
            push("server.max_wait_seconds", format!("must be between 1 and 3600, got {max_wait}"));
        }
        let server = ServerConfig {
            listen,
            data_dir: resolve(base, self.server.data_dir.as_deref().unwrap_or(".airlock")),
            max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
            public_url: self.server.public_url.map(|u| u.trim_end_matches('/').to_string()),
            max_wait: Duration::from_secs(max_wait),
        };

        let policy_dir = match self.policy.dir {
            Some(d) => resolve(base, &d),
            None => {
                push("policy.dir", "is required: the directory of `.rego` files".into());
                PathBuf::new()
            }
        };
        if !policy_dir.as_os_str().is_empty() && !policy_dir.is_dir() {
            push("policy.dir", format!("`{}` is not a directory", policy_dir.display()));
        }
        let timeout_ms = self.policy.timeout_ms.unwrap_or(100);
        if !(1..=60_000).contains(&timeout_ms) {
            push("policy.timeout_ms", format!("must be between 1 and 60000, got {timeout_ms}"));
        }
        let policy = PolicyConfig { dir: policy_dir, timeout: Duration::from_millis(timeout_ms) };

        let ttl = self.approvals.default_ttl_seconds.unwrap_or(3600);
        if !(1..=30 * 24 * 3600).contains(&ttl) {
            push("approvals.default_ttl_seconds", format!("must be between 1 and 2592000, got {ttl}"));
        }
        let execute_within = self.approvals.execute_within_seconds.unwrap_or(3600);
        if !(1..=7 * 24 * 3600).contains(&execute_within) {
            push("approvals.execute_within_seconds", format!("must be between 1 and 604800, got {execute_within}"));
        }
        let approvals = ApprovalsConfig {
            default_ttl_seconds: ttl,
            allow_requester: self.approvals.allow_requester.unwrap_or(false),
            execute_within_seconds: execute_within,
        };
        let wait = self.mcp.approval_wait_seconds.unwrap_or(30);
        if wait > 3600 {
            push("mcp.approval_wait_seconds", format!("must be at most 3600, got {wait}"));
        }
        let mcp = McpConfig { approval_wait: Duration::from_secs(wait) };

        let guards = self.guards.over(&GuardLimits::default());
        check_limits("guards", &guards, &mut push);
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        let mut agents = Vec::new();
        for (i, a) in self.agents.into_iter().enumerate() {
            let key = |k: &str| format!("agents[{i}].{k}");
            if !valid_id(&a.id) {
                push(&key("id"), format!("`{}` must be 1-64 letters, digits or `-_.@`", a.id));
            } else if !ids.insert(a.id.clone()) {
                push(&key("id"), format!("`{}` is used twice", a.id));
            }
            let mut local = Vec::new();
            let token_hash = token_hash(&a.token, &key("token"), env, &mut local);
            if local.is_empty() && !hashes.insert(token_hash) {
                push(&key("token"), "the same token is used by another agent or human".into());
            }
            for (k, m) in local {
                push(&k, m);
            }
            if a.owner.trim().is_empty() {
                push(&key("owner"), "must name the team or person accountable for the agent".into());
            }
            if let Some(tools) = &a.tools {
                for (j, t) in tools.iter().enumerate() {
                    if globset::Glob::new(t).is_err() {
                        push(&format!("agents[{i}].tools[{j}]"), format!("`{t}` is not a valid glob"));
                    }
                }
            }
            let limits = a.guards.over(&guards);
            check_limits(&format!("agents[{i}].guards"), &limits, &mut push);
            agents.push(AgentConfig {
                agent: Agent { id: a.id, owner: a.owner, oncall: a.oncall, tier: a.tier, labels: a.labels },
                token_hash,
                tools: a.tools,
                limits,
            });
        }

        let mut humans = Vec::new();
        for (i, h) in self.humans.into_iter().enumerate() {
            let key = |k: &str| format!("humans[{i}].{k}");
            if !valid_id(&h.id) {
                push(&key("id"), format!("`{}` must be 1-64 letters, digits or `-_.@`", h.id));
            } else if !ids.insert(h.id.clone()) {
                push(&key("id"), format!("`{}` is used twice", h.id));
            }
            let mut local = Vec::new();
            let token_hash = token_hash(&h.token, &key("token"), env, &mut local);
            if local.is_empty() && !hashes.insert(token_hash) {
                push(&key("token"), "the same token is used by another agent or human".into());
            }
            for (k, m) in local {
                push(&k, m);
            }
            let totp_secret = match &h.totp {
                None => None,
                Some(v) => match v.strip_prefix("env:") {
                    Some(name) => match env.var(name) {
                        Some(secret) if crate::mfa::check_secret(&secret).is_err() => {
                            push(
                                &key("totp"),
                                format!("environment variable `{name}` does not hold a base32 TOTP secret"),
                            );
                            None
                        }
                        Some(secret) if !secret.is_empty() => Some(secret),
                        _ => {
                            push(&key("totp"), format!("environment variable `{name}` is not set"));
                            None
                        }
                    },
                    None => {
                        push(&key("totp"), "must be `env:NAME` naming a variable that holds the base32 secret".into());
                        None
                    }
                },
            };
            let mut roles = h.roles;
            roles.sort();
            roles.dedup();
            humans.push(HumanConfig {
                human: Human { id: h.id, groups: h.groups, roles, has_totp: totp_secret.is_some() },
                token_hash,
                totp_secret,
            });
        }

        let mut names = HashSet::new();
        let mut upstreams = Vec::new();
        for (i, u) in self.upstreams.into_iter().enumerate() {
            let key = |k: &str| format!("upstreams[{i}].{k}");
            let name_ok = !u.name.is_empty()
                && u.name.len() <= 32
                && u.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !u.name.contains("__");
            if !name_ok {
                push(&key("name"), format!("`{}` must be 1-32 letters, digits, `-` or `_`, without `__`", u.name));
            } else if !names.insert(u.name.clone()) {
                push(&key("name"), format!("`{}` is used twice", u.name));
            }
            // Header and environment values may be `env:NAME`, so tokens stay out of the file.
            let mut from_env = |field: &str, map: BTreeMap<String, String>| -> BTreeMap<String, String> {
                map.into_iter()
                    .map(|(name, value)| match value.strip_prefix("env:") {
                        Some(var) => match env.var(var) {
                            Some(v) => (name, v),
                            None => {
                                push(
                                    &format!("upstreams[{i}].{field}.{name}"),
                                    format!("environment variable `{var}` is not set"),
                                );
                                (name, String::new())
                            }
                        },
                        None => (name, value),
                    })
                    .collect()
            };
            let (u_env, u_headers) = (from_env("env", u.env), from_env("headers", u.headers));
            let u = RawUpstream { env: u_env, headers: u_headers, ..u };
            let transport = match (u.command, u.url) {
                (Some(command), None) => {
                    if !u.headers.is_empty() {
                        push(&key("headers"), "only applies to `url` upstreams".into());
                    }
                    UpstreamTransport::Stdio { command, args: u.args, env: u.env }
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        push(&key("url"), format!("`{url}` must start with http:// or https://"));
                    }
                    if !u.args.is_empty() || !u.env.is_empty() {
                        push(&key("args"), "`args` and `env` only apply to `command` upstreams".into());
                    }
                    UpstreamTransport::Http { url, headers: u.headers }
                }
                (Some(_), Some(_)) => {
                    push(&key("command"), "set either `command` (stdio) or `url` (streamable HTTP), not both".into());
                    UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new() }
                }
                (None, None) => {
                    push(&key("command"), "set `command` (a stdio MCP server) or `url` (streamable HTTP)".into());
                    UpstreamTransport::Http { url: String::new(), headers: BTreeMap::new() }
                }
            };
            for (field, list) in [("read_only", &u.read_only), ("destructive", &u.destructive)] {
                for (j, g) in list.iter().enumerate() {
                    if globset::Glob::new(g).is_err() {
                        push(&format!("upstreams[{i}].{field}[{j}]"), format!("`{g}` is not a valid glob"));
                    }
                }
            }
            let timeout_ms = u.timeout_ms.unwrap_or(30_000);
            if !(1..=3_600_000).contains(&timeout_ms) {
                push(&key("timeout_ms"), format!("must be between 1 and 3600000, got {timeout_ms}"));
            }
            upstreams.push(UpstreamConfig {
                name: u.name,
                transport,
                read_only: u.read_only,
                destructive: u.destructive,
                timeout: Duration::from_millis(timeout_ms),
            });
        }

        let mut tools = Vec::new();
        for (i, t) in self.tools.into_iter().enumerate() {
            if globset::Glob::new(&t.name).is_err() || t.name.is_empty() {
                push(&format!("tools[{i}].name"), format!("`{}` is not a valid tool name or glob", t.name));
            }
            if let Some(c) = t.cost_usd
                && !(c.is_finite() && c >= 0.0)
            {
                push(&format!("tools[{i}].cost_usd"), format!("must be a non-negative number, got {c}"));
            }
            tools.push(ToolConfig {
                name: t.name,
                read_only: t.read_only,
                destructive: t.destructive,
                cost_usd: t.cost_usd,
            });
        }

        let mut notify = Vec::new();
        let mut notify_names = HashSet::new();
        for (i, n) in self.notify.into_iter().enumerate() {
            let key = |k: &str| format!("notify[{i}].{k}");
            let name = n.name.unwrap_or_else(|| format!("notify[{i}]"));
            if !notify_names.insert(name.clone()) {
                push(&key("name"), format!("`{name}` is used twice"));
            }
            if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
                push(&key("url"), format!("`{}` must start with http:// or https://", n.url));
            }
            let events = n.events.unwrap_or_else(|| NOTIFY_EVENTS.iter().map(|e| e.to_string()).collect());
            for (j, e) in events.iter().enumerate() {
                if !NOTIFY_EVENTS.contains(&e.as_str()) {
                    push(
                        &format!("notify[{i}].events[{j}]"),
                        format!("unknown event `{e}`; known: {}", NOTIFY_EVENTS.join(", ")),
                    );
                }
            }
            let secret = match n.secret.as_deref() {
                None => None,
                Some(v) => match v.strip_prefix("env:") {
                    Some(var) => match env.var(var) {
                        Some(s) if !s.is_empty() => Some(s),
                        _ => {
                            push(&key("secret"), format!("environment variable `{var}` is not set"));
                            None
                        }
                    },
                    None => {
                        push(&key("secret"), "must be `env:NAME`; secrets are not written in the file".into());
                        None
                    }
                },
            };
            let timeout_ms = n.timeout_ms.unwrap_or(5000);
            if !(1..=60_000).contains(&timeout_ms) {
                push(&key("timeout_ms"), format!("must be between 1 and 60000, got {timeout_ms}"));
            }
            notify.push(NotifyConfig { name, url: n.url, events, secret, timeout: Duration::from_millis(timeout_ms) });
        }

        let signing_key = match self.audit.signing_key.as_deref() {
            None => None,
            Some(v) => match v.strip_prefix("env:") {
                Some(var) => match env.var(var) {
                    Some(k) if !k.is_empty() => Some(k),
                    _ => {
                        push("audit.signing_key", format!("environment variable `{var}` is not set"));
                        None
                    }
                },
                None => {
                    push("audit.signing_key", "must be `env:NAME`; omit it to use a key file in `data_dir`".into());
                    None
                }
            },
        };
        let interval = self.audit.checkpoint_interval_seconds.unwrap_or(300);
        if !(1..=86_400).contains(&interval) {
            push("audit.checkpoint_interval_seconds", format!("must be between 1 and 86400, got {interval}"));
        }
        let origin = self.audit.origin.unwrap_or_else(|| "airlock".into());
        if origin.is_empty() || origin.contains(char::is_whitespace) || origin.contains('+') {
            push("audit.origin", format!("`{origin}` must be non-empty, without spaces or `+`"));
        }
        let audit = AuditConfig { signing_key, checkpoint_interval: Duration::from_secs(interval), origin };
        if let Some(e) = &self.telemetry.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            push("telemetry.otlp_endpoint", format!("`{e}` must start with http:// or https:// (OTLP over HTTP)"));
        }
        let telemetry = crate::otel::TelemetryConfig {
            otlp_endpoint: self.telemetry.otlp_endpoint,
            capture_content: self.telemetry.capture_content.unwrap_or(false),
            service_name: self.telemetry.service_name.unwrap_or_else(|| "airlock".into()),
            protocol: self.telemetry.otlp_protocol.clone(),
        };
        if let Some(p) = &self.telemetry.otlp_protocol
            && p != "grpc"
            && p != "http/protobuf"
        {
            push("telemetry.otlp_protocol", format!("`{p}` must be `grpc` or `http/protobuf`"));
        }

        Config {
            file: PathBuf::new(),
            server,
            policy,
            approvals,
            mcp,
            agents,
            humans,
            upstreams,
            tools,
            notify,
            guards,
            audit,
            telemetry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("BOT_TOKEN".to_string(), "s3cret".to_string())])
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::parse(text, &dir.join("airlock.toml"), &env())
    }

    const HASH: &str = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&format!(
            "[policy]\ndir = \".\"\n[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"platform\"\ntier = \"change\"\n[[humans]]\nid = \"alice\"\ntoken = \"{HASH}\"\nroles = [\"approve\"]\n"
        ))
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.agents[0].token_hash, hash_token("s3cret"));
        assert_eq!(c.humans[0].token_hash, hash_token("secret"));
        assert_eq!(c.policy.timeout, Duration::from_millis(100));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse(
            "[server]\nlisten = \"localhost\"\nport = 3\n[policy]\ndir = \"/no/such/dir\"\n[[agents]]\nid = \"bot\"\ntoken = \"plaintext\"\nowner = \"\"\ntier = \"change\"\nextra = 1\n[[agents]]\nid = \"bot\"\ntoken = \"env:MISSING\"\nowner = \"x\"\ntier = \"autonomous\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "server.port",
            "agents[0].extra",
            "server.listen",
            "policy.dir",
            "agents[0].token",
            "agents[0].owner",
            "agents[1].id",
            "agents[1].token",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {err}");
        }
        let text = err.to_string();
        assert!(text.contains("did you mean `listen`"), "{text}");
        assert!(text.contains("`MISSING` is not set"), "{text}");
    }

    #[test]
    fn wrong_types_name_their_key() {
        let err = parse("[policy]\ndir = \".\"\n[[agents]]\nid = \"bot\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"boss\"\n")
            .unwrap_err();
        let (key, msg) = &err.problems[0];
        assert_eq!(key, "agents[0].tier");
        assert!(msg.contains("boss"), "{msg}");

        // Every type error at once, across sections, fields and array elements, with missing
        // fields named too.
        let err = parse(
            "[server]\nlisten = 7878\nmax_body_bytes = \"big\"\nport = 1\n[policy]\ndir = \".\"\ntimeout_ms = \"fast\"\n\
             [[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n\
             [[agents]]\nid = \"b\"\ntoken = \"env:BOT_TOKEN\"\ntier = \"boss\"\nlabels = [1]\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "server.listen",
            "server.max_body_bytes",
            "server.port",
            "policy.timeout_ms",
            "agents[1].tier",
            "agents[1].labels",
            "agents[1]",
        ] {
            assert!(keys.contains(&expected), "`{expected}` not reported: {err}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("agents[0]")), "agents[0] is fine: {err}");
        assert!(err.to_string().contains("missing field `owner`"), "{err}");
    }

    #[test]
    fn agents_override_guard_defaults() {
        let c = parse(
            "[policy]\ndir = \".\"\n[guards]\nactions_per_minute = 100\nbudget_usd_per_day = 50.0\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nactions_per_minute = 5\non_budget_exceeded = \"require_approval\"\n\n[[agents]]\nid = \"b\"\ntoken = \"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\nowner = \"o\"\ntier = \"change\"\n",
        )
        .unwrap();
        assert_eq!(c.agents[0].limits.actions_per_minute, 5);
        assert_eq!(c.agents[0].limits.budget_usd_per_day, 50.0);
        assert_eq!(c.agents[0].limits.on_budget_exceeded, OnBudgetExceeded::RequireApproval);
        assert_eq!(c.agents[1].limits.actions_per_minute, 100);
        assert_eq!(c.agents[1].limits.loop_repeats, 5);
        let err = parse(
            "[policy]\ndir = \".\"\n[guards]\nloop_repeats = 1\nbudget_usd_per_day = -1.0\nbreaker_cooldown = 3\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"guards.loop_repeats") && keys.contains(&"guards.budget_usd_per_day"), "{err}");
        assert!(keys.contains(&"guards.breaker_cooldown"), "{err}");
    }

    #[test]
    fn breaker_error_rate_keys_default_override_and_validate() {
        let c = parse(
            "[policy]\ndir = \".\"\n[guards]\nbreaker_window_seconds = 120\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nbreaker_error_rate = 0.25\nbreaker_min_calls = 4\n",
        )
        .unwrap();
        let l = &c.agents[0].limits;
        assert_eq!((l.breaker_error_rate, l.breaker_window_seconds, l.breaker_min_calls), (0.25, 120, 4));
        assert_eq!((c.guards.breaker_error_rate, c.guards.breaker_min_calls), (0.5, 10));
        let err = parse(
            "[policy]\ndir = \".\"\n[guards]\nbreaker_error_rate = 1.5\nbreaker_window_seconds = 0\n\n[[agents]]\nid = \"a\"\ntoken = \"env:BOT_TOKEN\"\nowner = \"o\"\ntier = \"change\"\n[agents.guards]\nbreaker_min_calls = 0\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        for expected in
            ["guards.breaker_error_rate", "guards.breaker_window_seconds", "agents[0].guards.breaker_min_calls"]
        {
            assert!(keys.contains(&expected), "`{expected}` not reported: {err}");
        }
    }

    #[test]
    fn upstreams_need_exactly_one_transport() {
        let err = parse("[policy]\ndir = \".\"\n[[upstreams]]\nname = \"a__b\"\n").unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["upstreams[0].name", "upstreams[0].command"]);
    }

    #[test]
    fn upstream_headers_and_env_read_env_references() {
        let base = "[policy]\ndir = \".\"\n[[upstreams]]\nname = \"tickets\"\nurl = \"https://mcp.example/mcp\"\n";
        let c = parse(&format!("{base}headers = {{ Authorization = \"env:BOT_TOKEN\", X-Team = \"sre\" }}\n")).unwrap();
        let UpstreamTransport::Http { headers, .. } = &c.upstreams[0].transport else { panic!("not http") };
        assert_eq!(headers["Authorization"], env().var("BOT_TOKEN").unwrap());
        assert_eq!(headers["X-Team"], "sre");

        let err = parse(&format!(
            "{base}headers = {{ Authorization = \"env:NOPE\" }}\n[[upstreams]]\nname = \"fs\"\ncommand = \"x\"\nenv = {{ KEY = \"env:ALSO_NOPE\" }}\n"
        ))
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["upstreams[0].headers.Authorization", "upstreams[1].env.KEY"], "{err}");
        assert!(err.to_string().contains("`NOPE` is not set"), "{err}");
    }

    /// Problems come in the order of the sections as checked (not as written), with the same messages
    /// as `airlock check` prints; the file lists its sections backwards on purpose.
    #[test]
    fn problems_are_reported_in_section_order() {
        let err = parse(
            r#"
[telemetry]
otlp_endpoint = "grpc://collector"
otlp_protocol = "udp"
[audit]
signing_key = "plain"
checkpoint_interval_seconds = 0
origin = "a b"
[[notify]]
url = "ftp://hooks"
events = ["nope"]
secret = "env:NOPE"
timeout_ms = 0
[[notify]]
name = "notify[0]"
url = "https://hooks"
secret = "plain"
[[tools]]
name = ""
cost_usd = -1.0
[[tools]]
name = "x"
cost_usd = nan
[[upstreams]]
name = "a__b"
url = "ftp://mcp"
args = ["x"]
headers = { A = "env:NOPE" }
timeout_ms = 0
read_only = ["["]
[[upstreams]]
name = "b"
command = "x"
url = "https://mcp"
[[upstreams]]
name = "b"
command = "x"
headers = { A = "b" }
[[humans]]
id = "bot"
token = "env:BOT_TOKEN"
totp = "plain"
[[humans]]
id = "carol"
token = "env:BOT_TOKEN"
totp = "env:NOPE"
[[agents]]
id = "bot"
token = "sha256:zz"
owner = " "
tier = "change"
tools = ["["]
[agents.guards]
budget_usd_per_session = -2.0
[[agents]]
id = "no spaces"
token = "plain"
owner = "o"
tier = "change"
[guards]
loop_repeats = 1
loop_window_seconds = 0
budget_usd_per_day = -inf
breaker_cooldown_seconds = 0
breaker_error_rate = 2.0
breaker_window_seconds = 0
breaker_min_calls = 0
[mcp]
approval_wait_seconds = 4000
[approvals]
default_ttl_seconds = 0
execute_within_seconds = 0
[policy]
timeout_ms = 0
[server]
listen = "nowhere"
max_body_bytes = 1
public_url = "ftp://airlock"
max_wait_seconds = 0
bogus = 1
"#,
        )
        .unwrap_err();
        let expected = [
            "server.bogus: unknown key",
            "server.listen: `nowhere` is not an address; write IP:PORT such as `127.0.0.1:7878` (port 0 picks a free port)",
            "server.max_body_bytes: must be between 1024 and 67108864, got 1",
            "server.public_url: `ftp://airlock` must start with http:// or https://",
            "server.max_wait_seconds: must be between 1 and 3600, got 0",
            "policy.dir: is required: the directory of `.rego` files",
            "policy.timeout_ms: must be between 1 and 60000, got 0",
            "approvals.default_ttl_seconds: must be between 1 and 2592000, got 0",
            "approvals.execute_within_seconds: must be between 1 and 604800, got 0",
            "mcp.approval_wait_seconds: must be at most 3600, got 4000",
            "guards.loop_repeats: must be 0 (off) or at least 2",
            "guards.loop_window_seconds: must be between 1 and 604800, got 0",
            "guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
            "guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
            "guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
            "guards.breaker_window_seconds: must be between 1 and 86400, got 0",
            "guards.breaker_min_calls: must be between 1 and 1000000, got 0",
            "agents[0].token: a `sha256:` token must be followed by 64 hex digits",
            "agents[0].owner: must name the team or person accountable for the agent",
            "agents[0].tools[0]: `[` is not a valid glob",
            "agents[0].guards.loop_repeats: must be 0 (off) or at least 2",
            "agents[0].guards.loop_window_seconds: must be between 1 and 604800, got 0",
            "agents[0].guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
            "agents[0].guards.budget_usd_per_session: must be a non-negative number (0 = no limit), got -2",
            "agents[0].guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
            "agents[0].guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
            "agents[0].guards.breaker_window_seconds: must be between 1 and 86400, got 0",
            "agents[0].guards.breaker_min_calls: must be between 1 and 1000000, got 0",
            "agents[1].id: `no spaces` must be 1-64 letters, digits or `-_.@`",
            "agents[1].token: must be `sha256:<hex>` (the SHA-256 of the token) or `env:NAME`; never the token itself. `airlock token new` makes a token and prints its hash",
            "agents[1].guards.loop_repeats: must be 0 (off) or at least 2",
            "agents[1].guards.loop_window_seconds: must be between 1 and 604800, got 0",
            "agents[1].guards.budget_usd_per_day: must be a non-negative number (0 = no limit), got -inf",
            "agents[1].guards.breaker_cooldown_seconds: must be between 1 and 86400, got 0",
            "agents[1].guards.breaker_error_rate: must be a fraction between 0 (off) and 1, got 2",
            "agents[1].guards.breaker_window_seconds: must be between 1 and 86400, got 0",
            "agents[1].guards.breaker_min_calls: must be between 1 and 1000000, got 0",
            "humans[0].id: `bot` is used twice",
            "humans[0].totp: must be `env:NAME` naming a variable that holds the base32 secret",
            "humans[1].token: the same token is used by another agent or human",
            "humans[1].totp: environment variable `NOPE` is not set",
            "upstreams[0].name: `a__b` must be 1-32 letters, digits, `-` or `_`, without `__`",
            "upstreams[0].headers.A: environment variable `NOPE` is not set",
            "upstreams[0].url: `ftp://mcp` must start with http:// or https://",
            "upstreams[0].args: `args` and `env` only apply to `command` upstreams",
            "upstreams[0].read_only[0]: `[` is not a valid glob",
            "upstreams[0].timeout_ms: must be between 1 and 3600000, got 0",
            "upstreams[1].command: set either `command` (stdio) or `url` (streamable HTTP), not both",
            "upstreams[2].name: `b` is used twice",
            "upstreams[2].headers: only applies to `url` upstreams",
            "tools[0].name: `` is not a valid tool name or glob",
            "tools[0].cost_usd: must be a non-negative number, got -1",
            "tools[1].cost_usd: must be a non-negative number, got NaN",
            "notify[0].url: `ftp://hooks` must start with http:// or https://",
            "notify[0].events[0]: unknown event `nope`; known: approval.requested, approval.resolved, approval.expired, session.paused, breaker.opened",
            "notify[0].secret: environment variable `NOPE` is not set",
            "notify[0].timeout_ms: must be between 1 and 60000, got 0",
            "notify[1].name: `notify[0]` is used twice",
            "notify[1].secret: must be `env:NAME`; secrets are not written in the file",
            "audit.signing_key: must be `env:NAME`; omit it to use a key file in `data_dir`",
            "audit.checkpoint_interval_seconds: must be between 1 and 86400, got 0",
            "audit.origin: `a b` must be non-empty, without spaces or `+`",
            "telemetry.otlp_endpoint: `grpc://collector` must start with http:// or https:// (OTLP over HTTP)",
            "telemetry.otlp_protocol: `udp` must be `grpc` or `http/protobuf`",
        ];
        let text = err.to_string();
        let got: Vec<&str> = text.lines().skip(1).map(|l| l.trim_start_matches("  - ")).collect();
        assert_eq!(got, expected, "\n{text}");
    }
}

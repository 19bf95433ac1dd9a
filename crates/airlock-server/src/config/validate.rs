//! [`RawConfig::validate`]: one function per section, run in the order of the sections below, so
//! problems are reported in the same order every time (tests and `airlock check` print them).
//! The sections with more to check live beside this file: `guards`, `identities` (agents and
//! humans), `upstreams` (upstreams and tools) and `servers` (virtual servers).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawApprovals, RawAudit, RawConfig, RawMcp, RawNotify, RawPolicy, RawServer, RawStorage, RawTelemetry,
};
use super::secrets::{Env, Recording, WebhookSecret, env_secret, token_hash};
use super::{
    ApprovalsConfig, AuditConfig, AuditKey, Config, McpConfig, NOTIFY_EVENTS, NotifyConfig, PolicyConfig, ServerConfig,
    StorageConfig, guards, identities, idp, servers, upstreams,
};

/// The problems found so far, each a `(key path, message)` pair, in the order they were found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<(String, String)>);

impl From<Vec<(String, String)>> for Problems {
    fn from(found: Vec<(String, String)>) -> Self {
        Problems(found)
    }
}

impl Problems {
    /// Adds the problem `message` with the key at `key`.
    pub(super) fn push(&mut self, key: &str, message: String) {
        self.0.push((key.to_string(), message));
    }

    /// How many have been found so far.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every problem, in the order found.
    pub(super) fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

impl RawConfig {
    /// Checks every section, adding what is wrong to `problems`, and builds the [`Config`] (which
    /// is only used when `problems` stays empty). Relative paths are taken from `base`.
    pub(super) fn validate(self, base: &Path, env: &dyn Env, problems: &mut Problems) -> Config {
        // Every `env:` reference is read through `secrets`, which notes the names of the
        // variables that hold secrets; `env` itself is read directly only for what stdio
        // upstreams inherit, once the whole file has been read.
        let secrets = Recording::new(env);
        let server = server(self.server, base, &secrets, problems);
        let policy = policy(self.policy, base, &secrets, problems);
        let approvals = approvals(self.approvals, problems);
        let mcp = mcp(self.mcp, problems);
        let guards = guards::defaults(&self.guards, problems);
        let identity = idp::identity(self.identity, &secrets, problems);
        let agent_templates = idp::templates(self.agent_templates, identity.as_ref(), &guards, problems);
        let mut taken = identities::Taken::default();
        // An agent's `on_behalf_of` names a human, who may be declared after it.
        let human_ids: Vec<&str> = self.humans.iter().map(|h| h.id.as_str()).collect();
        let agents =
            identities::agents(self.agents, &guards, &human_ids, identity.as_ref(), &secrets, &mut taken, problems);
        let humans = identities::humans(self.humans, identity.as_ref(), &secrets, &mut taken, problems);
        let mut upstreams = upstreams::upstreams(self.upstreams, &secrets, problems);
        let tools = upstreams::tools(self.tools, problems);
        let servers = servers::servers(self.servers, &upstreams, &tools, &agents, problems);
        let notify = notify(self.notify, &secrets, problems);
        let audit = audit(self.audit, base, &secrets, problems);
        let telemetry = telemetry(self.telemetry, problems);
        let storage = storage(self.storage, &secrets, problems);
        upstreams::inherit(&mut upstreams, env, &secrets.into_names());
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
            servers,
            notify,
            guards,
            audit,
            telemetry,
            identity,
            agent_templates,
            storage,
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// Whether `url` is an `http://` or `https://` URL.
fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// `[server]`
fn server(raw: RawServer, base: &Path, env: &dyn Env, problems: &mut Problems) -> ServerConfig {
    let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:7878".into());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.push(
            "server.listen",
            format!(
                "`{listen_text}` is not an address; write IP:PORT such as `127.0.0.1:7878` (port 0 picks a free port)"
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 7878))
    });
    let max_body = raw.max_body_bytes.unwrap_or(1024 * 1024);
    if !(1024..=64 * 1024 * 1024).contains(&max_body) {
        problems.push("server.max_body_bytes", format!("must be between 1024 and 67108864, got {max_body}"));
    }
    if let Some(url) = &raw.public_url
        && !is_http(url)
    {
        problems.push("server.public_url", format!("`{url}` must start with http:// or https://"));
    }
    let max_wait = raw.max_wait_seconds.unwrap_or(60);
    if !(1..=3600).contains(&max_wait) {
        problems.push("server.max_wait_seconds", format!("must be between 1 and 3600, got {max_wait}"));
    }
    let metrics_token_hash = raw
        .metrics_token
        .as_deref()
        .and_then(|t| token_hash(t, env).map_err(|message| problems.push("server.metrics_token", message)).ok());
    let min_free_disk_mb = raw.min_free_disk_mb.unwrap_or(256);
    if min_free_disk_mb > 1 << 30 {
        problems.push("server.min_free_disk_mb", format!("must be at most 1073741824 (1 PiB), got {min_free_disk_mb}"));
    }
    let mut seconds = |key: &str, value: Option<u64>, default: u64, max: u64| {
        let v = value.unwrap_or(default);
        if !(1..=max).contains(&v) {
            problems.push(&format!("server.{key}"), format!("must be between 1 and {max}, got {v}"));
        }
        Duration::from_secs(v)
    };
    let header_read_timeout = seconds("header_read_timeout_seconds", raw.header_read_timeout_seconds, 10, 300);
    let request_body_timeout = seconds("request_body_timeout_seconds", raw.request_body_timeout_seconds, 30, 3600);
    let idle_timeout = seconds("idle_timeout_seconds", raw.idle_timeout_seconds, 60, 3600);
    let max_connections = raw.max_connections.unwrap_or(512);
    if !(1..=1_000_000).contains(&max_connections) {
        problems.push("server.max_connections", format!("must be between 1 and 1000000, got {max_connections}"));
    }
    let reserved_connections = raw.reserved_connections.unwrap_or(16);
    if reserved_connections > 10_000 {
        problems
            .push("server.reserved_connections", format!("must be between 0 and 10000, got {reserved_connections}"));
    }
    let connections = crate::connections::Limits {
        header_read_timeout,
        request_body_timeout,
        idle_timeout,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        reserved_connections: usize::try_from(reserved_connections).unwrap_or(usize::MAX),
    };
    ServerConfig {
        listen,
        min_free_disk_bytes: min_free_disk_mb.saturating_mul(1024 * 1024),
        data_dir: resolve(base, raw.data_dir.as_deref().unwrap_or(".airlock")),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
        public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
        max_wait: Duration::from_secs(max_wait),
        metrics_token_hash,
        connections,
    }
}

/// `[policy]`
fn policy(raw: RawPolicy, base: &Path, env: &dyn Env, problems: &mut Problems) -> PolicyConfig {
    let dir = match raw.dir {
        Some(d) => resolve(base, &d),
        None => {
            problems.push("policy.dir", "is required: the directory of `.rego` files".into());
            PathBuf::new()
        }
    };
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        problems.push("policy.dir", format!("`{}` is not a directory", dir.display()));
    }
    let timeout_ms = raw.timeout_ms.unwrap_or(100);
    if !(1..=60_000).contains(&timeout_ms) {
        problems.push("policy.timeout_ms", format!("must be between 1 and 60000, got {timeout_ms}"));
    }
    let canary_key = raw.canary_key.as_deref().and_then(|v| {
        env_secret(v, env, "must be `env:NAME`; omit it to use a key file in `data_dir`")
            .and_then(|key| {
                if key.len() < 16 {
                    Err("must hold at least 16 bytes; 32 random bytes in base64 (`openssl rand -base64 32`) do".into())
                } else {
                    Ok(crate::lifecycle::CanaryKey::from_bytes(key.as_bytes()))
                }
            })
            .map_err(|message| problems.push("policy.canary_key", message))
            .ok()
    });
    PolicyConfig { dir, timeout: Duration::from_millis(timeout_ms), canary_key }
}

/// `[approvals]`
fn approvals(raw: RawApprovals, problems: &mut Problems) -> ApprovalsConfig {
    let ttl = raw.default_ttl_seconds.unwrap_or(3600);
    if !(1..=airlock_core::decision::MAX_APPROVAL_TTL_SECONDS).contains(&ttl) {
        problems.push("approvals.default_ttl_seconds", format!("must be between 1 and 2592000, got {ttl}"));
    }
    let execute_within = raw.execute_within_seconds.unwrap_or(3600);
    if !(1..=7 * 24 * 3600).contains(&execute_within) {
        problems
            .push("approvals.execute_within_seconds", format!("must be between 1 and 604800, got {execute_within}"));
    }
    let defaults = airlock_core::vote::MfaLimits::default();
    let max_failures = raw.mfa_max_failures.unwrap_or(defaults.max_failures);
    if !(1..=100).contains(&max_failures) {
        problems.push("approvals.mfa_max_failures", format!("must be between 1 and 100, got {max_failures}"));
    }
    let lockout = raw.mfa_lockout_seconds.unwrap_or(defaults.lockout_seconds);
    if !(1..=7 * 24 * 3600).contains(&lockout) {
        problems.push("approvals.mfa_lockout_seconds", format!("must be between 1 and 604800, got {lockout}"));
    }
    ApprovalsConfig {
        default_ttl_seconds: ttl,
        allow_requester: raw.allow_requester.unwrap_or(false),
        execute_within_seconds: execute_within,
        mfa: airlock_core::vote::MfaLimits { max_failures, lockout_seconds: lockout },
    }
}

/// `[mcp]`
fn mcp(raw: RawMcp, problems: &mut Problems) -> McpConfig {
    let wait = raw.approval_wait_seconds.unwrap_or(30);
    if wait > 3600 {
        problems.push("mcp.approval_wait_seconds", format!("must be at most 3600, got {wait}"));
    }
    let idle = raw.session_idle_seconds.unwrap_or(3600);
    if !(1..=7 * 24 * 3600).contains(&idle) {
        problems.push("mcp.session_idle_seconds", format!("must be between 1 and 604800, got {idle}"));
    }
    McpConfig { approval_wait: Duration::from_secs(wait), session_idle: Duration::from_secs(idle) }
}

/// `[[notify]]`: unique names, known events, secrets from the environment.
fn notify(raw: Vec<RawNotify>, env: &dyn Env, problems: &mut Problems) -> Vec<NotifyConfig> {
    let mut notify = Vec::new();
    let mut names = HashSet::new();
    for (i, n) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("notify[{i}].{k}");
        let name = n.name.unwrap_or_else(|| format!("notify[{i}]"));
        if !names.insert(name.clone()) {
            problems.push(&key("name"), format!("`{name}` is used twice"));
        }
        if !is_http(&n.url) {
            problems.push(&key("url"), format!("`{}` must start with http:// or https://", n.url));
        }
        let events = n.events.unwrap_or_else(|| NOTIFY_EVENTS.iter().map(|e| e.to_string()).collect());
        for (j, e) in events.iter().enumerate() {
            if !NOTIFY_EVENTS.contains(&e.as_str()) {
                problems.push(
                    &format!("notify[{i}].events[{j}]"),
                    format!("unknown event `{e}`; known: {}", NOTIFY_EVENTS.join(", ")),
                );
            }
        }
        let secret = n.secret.as_deref().and_then(|v| {
            env_secret(v, env, "must be `env:NAME`; secrets are not written in the file")
                .and_then(|s| WebhookSecret::from_configured(&s))
                .map_err(|message| problems.push(&key("secret"), message))
                .ok()
        });
        let timeout_ms = n.timeout_ms.unwrap_or(5000);
        if !(1..=60_000).contains(&timeout_ms) {
            problems.push(&key("timeout_ms"), format!("must be between 1 and 60000, got {timeout_ms}"));
        }
        notify.push(NotifyConfig { name, url: n.url, events, secret, timeout: Duration::from_millis(timeout_ms) });
    }
    notify
}

/// `[audit]`
fn audit(raw: RawAudit, base: &Path, env: &dyn Env, problems: &mut Problems) -> AuditConfig {
    let signing_key = raw
        .signing_key
        .as_deref()
        .and_then(|v| audit_key(v, base, env).map_err(|message| problems.push("audit.signing_key", message)).ok());
    let interval = raw.checkpoint_interval_seconds.unwrap_or(300);
    if !(1..=86_400).contains(&interval) {
        problems.push("audit.checkpoint_interval_seconds", format!("must be between 1 and 86400, got {interval}"));
    }
    let every = raw.checkpoint_every_events.unwrap_or(1000);
    if !(1..=1_000_000_000).contains(&every) {
        problems.push("audit.checkpoint_every_events", format!("must be between 1 and 1000000000, got {every}"));
    }
    let origin = raw.origin.unwrap_or_else(|| "airlock".into());
    if origin.is_empty() || origin.contains(char::is_whitespace) || origin.contains('+') {
        problems.push("audit.origin", format!("`{origin}` must be non-empty, without spaces or `+`"));
    }
    AuditConfig {
        signing_key,
        checkpoint_interval: Duration::from_secs(interval),
        checkpoint_every_events: every,
        origin,
    }
}

/// `[audit] signing_key`: `env:NAME` holding the seed, or the path of a file holding it. The
/// file is only looked for here, not read: `audit verify` loads this config too, and may run as
/// someone who can't read the key (and is given the public key instead).
fn audit_key(value: &str, base: &Path, env: &dyn Env) -> Result<AuditKey, String> {
    if value.starts_with("env:") {
        let name = value.trim_start_matches("env:").to_string();
        let text = env_secret(value, env, "")?;
        let seed = crate::audit::decode_key(&text)
            .map_err(|e| format!("environment variable `{name}`: {e} (`openssl rand -base64 32` makes one)"))?;
        return Ok(AuditKey::Env { name, seed });
    }
    if value.trim().is_empty() {
        return Err("must be `env:NAME` or the path of a key file; omit it to use a key file in `data_dir`".into());
    }
    let path = resolve(base, value);
    if !path.is_file() {
        return Err(format!(
            "`{}` is not a file; write `env:NAME` or the path of a file holding the key (`openssl rand -base64 32 > FILE` makes one)",
            path.display()
        ));
    }
    Ok(AuditKey::File(path))
}

/// `[telemetry]`
fn telemetry(raw: RawTelemetry, problems: &mut Problems) -> crate::otel::TelemetryConfig {
    if let Some(e) = &raw.otlp_endpoint
        && !is_http(e)
    {
        problems.push("telemetry.otlp_endpoint", format!("`{e}` must start with http:// or https:// (OTLP over HTTP)"));
    }
    if let Some(p) = &raw.otlp_protocol
        && p != "grpc"
        && p != "http/protobuf"
    {
        problems.push("telemetry.otlp_protocol", format!("`{p}` must be `grpc` or `http/protobuf`"));
    }
    crate::otel::TelemetryConfig {
        otlp_endpoint: raw.otlp_endpoint,
        capture_content: raw.capture_content.unwrap_or(false),
        service_name: raw.service_name.unwrap_or_else(|| "airlock".into()),
        protocol: raw.otlp_protocol,
    }
}

/// `[storage]`: the SQLite default, or PostgreSQL at a URL read from the environment (it holds
/// the database password, so it is never written in the file).
fn storage(raw: RawStorage, env: &dyn Env, problems: &mut Problems) -> StorageConfig {
    let backend = raw.backend.as_deref().unwrap_or("sqlite");
    let pool_keys = [
        ("max_connections", raw.max_connections.is_some()),
        ("connect_timeout_seconds", raw.connect_timeout_seconds.is_some()),
    ];
    match backend {
        "sqlite" => {
            for (key, given) in [("url", raw.url.is_some())].into_iter().chain(pool_keys) {
                if given {
                    problems.push(&format!("storage.{key}"), "is for `backend = \"postgres\"` only".into());
                }
            }
            StorageConfig::Sqlite
        }
        "postgres" => {
            let Some(value) = raw.url else {
                problems.push(
                    "storage.url",
                    "is required with `backend = \"postgres\"`: `env:NAME`, naming the variable that holds the connection URL".into(),
                );
                return StorageConfig::Sqlite;
            };
            let has_password = value.contains("password=")
                || value
                    .split_once("://")
                    .and_then(|(_, rest)| rest.rsplit_once('@'))
                    .is_some_and(|(auth, _)| auth.contains(':'));
            let not_a_reference = if has_password {
                "holds a password: never write it in the file. Put the URL in an environment variable and write `env:NAME`"
            } else {
                "must be `env:NAME`, naming the environment variable that holds the connection URL \
                 (`postgres://user:password@host:5432/database`): the URL carries the database password, which is never written in the file"
            };
            let url = match env_secret(&value, env, not_a_reference) {
                Ok(url) => url,
                Err(message) => {
                    problems.push("storage.url", message);
                    return StorageConfig::Sqlite;
                }
            };
            let name = value.trim_start_matches("env:");
            let mut options = match airlock_store::PostgresOptions::parse(&url) {
                Ok(options) => options,
                Err(message) => {
                    problems.push("storage.url", format!("environment variable `{name}` {message}"));
                    return StorageConfig::Sqlite;
                }
            };
            let max_connections = raw.max_connections.unwrap_or(16);
            if !(2..=1000).contains(&max_connections) {
                problems.push("storage.max_connections", format!("must be between 2 and 1000, got {max_connections}"));
            }
            let timeout = raw.connect_timeout_seconds.unwrap_or(5);
            if !(1..=300).contains(&timeout) {
                problems.push("storage.connect_timeout_seconds", format!("must be between 1 and 300, got {timeout}"));
            }
            options.max_connections = usize::try_from(max_connections).unwrap_or(16);
            options.connect_timeout = Duration::from_secs(timeout);
            StorageConfig::Postgres(Box::new(options))
        }
        other => {
            problems.push("storage.backend", format!("`{other}` must be `sqlite` (the default) or `postgres`"));
            StorageConfig::Sqlite
        }
    }
}

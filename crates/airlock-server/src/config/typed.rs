//! The validated configuration the server reads: immutable, every default filled in, every path
//! resolved and every `env:` reference read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use airlock_core::limits::GuardLimits;
use airlock_core::{Agent, Human};

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
    /// `[[servers]]`: virtual MCP servers, each at `/mcp/{name}`.
    pub servers: Vec<VirtualServerConfig>,
    /// `[[notify]]`
    pub notify: Vec<NotifyConfig>,
    /// `[guards]`: the defaults every agent starts from.
    pub guards: GuardLimits,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[telemetry]`
    pub telemetry: crate::otel::TelemetryConfig,
    /// `[identity]`: access tokens from identity providers; `None` = static tokens only.
    pub identity: Option<super::IdentityConfig>,
    /// `[[agent_templates]]`, in file order.
    pub agent_templates: Vec<super::AgentTemplate>,
    /// `[storage]`: where the journal is.
    pub storage: StorageConfig,
}

/// `[storage]`: where the journal is.
#[derive(Debug, Clone, Default)]
pub enum StorageConfig {
    /// `journal.db` in `data_dir` (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database (one server writes it at a time, for now).
    Postgres(Box<airlock_store::PostgresOptions>),
}

impl StorageConfig {
    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageConfig::Sqlite => "sqlite",
            StorageConfig::Postgres(_) => "postgres",
        }
    }
}

/// Events a `[[notify]]` webhook can subscribe to.
pub const NOTIFY_EVENTS: &[&str] =
    &["approval.requested", "approval.resolved", "approval.expired", "session.paused", "breaker.opened", "plan.stuck"];

/// One `[[notify]]` webhook.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Name (defaults to `notify[N]`), used in logs and the outbox.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Events it receives.
    pub events: Vec<String>,
    /// HMAC-SHA256 key of the `webhook-signature` header (Standard Webhooks).
    pub secret: Option<super::WebhookSecret>,
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
    /// SHA-256 of the bearer token `/metrics` requires; `None` leaves it open.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// Free space under `data_dir` below which new sessions and actions are refused (507), in
    /// bytes; 0 disables the check.
    pub min_free_disk_bytes: u64,
    /// Connection timeouts and caps.
    pub connections: crate::connections::Limits,
}

/// `[policy]`
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Directory of `.rego` files.
    pub dir: PathBuf,
    /// Limit of one evaluation.
    pub timeout: Duration,
    /// Key of canary bucketing, read from the environment; `None` = a key file in `data_dir`.
    pub canary_key: Option<crate::lifecycle::CanaryKey>,
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
    /// Failed TOTP codes in a row that lock a human's MFA votes, and for how long.
    pub mfa: airlock_core::vote::MfaLimits,
}

/// `[mcp]`
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// How long a `tools/call` that needs approval is held open.
    pub approval_wait: Duration,
    /// How long an MCP session may go without a request in progress or arriving before it
    /// expires (and the airlock session behind it is closed).
    pub session_idle: Duration,
}

/// One `[[agents]]` entry.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent.
    pub agent: Agent,
    /// SHA-256 of its static bearer token; `None` when it authenticates with access tokens only.
    pub token_hash: Option<[u8; 32]>,
    /// The only issuer whose access tokens may name this agent; `None`: any configured issuer.
    pub issuer: Option<String>,
    /// Tool allowlist (globs); `None` means all tools.
    pub tools: Option<Vec<String>>,
    /// Guard thresholds: `[guards]` with the agent's own `[agents.guards]` over it.
    pub limits: GuardLimits,
    /// The human every session of this agent acts for (a `[[humans]]` id), whatever the agent
    /// says: it can repeat this requester when it opens a session, never drop or change it.
    pub on_behalf_of: Option<String>,
    /// What the access token of this request established (`input.identity`); `None` for an agent
    /// that authenticated with its static token.
    pub identity: Option<airlock_core::Identity>,
    /// The token's `tools:` scopes: when set, the agent may call only what these globs match as
    /// well as `tools`.
    pub token_tools: Option<Vec<String>>,
}

impl AgentConfig {
    /// Whether the agent may call (or see) `tool`: its allowlist covers it and, when its access
    /// token has `tools:` scopes, one of them does too.
    pub fn allows_tool(&self, tool: &str) -> bool {
        crate::catalog::allowlist_covers(self.tools.as_deref(), tool)
            && crate::catalog::allowlist_covers(self.token_tools.as_deref(), tool)
    }
}

/// One `[[humans]]` entry.
#[derive(Debug, Clone)]
pub struct HumanConfig {
    /// The human.
    pub human: Human,
    /// SHA-256 of their bearer token; `None` for a human who signs in at the identity provider
    /// only (`[identity.humans]`).
    pub token_hash: Option<[u8; 32]>,
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
        /// Its own `env` table, with `env:` references read.
        env: BTreeMap<String, String>,
        /// What it inherits from airlock's environment: the set variables of
        /// [`INHERITED_ENV`](super::INHERITED_ENV) that the file reads no secret from. The child
        /// gets these plus `env` (which wins), and nothing else.
        inherited: BTreeMap<String, String>,
    },
    /// Streamable HTTP.
    Http {
        /// Endpoint.
        url: String,
        /// Extra headers.
        headers: BTreeMap<String, String>,
        /// airlock's own OAuth client credentials for it (`[upstreams.client_credentials]`).
        client_credentials: Option<airlock_identity::ClientCredentialsOptions>,
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
    /// Whether a call's arguments are checked against the `inputSchema` the upstream lists for
    /// the tool before policy sees them.
    pub validate_input: bool,
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

/// One `[[servers]]` entry: a virtual MCP server, served at `/mcp/{name}`, that offers a chosen
/// part of the upstreams' tools, prompts and resources under the names it gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerConfig {
    /// Its name, the last segment of its path.
    pub name: String,
    /// What it offers.
    pub select: ServerSelect,
    /// Whether names keep the `{upstream}__` prefix (`true`) or are offered as the upstream has
    /// them (`false`).
    pub prefix: bool,
    /// Per-tool name and description, by full name (`{upstream}__{tool}`).
    pub overrides: BTreeMap<String, ToolOverride>,
}

/// What a virtual server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSelect {
    /// Everything of these upstreams.
    Upstreams(Vec<String>),
    /// What these globs match, over full names (`{upstream}__{tool}`; prompts, resources and
    /// templates by their prefixed names too, as agents' allowlists are).
    Tools(Vec<String>),
}

/// How a virtual server shows one tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolOverride {
    /// The name it is offered under instead.
    pub rename: Option<String>,
    /// The description it is offered with instead of the upstream's.
    pub description: Option<String>,
}

/// `[audit]`
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where the checkpoint signing key comes from; `None` = a key file in `data_dir`.
    pub signing_key: Option<AuditKey>,
    /// How often a checkpoint is signed (and once at shutdown).
    pub checkpoint_interval: Duration,
    /// A checkpoint is signed at the latest when this many events were added since the last.
    pub checkpoint_every_events: u64,
    /// Origin line of checkpoint notes, and the key name.
    pub origin: String,
}

/// `[audit] signing_key`: the Ed25519 seed that signs checkpoints, kept where whoever can rewrite
/// `data_dir` can't read it.
#[derive(Clone)]
pub enum AuditKey {
    /// `env:NAME`: the seed, read from the environment when the file was loaded.
    Env {
        /// The variable's name.
        name: String,
        /// The seed.
        seed: [u8; 32],
    },
    /// A path: a file holding the seed in base64 or hex, read when `serve` starts (and by
    /// `audit verify` and `audit anchor` for the public key, unless one is given to them).
    File(PathBuf),
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditKey::Env { name, .. } => f.debug_struct("Env").field("name", name).finish_non_exhaustive(),
            AuditKey::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

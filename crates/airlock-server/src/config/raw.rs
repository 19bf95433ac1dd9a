//! The file as written: one serde type per section, every field optional where the section has
//! a default. Nothing here is checked; [`RawConfig::validate`] turns these into a [`Config`].
//!
//! Fields are visible to the rest of `config` only: callers get a [`Config`] or the problems.
//!
//! [`Config`]: super::Config

use std::collections::BTreeMap;

use airlock_core::limits::OnBudgetExceeded;
use airlock_core::{Role, Tier};
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) approvals: RawApprovals,
    #[serde(default)]
    pub(super) mcp: RawMcp,
    #[serde(default)]
    pub(super) agents: Vec<RawAgent>,
    #[serde(default)]
    pub(super) humans: Vec<RawHuman>,
    #[serde(default)]
    pub(super) upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub(super) tools: Vec<RawTool>,
    #[serde(default)]
    pub(super) servers: Vec<RawVirtualServer>,
    #[serde(default)]
    pub(super) notify: Vec<RawNotify>,
    #[serde(default)]
    pub(super) guards: RawGuards,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    pub(super) identity: Option<RawIdentity>,
    #[serde(default)]
    pub(super) agent_templates: Vec<RawAgentTemplate>,
    #[serde(default)]
    pub(super) storage: RawStorage,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) data_dir: Option<String>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) public_url: Option<String>,
    pub(super) max_wait_seconds: Option<u64>,
    pub(super) metrics_token: Option<String>,
    pub(super) min_free_disk_mb: Option<u64>,
    pub(super) header_read_timeout_seconds: Option<u64>,
    pub(super) request_body_timeout_seconds: Option<u64>,
    pub(super) idle_timeout_seconds: Option<u64>,
    pub(super) max_connections: Option<u64>,
    pub(super) reserved_connections: Option<u64>,
}

/// `[policy]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPolicy {
    pub(super) dir: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) canary_key: Option<String>,
}

/// `[approvals]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawApprovals {
    pub(super) default_ttl_seconds: Option<u64>,
    pub(super) allow_requester: Option<bool>,
    pub(super) execute_within_seconds: Option<u64>,
    pub(super) mfa_max_failures: Option<u32>,
    pub(super) mfa_lockout_seconds: Option<u64>,
}

/// `[mcp]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMcp {
    pub(super) approval_wait_seconds: Option<u64>,
    pub(super) session_idle_seconds: Option<u64>,
}

/// One `[[agents]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawAgent {
    pub(super) id: String,
    pub(super) token: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) owner: String,
    pub(super) oncall: Option<String>,
    pub(super) tier: Tier,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    pub(super) tools: Option<Vec<String>>,
    pub(super) on_behalf_of: Option<String>,
    #[serde(default)]
    pub(super) guards: RawGuards,
}

/// One `[[humans]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawHuman {
    pub(super) id: String,
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) roles: Vec<Role>,
    pub(super) totp: Option<String>,
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawUpstream {
    pub(super) name: String,
    pub(super) command: Option<String>,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) read_only: Vec<String>,
    #[serde(default)]
    pub(super) destructive: Vec<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) validate_input: Option<bool>,
    pub(super) client_credentials: Option<RawClientCredentials>,
}

/// `[upstreams.client_credentials]`: airlock's own OAuth client at the upstream's authorization
/// server.
#[derive(Debug, Deserialize)]
pub(super) struct RawClientCredentials {
    pub(super) token_endpoint: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) scope: Option<String>,
    pub(super) resource: Option<String>,
    pub(super) audience: Option<String>,
}

/// One `[[tools]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawTool {
    pub(super) name: String,
    pub(super) read_only: Option<bool>,
    pub(super) destructive: Option<bool>,
    pub(super) cost_usd: Option<f64>,
}

/// One `[[servers]]` entry: a virtual MCP server at `/mcp/{name}`.
#[derive(Debug, Deserialize)]
pub(super) struct RawVirtualServer {
    pub(super) name: String,
    pub(super) upstreams: Option<Vec<String>>,
    pub(super) tools: Option<Vec<String>>,
    pub(super) prefix: Option<bool>,
    #[serde(default)]
    pub(super) overrides: BTreeMap<String, RawToolOverride>,
}

/// One `[servers.overrides."{upstream}__{tool}"]` table.
#[derive(Debug, Deserialize)]
pub(super) struct RawToolOverride {
    pub(super) rename: Option<String>,
    pub(super) description: Option<String>,
}

/// One `[[notify]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawNotify {
    pub(super) name: Option<String>,
    pub(super) url: String,
    pub(super) events: Option<Vec<String>>,
    pub(super) secret: Option<String>,
    pub(super) timeout_ms: Option<u64>,
}

/// `[guards]`, and `[agents.guards]` over it.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RawGuards {
    pub(super) loop_repeats: Option<u32>,
    pub(super) loop_window_seconds: Option<u64>,
    pub(super) max_consecutive_failures: Option<u32>,
    pub(super) max_consecutive_denials: Option<u32>,
    pub(super) actions_per_minute: Option<u32>,
    pub(super) sessions_per_minute: Option<u32>,
    pub(super) budget_usd_per_day: Option<f64>,
    pub(super) budget_usd_per_session: Option<f64>,
    pub(super) on_budget_exceeded: Option<OnBudgetExceeded>,
    pub(super) breaker_failures: Option<u32>,
    pub(super) breaker_cooldown_seconds: Option<u64>,
    pub(super) breaker_error_rate: Option<f64>,
    pub(super) breaker_window_seconds: Option<u64>,
    pub(super) breaker_min_calls: Option<u32>,
}

/// `[audit]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAudit {
    pub(super) signing_key: Option<String>,
    pub(super) checkpoint_interval_seconds: Option<u64>,
    pub(super) checkpoint_every_events: Option<u64>,
    pub(super) origin: Option<String>,
}

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_protocol: Option<String>,
    pub(super) capture_content: Option<bool>,
    pub(super) service_name: Option<String>,
}

/// `[identity]`: access tokens from the organisation's identity provider.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawIdentity {
    pub(super) resource: Option<String>,
    #[serde(default)]
    pub(super) required_scopes: Vec<String>,
    pub(super) scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    pub(super) issuers: Vec<RawIssuer>,
    pub(super) humans: Option<RawHumanSignIn>,
}

/// `[identity.humans]`: people sign in to the review UI at the identity provider (OpenID
/// Connect), and use its access tokens on the API.
#[derive(Debug, Deserialize)]
pub(super) struct RawHumanSignIn {
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) redirect_uri: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) id_claim: Option<String>,
    pub(super) groups_claim: Option<String>,
    #[serde(default)]
    pub(super) approver_groups: Vec<String>,
    #[serde(default)]
    pub(super) admin_groups: Vec<String>,
    pub(super) algorithms: Option<Vec<String>>,
    pub(super) leeway_seconds: Option<u64>,
}

/// One `[[identity.issuers]]` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawIssuer {
    pub(super) issuer: String,
    pub(super) jwks_uri: Option<String>,
    pub(super) audiences: Option<Vec<String>>,
    pub(super) algorithms: Option<Vec<String>>,
    pub(super) leeway_seconds: Option<u64>,
    pub(super) token_type: Option<String>,
    pub(super) agent_claim: Option<String>,
    pub(super) groups_claim: Option<String>,
    pub(super) scopes_claim: Option<String>,
    pub(super) keys_cache_seconds: Option<u64>,
    pub(super) keys_min_refresh_seconds: Option<u64>,
}

/// One `[[agent_templates]]` entry: what an agent that a token names, and no `[[agents]]` entry
/// lists, is.
#[derive(Debug, Deserialize)]
pub(super) struct RawAgentTemplate {
    pub(super) name: String,
    pub(super) issuer: Option<String>,
    pub(super) claim: Option<String>,
    #[serde(default)]
    pub(super) values: Vec<String>,
    pub(super) owner: String,
    pub(super) oncall: Option<String>,
    pub(super) tier: Tier,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    pub(super) tools: Option<Vec<String>>,
    #[serde(default)]
    pub(super) guards: RawGuards,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStorage {
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) max_connections: Option<u64>,
    pub(super) connect_timeout_seconds: Option<u64>,
}

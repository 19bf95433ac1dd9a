//! `airlock.toml`: raw serde types → [`validate`](RawConfig::validate) → an immutable [`Config`].
//!
//! Every problem is reported at once, each with the path of the key it is about
//! (`agents[1].tier`). Unknown keys are errors. Paths in the file are relative to the file.
//! Secrets are never written in the file: tokens are `sha256:<hex>` hashes or `env:NAME`
//! references read at start.
//!
//! Unknown keys are rejected through `serde_ignored` rather than `#[serde(deny_unknown_fields)]`:
//! the latter stops at the first unknown key, the former lets one run name all of them.
//!
//! The parts, in the order a file goes through them:
//!
//! - `load`: reads the file, collects unknown keys and type errors with their key paths;
//! - `raw`: the file as written, one serde type per section;
//! - `validate`: one function per section, each adding its problems in file order;
//! - `idp`: `[identity]` (access tokens, their issuers) and `[[agent_templates]]`;
//! - `servers`: `[[servers]]`, the virtual MCP servers, checked against the tools the file names;
//! - `typed`: the validated [`Config`] the rest of the server reads;
//! - `secrets`: `env:` references and token hashes; `money`: amounts of US dollars.

use std::fmt;
use std::path::PathBuf;

mod guards;
pub(crate) mod identities;
mod idp;
mod load;
mod money;
mod raw;
mod secrets;
mod servers;
mod typed;
mod upstreams;
mod validate;

pub use idp::{AgentTemplate, HumanSignInConfig, IdentityConfig, IssuerConfig};
pub use raw::RawConfig;
pub use secrets::{Env, ProcessEnv, WHSEC_PREFIX, WebhookSecret, hash_token};
pub use typed::{
    AgentConfig, ApprovalsConfig, AuditConfig, AuditKey, Config, HumanConfig, McpConfig, NOTIFY_EVENTS, NotifyConfig,
    PolicyConfig, ServerConfig, ServerSelect, StorageConfig, ToolConfig, ToolOverride, UpstreamConfig,
    UpstreamTransport, VirtualServerConfig,
};
pub use upstreams::INHERITED_ENV;

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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_servers;
#[cfg(test)]
mod tests_storage;

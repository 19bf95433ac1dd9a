//! Who an access token says the caller is: the part of a verified token that policy sees as
//! `input.identity`, and the `tools:` scopes that narrow what an agent may call.
//!
//! Verifying the token is not done here (that is IO and cryptography, `airlock-identity`); this
//! module only holds what a verified token established, so that decisions stay pure and can be
//! replayed from the recorded input.

use serde::{Deserialize, Serialize};

/// The prefix of scopes that narrow an agent's tool allowlist (`tools:infra__*`).
pub const TOOLS_SCOPE_PREFIX: &str = "tools:";

/// What a verified access token says about its caller. Agents that authenticated with a static
/// token have none (`input.identity` is `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's `iss`: the authorization server that issued it.
    pub issuer: String,
    /// The token's `sub`, empty when it has none.
    pub subject: String,
    /// The OAuth client the token was issued to (`client_id`, else `azp`), when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The token's scopes (`scope`, or `scp`), in the order given.
    pub scopes: Vec<String>,
    /// The caller's groups, from the issuer's groups claim.
    pub groups: Vec<String>,
}

impl Identity {
    /// The tool globs of the token's `tools:` scopes, or `None` when it has no such scope (the
    /// token does not narrow the allowlist). A token with `tools:` scopes may call only what one
    /// of them matches, within what the agent is allowed anyway.
    pub fn tool_scopes(&self) -> Option<Vec<String>> {
        let globs: Vec<String> = self
            .scopes
            .iter()
            .filter_map(|s| s.strip_prefix(TOOLS_SCOPE_PREFIX))
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        (!globs.is_empty()).then_some(globs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_scopes(scopes: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp.example".into(),
            subject: "bot".into(),
            client_id: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn only_tools_scopes_narrow_the_allowlist() {
        assert_eq!(with_scopes(&["mcp", "openid"]).tool_scopes(), None);
        assert_eq!(with_scopes(&["tools:"]).tool_scopes(), None);
        assert_eq!(
            with_scopes(&["mcp", "tools:infra__*", "tools:db.list"]).tool_scopes(),
            Some(vec!["infra__*".to_string(), "db.list".to_string()])
        );
    }
}

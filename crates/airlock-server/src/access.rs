//! Who a bearer token is, when it is an access token from the organisation's identity provider,
//! and what airlock tells clients about how to get one (the MCP authorization spec, RFC 9728).
//!
//! airlock is an OAuth *protected resource*: `/v1`, `/mcp` and each `/mcp/{name}` have a
//! resource identifier and a metadata document at `/.well-known/oauth-protected-resource{path}`
//! that names the authorization servers; a request without a valid token gets `401` with a
//! `WWW-Authenticate` challenge that points at that document. A verified token (see
//! `airlock-identity`) becomes an agent: the `[[agents]]` entry its agent claim names, or one made
//! from the first `[[agent_templates]]` entry its claims choose, narrowed by its `tools:` scopes
//! and carrying its [`Identity`] to policy.
//!
//! Static tokens are not handled here (the API's principal index is); this module only sees the
//! tokens that index does not know. The token itself is never kept, logged or sent anywhere.

use std::sync::Arc;
use std::time::Duration;

use airlock_core::{Agent, Identity};
use airlock_identity::{VerifiedToken, Verifier};

use crate::human_sign_in::HumanSignIn;
use axum::http::HeaderValue;
use serde_json::{Value, json};

use crate::config::{AgentConfig, AgentTemplate, Config, HumanConfig, IssuerConfig};

/// The endpoint a request came to, which decides its resource identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// The HTTP API (`/v1`), and anything else that is not MCP.
    Api,
    /// `/mcp` (`None`) or the virtual server `/mcp/{name}`.
    Mcp(Option<&'a str>),
}

impl<'a> Endpoint<'a> {
    /// The endpoint of a request path.
    pub fn of(path: &'a str) -> Endpoint<'a> {
        match path.strip_prefix("/mcp") {
            Some("") => Endpoint::Mcp(None),
            Some(rest) => match rest.strip_prefix('/') {
                Some(name) if !name.is_empty() && !name.contains('/') => Endpoint::Mcp(Some(name)),
                _ => Endpoint::Api,
            },
            None => Endpoint::Api,
        }
    }

    /// Its path below the base URL: empty for the API, `/mcp`, `/mcp/{name}`.
    fn path(&self) -> String {
        match self {
            Endpoint::Api => String::new(),
            Endpoint::Mcp(None) => "/mcp".into(),
            Endpoint::Mcp(Some(name)) => format!("/mcp/{name}"),
        }
    }
}

/// Why an access token did not make an agent.
#[derive(Debug)]
pub enum Refusal {
    /// The token is not valid (`401`, `error="invalid_token"`).
    Invalid(airlock_identity::Error),
    /// The token could not be checked now (`503`).
    Unavailable(airlock_identity::Error),
    /// The token lacks scopes every request needs (`403`, `error="insufficient_scope"`).
    InsufficientScope(Vec<String>),
    /// The token is valid, but names no agent airlock knows (`403`).
    NoAgent(String),
}

/// Access tokens, resource identifiers and the metadata documents. Cheap to share.
#[derive(Debug, Clone)]
pub struct Access {
    config: Arc<Config>,
    verifier: Option<Arc<Verifier>>,
    /// `[server] public_url`, or the address airlock listens on; no trailing `/`.
    base: String,
    /// Sign-in for people at the identity provider (`[identity.humans]`).
    humans: Option<Arc<HumanSignIn>>,
}

/// The `iss` a JWT claims, read without checking anything: only to choose how to check it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// How long fetching an issuer's metadata or keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

impl Access {
    /// Access for `config`, with `base` as the base URL when `[server] public_url` is not set.
    /// Fetches nothing yet: keys are fetched when the first token needs them.
    pub fn new(config: Arc<Config>, base: &str) -> Access {
        let base = config.server.public_url.clone().unwrap_or_else(|| base.trim_end_matches('/').to_string());
        let verifier = config.identity.as_ref().and_then(|identity| {
            airlock_mcp::ensure_crypto_provider();
            // No redirects: keys come from the URL the issuer's metadata (or the file) names.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(FETCH_TIMEOUT)
                .timeout(FETCH_TIMEOUT)
                .build();
            match client {
                Ok(client) => {
                    Some(Verifier::new(identity.issuers.iter().map(|i| i.options.clone()).collect(), client))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the HTTP client for issuers' keys; access tokens are refused");
                    None
                }
            }
        });
        let humans = config.identity.as_ref().and_then(|i| i.humans.as_ref()).and_then(|h| {
            HumanSignIn::new(h, &base)
                .map_err(|e| tracing::error!(error = %e, "cannot build the HTTP client for people's sign-in"))
                .ok()
        });
        Access { config, verifier, base, humans }
    }

    /// Whether `issuer` is an `[[identity.issuers]]` issuer (whose tokens name agents).
    pub fn is_agent_issuer(&self, issuer: &str) -> bool {
        self.config.identity.as_ref().is_some_and(|i| i.issuers.iter().any(|o| o.options.issuer == issuer))
    }

    /// A person's access token (of the `[identity.humans]` provider) as the human it makes.
    pub async fn human_for(&self, token: &str, endpoint: Endpoint<'_>) -> Result<HumanConfig, Refusal> {
        let Some(sign_in) = &self.humans else {
            return Err(Refusal::Invalid(airlock_identity::Error::Malformed(
                "people's tokens are not accepted".into(),
            )));
        };
        sign_in.human_for_token(token, &self.resource(endpoint), &self.config).await.map_err(|e| match e {
            airlock_identity::Error::Claim(why) => Refusal::NoAgent(why),
            e if e.is_unavailable() => Refusal::Unavailable(e),
            e => Refusal::Invalid(e),
        })
    }

    /// Sign-in for people at the identity provider, when `[identity.humans]` is configured.
    pub fn human_sign_in(&self) -> Option<&Arc<HumanSignIn>> {
        self.humans.as_ref()
    }

    /// Whether access tokens are accepted (`[identity]` is configured).
    pub fn enabled(&self) -> bool {
        self.config.identity.is_some()
    }

    /// The resource identifier of `endpoint`: `[identity] resource`, else the base URL and the
    /// endpoint's path.
    pub fn resource(&self, endpoint: Endpoint<'_>) -> String {
        match self.config.identity.as_ref().and_then(|i| i.resource.clone()) {
            Some(resource) => resource,
            None => format!("{}{}", self.base, endpoint.path()),
        }
    }

    /// Where the metadata document of `endpoint` is.
    pub fn metadata_url(&self, endpoint: Endpoint<'_>) -> String {
        format!("{}/.well-known/oauth-protected-resource{}", self.base, endpoint.path())
    }

    /// The protected resource metadata (RFC 9728) of `endpoint`, or `None` without `[identity]`.
    pub fn metadata(&self, endpoint: Endpoint<'_>) -> Option<Value> {
        let identity = self.config.identity.as_ref()?;
        let servers: Vec<&str> = identity.issuers.iter().map(|i| i.options.issuer.as_str()).collect();
        Some(json!({
            "resource": self.resource(endpoint),
            "authorization_servers": servers,
            "scopes_supported": identity.scopes_supported,
            "bearer_methods_supported": ["header"],
            "resource_name": "airlock",
        }))
    }

    /// The `WWW-Authenticate` value of a `401` or `403` on `endpoint`: `Bearer`, with where the
    /// metadata is and the scopes every token needs when `[identity]` is configured, and the
    /// error with its description when a token was sent and refused.
    pub fn challenge(&self, endpoint: Endpoint<'_>, error: Option<(&str, &str)>) -> HeaderValue {
        let mut parts = vec!["realm=\"airlock\"".to_string()];
        if let Some(identity) = &self.config.identity {
            parts.push(format!("resource_metadata=\"{}\"", quotable(&self.metadata_url(endpoint))));
            if !identity.required_scopes.is_empty() {
                parts.push(format!("scope=\"{}\"", quotable(&identity.required_scopes.join(" "))));
            }
        }
        if let Some((code, description)) = error {
            parts.push(format!("error=\"{code}\""));
            parts.push(format!("error_description=\"{}\"", quotable(description)));
        }
        let text = format!("Bearer {}", parts.join(", "));
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"airlock\""))
    }

    /// The agent an access token names, as this token makes it: the `[[agents]]` entry (or a
    /// template), its allowlist narrowed by the token's `tools:` scopes, and the token's
    /// identity for policy.
    pub async fn agent_for(&self, token: &str, endpoint: Endpoint<'_>) -> Result<AgentConfig, Refusal> {
        let (Some(identity), Some(verifier)) = (&self.config.identity, &self.verifier) else {
            return Err(Refusal::Invalid(airlock_identity::Error::Malformed("access tokens are not accepted".into())));
        };
        let verified = verifier
            .verify(token, &self.resource(endpoint))
            .await
            .map_err(|e| if e.is_unavailable() { Refusal::Unavailable(e) } else { Refusal::Invalid(e) })?;
        let Some(issuer) = identity.issuers.iter().find(|i| i.options.issuer == verified.issuer) else {
            return Err(Refusal::Invalid(airlock_identity::Error::UnknownIssuer(verified.issuer)));
        };
        let scopes = match &issuer.scopes_claim {
            Some(claim) => verified.scopes_in(claim),
            None => verified.scopes(),
        };
        let missing: Vec<String> = identity.required_scopes.iter().filter(|s| !scopes.contains(s)).cloned().collect();
        if !missing.is_empty() {
            return Err(Refusal::InsufficientScope(missing));
        }
        let (claim, agent_id) = verified.first_text(&issuer.agent_claims).ok_or_else(|| {
            Refusal::NoAgent(format!(
                "the token has none of the claims that name the agent ({})",
                issuer.agent_claims.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let who = Identity {
            issuer: verified.issuer.clone(),
            subject: verified.subject(),
            client_id: verified.text("client_id").or_else(|| verified.text("azp")).filter(|c| !c.is_empty()),
            scopes,
            groups: verified.values(&issuer.groups_claim),
        };
        let mut agent = self.agent_named(&agent_id, &claim, &verified, issuer)?;
        agent.token_tools = who.tool_scopes();
        agent.identity = Some(who);
        Ok(agent)
    }

    fn agent_named(
        &self,
        id: &str,
        claim: &str,
        token: &VerifiedToken,
        issuer: &IssuerConfig,
    ) -> Result<AgentConfig, Refusal> {
        if let Some(listed) = self.config.agents.iter().find(|a| a.agent.id == id) {
            return match &listed.issuer {
                Some(only) if *only != issuer.options.issuer => Err(Refusal::NoAgent(format!(
                    "agent `{id}` accepts access tokens of `{only}` only, not of `{}`",
                    issuer.options.issuer
                ))),
                _ => Ok(listed.clone()),
            };
        }
        if self.config.humans.iter().any(|h| h.human.id == id) {
            return Err(Refusal::NoAgent(format!("the token's `{claim}` `{id}` is a human's id, not an agent's")));
        }
        if !crate::config::identities::valid_id(id) {
            return Err(Refusal::NoAgent(format!(
                "the token's `{claim}` `{}` is not a valid agent id (1-64 letters, digits or `-_.@`)",
                id.chars().take(64).collect::<String>()
            )));
        }
        let template = self.config.agent_templates.iter().find(|t| chooses(t, token)).ok_or_else(|| {
            Refusal::NoAgent(format!(
                "no `[[agents]]` entry is `{id}` (the token's `{claim}`), and no `[[agent_templates]]` entry matches the token"
            ))
        })?;
        tracing::debug!(agent = %id, template = %template.name, "an agent from a template");
        Ok(AgentConfig {
            agent: Agent {
                id: id.to_string(),
                owner: template.owner.clone(),
                oncall: template.oncall.clone(),
                tier: template.tier,
                labels: template.labels.clone(),
            },
            token_hash: None,
            issuer: Some(issuer.options.issuer.clone()),
            tools: template.tools.clone(),
            limits: template.limits.clone(),
            on_behalf_of: None,
            identity: None,
            token_tools: None,
        })
    }
}

/// Whether `template` applies to `token`: its issuer (if it names one), and one of its values in
/// its claim (if it names one).
fn chooses(template: &AgentTemplate, token: &VerifiedToken) -> bool {
    template.issuer.as_ref().is_none_or(|i| *i == token.issuer)
        && template.when.as_ref().is_none_or(|(claim, values)| token.values(claim).iter().any(|v| values.contains(v)))
}

/// `text` as it may stand inside a quoted header parameter: visible ASCII without `"` or `\`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_path() {
        assert_eq!(Endpoint::of("/mcp"), Endpoint::Mcp(None));
        assert_eq!(Endpoint::of("/mcp/files"), Endpoint::Mcp(Some("files")));
        assert_eq!(Endpoint::of("/mcp/"), Endpoint::Api);
        assert_eq!(Endpoint::of("/mcp/a/b"), Endpoint::Api);
        assert_eq!(Endpoint::of("/v1/sessions"), Endpoint::Api);
        assert_eq!(Endpoint::of("/mcpx"), Endpoint::Api);
    }

    #[test]
    fn header_parameters_never_break_out_of_their_quotes() {
        assert_eq!(quotable("the token is for `a\"b`\\ é"), "the token is for `a'b`' ?");
    }
}

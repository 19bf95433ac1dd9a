//! Who is calling: the [`Principal`] behind a bearer token (a static token of an agent or a
//! human, or an access token that names an agent), the checks of who may do what, and the
//! protected resource metadata that tells clients where to get an access token.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Problem};
use crate::access::{Endpoint, Refusal};
use crate::config::{AgentConfig, HumanConfig, hash_token};

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    /// An agent.
    Agent(Arc<AgentConfig>),
    /// A human.
    Human(Arc<HumanConfig>),
}

impl Principal {
    /// The caller's id.
    pub fn id(&self) -> &str {
        match self {
            Principal::Agent(a) => &a.agent.id,
            Principal::Human(h) => &h.human.id,
        }
    }

    pub(super) fn agent_filter(&self) -> Option<&str> {
        match self {
            Principal::Agent(a) => Some(&a.agent.id),
            Principal::Human(_) => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        authenticate(&state, &parts.headers, Endpoint::of(parts.uri.path())).await
    }
}

/// Who sent `headers` to `endpoint`: the holder of a static token, or the agent an access token
/// names. Refusals carry the `WWW-Authenticate` challenge of the endpoint (RFC 6750, RFC 9728).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: Endpoint<'_>,
) -> Result<Principal, Problem> {
    let access = &state.access;
    let refuse = |detail: &str, error: Option<&str>| {
        Problem::unauthorized(detail.to_string()).challenged(access.challenge(endpoint, error.map(|e| (e, detail))))
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(refuse("missing `Authorization: Bearer <token>` header", None));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refuse("the `Authorization` header must be `Bearer <token>`", Some("invalid_request")))?;
    if let Some(principal) = state.principals.get(&hash_token(token)) {
        return Ok(principal.clone());
    }
    // Only what has the shape of a JWT is worth checking as an access token.
    if !access.enabled() || token.split('.').count() != 3 {
        return Err(refuse("the bearer token is not valid", Some("invalid_token")));
    }
    // A person's token (of the `[identity.humans]` provider) makes a human: directly when that
    // provider issues no agent tokens here, else when the token names no agent.
    let from_people =
        access.human_sign_in().is_some_and(|s| crate::access::claimed_issuer(token).as_deref() == Some(s.issuer()));
    let outcome = if from_people && !access.is_agent_issuer(&crate::access::claimed_issuer(token).unwrap_or_default()) {
        Err(Refusal::NoAgent(String::new()))
    } else {
        access.agent_for(token, endpoint).await
    };
    let outcome = match outcome {
        Err(Refusal::NoAgent(_) | Refusal::Invalid(_)) if from_people => {
            match access.human_for(token, endpoint).await {
                Ok(human) => return Ok(Principal::Human(Arc::new(human))),
                Err(refusal) => Err(refusal),
            }
        }
        other => other,
    };
    match outcome {
        Ok(agent) => {
            let agent = Arc::new(agent);
            state.engine.remember_agent(agent.clone());
            Ok(Principal::Agent(agent))
        }
        Err(Refusal::Invalid(e)) => Err(refuse(&format!("the access token is not valid: {e}"), Some("invalid_token"))),
        Err(Refusal::Unavailable(e)) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity-unavailable",
            "Identity provider unavailable",
            format!("the access token can't be checked now: {e}; retry later"),
        )),
        Err(Refusal::InsufficientScope(missing)) => {
            let detail = format!(
                "the access token lacks the scope{} {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            );
            let challenge = access.challenge(endpoint, Some(("insufficient_scope", &detail)));
            Err(Problem::forbidden("insufficient_scope", detail)
                .with("missing_scopes", json!(missing))
                .challenged(challenge))
        }
        Err(Refusal::NoAgent(why)) if from_people => {
            Err(Problem::forbidden("unknown_human", format!("the access token is valid, but {why}")))
        }
        Err(Refusal::NoAgent(why)) => {
            Err(Problem::forbidden("unknown_agent", format!("the access token is valid, but {why}")))
        }
    }
}

pub(super) fn require_agent(p: &Principal) -> Result<Arc<AgentConfig>, Problem> {
    match p {
        Principal::Agent(a) => Ok(a.clone()),
        Principal::Human(_) => Err(Problem::forbidden("agent_only", "only agents can do this; use an agent's token")),
    }
}

pub(crate) fn require_human(p: &Principal) -> Result<Arc<HumanConfig>, Problem> {
    match p {
        Principal::Human(h) => Ok(h.clone()),
        Principal::Agent(_) => Err(Problem::forbidden("human_only", "only humans can do this; agents can't")),
    }
}

pub(super) fn require_role(p: &Principal, role: airlock_core::Role) -> Result<Arc<HumanConfig>, Problem> {
    let human = require_human(p)?;
    if human.human.has_role(role)
        || human.human.has_role(airlock_core::Role::Admin) && role == airlock_core::Role::Admin
    {
        Ok(human)
    } else {
        let name = match role {
            airlock_core::Role::Approve => "approve",
            airlock_core::Role::Admin => "admin",
        };
        Err(Problem::forbidden("role", format!("`{}` does not have the `{name}` role", human.human.id)))
    }
}

/// The protected resource metadata (RFC 9728) of the endpoint the path names: `/v1` at the
/// root, `/mcp`, `/mcp/{name}`. Any name is answered alike, so the documents tell nobody which
/// virtual servers exist. `404` without `[identity]`: static tokens need no discovery.
pub(super) async fn resource_metadata(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Response, Problem> {
    let path = uri.path().strip_prefix("/.well-known/oauth-protected-resource").unwrap_or_default();
    let endpoint = if path.is_empty() { Endpoint::Api } else { Endpoint::of(path) };
    let document = state
        .access
        .metadata(endpoint)
        .ok_or_else(|| Problem::not_found("airlock accepts no access tokens: `[identity]` is not configured"))?;
    Ok(([(header::CACHE_CONTROL, "max-age=300")], Json(document)).into_response())
}

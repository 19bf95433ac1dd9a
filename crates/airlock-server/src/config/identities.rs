//! `[[agents]]` and `[[humans]]`: who may call airlock. Both share one space of ids and tokens, so
//! no agent can pass for a human or the other way round.

use std::collections::HashSet;

use airlock_core::limits::GuardLimits;
use airlock_core::{Agent, Human};

use super::raw::{RawAgent, RawHuman};
use super::secrets::{Env, token_hash};
use super::validate::Problems;
use super::{AgentConfig, HumanConfig, IdentityConfig, guards};

/// Ids and token hashes already taken by the agents and humans checked so far.
#[derive(Debug, Default)]
pub(super) struct Taken {
    ids: HashSet<String>,
    hashes: HashSet<[u8; 32]>,
}

impl Taken {
    /// Checks the form of the `id` at `key`, then that no one else has it.
    fn id(&mut self, key: &str, id: &str, problems: &mut Problems) {
        if !valid_id(id) {
            problems.push(key, format!("`{id}` must be 1-64 letters, digits or `-_.@`"));
        } else if !self.ids.insert(id.to_string()) {
            problems.push(key, format!("`{id}` is used twice"));
        }
    }

    /// Reads the token at `key` into its hash and checks that no one else uses it. A token that
    /// can't be read hashes to zeros; its problem is reported, so the config is refused anyway.
    fn token(&mut self, key: &str, token: &str, env: &dyn Env, problems: &mut Problems) -> [u8; 32] {
        match token_hash(token, env) {
            Ok(hash) => {
                if !self.hashes.insert(hash) {
                    problems.push(key, "the same token is used by another agent or human".into());
                }
                hash
            }
            Err(message) => {
                problems.push(key, message);
                [0; 32]
            }
        }
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// `[[agents]]`, each with its guards over the `[guards]` defaults; an `on_behalf_of` must be
/// one of `human_ids`.
pub(super) fn agents(
    raw: Vec<RawAgent>,
    guard_defaults: &GuardLimits,
    human_ids: &[&str],
    identity: Option<&IdentityConfig>,
    env: &dyn Env,
    taken: &mut Taken,
    problems: &mut Problems,
) -> Vec<AgentConfig> {
    let mut agents = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("agents[{i}].{k}");
        taken.id(&key("id"), &a.id, problems);
        // With `[identity]`, an agent may authenticate with access tokens only.
        let token_hash = match (&a.token, identity) {
            (Some(token), _) => Some(taken.token(&key("token"), token, env, problems)),
            (None, Some(_)) => None,
            (None, None) => {
                problems.push(&key("token"), "is required: the agent's bearer token (or configure `[identity]` to authenticate it with access tokens)".into());
                None
            }
        };
        match (&a.issuer, identity) {
            (Some(issuer), Some(identity)) if !identity.issuers.iter().any(|i| &i.options.issuer == issuer) => {
                problems.push(&key("issuer"), format!("`{issuer}` is not an `[[identity.issuers]]` issuer"));
            }
            (Some(_), None) => problems
                .push(&key("issuer"), "names the issuer of the agent's access tokens: configure `[identity]`".into()),
            _ => {}
        }
        if a.owner.trim().is_empty() {
            problems.push(&key("owner"), "must name the team or person accountable for the agent".into());
        }
        if let Some(tools) = &a.tools {
            for (j, t) in tools.iter().enumerate() {
                if globset::Glob::new(t).is_err() {
                    problems.push(&format!("agents[{i}].tools[{j}]"), format!("`{t}` is not a valid glob"));
                }
            }
        }
        if let Some(human) = &a.on_behalf_of
            && !human_ids.contains(&human.as_str())
        {
            problems.push(&key("on_behalf_of"), not_a_human(human, human_ids));
        }
        let limits = guards::for_agent(&format!("agents[{i}].guards"), &a.guards, guard_defaults, problems);
        agents.push(AgentConfig {
            agent: Agent { id: a.id, owner: a.owner, oncall: a.oncall, tier: a.tier, labels: a.labels },
            token_hash,
            issuer: a.issuer,
            tools: a.tools,
            limits,
            on_behalf_of: a.on_behalf_of,
            identity: None,
            token_tools: None,
        });
    }
    agents
}

/// Why `human` can't be an agent's requester: it is no `[[humans]]` id.
fn not_a_human(human: &str, human_ids: &[&str]) -> String {
    let known = if human_ids.is_empty() {
        "there are no `[[humans]]`".to_string()
    } else {
        format!("the humans are {}", human_ids.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", "))
    };
    format!("`{human}` is not the `id` of a `[[humans]]` entry ({known})")
}

/// `[[humans]]`, with their TOTP secrets read from the environment.
pub(super) fn humans(
    raw: Vec<RawHuman>,
    identity: Option<&IdentityConfig>,
    env: &dyn Env,
    taken: &mut Taken,
    problems: &mut Problems,
) -> Vec<HumanConfig> {
    let mut humans = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("humans[{i}].{k}");
        taken.id(&key("id"), &h.id, problems);
        // Without a token, a human signs in at the identity provider only.
        let token_hash = match (&h.token, identity.and_then(|i| i.humans.as_ref())) {
            (Some(token), _) => Some(taken.token(&key("token"), token, env, problems)),
            (None, Some(_)) => None,
            (None, None) => {
                problems.push(
                    &key("token"),
                    "is required unless humans sign in at the identity provider (`[identity.humans]`)".into(),
                );
                None
            }
        };
        let totp_secret = h.totp.as_deref().and_then(|v| match totp_secret(v, env) {
            Ok(secret) => Some(secret),
            Err(message) => {
                problems.push(&key("totp"), message);
                None
            }
        });
        let mut roles = h.roles;
        roles.sort();
        roles.dedup();
        humans.push(HumanConfig {
            human: Human { id: h.id, groups: h.groups, roles, has_totp: totp_secret.is_some() },
            token_hash,
            totp_secret,
        });
    }
    humans
}

/// Reads a `totp = "env:NAME"` reference: the variable must hold a base32 TOTP secret.
fn totp_secret(value: &str, env: &dyn Env) -> Result<String, String> {
    let Some(name) = value.strip_prefix("env:") else {
        return Err("must be `env:NAME` naming a variable that holds the base32 secret".into());
    };
    match env.var(name) {
        Some(secret) if crate::mfa::check_secret(&secret).is_err() => {
            Err(format!("environment variable `{name}` does not hold a base32 TOTP secret"))
        }
        Some(secret) if !secret.is_empty() => Ok(secret),
        _ => Err(format!("environment variable `{name}` is not set")),
    }
}

//! `[identity]` and `[[agent_templates]]`: access tokens from the organisation's identity
//! provider, the issuers trusted for them, and what an agent that a token names is when no
//! `[[agents]]` entry lists it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use airlock_core::Tier;
use airlock_core::limits::GuardLimits;
use airlock_identity::{IssuerOptions, fetchable, parse_algorithm};

use super::guards;
use super::raw::{RawAgentTemplate, RawHumanSignIn, RawIdentity, RawIssuer};
use super::secrets::{Env, env_secret};
use super::validate::Problems;

/// `[identity]`
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The resource identifier of all of airlock; `None`: each endpoint's own
    /// (`{base}`, `{base}/mcp`, `{base}/mcp/{name}`, the base being `[server] public_url` or the
    /// address airlock listens on).
    pub resource: Option<String>,
    /// Scopes every access token must have (else `403 insufficient_scope`).
    pub required_scopes: Vec<String>,
    /// Scopes the protected resource metadata lists.
    pub scopes_supported: Vec<String>,
    /// The trusted issuers, in file order.
    pub issuers: Vec<IssuerConfig>,
    /// Sign-in for people (`[identity.humans]`), if configured.
    pub humans: Option<HumanSignInConfig>,
}

/// `[identity.humans]`: people sign in at the identity provider (OpenID Connect, the
/// authorization code flow with PKCE) and are mapped to humans by claims.
#[derive(Debug, Clone)]
pub struct HumanSignInConfig {
    /// How ID tokens (and people's access tokens) are checked: the issuer, the algorithms, the
    /// leeway; the audience is the client id.
    pub options: IssuerOptions,
    /// airlock's client id at the provider.
    pub client_id: String,
    /// Its secret (read from the environment).
    pub client_secret: String,
    /// Where the provider sends the browser back; `None`: `{base}/ui/login/callback`.
    pub redirect_uri: Option<String>,
    /// The scopes asked for (always with `openid`).
    pub scopes: Vec<String>,
    /// The claim whose value is the human's id (matched against `[[humans]] id`).
    pub id_claim: String,
    /// The claim listing the person's groups.
    pub groups_claim: String,
    /// Members of any of these groups get the `approve` role.
    pub approver_groups: Vec<String>,
    /// Members of any of these groups get the `admin` role.
    pub admin_groups: Vec<String>,
}

/// One `[[identity.issuers]]` entry.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// How its tokens are checked.
    pub options: IssuerOptions,
    /// The claims that name the agent, the first present wins.
    pub agent_claims: Vec<String>,
    /// The claim that lists the caller's groups.
    pub groups_claim: String,
    /// The claim that holds the token's scopes; `None`: `scope`, else `scp`.
    pub scopes_claim: Option<String>,
}

/// One `[[agent_templates]]` entry.
#[derive(Debug, Clone)]
pub struct AgentTemplate {
    /// Its name, for logs and `airlock check`.
    pub name: String,
    /// Only tokens of this issuer use it; `None`: any.
    pub issuer: Option<String>,
    /// The claim that chooses it and the values that do (any one of them); `None`: every token.
    pub when: Option<(String, Vec<String>)>,
    /// The team or person accountable for agents made from it.
    pub owner: String,
    /// Who is paged for them.
    pub oncall: Option<String>,
    /// Their tier.
    pub tier: Tier,
    /// Their labels.
    pub labels: BTreeMap<String, String>,
    /// Their tool allowlist; `None` means all tools.
    pub tools: Option<Vec<String>>,
    /// Their guard thresholds: `[guards]` with the template's own over it.
    pub limits: GuardLimits,
}

/// Whether `scope` is a scope token (RFC 6749 §3.3: printable ASCII without space, `"` or `\`).
fn valid_scope(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn scopes(key: &str, list: &[String], problems: &mut Problems) {
    for (i, s) in list.iter().enumerate() {
        if !valid_scope(s) {
            problems.push(
                &format!("{key}[{i}]"),
                format!("`{s}` is not a scope: printable ASCII without spaces, `\"` or `\\`"),
            );
        }
    }
}

/// `[identity]`, with its issuers.
pub(super) fn identity(raw: Option<RawIdentity>, env: &dyn Env, problems: &mut Problems) -> Option<IdentityConfig> {
    let raw = raw?;
    if let Some(resource) = &raw.resource
        && (!(resource.starts_with("https://") || resource.starts_with("http://")) || resource.contains('#'))
    {
        problems
            .push("identity.resource", format!("`{resource}` must be an http:// or https:// URL without a fragment"));
    }
    scopes("identity.required_scopes", &raw.required_scopes, problems);
    let scopes_supported = raw.scopes_supported.unwrap_or_else(|| raw.required_scopes.clone());
    scopes("identity.scopes_supported", &scopes_supported, problems);
    if raw.issuers.is_empty() && raw.humans.is_none() {
        problems.push(
            "identity.issuers",
            "needs at least one `[[identity.issuers]]` entry (the issuers whose tokens are accepted) or `[identity.humans]`"
                .into(),
        );
    }
    let humans = raw.humans.map(|h| human_sign_in(h, env, problems));
    let mut seen = HashSet::new();
    let issuers = raw
        .issuers
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if !seen.insert(r.issuer.clone()) {
                problems.push(&format!("identity.issuers[{i}].issuer"), format!("`{}` is listed twice", r.issuer));
            }
            issuer(&format!("identity.issuers[{i}]"), r, problems)
        })
        .collect();
    Some(IdentityConfig {
        resource: raw.resource.map(|r| r.trim_end_matches('/').to_string()),
        required_scopes: raw.required_scopes,
        scopes_supported,
        issuers,
        humans,
    })
}

/// `[identity.humans]`.
fn human_sign_in(raw: RawHumanSignIn, env: &dyn Env, problems: &mut Problems) -> HumanSignInConfig {
    let key = |k: &str| format!("identity.humans.{k}");
    let mut options = IssuerOptions::new(raw.issuer.clone());
    if !fetchable(&raw.issuer) {
        problems.push(
            &key("issuer"),
            format!("`{}` must be https:// (http:// only on this machine): its metadata is fetched", raw.issuer),
        );
    }
    if raw.client_id.trim().is_empty() {
        problems.push(&key("client_id"), "must be airlock's client id at the provider".into());
    }
    options.audiences = Some(vec![raw.client_id.clone()]);
    let client_secret = env_secret(
        &raw.client_secret,
        env,
        "must be `env:NAME`, the environment variable that holds the secret; never the secret itself",
    )
    .unwrap_or_else(|m| {
        problems.push(&key("client_secret"), m);
        String::new()
    });
    if let Some(uri) = &raw.redirect_uri
        && (!(uri.starts_with("https://") || fetchable(uri)) || !uri.ends_with("/ui/login/callback"))
    {
        problems.push(
            &key("redirect_uri"),
            format!("`{uri}` must be https:// (http:// only on this machine) and end with `/ui/login/callback`"),
        );
    }
    let mut scopes_asked = raw.scopes.unwrap_or_else(|| ["openid", "profile", "email"].map(String::from).to_vec());
    scopes("identity.humans.scopes", &scopes_asked, problems);
    if !scopes_asked.iter().any(|s| s == "openid") {
        scopes_asked.insert(0, "openid".into());
    }
    if let Some(names) = raw.algorithms {
        options.algorithms = names
            .iter()
            .enumerate()
            .filter_map(|(j, n)| {
                parse_algorithm(n).map_err(|m| problems.push(&format!("identity.humans.algorithms[{j}]"), m)).ok()
            })
            .collect();
        if options.algorithms.is_empty() {
            problems.push(&key("algorithms"), "must list at least one allowed algorithm".into());
        }
    }
    let leeway = raw.leeway_seconds.unwrap_or(60);
    if leeway > 300 {
        problems.push(&key("leeway_seconds"), format!("must be between 0 and 300, got {leeway}"));
    }
    options.leeway = Duration::from_secs(leeway);
    let claim = |k: &str, v: Option<String>, default: &str, problems: &mut Problems| {
        let v = v.unwrap_or_else(|| default.to_string());
        if v.trim().is_empty() {
            problems.push(&key(k), "must name a claim".into());
        }
        v
    };
    let id_claim = claim("id_claim", raw.id_claim, "sub", problems);
    let groups_claim = claim("groups_claim", raw.groups_claim, "groups", problems);
    for (k, list) in [("approver_groups", &raw.approver_groups), ("admin_groups", &raw.admin_groups)] {
        if list.iter().any(|g| g.trim().is_empty()) {
            problems.push(&key(k), "must not hold an empty group name".into());
        }
    }
    HumanSignInConfig {
        options,
        client_id: raw.client_id,
        client_secret,
        redirect_uri: raw.redirect_uri,
        scopes: scopes_asked,
        id_claim,
        groups_claim,
        approver_groups: raw.approver_groups,
        admin_groups: raw.admin_groups,
    }
}

fn issuer(prefix: &str, raw: RawIssuer, problems: &mut Problems) -> IssuerConfig {
    let key = |k: &str| format!("{prefix}.{k}");
    let mut options = IssuerOptions::new(raw.issuer.clone());
    if raw.issuer.trim().is_empty() {
        problems.push(&key("issuer"), "must be the issuer identifier its tokens carry in `iss`".into());
    } else if raw.jwks_uri.is_none() && !fetchable(&raw.issuer) {
        problems.push(
            &key("issuer"),
            format!(
                "`{}` must be https:// (http:// only on this machine) for discovery to fetch its metadata; or set `jwks_uri`",
                raw.issuer
            ),
        );
    }
    if let Some(uri) = &raw.jwks_uri
        && !fetchable(uri)
    {
        problems.push(&key("jwks_uri"), format!("`{uri}` must be https:// (http:// only on this machine)"));
    }
    options.jwks_uri = raw.jwks_uri;
    if let Some(audiences) = &raw.audiences
        && (audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()))
    {
        problems.push(
            &key("audiences"),
            "must list at least one audience, none empty; omit it to accept the resource identifier".into(),
        );
    }
    options.audiences = raw.audiences;
    if let Some(names) = raw.algorithms {
        if names.is_empty() {
            problems.push(
                &key("algorithms"),
                "must list at least one algorithm; omit it to allow every asymmetric one".into(),
            );
        }
        options.algorithms = names
            .iter()
            .enumerate()
            .filter_map(|(j, n)| {
                parse_algorithm(n).map_err(|m| problems.push(&format!("{prefix}.algorithms[{j}]"), m)).ok()
            })
            .collect();
    }
    let mut seconds = |k: &str, value: Option<u64>, default: u64, range: std::ops::RangeInclusive<u64>| {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            problems.push(&key(k), format!("must be between {} and {}, got {v}", range.start(), range.end()));
        }
        Duration::from_secs(v)
    };
    options.leeway = seconds("leeway_seconds", raw.leeway_seconds, 60, 0..=300);
    options.keys_max_age = seconds("keys_cache_seconds", raw.keys_cache_seconds, 600, 1..=86_400);
    options.keys_min_refresh = seconds("keys_min_refresh_seconds", raw.keys_min_refresh_seconds, 30, 1..=3600);
    if raw.token_type.as_deref().is_some_and(|t| t.trim().is_empty()) {
        problems.push(&key("token_type"), "must not be empty; omit it to accept any `typ`".into());
    }
    options.token_type = raw.token_type;
    let agent_claims = match raw.agent_claim {
        Some(c) if c.trim().is_empty() => {
            problems.push(&key("agent_claim"), "must name a claim".into());
            Vec::new()
        }
        Some(c) => vec![c],
        None => ["client_id", "azp", "sub"].into_iter().map(String::from).collect(),
    };
    let groups_claim = raw.groups_claim.unwrap_or_else(|| "groups".into());
    if groups_claim.trim().is_empty() {
        problems.push(&key("groups_claim"), "must name a claim".into());
    }
    if raw.scopes_claim.as_deref().is_some_and(|c| c.trim().is_empty()) {
        problems.push(&key("scopes_claim"), "must name a claim; omit it to read `scope`, else `scp`".into());
    }
    IssuerConfig { options, agent_claims, groups_claim, scopes_claim: raw.scopes_claim }
}

/// `[[agent_templates]]`, each with its guards over the `[guards]` defaults.
pub(super) fn templates(
    raw: Vec<RawAgentTemplate>,
    identity: Option<&IdentityConfig>,
    guard_defaults: &GuardLimits,
    problems: &mut Problems,
) -> Vec<AgentTemplate> {
    if !raw.is_empty() && identity.is_none() {
        problems
            .push("agent_templates", "templates apply to agents named by access tokens: configure `[identity]`".into());
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("agent_templates[{i}].{k}");
        if t.name.trim().is_empty() || !names.insert(t.name.clone()) {
            problems.push(&key("name"), format!("`{}` must be a non-empty name used once", t.name));
        }
        if let (Some(issuer), Some(identity)) = (&t.issuer, identity)
            && !identity.issuers.iter().any(|i| &i.options.issuer == issuer)
        {
            problems.push(&key("issuer"), format!("`{issuer}` is not an `[[identity.issuers]]` issuer"));
        }
        let when = match (t.claim, t.values.is_empty()) {
            (Some(claim), false) if !claim.trim().is_empty() => Some((claim, t.values)),
            (Some(_), _) => {
                problems.push(&key("values"), "a template chosen by `claim` needs the `values` that choose it".into());
                None
            }
            (None, false) => {
                problems.push(&key("claim"), "`values` need the `claim` they are looked for in".into());
                None
            }
            (None, true) => None,
        };
        if t.owner.trim().is_empty() {
            problems.push(&key("owner"), "must name the team or person accountable for these agents".into());
        }
        for (j, g) in t.tools.iter().flatten().enumerate() {
            if globset::Glob::new(g).is_err() {
                problems.push(&format!("agent_templates[{i}].tools[{j}]"), format!("`{g}` is not a valid glob"));
            }
        }
        let limits = guards::for_agent(&key("guards"), &t.guards, guard_defaults, problems);
        out.push(AgentTemplate {
            name: t.name,
            issuer: t.issuer,
            when,
            owner: t.owner,
            oncall: t.oncall,
            tier: t.tier,
            labels: t.labels,
            tools: t.tools,
            limits,
        });
    }
    out
}

//! People signing in at the organisation's identity provider (`[identity.humans]`): airlock as
//! an OpenID Connect relying party, with the authorization code flow, PKCE (`S256`), `state`
//! and `nonce` (see docs/adr/0022-humans-from-the-identity-provider.md), and the mapping from a
//! person's claims to a human: the `[[humans]]` entry with that id (its groups, roles and TOTP
//! secret), plus groups from the groups claim, plus the roles those groups give.
//!
//! The browser only ever carries the `state` (in the redirect and in a cookie); the PKCE
//! verifier and the nonce stay here, in memory, each flow usable once and for ten minutes. The
//! ID token is checked by `airlock-identity` (issuer, signature with the provider's published
//! keys, audience = airlock's client id, expiry) and then for the nonce; the tokens themselves
//! are dropped once the human is known. The review UI then signs the human in with its own
//! session cookie, exactly as with a static token.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::{Human, Role};
use airlock_identity::{IssuerOptions, VerifiedToken, Verifier};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::identities::valid_id;
use crate::config::{Config, HumanConfig, HumanSignInConfig};

/// How long a started sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins in progress at once; more are refused until some finish or expire.
const MAX_PENDING: usize = 10_000;
/// How long a request to the provider may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in failed. Its text is shown to the person (it names no secret).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The `state` is unknown, used already or expired (or the browser that comes back is not
    /// the one that left).
    #[error("this sign-in is unknown, expired or was used already; sign in again")]
    UnknownState,
    /// The provider said no (the person cancelled, or the provider refused the request).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The provider can't be reached, or answered nonsense.
    #[error("the identity provider can't be used right now: {0}")]
    Provider(String),
    /// The ID token failed a check.
    #[error("the identity provider's ID token is not valid: {0}")]
    InvalidToken(String),
    /// The person is not someone airlock can let in.
    #[error("{0}")]
    NotAHuman(String),
    /// No secure random numbers.
    #[error("airlock could not create a secure random value; try again")]
    Random,
}

/// A sign-in in progress.
struct Pending {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// The provider's endpoints, from its discovery document.
#[derive(Clone)]
struct Endpoints {
    authorization: String,
    token: String,
}

/// A started sign-in: where to send the browser, and the `state` to bind to it.
pub struct Started {
    /// The `state` (also put into a cookie by the UI).
    pub state: String,
    /// The provider's authorization URL with every parameter.
    pub url: String,
}

/// OpenID Connect sign-in for people. Cheap to share behind an `Arc`.
pub struct HumanSignIn {
    config: HumanSignInConfig,
    redirect_uri: String,
    client: reqwest::Client,
    verifier: Arc<Verifier>,
    /// People's access tokens on the API: the same issuer and keys, for airlock's resource.
    api_verifier: Arc<Verifier>,
    endpoints: tokio::sync::Mutex<Option<Endpoints>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for HumanSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanSignIn").field("issuer", &self.config.options.issuer).finish_non_exhaustive()
    }
}

/// An error with the errors that caused it (reqwest's own text hides why a request failed).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// 32 random bytes, base64url.
fn random() -> Result<String, SignInError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| SignInError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636 §4.2).
fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `application/x-www-form-urlencoded` / query component encoding.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl HumanSignIn {
    /// Sign-in for `config`, with `{base}/ui/login/callback` as the redirect URI unless one is
    /// configured. Fetches nothing yet.
    pub fn new(config: &HumanSignInConfig, base: &str) -> Result<Arc<HumanSignIn>, reqwest::Error> {
        airlock_mcp::ensure_crypto_provider();
        // A connection per request: sign-ins are rare, and a connection the provider closed
        // while it sat in the pool (between discovery and the code's exchange, minutes apart)
        // would fail the exchange, which can't be retried (the code is single-use).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .build()?;
        let verifier = Verifier::new(vec![config.options.clone()], client.clone());
        let api_verifier =
            Verifier::new(vec![IssuerOptions { audiences: None, ..config.options.clone() }], client.clone());
        let redirect_uri =
            config.redirect_uri.clone().unwrap_or_else(|| format!("{}/ui/login/callback", base.trim_end_matches('/')));
        Ok(Arc::new(HumanSignIn {
            config: config.clone(),
            redirect_uri,
            client,
            verifier,
            api_verifier,
            endpoints: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }))
    }

    /// The provider's issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.config.options.issuer
    }

    /// The human a person's access token for `resource` makes (`airlock login`, or any client
    /// of the provider that asks for airlock's resource): the token is checked as an access
    /// token (issuer, keys, audience = `resource`, expiry), then mapped as a sign-in is.
    pub async fn human_for_token(
        &self,
        token: &str,
        resource: &str,
        config: &Config,
    ) -> Result<HumanConfig, airlock_identity::Error> {
        let verified = self.api_verifier.verify(token, resource).await?;
        self.human(&verified, config).map_err(airlock_identity::Error::Claim)
    }

    /// airlock's client id at the provider.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    async fn endpoints(&self) -> Result<Endpoints, SignInError> {
        let mut held = self.endpoints.lock().await;
        if let Some(e) = held.as_ref() {
            return Ok(e.clone());
        }
        let metadata = airlock_identity::provider_metadata(&self.client, &self.config.options.issuer)
            .await
            .map_err(SignInError::Provider)?;
        let url = |k: &str| {
            metadata
                .get(k)
                .and_then(Value::as_str)
                .filter(|u| airlock_identity::fetchable(u))
                .map(str::to_string)
                .ok_or_else(|| SignInError::Provider(format!("its metadata has no usable `{k}`")))
        };
        let endpoints = Endpoints { authorization: url("authorization_endpoint")?, token: url("token_endpoint")? };
        *held = Some(endpoints.clone());
        Ok(endpoints)
    }

    /// Starts a sign-in: a fresh `state`, `nonce` and PKCE verifier, kept here; returns the URL
    /// to send the browser to.
    pub async fn start(&self) -> Result<Started, SignInError> {
        let endpoints = self.endpoints().await?;
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        {
            let mut pending = airlock_core::sync::lock(&self.pending);
            pending.retain(|_, p| p.started.elapsed() < FLOW_TTL);
            if pending.len() >= MAX_PENDING {
                return Err(SignInError::Provider("too many sign-ins in progress; try again in a few minutes".into()));
            }
            pending.insert(
                state.clone(),
                Pending { nonce: nonce.clone(), verifier: verifier.clone(), started: Instant::now() },
            );
        }
        let separator = if endpoints.authorization.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{separator}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
            endpoints.authorization,
            encode(&self.config.client_id),
            encode(&self.redirect_uri),
            encode(&self.config.scopes.join(" ")),
            state,
            nonce,
            challenge(&verifier),
        );
        Ok(Started { state, url })
    }

    /// Ends the sign-in that `state` names without finishing it (the provider said no).
    pub fn abandon(&self, state: &str) {
        airlock_core::sync::lock(&self.pending).remove(state);
    }

    /// Finishes the sign-in that `state` names with the provider's `code`: the flow is used up
    /// whatever happens; the code is exchanged with the PKCE verifier; the ID token is checked
    /// and must carry the flow's nonce; its claims make the human.
    pub async fn finish(&self, state: &str, code: &str, config: &Config) -> Result<HumanConfig, SignInError> {
        let pending = airlock_core::sync::lock(&self.pending).remove(state);
        let Some(pending) = pending.filter(|p| p.started.elapsed() < FLOW_TTL) else {
            return Err(SignInError::UnknownState);
        };
        let endpoints = self.endpoints().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let response = self
            .client
            .post(&endpoints.token)
            .basic_auth(encode(&self.config.client_id), Some(encode(&self.config.client_secret)))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| SignInError::Provider(format!("`{}`: {}", endpoints.token, with_sources(&e))))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            return Err(SignInError::Refused(format!(
                "the code was refused ({status}: `{}` {})",
                text("error"),
                text("error_description")
            )));
        }
        let Some(id_token) = body.get("id_token").and_then(Value::as_str) else {
            return Err(SignInError::Provider("its token response has no `id_token` (is `openid` a scope?)".into()));
        };
        let verified = self
            .verifier
            .verify(id_token, &self.config.client_id)
            .await
            .map_err(|e| SignInError::InvalidToken(e.to_string()))?;
        let nonce = verified.text("nonce").unwrap_or_default();
        if nonce != pending.nonce {
            return Err(SignInError::InvalidToken("its `nonce` is not this sign-in's".into()));
        }
        // OpenID Connect Core §3.1.3.7: with several audiences, `azp` must be airlock.
        let audiences = verified.values("aud");
        if audiences.len() > 1 && verified.text("azp").as_deref() != Some(self.config.client_id.as_str()) {
            return Err(SignInError::InvalidToken("it has several audiences and `azp` is not airlock".into()));
        }
        self.human(&verified, config).map_err(SignInError::NotAHuman)
    }

    /// The human a verified token of this provider (an ID token, or a person's access token)
    /// makes: the id from the id claim; the `[[humans]]` entry with that id, if any, gives its
    /// groups, roles and TOTP secret; the groups claim adds groups, and the approver and admin
    /// groups add roles.
    pub fn human(&self, token: &VerifiedToken, config: &Config) -> Result<HumanConfig, String> {
        let c = &self.config;
        let id = token.text(&c.id_claim).unwrap_or_default();
        if !valid_id(&id) {
            return Err(format!(
                "the identity provider's `{}` claim (`{id}`) is not a valid airlock id (1-64 letters, digits or `-_.@`)",
                c.id_claim
            ));
        }
        if config.agents.iter().any(|a| a.agent.id == id) {
            return Err(format!("`{id}` is an agent's id; an agent can't sign in as a human"));
        }
        let entry = config.humans.iter().find(|h| h.human.id == id);
        let claimed = token.values(&c.groups_claim);
        let mut groups: BTreeSet<String> = claimed.iter().cloned().collect();
        let mut roles: BTreeSet<Role> = BTreeSet::new();
        if let Some(e) = entry {
            groups.extend(e.human.groups.iter().cloned());
            roles.extend(e.human.roles.iter().copied());
        }
        if claimed.iter().any(|g| c.approver_groups.contains(g)) {
            roles.insert(Role::Approve);
        }
        if claimed.iter().any(|g| c.admin_groups.contains(g)) {
            roles.insert(Role::Admin);
        }
        let totp_secret = entry.and_then(|e| e.totp_secret.clone());
        Ok(HumanConfig {
            human: Human {
                id,
                groups: groups.into_iter().collect(),
                roles: roles.into_iter().collect(),
                has_totp: totp_secret.is_some(),
            },
            token_hash: None,
            totp_secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_the_s256_of_the_verifier() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn parameters_are_encoded() {
        assert_eq!(
            encode("http://127.0.0.1:1/ui/login/callback"),
            "http%3A%2F%2F127.0.0.1%3A1%2Fui%2Flogin%2Fcallback"
        );
        assert_eq!(encode("openid groups"), "openid%20groups");
    }
}

//! airlock's own access tokens for an upstream: the OAuth 2.0 client credentials grant
//! (RFC 6749 §4.4) at the upstream's authorization server, with airlock as the client.
//!
//! A token is fetched when first needed, kept in memory only, and used for every request to the
//! upstream until shortly before it expires ([`ClientCredentials::token`]); a token the upstream
//! refuses (`401`) is replaced once ([`ClientCredentials::renew`]). Concurrent requests share one
//! fetch. Nothing of the request that reached airlock goes into the token request: the upstream
//! learns airlock's identity, never an agent's token.

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::Error;
use crate::keys::{discovery_urls, get_json, read_bounded};
use crate::options::fetchable;

/// How long a token whose response has no `expires_in` is used (it is replaced sooner if the
/// upstream refuses it).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// The longest time before its expiry that a token is replaced.
const MAX_EARLY: Duration = Duration::from_secs(60);

/// Where the token endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenEndpoint {
    /// This URL.
    Url(String),
    /// The `token_endpoint` of this issuer's metadata (OpenID Connect discovery, else RFC 8414).
    Issuer(String),
}

/// One upstream's client credentials, as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentialsOptions {
    /// Where tokens are asked for.
    pub endpoint: TokenEndpoint,
    /// airlock's client id at the authorization server.
    pub client_id: String,
    /// Its secret (sent with HTTP Basic authentication, `client_secret_basic`).
    pub client_secret: String,
    /// The `scope` asked for, if any (space-separated).
    pub scope: Option<String>,
    /// The RFC 8707 `resource` asked for, if any.
    pub resource: Option<String>,
    /// The `audience` asked for, if any (Auth0 and some others take this instead of `resource`).
    pub audience: Option<String>,
}

impl fmt::Debug for ClientCredentialsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsOptions")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"..")
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("audience", &self.audience)
            .finish()
    }
}

/// A token held, and when to replace it.
struct Held {
    token: String,
    replace_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    /// The token endpoint, once configured or discovered.
    endpoint: Option<String>,
    current: Option<Held>,
}

/// The access tokens of one upstream's client credentials. Cheap to share behind an `Arc`.
pub struct ClientCredentials {
    options: ClientCredentialsOptions,
    client: reqwest::Client,
    state: tokio::sync::Mutex<State>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials").field("options", &self.options).finish_non_exhaustive()
    }
}

/// How long before its expiry a token that lives `lifetime` is replaced: a fifth of its life, at
/// most a minute, and at least two seconds (or half its life, if shorter), because providers
/// count `iat` and `exp` in whole seconds, so a token may expire up to a second before
/// `expires_in` says.
fn early(lifetime: Duration) -> Duration {
    (lifetime / 5).max(Duration::from_secs(2).min(lifetime / 2)).min(MAX_EARLY)
}

/// The `application/x-www-form-urlencoded` form of `value`, which RFC 6749 §2.3.1 asks for
/// before the client id and secret go into HTTP Basic authentication.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl ClientCredentials {
    /// Tokens for `options`, asked for with `client` (which should not follow redirects and
    /// should have time limits). Nothing is fetched until a token is needed.
    pub fn new(options: ClientCredentialsOptions, client: reqwest::Client) -> ClientCredentials {
        let endpoint = match &options.endpoint {
            TokenEndpoint::Url(url) => Some(url.clone()),
            TokenEndpoint::Issuer(_) => None,
        };
        ClientCredentials { options, client, state: tokio::sync::Mutex::new(State { endpoint, current: None }) }
    }

    /// A token to send now: the one held while it is not due for replacement, else a new one.
    /// When a new one can't be had, the one held is used while it has not expired.
    pub async fn token(&self) -> Result<String, Error> {
        let mut state = self.state.lock().await;
        if let Some(held) = &state.current
            && Instant::now() < held.replace_at
        {
            return Ok(held.token.clone());
        }
        match self.fetch(&mut state).await {
            Ok(token) => Ok(token),
            Err(e) => match &state.current {
                Some(held) if Instant::now() < held.expires_at => {
                    tracing::warn!(error = %e, "cannot renew an upstream's access token; using the one held until it expires");
                    Ok(held.token.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// A token to replace `refused`, which the upstream refused: a new one, unless another
    /// request already replaced it (then that one).
    pub async fn renew(&self, refused: &str) -> Result<String, Error> {
        let mut state = self.state.lock().await;
        if let Some(held) = &state.current
            && held.token != refused
        {
            return Ok(held.token.clone());
        }
        state.current = None;
        self.fetch(&mut state).await
    }

    fn failed(&self, endpoint: &str, reason: impl Into<String>) -> Error {
        Error::TokenRequest { endpoint: endpoint.to_string(), reason: reason.into() }
    }

    async fn endpoint(&self, state: &mut State) -> Result<String, Error> {
        if let Some(endpoint) = &state.endpoint {
            return Ok(endpoint.clone());
        }
        let TokenEndpoint::Issuer(issuer) = &self.options.endpoint else {
            return Err(self.failed("?", "no token endpoint"));
        };
        let mut tried = Vec::new();
        for url in discovery_urls(issuer) {
            match get_json(&self.client, &url).await {
                Ok(metadata) => {
                    let named = metadata.get("issuer").and_then(Value::as_str).unwrap_or_default();
                    if named != issuer {
                        return Err(self.failed(issuer, format!("`{url}` names the issuer `{named}`, not this one")));
                    }
                    let Some(endpoint) = metadata.get("token_endpoint").and_then(Value::as_str) else {
                        return Err(self.failed(issuer, format!("`{url}` has no `token_endpoint`")));
                    };
                    if !fetchable(endpoint) {
                        return Err(self.failed(
                            endpoint,
                            "the token endpoint is neither https:// nor on this machine, and the client secret would cross the network in clear",
                        ));
                    }
                    state.endpoint = Some(endpoint.to_string());
                    return Ok(endpoint.to_string());
                }
                Err(e) => tried.push(e),
            }
        }
        Err(self.failed(issuer, format!("discovery failed: {}", tried.join("; "))))
    }

    /// Asks the token endpoint for a new token and holds it.
    async fn fetch(&self, state: &mut State) -> Result<String, Error> {
        let endpoint = self.endpoint(state).await?;
        let o = &self.options;
        let mut form = vec![("grant_type", "client_credentials")];
        for (name, value) in [("scope", &o.scope), ("resource", &o.resource), ("audience", &o.audience)] {
            if let Some(v) = value {
                form.push((name, v.as_str()));
            }
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_encode(&o.client_id),
            form_encode(&o.client_secret)
        ));
        let asked = Instant::now();
        let response = self
            .client
            .post(&endpoint)
            .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| self.failed(&endpoint, e.to_string()))?;
        let status = response.status();
        let body = read_bounded(response, &endpoint).await.map_err(|e| self.failed(&endpoint, e))?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // RFC 6749 §5.2: `error` and perhaps `error_description`; never the secret.
            let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let why = match (text("error"), text("error_description")) {
                (Some(e), Some(d)) => format!("`{e}`: {d}"),
                (Some(e), None) => format!("`{e}`"),
                _ => "no OAuth error".into(),
            };
            return Err(self.failed(&endpoint, format!("it answered {status} ({why})")));
        }
        let Some(token) = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
            return Err(self.failed(&endpoint, "its answer has no `access_token`"));
        };
        let token_type = body.get("token_type").and_then(Value::as_str).unwrap_or_default();
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(self
                .failed(&endpoint, format!("its token is of type `{token_type}`; airlock sends bearer tokens only")));
        }
        // A lifetime beyond a day is taken as a day: the token is asked for again by then.
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs)
            .min(Duration::from_secs(86_400));
        let expires_at = asked + lifetime;
        state.current = Some(Held { token: token.to_string(), replace_at: expires_at - early(lifetime), expires_at });
        tracing::debug!(endpoint = %endpoint, lifetime_s = lifetime.as_secs(), "fetched an access token for an upstream");
        Ok(token.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_before_they_expire() {
        assert_eq!(early(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(early(Duration::from_secs(100)), Duration::from_secs(20));
        assert_eq!(early(Duration::from_secs(20)), Duration::from_secs(4));
        assert_eq!(early(Duration::from_secs(5)), Duration::from_secs(2));
        assert_eq!(early(Duration::from_secs(3)), Duration::from_millis(1500));
    }

    #[test]
    fn client_credentials_are_form_encoded_for_basic_authentication() {
        assert_eq!(form_encode("airlock"), "airlock");
        assert_eq!(form_encode("a b:c%/é"), "a+b%3Ac%25%2F%C3%A9");
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let o = ClientCredentialsOptions {
            endpoint: TokenEndpoint::Url("https://idp/token".into()),
            client_id: "airlock".into(),
            client_secret: "s3cret".into(),
            scope: None,
            resource: None,
            audience: None,
        };
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}

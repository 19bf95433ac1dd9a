//! One issuer's signing keys: found by discovery or configured, fetched over HTTPS, kept for a
//! while, and fetched again when a token names a key that is not there (the issuer rotated its
//! keys), but never more often than the issuer's minimum interval, however many such tokens come.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use serde_json::Value;

use crate::Error;
use crate::options::{IssuerOptions, fetchable};

/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Keys as fetched at one time.
#[derive(Debug)]
struct Fetched {
    keys: Vec<Jwk>,
    at: Instant,
}

/// What only the task that fetches touches.
#[derive(Debug, Default)]
struct Fetching {
    /// The key set's URL, once configured or discovered.
    jwks_uri: Option<String>,
    /// When keys were last asked for, whether or not that worked.
    last_attempt: Option<Instant>,
}

/// The signing keys of one issuer.
#[derive(Debug)]
pub(crate) struct KeySet {
    issuer: String,
    max_age: Duration,
    min_refresh: Duration,
    client: reqwest::Client,
    current: RwLock<Option<Arc<Fetched>>>,
    fetching: tokio::sync::Mutex<Fetching>,
}

impl KeySet {
    pub(crate) fn new(options: &IssuerOptions, client: reqwest::Client) -> KeySet {
        KeySet {
            issuer: options.issuer.clone(),
            max_age: options.keys_max_age,
            min_refresh: options.keys_min_refresh,
            client,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(Fetching { jwks_uri: options.jwks_uri.clone(), last_attempt: None }),
        }
    }

    fn snapshot(&self) -> Option<Arc<Fetched>> {
        self.current.read().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The keys a token signed with key `kid` (or, without a `kid`, any key) may verify with.
    /// Fetches the keys when there are none yet or they are older than the maximum age, and
    /// once more when `kid` is not among them and the last fetch is old enough.
    pub(crate) async fn candidates(&self, kid: Option<&str>) -> Result<Vec<Jwk>, Error> {
        let fresh = self.snapshot().filter(|f| f.at.elapsed() < self.max_age);
        let keys = match fresh {
            Some(f) => f,
            None => self.refresh(None).await?,
        };
        let Some(kid) = kid else { return Ok(keys.keys.clone()) };
        let found = matching(&keys.keys, kid);
        if !found.is_empty() {
            return Ok(found);
        }
        // An unknown key: the issuer may have rotated. Look again, at most every `min_refresh`.
        let again = self.refresh(Some(keys.at)).await?;
        let found = matching(&again.keys, kid);
        if found.is_empty() {
            return Err(Error::UnknownKey { kid: kid.to_string(), issuer: self.issuer.clone() });
        }
        Ok(found)
    }

    /// Fetches the keys, unless another task fetched them after `seen` while this one waited,
    /// or the last attempt was less than the minimum interval ago (then the keys already held
    /// are the answer). A failed fetch keeps the keys held, if any: an issuer that is briefly
    /// unreachable does not lock every agent out.
    async fn refresh(&self, seen: Option<Instant>) -> Result<Arc<Fetched>, Error> {
        let mut fetching = self.fetching.lock().await;
        let held = self.snapshot();
        if let Some(held) = &held {
            let newer = seen.is_none_or(|s| held.at > s);
            let too_soon = fetching.last_attempt.is_some_and(|t| t.elapsed() < self.min_refresh);
            if (newer && held.at.elapsed() < self.max_age) || too_soon {
                return Ok(held.clone());
            }
        } else if fetching.last_attempt.is_some_and(|t| t.elapsed() < self.min_refresh.min(Duration::from_secs(5))) {
            // Nothing held and the last attempt failed moments ago: don't hammer the issuer.
            return Err(self.unavailable("the last attempt failed moments ago; retrying shortly"));
        }
        fetching.last_attempt = Some(Instant::now());
        match self.fetch(&mut fetching).await {
            Ok(keys) => {
                let fetched = Arc::new(Fetched { keys, at: Instant::now() });
                match self.current.write() {
                    Ok(mut c) => *c = Some(fetched.clone()),
                    Err(poisoned) => *poisoned.into_inner() = Some(fetched.clone()),
                }
                tracing::debug!(issuer = %self.issuer, keys = fetched.keys.len(), "fetched the issuer's signing keys");
                Ok(fetched)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the issuer's signing keys");
                held.ok_or(e)
            }
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::KeysUnavailable { issuer: self.issuer.clone(), reason: reason.into() }
    }

    async fn fetch(&self, fetching: &mut Fetching) -> Result<Vec<Jwk>, Error> {
        let jwks_uri = match &fetching.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                fetching.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let document = self.get_json(&jwks_uri).await?;
        let Some(keys) = document.get("keys").and_then(Value::as_array) else {
            return Err(self.unavailable(format!("`{jwks_uri}` is not a key set (no `keys` array)")));
        };
        // Keys airlock can't use (another type, encryption keys, a malformed entry) are skipped;
        // a token signed with none of the others is refused as signed with an unknown key.
        let usable: Vec<Jwk> = keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter(|k| k.is_supported())
            .filter(|k| matches!(k.common.public_key_use, None | Some(PublicKeyUse::Signature)))
            .collect();
        Ok(usable)
    }

    /// Finds the key set's URL from the issuer's metadata: OpenID Connect discovery first, then
    /// RFC 8414. The document must name the configured issuer exactly (both specs require it),
    /// so a document served for another issuer is not taken.
    async fn discover(&self) -> Result<String, Error> {
        let mut tried = Vec::new();
        for url in discovery_urls(&self.issuer) {
            match self.get_json(&url).await {
                Ok(metadata) => {
                    let named = metadata.get("issuer").and_then(Value::as_str).unwrap_or_default();
                    if named != self.issuer {
                        return Err(self.unavailable(format!("`{url}` names the issuer `{named}`, not this one")));
                    }
                    let Some(jwks_uri) = metadata.get("jwks_uri").and_then(Value::as_str) else {
                        return Err(self.unavailable(format!("`{url}` has no `jwks_uri`")));
                    };
                    if !fetchable(jwks_uri) {
                        return Err(self.unavailable(format!(
                            "its `jwks_uri` `{jwks_uri}` is neither https:// nor on this machine"
                        )));
                    }
                    return Ok(jwks_uri.to_string());
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(self.unavailable(format!("discovery failed: {}", tried.join("; "))))
    }

    async fn get_json(&self, url: &str) -> Result<Value, Error> {
        get_json(&self.client, url).await.map_err(|reason| self.unavailable(reason))
    }
}

/// The metadata document of `issuer` (OpenID Connect discovery, else RFC 8414), which must name
/// `issuer` exactly; the error says what went wrong.
pub async fn provider_metadata(client: &reqwest::Client, issuer: &str) -> Result<Value, String> {
    let mut tried = Vec::new();
    for url in discovery_urls(issuer) {
        match get_json(client, &url).await {
            Ok(metadata) => {
                let named = metadata.get("issuer").and_then(Value::as_str).unwrap_or_default();
                if named != issuer {
                    return Err(format!("`{url}` names the issuer `{named}`, not `{issuer}`"));
                }
                return Ok(metadata);
            }
            Err(e) => tried.push(e),
        }
    }
    Err(format!("discovery failed: {}", tried.join("; ")))
}

/// A JSON document fetched with `client`, at most [`MAX_DOCUMENT_BYTES`] long; the error says
/// what went wrong, naming the URL.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("`{url}`: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("`{url}` answered {}", response.status()));
    }
    let body = read_bounded(response, url).await?;
    serde_json::from_slice(&body).map_err(|e| format!("`{url}` is not JSON: {e}"))
}

/// The body of `response`, refused when it is larger than [`MAX_DOCUMENT_BYTES`].
pub(crate) async fn read_bounded(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("`{url}`: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("`{url}` is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The keys whose `kid` is `kid`.
fn matching(keys: &[Jwk], kid: &str) -> Vec<Jwk> {
    keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).cloned().collect()
}

/// Where the issuer's metadata may be: `{issuer}/.well-known/openid-configuration` (OpenID
/// Connect Discovery), then `{origin}/.well-known/oauth-authorization-server{path}` (RFC 8414,
/// the well-known part inserted before the issuer's path).
pub(crate) fn discovery_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = vec![format!("{trimmed}/.well-known/openid-configuration")];
    let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
    let (origin, path) = match trimmed.get(after_scheme..).and_then(|rest| rest.find('/')) {
        Some(slash) => trimmed.split_at(after_scheme + slash),
        None => (trimmed, ""),
    };
    urls.push(format!("{origin}/.well-known/oauth-authorization-server{path}"));
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_looks_where_both_specs_say() {
        assert_eq!(
            discovery_urls("https://idp.example/realms/ops"),
            [
                "https://idp.example/realms/ops/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server/realms/ops"
            ]
        );
        assert_eq!(
            discovery_urls("https://idp.example/"),
            [
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server"
            ]
        );
    }
}

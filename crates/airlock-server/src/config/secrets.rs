//! Secrets, which are never written in the file: bearer tokens as `sha256:<hex>` hashes or
//! `env:NAME` references, other secrets as `env:NAME` references read at start.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The SHA-256 of a bearer token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Where `env:` references are looked up; tests pass a map, the binary the process environment.
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// An [`Env`] that notes the name of every variable read through it. Validation reads every
/// `env:` reference of the file through one, so the names it holds afterwards are those the file
/// takes secrets from: tokens, TOTP seeds, webhook secrets, the audit key, upstream `env` values
/// and headers. No upstream child inherits those by name.
pub(super) struct Recording<'a> {
    env: &'a dyn Env,
    names: RefCell<BTreeSet<String>>,
}

impl<'a> Recording<'a> {
    /// Reads through `env`.
    pub(super) fn new(env: &'a dyn Env) -> Recording<'a> {
        Recording { env, names: RefCell::new(BTreeSet::new()) }
    }

    /// Every name read so far.
    pub(super) fn into_names(self) -> BTreeSet<String> {
        self.names.into_inner()
    }
}

impl Env for Recording<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.names.borrow_mut().insert(name.to_string());
        self.env.var(name)
    }
}

/// Reads a `sha256:<hex>` or `env:NAME` token into its hash, or says what is wrong with it.
pub(super) fn token_hash(value: &str, env: &dyn Env) -> Result<[u8; 32], String> {
    if let Some(hex_part) = value.strip_prefix("sha256:") {
        return hex::decode(hex_part)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| "a `sha256:` token must be followed by 64 hex digits".into());
    }
    if let Some(name) = value.strip_prefix("env:") {
        return match env.var(name) {
            Some(v) if !v.is_empty() => Ok(hash_token(&v)),
            _ => Err(format!("environment variable `{name}` is not set")),
        };
    }
    Err("must be `sha256:<hex>` (the SHA-256 of the token) or `env:NAME`; never the token itself. \
         `airlock token new` makes a token and prints its hash"
        .into())
}

/// Reads an `env:NAME` reference to a secret; an unset or empty variable is an error, and so is
/// a value that is not a reference, which `not_a_reference` explains.
pub(super) fn env_secret(value: &str, env: &dyn Env, not_a_reference: &str) -> Result<String, String> {
    match value.strip_prefix("env:") {
        Some(var) => {
            env.var(var).filter(|v| !v.is_empty()).ok_or_else(|| format!("environment variable `{var}` is not set"))
        }
        None => Err(not_a_reference.to_string()),
    }
}

/// The prefix of a Standard Webhooks secret: `whsec_` followed by the base64 of the key.
pub const WHSEC_PREFIX: &str = "whsec_";

/// The HMAC-SHA256 key a `[[notify]]` endpoint signs with. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// The key of a configured secret. A value of the Standard Webhooks form `whsec_<base64>`
    /// (what their libraries and dashboards generate) is the key those bytes decode to, so a
    /// receiver can hand the same string to a Standard Webhooks library; any other value is used
    /// as it is, its UTF-8 bytes being the key.
    pub fn from_configured(value: &str) -> Result<WebhookSecret, String> {
        match value.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(key) if !key.is_empty() => Ok(WebhookSecret(key)),
                _ => Err(format!(
                    "a secret that starts with `{WHSEC_PREFIX}` must be followed by base64 (the Standard Webhooks form)"
                )),
            },
            None => Ok(WebhookSecret(value.as_bytes().to_vec())),
        }
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

//! Checking one token: which issuer, which key, which algorithm, then signature and claims.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::Error;
use crate::keys::KeySet;
use crate::options::{IssuerOptions, algorithm_name};

/// The largest token looked at: real access tokens are a few kilobytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token that passed every check: who issued it and what it claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The issuer, as configured (and as `iss` says).
    pub issuer: String,
    /// The header's `alg`.
    pub algorithm: Algorithm,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// The issuers airlock trusts, each with its keys. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<(IssuerOptions, KeySet)>,
}

/// The parts of a token read before anything is verified, to choose the issuer and the key.
struct Unverified {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Vec<String>,
    claims: Map<String, Value>,
}

fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, Error> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Error::Malformed(format!("its {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::Malformed(format!("its {what} is not a JSON object"))),
    }
}

fn peek(token: &str) -> Result<Unverified, Error> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::Malformed(format!("it is longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = parts.as_slice() else {
        return Err(Error::Malformed(format!("it has {} dot-separated parts, not 3", parts.len())));
    };
    let header = decode_part(header, "header")?;
    let claims = decode_part(payload, "payload")?;
    let text = |k: &str| header.get(k).and_then(Value::as_str).map(str::to_string);
    let crit = match header.get("crit") {
        None => Vec::new(),
        Some(Value::Array(names)) => names.iter().map(|n| n.as_str().unwrap_or("?").to_string()).collect(),
        Some(_) => return Err(Error::Malformed("its `crit` header is not an array".into())),
    };
    Ok(Unverified { alg: text("alg").unwrap_or_default(), kid: text("kid"), typ: text("typ"), crit, claims })
}

/// `application/at+jwt` and `at+jwt` are the same type (RFC 7515 §4.1.9); case does not matter.
fn same_type(found: &str, expected: &str) -> bool {
    let strip = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/").map(str::to_string).unwrap_or(t)
    };
    strip(found) == strip(expected)
}

/// Whether `key` can verify `alg`: its type and curve fit, and its own `alg`, if it names one,
/// is the same.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    if key.common.key_algorithm.is_some_and(|ka| Algorithm::try_from(ka).ok() != Some(alg)) {
        return false;
    }
    match (&key.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => ec.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => okp.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
}

fn audiences_of(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl Verifier {
    /// A verifier for `issuers`, fetching keys with `client` (which should not follow
    /// redirects and should have time limits). Nothing is fetched until a token needs it.
    pub fn new(issuers: Vec<IssuerOptions>, client: reqwest::Client) -> Arc<Verifier> {
        let issuers = issuers
            .into_iter()
            .map(|o| {
                let keys = KeySet::new(&o, client.clone());
                (o, keys)
            })
            .collect();
        Arc::new(Verifier { issuers })
    }

    /// The configured issuers, in order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerOptions> {
        self.issuers.iter().map(|(o, _)| o)
    }

    /// Checks `token`, accepting in `aud` the issuer's configured audiences or, where it
    /// configures none, `resource` (the resource identifier of the endpoint called).
    pub async fn verify(&self, token: &str, resource: &str) -> Result<VerifiedToken, Error> {
        let peeked = peek(token)?;
        let iss = peeked.claims.get("iss").and_then(Value::as_str).unwrap_or_default();
        let Some((options, keys)) = self.issuers.iter().find(|(o, _)| o.issuer == iss) else {
            return Err(Error::UnknownIssuer(iss.to_string()));
        };
        let allowed = || options.algorithms.iter().map(|a| algorithm_name(*a)).collect::<Vec<_>>().join(", ");
        let alg = options
            .algorithms
            .iter()
            .copied()
            .find(|a| algorithm_name(*a) == peeked.alg)
            .ok_or_else(|| Error::AlgorithmNotAllowed { alg: peeked.alg.clone(), allowed: allowed() })?;
        if let Some(name) = peeked.crit.first() {
            return Err(Error::CriticalHeader(name.clone()));
        }
        if let Some(expected) = &options.token_type {
            let found = peeked.typ.clone().unwrap_or_default();
            if !same_type(&found, expected) {
                return Err(Error::WrongType { found, expected: expected.clone() });
            }
        }
        let candidates: Vec<Jwk> =
            keys.candidates(peeked.kid.as_deref()).await?.into_iter().filter(|k| fits(k, alg)).collect();
        if candidates.is_empty() {
            return Err(Error::UnknownKey {
                kid: peeked.kid.clone().unwrap_or_else(|| format!("(none) for {}", peeked.alg)),
                issuer: options.issuer.clone(),
            });
        }
        let audiences = options.audiences.clone().unwrap_or_else(|| vec![resource.to_string()]);
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = options.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&options.issuer]);
        validation.set_audience(&audiences);
        validation.required_spec_claims = ["exp", "iss", "aud"].into_iter().map(String::from).collect::<HashSet<_>>();
        let mut last = Error::BadSignature(options.issuer.clone());
        for key in &candidates {
            let Ok(decoding) = DecodingKey::from_jwk(key) else { continue };
            match jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation) {
                Ok(data) => {
                    return Ok(VerifiedToken { issuer: options.issuer.clone(), algorithm: alg, claims: data.claims });
                }
                Err(e) => {
                    last = self.explain(e.kind(), &peeked.claims, &audiences, &options.issuer);
                    // Only a signature that does not verify is worth another key with the same
                    // `kid` (or, without one, another key); any other failure is the token's.
                    if !matches!(last, Error::BadSignature(_)) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// What a failure of the library means, in terms of the token. Claims are read from the
    /// payload, which by then has a valid signature (the library checks it first).
    fn explain(&self, kind: &ErrorKind, claims: &Map<String, Value>, expected: &[String], issuer: &str) -> Error {
        let number = |k: &str| claims.get(k).and_then(Value::as_i64).unwrap_or_default();
        match kind {
            ErrorKind::ExpiredSignature => Error::Expired { exp: number("exp") },
            ErrorKind::ImmatureSignature => Error::NotYetValid { nbf: number("nbf") },
            ErrorKind::InvalidAudience => {
                let found = audiences_of(claims);
                Error::WrongAudience {
                    found: if found.is_empty() { "no audience".into() } else { quoted(&found) },
                    expected: quoted(expected),
                }
            }
            ErrorKind::InvalidIssuer => {
                Error::UnknownIssuer(claims.get("iss").and_then(Value::as_str).unwrap_or_default().to_string())
            }
            ErrorKind::MissingRequiredClaim(c) => Error::Claim(c.clone()),
            ErrorKind::InvalidClaimFormat(c) => Error::Claim(c.clone()),
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                Error::Malformed(kind_text(kind))
            }
            // A signature that does not verify, or a key that does not fit the algorithm (the
            // key's type was checked above, so this means a damaged key).
            _ => Error::BadSignature(issuer.to_string()),
        }
    }
}

fn kind_text(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Base64(e) => format!("a part is not base64url: {e}"),
        ErrorKind::Json(e) => format!("a part is not the expected JSON: {e}"),
        ErrorKind::Utf8(e) => format!("a part is not UTF-8: {e}"),
        _ => "it is not a JWT".into(),
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

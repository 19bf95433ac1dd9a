//! How one trusted issuer is configured.

use std::time::Duration;

pub use jsonwebtoken::Algorithm;

/// The algorithms an issuer may be allowed to sign with: asymmetric ones only. `none` is never
/// allowed, and neither is HMAC: its key is a shared secret, so verifying with a public key as
/// the "secret" would let anyone who has the public key (everyone) sign tokens.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The name of an algorithm as JOSE writes it (`RS256`, `EdDSA`).
pub(crate) fn algorithm_name(alg: Algorithm) -> String {
    serde_json::to_value(alg).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{alg:?}"))
}

/// Reads an algorithm name for an allowlist; refuses `none`, HMAC and anything unknown, saying
/// why.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let known = || ALLOWED_ALGORITHMS.iter().map(|a| algorithm_name(*a)).collect::<Vec<_>>().join(", ");
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` means an unsigned token and is never allowed".into());
    }
    if name.to_ascii_uppercase().starts_with("HS") {
        return Err(format!(
            "`{name}` is HMAC, a shared secret: airlock verifies tokens with the issuer's public keys only (allowed: {})",
            known()
        ));
    }
    ALLOWED_ALGORITHMS
        .iter()
        .copied()
        .find(|a| algorithm_name(*a) == name)
        .ok_or_else(|| format!("`{name}` is not a signature algorithm airlock supports (allowed: {})", known()))
}

/// One issuer whose access tokens airlock accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerOptions {
    /// The issuer identifier, exactly as tokens carry it in `iss` (and as its discovery document
    /// names itself).
    pub issuer: String,
    /// Where its signing keys are; `None`: found by discovery
    /// (`/.well-known/openid-configuration`, else RFC 8414 `/.well-known/oauth-authorization-server`).
    pub jwks_uri: Option<String>,
    /// The audiences accepted in `aud`; `None`: the resource identifier of the endpoint called.
    pub audiences: Option<Vec<String>>,
    /// The algorithms its tokens may be signed with (a subset of [`ALLOWED_ALGORITHMS`]).
    pub algorithms: Vec<Algorithm>,
    /// How far `exp` and `nbf` may be off, for clocks that disagree.
    pub leeway: Duration,
    /// The `typ` header tokens must have (`at+jwt` for RFC 9068 access tokens), if any.
    pub token_type: Option<String>,
    /// How long fetched keys are used before they are fetched again.
    pub keys_max_age: Duration,
    /// The least time between two fetches of the keys, however many tokens name an unknown key.
    pub keys_min_refresh: Duration,
}

impl IssuerOptions {
    /// Options for `issuer` with the defaults: discovery, the endpoint's resource identifier as
    /// the audience, every algorithm of [`ALLOWED_ALGORITHMS`], 60 s of leeway, keys kept for
    /// 10 minutes and fetched again at most every 30 s.
    pub fn new(issuer: impl Into<String>) -> IssuerOptions {
        IssuerOptions {
            issuer: issuer.into(),
            jwks_uri: None,
            audiences: None,
            algorithms: ALLOWED_ALGORITHMS.to_vec(),
            leeway: Duration::from_secs(60),
            token_type: None,
            keys_max_age: Duration::from_secs(600),
            keys_min_refresh: Duration::from_secs(30),
        }
    }
}

/// Whether `url` may be fetched for keys or discovery: `https://`, or `http://` to this machine
/// only (a test or development provider). Keys fetched over plain HTTP from elsewhere could be
/// swapped on the way.
pub fn fetchable(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost" || host == "::1" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_can_be_allowed() {
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
        assert!(parse_algorithm("none").unwrap_err().contains("never allowed"));
        assert!(parse_algorithm("NONE").unwrap_err().contains("never allowed"));
        assert!(parse_algorithm("HS256").unwrap_err().contains("HMAC"));
        assert!(parse_algorithm("rs256").unwrap_err().contains("not a signature algorithm"));
    }

    #[test]
    fn keys_are_fetched_over_https_or_from_this_machine() {
        assert!(fetchable("https://login.example.com/keys"));
        assert!(fetchable("http://127.0.0.1:8080/jwks"));
        assert!(fetchable("http://localhost/jwks"));
        assert!(fetchable("http://[::1]:9/jwks"));
        assert!(!fetchable("http://idp.example.com/jwks"));
        assert!(!fetchable("http://127.0.0.1.evil.example/jwks"));
        assert!(!fetchable("ftp://127.0.0.1/jwks"));
    }
}

//! What can be wrong with a token, each said so that whoever reads the `401` knows what to fix.

/// Why a token was refused, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The token is not a signed JWT (three base64url parts, a JSON header and payload).
    #[error("the token is not a signed JWT: {0}")]
    Malformed(String),
    /// The header names an algorithm the issuer's allowlist does not have (`none` and every
    /// HMAC algorithm never are).
    #[error("the token is signed with `{alg}`, which is not allowed for this issuer (allowed: {allowed})")]
    AlgorithmNotAllowed {
        /// The header's `alg`.
        alg: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// The header carries a critical extension airlock does not understand.
    #[error("the token's header marks `{0}` critical, which airlock does not understand")]
    CriticalHeader(String),
    /// The header's `typ` is not the one the issuer is configured to require.
    #[error("the token's type is `{found}`, not `{expected}`")]
    WrongType {
        /// What the header says (empty when absent).
        found: String,
        /// What the issuer requires.
        expected: String,
    },
    /// `iss` names no configured issuer (or is missing).
    #[error("the token was issued by `{0}`, which is not a configured issuer")]
    UnknownIssuer(String),
    /// The header's `kid` names no key the issuer publishes, even after fetching its keys again.
    #[error("the token is signed with key `{kid}`, which `{issuer}` does not publish")]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("the token's signature does not verify with the key of `{0}`")]
    BadSignature(String),
    /// `exp` has passed (beyond the leeway).
    #[error("the token expired at {exp} (Unix time)")]
    Expired {
        /// The token's `exp`.
        exp: i64,
    },
    /// `nbf` has not come yet (beyond the leeway).
    #[error("the token is not valid before {nbf} (Unix time)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
    },
    /// `aud` names none of the audiences accepted here.
    #[error("the token is for {found}, not for {expected}")]
    WrongAudience {
        /// The token's audiences, quoted and comma-separated (or `no audience`).
        found: String,
        /// The accepted audiences, quoted and comma-separated.
        expected: String,
    },
    /// A claim the checks need is missing or of the wrong type.
    #[error("the token's `{0}` claim is missing or not valid")]
    Claim(String),
    /// The issuer's keys could not be fetched: the token may be fine, but can't be checked now.
    #[error("the signing keys of `{issuer}` can't be fetched: {reason}")]
    KeysUnavailable {
        /// The issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// airlock's own token request (the client credentials grant, for an upstream) failed.
    #[error("cannot get an access token from `{endpoint}`: {reason}")]
    TokenRequest {
        /// The token endpoint, or the issuer when discovery failed.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// Whether the token could not be checked for a reason of airlock's or the issuer's (the
    /// keys can't be fetched), rather than because the token is bad. Either way it is refused.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::KeysUnavailable { .. })
    }
}

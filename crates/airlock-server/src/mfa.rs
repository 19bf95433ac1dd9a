//! Step-up confirmation with RFC 6238 TOTP codes (SHA-1, 6 digits, 30-second steps, one step
//! of clock skew either way: what common authenticator apps produce).

use chrono::{DateTime, Utc};
use totp_rs::{Algorithm, Builder, Secret, Totp};

const STEP_SECONDS: u64 = 30;

/// Why a TOTP secret or code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MfaError {
    /// The secret does not decode as base32.
    #[error("the configured TOTP secret is not valid base32")]
    InvalidSecret,
    /// The code is not six digits.
    #[error("a TOTP code is 6 digits")]
    MalformedCode,
    /// The code belongs to no time step within the allowed skew.
    #[error("the code does not match; check the authenticator's clock")]
    WrongCode,
}

fn totp(secret: &str) -> Result<Totp, MfaError> {
    let cleaned: String = secret.chars().filter(|c| !c.is_whitespace() && *c != '=').collect::<String>().to_uppercase();
    let secret = Secret::try_from_base32(&cleaned).map_err(|_| MfaError::InvalidSecret)?;
    // `build` insists on 128-bit secrets; many deployed secrets are 80-bit, which RFC 4226 allows.
    Ok(Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret)
        .build_noncompliant())
}

fn unix(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp()).unwrap_or(0)
}

/// Checks `code` against `secret` at `now` and returns the time step it belongs to; the caller
/// makes sure each step is accepted once.
pub fn verify(secret: &str, code: &str, now: DateTime<Utc>) -> Result<u64, MfaError> {
    let code = code.trim();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(MfaError::MalformedCode);
    }
    totp(secret)?.check(code, unix(now)).ok_or(MfaError::WrongCode)
}

/// The code for `secret` at `now`.
pub fn code_at(secret: &str, now: DateTime<Utc>) -> Result<String, MfaError> {
    Ok(totp(secret)?.generate(unix(now)).to_string())
}

/// Whether `secret` is usable.
pub fn check_secret(secret: &str) -> Result<(), MfaError> {
    totp(secret).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B secret ("12345678901234567890") in base32.
    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc_6238_vector() {
        let t = DateTime::from_timestamp(59, 0).unwrap();
        assert_eq!(code_at(SECRET, t).unwrap(), "287082");
        assert_eq!(verify(SECRET, "287082", t).unwrap(), 1);
    }

    #[test]
    fn wrong_codes_and_secrets_are_refused() {
        let t = DateTime::from_timestamp(59, 0).unwrap();
        assert_eq!(verify(SECRET, "000000", t), Err(MfaError::WrongCode));
        assert_eq!(verify(SECRET, "12345", t), Err(MfaError::MalformedCode));
        assert_eq!(verify("not base32!", "287082", t), Err(MfaError::InvalidSecret));
        // A code from far in the past is refused.
        let later = DateTime::from_timestamp(59 + 300, 0).unwrap();
        assert_eq!(verify(SECRET, "287082", later), Err(MfaError::WrongCode));
        assert_eq!(MfaError::MalformedCode.to_string(), "a TOTP code is 6 digits");
        assert_eq!(MfaError::WrongCode.to_string(), "the code does not match; check the authenticator's clock");
        assert_eq!(MfaError::InvalidSecret.to_string(), "the configured TOTP secret is not valid base32");
    }
}

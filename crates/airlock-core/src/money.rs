//! Amounts of money: US dollars, finite and never negative.
//!
//! Every place an amount enters airlock (a policy's `cost_usd`, a `[[tools]]` price, a budget, a
//! cost an agent or an upstream reports with a result) goes through [`Usd::new`], so all of them
//! accept and refuse the same values. Stored documents keep plain numbers (`f64`) so the journal's
//! format does not change.

use serde::{Deserialize, Serialize};

/// A valid amount of US dollars.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Usd(f64);

/// A number that is not an amount of money (negative, NaN or infinite).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("must be a non-negative number of US dollars, got {0}")]
pub struct NotAnAmount(pub f64);

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0.0);

    /// `value` as an amount, if it is one.
    pub fn new(value: f64) -> Result<Usd, NotAnAmount> {
        if value.is_finite() && value >= 0.0 { Ok(Usd(value)) } else { Err(NotAnAmount(value)) }
    }

    /// The amount as a number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// The part of `value` that counts as spend: the amount when it is a positive one, else
    /// nothing.
    pub fn counted(value: Option<f64>) -> f64 {
        value.and_then(|v| Usd::new(v).ok()).map_or(0.0, Usd::get)
    }
}

impl TryFrom<f64> for Usd {
    type Error = NotAnAmount;
    fn try_from(value: f64) -> Result<Usd, NotAnAmount> {
        Usd::new(value)
    }
}

impl From<Usd> for f64 {
    fn from(value: Usd) -> f64 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_finite_and_not_negative() {
        for ok in [0.0, -0.0, 0.01, 12.5, 1e12] {
            assert!(Usd::new(ok).is_ok(), "{ok}");
        }
        for bad in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Usd::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Usd::new(-1.0).unwrap_err().to_string(), "must be a non-negative number of US dollars, got -1");
        assert_eq!(Usd::counted(Some(-3.0)), 0.0);
        assert_eq!(Usd::counted(Some(2.5)), 2.5);
        assert_eq!(Usd::counted(None), 0.0);
        assert!(serde_json::from_str::<Usd>("-1").is_err());
        assert_eq!(serde_json::from_str::<Usd>("4.5").unwrap().get(), 4.5);
    }
}

//! Amounts of money in the file: US dollars, finite and never negative. Every key that holds one
//! (`budget_usd_per_day`, `budget_usd_per_session`, `cost_usd`) is checked here, so all of them
//! accept and refuse the same values with the same message.

use super::validate::Problems;

/// What an amount of zero means at a key, when the error message should say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zero {
    /// Nothing to say: zero dollars is zero dollars (a tool that costs nothing).
    Plain,
    /// Zero turns the limit off.
    NoLimit,
}

/// Checks that `value` at `key` is an amount of US dollars, finite and not negative, and reports
/// it otherwise.
pub(super) fn check_usd(key: &str, value: f64, zero: Zero, problems: &mut Problems) {
    if airlock_core::money::Usd::new(value).is_err() {
        let note = match zero {
            Zero::Plain => "",
            Zero::NoLimit => " (0 = no limit)",
        };
        problems.push(key, format!("must be a non-negative number{note}, got {value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: f64, zero: Zero) -> Vec<(String, String)> {
        let mut problems = Problems::default();
        check_usd("k", value, zero, &mut problems);
        problems.into_vec()
    }

    #[test]
    fn finite_non_negative_amounts_pass() {
        for value in [0.0, -0.0, 0.01, 12.5, 1e9] {
            assert_eq!(check(value, Zero::Plain), vec![], "{value}");
        }
    }

    #[test]
    fn negative_and_non_finite_amounts_are_refused_with_the_key() {
        let message = |s: &str| vec![("k".to_string(), s.to_string())];
        assert_eq!(check(-1.0, Zero::Plain), message("must be a non-negative number, got -1"));
        assert_eq!(check(-0.5, Zero::NoLimit), message("must be a non-negative number (0 = no limit), got -0.5"));
        assert_eq!(check(f64::NAN, Zero::Plain), message("must be a non-negative number, got NaN"));
        assert_eq!(
            check(f64::INFINITY, Zero::NoLimit),
            message("must be a non-negative number (0 = no limit), got inf")
        );
    }
}

//! What an agent's actions cost, for budgets: which actions count, and how much each one does.
//!
//! How a decided price and a cost reported with a result count are the domain's rules
//! ([`airlock_core::pipeline::counted_price`], [`airlock_core::limits::reported_cost_counted`],
//! the same the engine counts with); every backend sums through [`action_cost`], so none of
//! them restates them (in SQL or otherwise).

use airlock_core::ActionStatus;
use airlock_core::limits::reported_cost_counted;
use airlock_core::pipeline::counted_price;

/// Statuses of the actions whose cost counts: allowed or approved, whether or not they ran.
/// Actions still pending approval, and denied, expired or cancelled ones, spent nothing.
pub(crate) const COUNTED: [ActionStatus; 5] = [
    ActionStatus::Approved,
    ActionStatus::Executing,
    ActionStatus::Succeeded,
    ActionStatus::Failed,
    ActionStatus::Unknown,
];

/// What one counted action adds to its agent's spend: the price its decision set, plus the
/// part of a cost reported with its result that counts (all of a valid one when the decision
/// set no price, nothing otherwise).
pub(crate) fn action_cost(decided: Option<f64>, reported: Option<f64>) -> f64 {
    counted_price(decided) + reported_cost_counted(decided, reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decided_cost_wins_and_a_reported_one_counts_only_without_it() {
        assert_eq!(action_cost(Some(1.0), Some(5.0)), 1.0);
        assert_eq!(action_cost(Some(0.0), Some(5.0)), 0.0);
        assert_eq!(action_cost(None, Some(0.25)), 0.25);
        assert_eq!(action_cost(None, Some(-3.0)), 0.0);
        assert_eq!(action_cost(None, None), 0.0);
        assert_eq!(action_cost(Some(-2.0), Some(5.0)), 0.0, "a price is never negative spend");
    }
}

//! What an agent's actions cost, for budgets. Which actions count
//! ([`airlock_core::ActionStatus::SPENDING`]) and how much each one does
//! ([`airlock_core::pipeline::action_cost`]) are the domain's rules, the same the engine counts
//! with; every backend sums through them, so none restates them (in SQL or otherwise).

use airlock_core::ActionStatus;

/// Statuses of the actions whose cost counts.
pub(crate) const COUNTED: [ActionStatus; 5] = ActionStatus::SPENDING;

pub(crate) use airlock_core::pipeline::action_cost;

//! `[guards]` and each agent's `[agents.guards]`: the thresholds of the loop, failure, rate,
//! budget and breaker guards, an agent's own keys over the defaults, each checked by its range.

use airlock_core::limits::GuardLimits;

use super::money::{Zero, check_usd};
use super::raw::RawGuards;
use super::validate::Problems;

/// `[guards]`: the built-in defaults with the file's keys over them, checked.
pub(super) fn defaults(raw: &RawGuards, problems: &mut Problems) -> GuardLimits {
    let guards = raw.over(&GuardLimits::default());
    check_limits("guards", &guards, problems);
    guards
}

/// One agent's `[agents.guards]` over the `[guards]` defaults, checked under `prefix`.
pub(super) fn for_agent(prefix: &str, raw: &RawGuards, defaults: &GuardLimits, problems: &mut Problems) -> GuardLimits {
    let limits = raw.over(defaults);
    check_limits(prefix, &limits, problems);
    limits
}

impl RawGuards {
    /// `self` over `base`.
    fn over(&self, base: &GuardLimits) -> GuardLimits {
        GuardLimits {
            loop_repeats: self.loop_repeats.unwrap_or(base.loop_repeats),
            loop_window_seconds: self.loop_window_seconds.unwrap_or(base.loop_window_seconds),
            max_consecutive_failures: self.max_consecutive_failures.unwrap_or(base.max_consecutive_failures),
            max_consecutive_denials: self.max_consecutive_denials.unwrap_or(base.max_consecutive_denials),
            actions_per_minute: self.actions_per_minute.unwrap_or(base.actions_per_minute),
            sessions_per_minute: self.sessions_per_minute.unwrap_or(base.sessions_per_minute),
            budget_usd_per_day: self.budget_usd_per_day.unwrap_or(base.budget_usd_per_day),
            budget_usd_per_session: self.budget_usd_per_session.unwrap_or(base.budget_usd_per_session),
            on_budget_exceeded: self.on_budget_exceeded.unwrap_or(base.on_budget_exceeded),
            breaker_failures: self.breaker_failures.unwrap_or(base.breaker_failures),
            breaker_cooldown_seconds: self.breaker_cooldown_seconds.unwrap_or(base.breaker_cooldown_seconds),
            breaker_error_rate: self.breaker_error_rate.unwrap_or(base.breaker_error_rate),
            breaker_window_seconds: self.breaker_window_seconds.unwrap_or(base.breaker_window_seconds),
            breaker_min_calls: self.breaker_min_calls.unwrap_or(base.breaker_min_calls),
        }
    }
}

fn check_limits(prefix: &str, l: &GuardLimits, problems: &mut Problems) {
    if l.loop_repeats == 1 {
        problems.push(&format!("{prefix}.loop_repeats"), "must be 0 (off) or at least 2".into());
    }
    if l.loop_window_seconds == 0 || l.loop_window_seconds > 7 * 86_400 {
        problems.push(
            &format!("{prefix}.loop_window_seconds"),
            format!("must be between 1 and 604800, got {}", l.loop_window_seconds),
        );
    }
    for (k, v) in [("budget_usd_per_day", l.budget_usd_per_day), ("budget_usd_per_session", l.budget_usd_per_session)] {
        check_usd(&format!("{prefix}.{k}"), v, Zero::NoLimit, problems);
    }
    if l.breaker_cooldown_seconds == 0 || l.breaker_cooldown_seconds > 86_400 {
        problems.push(
            &format!("{prefix}.breaker_cooldown_seconds"),
            format!("must be between 1 and 86400, got {}", l.breaker_cooldown_seconds),
        );
    }
    if !(l.breaker_error_rate.is_finite() && (0.0..=1.0).contains(&l.breaker_error_rate)) {
        problems.push(
            &format!("{prefix}.breaker_error_rate"),
            format!("must be a fraction between 0 (off) and 1, got {}", l.breaker_error_rate),
        );
    }
    if l.breaker_window_seconds == 0 || l.breaker_window_seconds > 86_400 {
        problems.push(
            &format!("{prefix}.breaker_window_seconds"),
            format!("must be between 1 and 86400, got {}", l.breaker_window_seconds),
        );
    }
    if l.breaker_min_calls == 0 || l.breaker_min_calls > 1_000_000 {
        problems.push(
            &format!("{prefix}.breaker_min_calls"),
            format!("must be between 1 and 1000000, got {}", l.breaker_min_calls),
        );
    }
}

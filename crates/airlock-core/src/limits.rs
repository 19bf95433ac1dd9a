//! Bounded autonomy as pure logic: guard limits, the per-agent token bucket, budgets and the
//! per-tool circuit breaker. The engine owns the state and the clock; these types decide.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ApprovalRequirements, Decision, Effect, Reason, Risk};

/// Rule name of a denial by the rate limit.
pub const RULE_RATE_LIMIT: &str = "airlock.rate_limit";
/// Rule name of a denial (or approval) by a budget.
pub const RULE_BUDGET: &str = "airlock.budget";
/// Rule name of a pause for repeated identical calls.
pub const RULE_LOOP: &str = "airlock.loop";
/// Rule name of a pause for consecutive failures.
pub const RULE_FAILURES: &str = "airlock.consecutive_failures";
/// Rule name of a pause for consecutive denials.
pub const RULE_DENIALS: &str = "airlock.consecutive_denials";
/// Rule name of a denial by an open circuit breaker.
pub const RULE_BREAKER: &str = "airlock.circuit_breaker";

/// What to do when an action would exceed a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBudgetExceeded {
    /// Deny it.
    Deny,
    /// Hold it for a human.
    RequireApproval,
}

/// The thresholds of every guard, after per-agent overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardLimits {
    /// Identical calls (same digest) in one session within the window that pause it.
    pub loop_repeats: u32,
    /// The loop window.
    pub loop_window_seconds: u64,
    /// Failed actions in a row that pause the session; 0 disables.
    pub max_consecutive_failures: u32,
    /// Denied actions in a row that pause the session; 0 disables.
    pub max_consecutive_denials: u32,
    /// Actions per minute per agent; 0 disables.
    pub actions_per_minute: u32,
    /// Spend per agent per UTC day; 0 = no limit.
    pub budget_usd_per_day: f64,
    /// Spend per session; 0 = no limit.
    pub budget_usd_per_session: f64,
    /// What a budget overrun does.
    pub on_budget_exceeded: OnBudgetExceeded,
    /// Consecutive failures of one tool that open its breaker; 0 disables.
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before a probe.
    pub breaker_cooldown_seconds: u64,
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            loop_repeats: 5,
            loop_window_seconds: 600,
            max_consecutive_failures: 5,
            max_consecutive_denials: 10,
            actions_per_minute: 600,
            budget_usd_per_day: 0.0,
            budget_usd_per_session: 0.0,
            on_budget_exceeded: OnBudgetExceeded::Deny,
            breaker_failures: 5,
            breaker_cooldown_seconds: 30,
        }
    }
}

/// A token bucket: `per_minute` tokens, refilled continuously.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated: DateTime<Utc>,
}

impl TokenBucket {
    /// A bucket that has already spent `used` tokens at `now`.
    pub fn new(per_minute: u32, used: u32, now: DateTime<Utc>) -> TokenBucket {
        TokenBucket { tokens: (f64::from(per_minute) - f64::from(used)).max(0.0), updated: now }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, per_minute: u32, now: DateTime<Utc>) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_ms = capacity / 60_000.0;
        let elapsed_ms = (now - self.updated).num_milliseconds().max(0) as f64;
        self.tokens = (self.tokens + elapsed_ms * per_ms).min(capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - self.tokens) / per_ms).ceil();
            Err(Duration::from_millis(wait_ms as u64))
        }
    }
}

/// A denial by the rate limit.
pub fn rate_limited(agent: &str, per_minute: u32, retry_after: Duration) -> Reason {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Reason::new(
        RULE_RATE_LIMIT,
        format!("agent `{agent}` is over its limit of {per_minute} actions per minute; retry after {secs}s"),
    )
}

/// Applies budgets after policy: an allowed or approval-requiring action whose cost would take
/// the agent's day or the session past its budget is denied or held, as configured.
pub fn apply_budget(
    mut decision: Decision,
    limits: &GuardLimits,
    agent_spent_today: f64,
    session_spent: f64,
    default_ttl_seconds: u64,
) -> Decision {
    if decision.effect == Effect::Deny {
        return decision;
    }
    let cost = decision.cost_usd.unwrap_or(0.0);
    let mut over = Vec::new();
    if limits.budget_usd_per_day > 0.0 && agent_spent_today + cost > limits.budget_usd_per_day + 1e-9 {
        over.push(format!(
            "the agent's daily budget of ${:.2} (spent ${:.2} today, this costs ${:.2})",
            limits.budget_usd_per_day, agent_spent_today, cost
        ));
    }
    if limits.budget_usd_per_session > 0.0 && session_spent + cost > limits.budget_usd_per_session + 1e-9 {
        over.push(format!(
            "the session budget of ${:.2} (spent ${:.2}, this costs ${:.2})",
            limits.budget_usd_per_session, session_spent, cost
        ));
    }
    if over.is_empty() {
        return decision;
    }
    let msg = format!("this action would exceed {}", over.join(" and "));
    match limits.on_budget_exceeded {
        OnBudgetExceeded::Deny => {
            decision.effect = Effect::Deny;
            decision.approval = None;
            decision.risk = decision.risk.max(Risk::Medium);
            decision.decided_by = "guard".into();
            decision.reasons.insert(0, Reason::new(RULE_BUDGET, msg));
        }
        OnBudgetExceeded::RequireApproval => {
            if decision.effect == Effect::Allow {
                decision.effect = Effect::RequireApproval;
                decision.approval = Some(ApprovalRequirements {
                    quorum: 1,
                    groups: Vec::new(),
                    mfa: false,
                    ttl_seconds: default_ttl_seconds,
                });
            }
            decision.risk = decision.risk.max(Risk::Medium);
            decision.decided_by = "guard".into();
            decision.reasons.insert(0, Reason::new(RULE_BUDGET, format!("{msg}; a human must approve")));
        }
    }
    decision
}

/// State of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls fail fast until the cool-down has passed.
    Open,
    /// One probe call is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// The circuit breaker of one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    /// Full tool name.
    pub tool: String,
    /// State.
    pub state: BreakerState,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When it last opened.
    #[serde(default)]
    pub opened_at: Option<DateTime<Utc>>,
    /// Last failure message.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Whether a breaker lets a call through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go.
    Pass,
    /// Cool-down over: this call is the probe.
    Probe,
    /// Open (or a probe is out): fail fast.
    Reject {
        /// Why.
        reason: Reason,
    },
}

/// A state change worth journaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open → open.
    Opened,
    /// Open → half-open (a probe went out).
    HalfOpened,
    /// Half-open (or failing) → closed.
    Closed,
}

impl Breaker {
    /// A closed breaker for `tool`.
    pub fn new(tool: &str) -> Breaker {
        Breaker {
            tool: tool.to_string(),
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            last_error: None,
        }
    }

    /// Decides whether a call may go out at `now`; moves open → half-open when the cool-down has
    /// passed (the caller journals that).
    pub fn admit(&mut self, now: DateTime<Utc>, cooldown_seconds: u64) -> (Admission, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (Admission::Pass, None),
            BreakerState::HalfOpen => (
                Admission::Reject {
                    reason: Reason::new(
                        RULE_BREAKER,
                        format!(
                            "the circuit breaker of `{}` is half-open and a probe call is in flight; retry shortly",
                            self.tool
                        ),
                    ),
                },
                None,
            ),
            BreakerState::Open => {
                let opened = self.opened_at.unwrap_or(now);
                let ready =
                    opened + chrono::Duration::seconds(i64::try_from(cooldown_seconds).unwrap_or(i64::MAX / 2_000));
                if now >= ready {
                    self.state = BreakerState::HalfOpen;
                    (Admission::Probe, Some(Transition::HalfOpened))
                } else {
                    let wait = (ready - now).num_seconds().max(1);
                    (
                        Admission::Reject {
                            reason: Reason::new(
                                RULE_BREAKER,
                                format!(
                                    "the circuit breaker of `{}` is open after {} failures in a row (last: {}); retry after {wait}s",
                                    self.tool,
                                    self.consecutive_failures,
                                    self.last_error.as_deref().unwrap_or("unknown error")
                                ),
                            ),
                        },
                        None,
                    )
                }
            }
        }
    }

    /// Records an outcome of a call to the tool.
    pub fn record(&mut self, ok: bool, error: Option<&str>, now: DateTime<Utc>, threshold: u32) -> Option<Transition> {
        if ok {
            self.consecutive_failures = 0;
            self.last_error = None;
            if self.state != BreakerState::Closed {
                self.state = BreakerState::Closed;
                self.opened_at = None;
                return Some(Transition::Closed);
            }
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = error.map(|e| e.chars().take(200).collect());
        let should_open = self.state == BreakerState::HalfOpen
            || (threshold > 0 && self.state == BreakerState::Closed && self.consecutive_failures >= threshold);
        if should_open {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
            return Some(Transition::Opened);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::policy_failure;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let mut b = TokenBucket::new(2, 0, at(0));
        assert!(b.take(2, at(0)).is_ok());
        assert!(b.take(2, at(0)).is_ok());
        let wait = b.take(2, at(0)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        assert!(b.take(2, at(31)).is_ok());
        let mut seeded = TokenBucket::new(3, 3, at(0));
        assert!(seeded.take(3, at(0)).is_err());
        assert!(TokenBucket::new(0, 9, at(0)).take(0, at(0)).is_ok());
    }

    fn allow(cost: f64) -> Decision {
        let mut d = policy_failure(String::new(), "rev", 0);
        d.effect = Effect::Allow;
        d.reasons.clear();
        d.cost_usd = Some(cost);
        d
    }

    #[test]
    fn budgets_deny_or_hold_the_action_that_would_overrun() {
        let limits = GuardLimits { budget_usd_per_day: 10.0, ..GuardLimits::default() };
        assert_eq!(apply_budget(allow(2.0), &limits, 8.0, 0.0, 60).effect, Effect::Allow);
        let d = apply_budget(allow(2.5), &limits, 8.0, 0.0, 60);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.reasons[0].rule, RULE_BUDGET);
        let hold = GuardLimits { on_budget_exceeded: OnBudgetExceeded::RequireApproval, ..limits.clone() };
        let d = apply_budget(allow(2.5), &hold, 8.0, 0.0, 60);
        assert_eq!(d.effect, Effect::RequireApproval);
        let session = GuardLimits { budget_usd_per_session: 1.0, ..GuardLimits::default() };
        assert_eq!(apply_budget(allow(0.5), &session, 0.0, 0.6, 60).effect, Effect::Deny);
        assert_eq!(apply_budget(allow(0.5), &GuardLimits::default(), 1e9, 1e9, 60).effect, Effect::Allow);
    }

    #[test]
    fn breaker_opens_fails_fast_probes_and_closes() {
        let mut b = Breaker::new("t");
        for i in 0..2 {
            assert_eq!(b.record(false, Some("boom"), at(i), 3), None);
        }
        assert_eq!(b.record(false, Some("boom"), at(2), 3), Some(Transition::Opened));
        let (adm, _) = b.admit(at(10), 30);
        assert!(matches!(adm, Admission::Reject { .. }));
        let (adm, t) = b.admit(at(33), 30);
        assert_eq!((adm, t), (Admission::Probe, Some(Transition::HalfOpened)));
        assert!(matches!(b.admit(at(33), 30).0, Admission::Reject { .. }));
        // The probe fails: open again, with a fresh cool-down.
        assert_eq!(b.record(false, Some("still"), at(34), 3), Some(Transition::Opened));
        assert!(matches!(b.admit(at(40), 30).0, Admission::Reject { .. }));
        assert_eq!(b.admit(at(65), 30).0, Admission::Probe);
        assert_eq!(b.record(true, None, at(66), 3), Some(Transition::Closed));
        assert_eq!(b.admit(at(67), 30).0, Admission::Pass);
        assert_eq!(b.consecutive_failures, 0);
    }
}

//! Bounded autonomy as pure logic: guard limits, the per-agent token bucket, budgets and the
//! per-tool circuit breaker. The engine owns the state and the clock; these types decide.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{ApprovalRequirements, DecidedBy, Decision, Effect, Reason, Risk};

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
    /// Sessions an agent may open per minute; 0 disables.
    pub sessions_per_minute: u32,
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
    /// Share of one tool's calls within the window that, when failed, opens its breaker
    /// (`0.5` = half); 0 disables.
    pub breaker_error_rate: f64,
    /// The window the error rate is measured over.
    pub breaker_window_seconds: u64,
    /// Calls within the window below which the error rate never opens the breaker.
    pub breaker_min_calls: u32,
}

impl GuardLimits {
    /// Whether either trip condition of the circuit breaker is on.
    pub fn breaker_enabled(&self) -> bool {
        self.breaker_failures > 0 || self.breaker_error_rate > 0.0
    }
}

impl Default for GuardLimits {
    fn default() -> Self {
        GuardLimits {
            loop_repeats: 5,
            loop_window_seconds: 600,
            max_consecutive_failures: 5,
            max_consecutive_denials: 10,
            actions_per_minute: 600,
            sessions_per_minute: 60,
            budget_usd_per_day: 0.0,
            budget_usd_per_session: 0.0,
            on_budget_exceeded: OnBudgetExceeded::Deny,
            breaker_failures: 5,
            breaker_cooldown_seconds: 30,
            breaker_error_rate: 0.5,
            breaker_window_seconds: 60,
            breaker_min_calls: 10,
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

/// Money held for approval: the prices of calls waiting for a human, reserved against budgets
/// so that approving many held calls together can't spend past a budget each of them fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reserved {
    /// The agent's calls held for approval today (UTC), in US dollars.
    #[serde(default)]
    pub agent_today_usd: f64,
    /// The session's calls held for approval, in US dollars.
    #[serde(default)]
    pub session_usd: f64,
}

impl Reserved {
    /// Nothing held.
    pub fn is_none(&self) -> bool {
        *self == Reserved::default()
    }
}

/// Applies budgets after policy: an allowed or approval-requiring action whose cost would take
/// the agent's day or the session past its budget is denied or held, as configured.
pub fn apply_budget(
    mut decision: Decision,
    limits: &GuardLimits,
    agent_spent_today: f64,
    session_spent: f64,
    reserved: Reserved,
    default_ttl_seconds: u64,
) -> Decision {
    if decision.effect == Effect::Deny {
        return decision;
    }
    let cost = decision.cost_usd.unwrap_or(0.0);
    let held = |usd: f64| if usd > 0.0 { format!(", ${usd:.2} held for approval") } else { String::new() };
    let mut over = Vec::new();
    let day = agent_spent_today + reserved.agent_today_usd;
    if limits.budget_usd_per_day > 0.0 && day + cost > limits.budget_usd_per_day + 1e-9 {
        over.push(format!(
            "the agent's daily budget of ${:.2} (spent ${:.2} today{}, this costs ${:.2})",
            limits.budget_usd_per_day,
            agent_spent_today,
            held(reserved.agent_today_usd),
            cost
        ));
    }
    let session = session_spent + reserved.session_usd;
    if limits.budget_usd_per_session > 0.0 && session + cost > limits.budget_usd_per_session + 1e-9 {
        over.push(format!(
            "the session budget of ${:.2} (spent ${:.2}{}, this costs ${:.2})",
            limits.budget_usd_per_session,
            session_spent,
            held(reserved.session_usd),
            cost
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
            decision.decided_by = DecidedBy::Guard;
            decision.reasons.insert(0, Reason::new(RULE_BUDGET, msg));
        }
        OnBudgetExceeded::RequireApproval => {
            if decision.effect == Effect::Allow {
                decision.effect = Effect::RequireApproval;
                decision.approval = Some(ApprovalRequirements::any(1, default_ttl_seconds));
            }
            decision.risk = decision.risk.max(Risk::Medium);
            decision.decided_by = DecidedBy::Guard;
            decision.reasons.insert(0, Reason::new(RULE_BUDGET, format!("{msg}; a human must approve")));
        }
    }
    decision
}

/// The part of a cost reported with a result that counts toward budgets: all of it when the
/// decision had no cost (neither policy `cost_usd` nor the tool catalog priced the action),
/// nothing otherwise. The price the host set is authoritative and already counted when the
/// action was allowed or approved; counting a reported cost on top would count the call twice,
/// and letting it replace the price would let an agent lower its own spend.
pub fn reported_cost_counted(decided: Option<f64>, reported: Option<f64>) -> f64 {
    match (decided, reported) {
        (None, Some(cost)) => crate::money::Usd::counted(Some(cost)),
        _ => 0.0,
    }
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

/// Why a breaker opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trip {
    /// `breaker_failures` failures in a row.
    ConsecutiveFailures {
        /// Failures in a row when it opened.
        failures: u32,
    },
    /// The error rate within the window reached `breaker_error_rate`.
    ErrorRate {
        /// Failed calls within the window.
        failures: u32,
        /// All calls within the window.
        calls: u32,
        /// The window, in seconds.
        window_seconds: u64,
        /// The configured limit, as a fraction.
        limit: f64,
    },
    /// The probe call after the cool-down failed.
    ProbeFailed,
}

impl Trip {
    fn describe(&self) -> String {
        match self {
            Trip::ConsecutiveFailures { failures } => format!("open after {failures} failures in a row"),
            Trip::ErrorRate { failures, calls, window_seconds, limit } => format!(
                "open: {failures} of {calls} calls failed within {window_seconds}s, an error rate of {} at or over its limit of {}",
                percent(f64::from(*failures) / f64::from((*calls).max(1))),
                percent(*limit)
            ),
            Trip::ProbeFailed => "open again: the probe call after the cool-down failed".to_string(),
        }
    }
}

/// `0.5` → `50%`, `0.125` → `12.5%`.
fn percent(fraction: f64) -> String {
    let p = (fraction * 1000.0).round() / 10.0;
    if p.fract() == 0.0 { format!("{p:.0}%") } else { format!("{p:.1}%") }
}

/// Outcomes of one tool's calls in one slice of the error-rate window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeSlice {
    /// When the slice started.
    pub start: DateTime<Utc>,
    /// Calls recorded in it.
    pub calls: u32,
    /// Of those, failures.
    pub failures: u32,
}

/// Slices per window: the window slides in steps of a tenth of its length, which bounds the
/// stored state (and what is journaled) to a handful of counters whatever the call volume.
const SLICES_PER_WINDOW: u64 = 10;

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
    /// Why it last opened; `None` while closed (and in states recorded before this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped_by: Option<Trip>,
    /// Outcomes within the error-rate window, oldest slice first; empty when the error rate is
    /// off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window: Vec<OutcomeSlice>,
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

fn seconds(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
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
            tripped_by: None,
            window: Vec::new(),
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
                let ready = opened + seconds(cooldown_seconds);
                if now >= ready {
                    self.state = BreakerState::HalfOpen;
                    (Admission::Probe, Some(Transition::HalfOpened))
                } else {
                    let wait = (ready - now).num_seconds().max(1);
                    let why = self
                        .tripped_by
                        .clone()
                        .unwrap_or(Trip::ConsecutiveFailures { failures: self.consecutive_failures })
                        .describe();
                    (
                        Admission::Reject {
                            reason: Reason::new(
                                RULE_BREAKER,
                                format!(
                                    "the circuit breaker of `{}` is {why} (last: {}); retry after {wait}s",
                                    self.tool,
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

    /// Failed and total calls within the window ending at `now`.
    pub fn window_counts(&self, now: DateTime<Utc>, window_seconds: u64) -> (u32, u32) {
        let since = now - seconds(window_seconds);
        self.window
            .iter()
            .filter(|s| s.start > since)
            .fold((0u32, 0u32), |(f, c), s| (f.saturating_add(s.failures), c.saturating_add(s.calls)))
    }

    /// Counts one outcome into the sliding window and drops slices that left it.
    fn count_in_window(&mut self, ok: bool, now: DateTime<Utc>, window_seconds: u64) {
        let since = now - seconds(window_seconds);
        self.window.retain(|s| s.start > since);
        let width = seconds((window_seconds / SLICES_PER_WINDOW).max(1));
        let failed = u32::from(!ok);
        match self.window.last_mut() {
            Some(slice) if now < slice.start + width && now >= slice.start => {
                slice.calls = slice.calls.saturating_add(1);
                slice.failures = slice.failures.saturating_add(failed);
            }
            _ => self.window.push(OutcomeSlice { start: now, calls: 1, failures: failed }),
        }
    }

    /// Records an outcome of a call to the tool. A closed breaker opens on `breaker_failures`
    /// failures in a row, or on a failure that leaves the error rate within the window at or
    /// over `breaker_error_rate` once at least `breaker_min_calls` calls are in it. A half-open
    /// breaker closes on success and opens again on failure; an open one ignores outcomes of
    /// calls that were already out when it opened.
    pub fn record(
        &mut self,
        ok: bool,
        error: Option<&str>,
        now: DateTime<Utc>,
        limits: &GuardLimits,
    ) -> Option<Transition> {
        let rate_on = limits.breaker_error_rate > 0.0;
        if rate_on && self.state == BreakerState::Closed {
            self.count_in_window(ok, now, limits.breaker_window_seconds);
        }
        if ok {
            match self.state {
                // The probe succeeded.
                BreakerState::HalfOpen => {
                    self.consecutive_failures = 0;
                    self.last_error = None;
                    self.close();
                    return Some(Transition::Closed);
                }
                // A call that was already out when the breaker opened: it says nothing about
                // now, and only the probe after the cool-down may close the breaker.
                BreakerState::Open => return None,
                BreakerState::Closed => {
                    self.consecutive_failures = 0;
                    self.last_error = None;
                    return None;
                }
            }
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = error.map(|e| e.chars().take(200).collect());
        let trip = match self.state {
            BreakerState::HalfOpen => Some(Trip::ProbeFailed),
            BreakerState::Open => None,
            BreakerState::Closed => {
                let (failures, calls) = self.window_counts(now, limits.breaker_window_seconds);
                if limits.breaker_failures > 0 && self.consecutive_failures >= limits.breaker_failures {
                    Some(Trip::ConsecutiveFailures { failures: self.consecutive_failures })
                } else if rate_on
                    && calls >= limits.breaker_min_calls.max(1)
                    && f64::from(failures) >= limits.breaker_error_rate * f64::from(calls) - 1e-9
                {
                    Some(Trip::ErrorRate {
                        failures,
                        calls,
                        window_seconds: limits.breaker_window_seconds,
                        limit: limits.breaker_error_rate,
                    })
                } else {
                    None
                }
            }
        };
        let trip = trip?;
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.tripped_by = Some(trip);
        // The calls that opened it are accounted for; after the breaker closes again the rate
        // is measured afresh.
        self.window.clear();
        Some(Transition::Opened)
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.tripped_by = None;
        self.window.clear();
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
        assert_eq!(apply_budget(allow(2.0), &limits, 8.0, 0.0, Reserved::default(), 60).effect, Effect::Allow);
        let d = apply_budget(allow(2.5), &limits, 8.0, 0.0, Reserved::default(), 60);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.reasons[0].rule, RULE_BUDGET);
        let hold = GuardLimits { on_budget_exceeded: OnBudgetExceeded::RequireApproval, ..limits.clone() };
        let d = apply_budget(allow(2.5), &hold, 8.0, 0.0, Reserved::default(), 60);
        assert_eq!(d.effect, Effect::RequireApproval);
        let session = GuardLimits { budget_usd_per_session: 1.0, ..GuardLimits::default() };
        assert_eq!(apply_budget(allow(0.5), &session, 0.0, 0.6, Reserved::default(), 60).effect, Effect::Deny);
        assert_eq!(
            apply_budget(allow(0.5), &GuardLimits::default(), 1e9, 1e9, Reserved::default(), 60).effect,
            Effect::Allow
        );
    }

    #[test]
    fn a_reported_cost_counts_only_when_the_host_set_no_price() {
        assert_eq!(reported_cost_counted(None, Some(0.25)), 0.25);
        assert_eq!(reported_cost_counted(Some(1.0), Some(0.25)), 0.0);
        assert_eq!(reported_cost_counted(Some(0.0), Some(0.25)), 0.0, "an explicit price of 0 is a price");
        assert_eq!(reported_cost_counted(None, None), 0.0);
        assert_eq!(reported_cost_counted(None, Some(f64::NAN)), 0.0);
        assert_eq!(reported_cost_counted(None, Some(-1.0)), 0.0);
    }

    /// Streak only, as before the error rate existed.
    fn streak(n: u32) -> GuardLimits {
        GuardLimits { breaker_failures: n, breaker_error_rate: 0.0, ..GuardLimits::default() }
    }

    /// Error rate only: `rate` over `window` seconds once `min` calls are in it.
    fn rate(rate: f64, window: u64, min: u32) -> GuardLimits {
        GuardLimits {
            breaker_failures: 0,
            breaker_error_rate: rate,
            breaker_window_seconds: window,
            breaker_min_calls: min,
            ..GuardLimits::default()
        }
    }

    fn reject_msg(b: &mut Breaker, now: DateTime<Utc>) -> String {
        match b.admit(now, 30).0 {
            Admission::Reject { reason } => reason.msg,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn breaker_opens_fails_fast_probes_and_closes() {
        let limits = streak(3);
        let mut b = Breaker::new("t");
        for i in 0..2 {
            assert_eq!(b.record(false, Some("boom"), at(i), &limits), None);
        }
        assert_eq!(b.record(false, Some("boom"), at(2), &limits), Some(Transition::Opened));
        assert_eq!(b.tripped_by, Some(Trip::ConsecutiveFailures { failures: 3 }));
        let msg = reject_msg(&mut b, at(10));
        assert!(msg.contains("after 3 failures in a row (last: boom)"), "{msg}");
        // A call that was out before it opened comes back fine: the breaker stays open.
        assert_eq!(b.record(true, None, at(11), &limits), None);
        assert!(reject_msg(&mut b, at(12)).contains("after 3 failures in a row"));
        let (adm, t) = b.admit(at(33), 30);
        assert_eq!((adm, t), (Admission::Probe, Some(Transition::HalfOpened)));
        assert!(matches!(b.admit(at(33), 30).0, Admission::Reject { .. }));
        // The probe fails: open again, with a fresh cool-down.
        assert_eq!(b.record(false, Some("still"), at(34), &limits), Some(Transition::Opened));
        assert!(reject_msg(&mut b, at(40)).contains("probe call after the cool-down failed"));
        assert_eq!(b.admit(at(65), 30).0, Admission::Probe);
        assert_eq!(b.record(true, None, at(66), &limits), Some(Transition::Closed));
        assert_eq!(b.admit(at(67), 30).0, Admission::Pass);
        assert_eq!(b.consecutive_failures, 0);
        assert_eq!(b.tripped_by, None);
        // The error rate is off: nothing is kept for it.
        assert!(b.window.is_empty());
    }

    #[test]
    fn interleaved_failures_open_the_breaker_by_error_rate() {
        let limits = GuardLimits { breaker_failures: 3, ..rate(0.5, 60, 10) };
        let mut b = Breaker::new("t");
        // Fail, succeed, fail, succeed, …: never two failures in a row, so the streak never trips.
        let mut opened_at = None;
        for i in 0..12 {
            let ok = i % 2 == 1;
            if let Some(t) = b.record(ok, (!ok).then_some("HTTP 503"), at(i), &limits) {
                assert_eq!(t, Transition::Opened);
                opened_at = Some(i);
                break;
            }
        }
        // The 10th call is a success (5 of 10); the 11th, a failure, makes it 6 of 11.
        assert_eq!(opened_at, Some(10));
        assert_eq!(b.tripped_by, Some(Trip::ErrorRate { failures: 6, calls: 11, window_seconds: 60, limit: 0.5 }));
        let msg = reject_msg(&mut b, at(11));
        assert!(msg.contains("6 of 11 calls failed within 60s"), "{msg}");
        assert!(msg.contains("an error rate of 54.5% at or over its limit of 50%"), "{msg}");
        assert!(msg.contains("HTTP 503"), "{msg}");
        assert!(b.window.is_empty(), "the window starts afresh after a trip");
    }

    #[test]
    fn too_few_calls_never_open_the_breaker_by_error_rate() {
        let limits = rate(0.5, 60, 10);
        let mut b = Breaker::new("t");
        for i in 0..9 {
            assert_eq!(b.record(false, Some("x"), at(i), &limits), None, "call {i}");
        }
        assert_eq!(b.window_counts(at(9), 60), (9, 9));
        assert_eq!(b.record(false, Some("x"), at(9), &limits), Some(Transition::Opened));
    }

    #[test]
    fn failures_that_left_the_window_do_not_count() {
        let limits = rate(0.5, 60, 4);
        let mut b = Breaker::new("t");
        for i in 0..3 {
            assert_eq!(b.record(false, Some("x"), at(i), &limits), None);
        }
        // A minute later those three are gone: one failure among successes is 1 of 4.
        for i in 0..3 {
            assert_eq!(b.record(true, None, at(70 + i), &limits), None);
        }
        assert_eq!(b.record(false, Some("x"), at(74), &limits), None);
        assert_eq!(b.window_counts(at(74), 60), (1, 4));
        assert!(b.window.iter().all(|s| s.start > at(14)));
        // Bounded: calls in one slice share its counters.
        assert!(b.window.len() <= 2, "{:?}", b.window);
    }

    #[test]
    fn a_rate_below_the_limit_keeps_the_breaker_closed() {
        let limits = rate(0.5, 60, 10);
        let mut b = Breaker::new("t");
        // Two failures, then successes: 2 of 20 is 10 %.
        for i in 0..20 {
            let ok = i >= 2;
            assert_eq!(b.record(ok, (!ok).then_some("x"), at(i), &limits), None);
        }
        assert_eq!(b.state, BreakerState::Closed);
        assert_eq!(b.window_counts(at(20), 60), (2, 20));
    }

    #[test]
    fn breaker_state_round_trips_through_json_including_older_records() {
        let limits = rate(0.5, 60, 10);
        let mut b = Breaker::new("t");
        b.record(false, Some("x"), at(0), &limits);
        b.record(true, None, at(1), &limits);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(serde_json::from_value::<Breaker>(json).unwrap(), b);
        let older = serde_json::json!({"tool": "t", "state": "open", "consecutive_failures": 4,
            "opened_at": "2027-01-15T08:00:00Z", "last_error": "boom"});
        let mut older: Breaker = serde_json::from_value(older).unwrap();
        assert!(older.window.is_empty() && older.tripped_by.is_none());
        let msg = reject_msg(&mut older, DateTime::from_timestamp(1_800_000_000 + 1, 0).unwrap());
        assert!(msg.contains("after 4 failures in a row"), "{msg}");
    }
}

//! The decision pipeline for one action, as pure logic (DESIGN.md, "The pipeline").
//!
//! The engine gathers what is known at decision time into an [`Intake`] (the call, the agent,
//! the session, the tool's catalog entry, the kill switches, loop and spend counters, the
//! time) plus the mutable [`GuardState`] it owns (the agent's token bucket, the tool's circuit
//! breaker), and then:
//!
//! 1. [`screen`] runs the host guards in their fixed order: kill switches, the tool allowlist,
//!    the session's state, the `advisory` tier, the input schema, the rate limit, loop detection
//!    and the circuit breaker. The first that objects decides (a deny, and maybe a pause); otherwise the result
//!    is the policy input document and the [`PolicyFacts`] that the later steps need.
//! 2. The engine evaluates Rego with that input (the only step that is not here: it is the
//!    policy crate's, and it runs off the async workers).
//! 3. [`conclude`] combines the policy's answer, applies the catalog price, the tier floor and
//!    the budgets. It depends only on the policy output and the recorded facts, so shadow
//!    evaluation, `airlock replay` and live decisions all call it and agree by construction.
//! 4. [`settle`] says what the decision does to the session: counters, spend, the action's
//!    status, and a pause for too many denials in a row.
//!
//! Nothing here does IO, takes a lock or reads a clock: `now` is part of the intake.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::decision::{ApprovalDefaults, PolicyFailure, PolicyOutput, apply_tier_floor, combine};
use crate::guard::{self, GuardContext, InputCheck};
use crate::identity::Identity;
pub use crate::limits::Reserved;
use crate::limits::{self, Admission, Breaker, GuardLimits, OnBudgetExceeded, TokenBucket, Transition};
use crate::model::{
    Action, ActionStatus, Agent, ApprovalRequirements, DecidedBy, Decision, Effect, KillSwitch, Reason, Risk, Session,
    SessionStatus, Tier,
};
use crate::redact::REDACT_ALL;

/// Everything the pipeline reads about one requested call.
#[derive(Debug, Clone, Copy)]
pub struct Intake<'a> {
    /// The calling agent.
    pub agent: &'a Agent,
    /// What the agent's access token established, when it authenticated with one.
    pub identity: Option<&'a Identity>,
    /// The agent's guard limits (per-agent overrides applied).
    pub limits: &'a GuardLimits,
    /// The session as it is before this call.
    pub session: &'a Session,
    /// The call: tool, upstream, name, arguments, annotations after overrides, justification,
    /// digest. Its status and decision are not read.
    pub action: &'a Action,
    /// Whether the tool is read-only after local overrides.
    pub read_only: bool,
    /// Whether the agent's allowlist covers the tool.
    pub tool_allowed: bool,
    /// What checking the arguments against the tool's input schema found.
    pub input: &'a InputCheck,
    /// The price of one call from the tool catalog, if it has one.
    pub catalog_cost_usd: Option<f64>,
    /// Kill switches engaged now.
    pub kill_switches: &'a [KillSwitch],
    /// Identical calls (same digest) in this session within the loop window, this one included.
    pub repeats: u32,
    /// What the agent has spent today (UTC), in US dollars.
    pub agent_spent_today_usd: f64,
    /// What the agent's and the session's calls held for approval would cost.
    pub reserved: Reserved,
    /// Approval defaults from configuration.
    pub defaults: &'a ApprovalDefaults,
    /// The revision of the policy that would decide.
    pub policy_revision: &'a str,
    /// The time of the decision.
    pub now: DateTime<Utc>,
}

/// The guard state the engine owns and the pipeline updates.
#[derive(Debug, Default)]
pub struct GuardState<'a> {
    /// The agent's rate-limit bucket; `None` when the agent has no rate limit.
    pub bucket: Option<&'a mut TokenBucket>,
    /// The tool's circuit breaker, if it has one yet.
    pub breaker: Option<&'a mut Breaker>,
}

/// A pause the decision causes: the session stops until a human resumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// The rule that paused it (`airlock.loop`, `airlock.consecutive_denials`, …).
    pub rule: &'static str,
    /// What happened.
    pub reason: String,
}

/// What the post-policy steps need besides the policy's answer. It is journaled with every
/// decision that reached policy, so the same decision can be made again later (shadow, replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFacts {
    /// The agent's tier.
    pub tier: Tier,
    /// Whether the tool is read-only after local overrides.
    pub read_only: bool,
    /// The catalog price of one call, used when policy names no `cost_usd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_cost_usd: Option<f64>,
    /// The agent's daily budget (0 = none).
    pub budget_usd_per_day: f64,
    /// The session budget (0 = none).
    pub budget_usd_per_session: f64,
    /// What a budget overrun does.
    pub on_budget_exceeded: OnBudgetExceeded,
    /// What the agent had spent today when the action was decided.
    pub agent_spent_today_usd: f64,
    /// What the session had spent when the action was decided.
    pub session_spent_usd: f64,
    /// What calls held for approval would cost, when the action was decided.
    #[serde(default, skip_serializing_if = "Reserved::is_none")]
    pub reserved: Reserved,
    /// Default approval expiry.
    pub default_ttl_seconds: u64,
    /// The plan in force in the session and the step the call matched, if a plan is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::plan::PlanFacts>,
}

/// Why [`PolicyFacts`] can't be recovered from a recorded policy input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedInputError {
    /// `agent.tier` names no tier airlock knows.
    #[error("the recorded input names an unknown tier `{tier}`")]
    UnknownTier {
        /// What it names.
        tier: String,
    },
    /// `agent.tier` is missing or not a string.
    #[error("the recorded input has no `agent.tier`")]
    NoTier,
}

impl PolicyFacts {
    /// Facts recovered from a recorded policy input, for decisions journaled before the facts
    /// were recorded. Budgets are unknown there and taken as none. An unknown tier is an error:
    /// guessing one could turn a held action into an allowed one.
    pub fn from_recorded_input(input: &Value, default_ttl_seconds: u64) -> Result<PolicyFacts, RecordedInputError> {
        let tier = match input.pointer("/agent/tier").and_then(Value::as_str) {
            Some("advisory") => Tier::Advisory,
            Some("change") => Tier::Change,
            Some("autonomous") => Tier::Autonomous,
            Some(other) => return Err(RecordedInputError::UnknownTier { tier: other.to_string() }),
            None => return Err(RecordedInputError::NoTier),
        };
        Ok(PolicyFacts {
            tier,
            read_only: input.pointer("/action/annotations/readOnlyHint").and_then(Value::as_bool).unwrap_or(false),
            catalog_cost_usd: None,
            budget_usd_per_day: 0.0,
            budget_usd_per_session: 0.0,
            on_budget_exceeded: OnBudgetExceeded::Deny,
            agent_spent_today_usd: 0.0,
            session_spent_usd: input.pointer("/session/spent_usd").and_then(Value::as_f64).unwrap_or(0.0),
            reserved: Reserved::default(),
            default_ttl_seconds,
            plan: None,
        })
    }
}

/// How the guards answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Screening {
    /// A host guard decided; policy does not run.
    Decided {
        /// The deny.
        decision: Decision,
        /// A pause the guard causes (loop detection).
        pause: Option<Pause>,
    },
    /// Every guard passed: evaluate policy with `input`, then [`conclude`] with `facts`.
    Policy {
        /// The policy input document (versioned in `docs/policy.md`).
        input: Value,
        /// What [`conclude`] needs besides the policy's answer.
        facts: PolicyFacts,
    },
}

/// The guards' answer and the breaker transition they caused (to be journaled).
#[derive(Debug, Clone, PartialEq)]
pub struct Screened {
    /// The answer.
    pub screening: Screening,
    /// The breaker moved (open → half-open) while admitting the call.
    pub breaker_transition: Option<Transition>,
}

/// A deny by a host guard. Policy did not run, so what it would redact is unknown: no content
/// is exported.
pub fn guard_deny(reason: Reason, policy_revision: &str, retry_after_ms: Option<u64>) -> Decision {
    Decision {
        effect: Effect::Deny,
        reasons: vec![reason],
        risk: Risk::High,
        approval: None,
        cost_usd: None,
        policy_revision: policy_revision.to_string(),
        decided_by: DecidedBy::Guard,
        eval_us: 0,
        retry_after_ms,
        warnings: Vec::new(),
        redact: vec![REDACT_ALL.to_string()],
    }
}

/// Runs the host guards in order (pipeline step 2). The token bucket is only charged, and the
/// breaker only asked, when every earlier guard passed.
pub fn screen(intake: &Intake<'_>, state: GuardState<'_>) -> Screened {
    let action = intake.action;
    let limits = intake.limits;
    let deny = |reason: Reason, retry: Option<u64>, pause: Option<Pause>| Screened {
        screening: Screening::Decided { decision: guard_deny(reason, intake.policy_revision, retry), pause },
        breaker_transition: None,
    };
    let ctx = GuardContext {
        agent: intake.agent,
        session: intake.session,
        tool: &action.tool,
        upstream: action.upstream.as_deref(),
        read_only: intake.read_only,
        tool_allowed: intake.tool_allowed,
        kill_switches: intake.kill_switches,
    };
    if let Some(reason) = guard::check(&ctx) {
        return deny(reason, None, None);
    }
    // Arguments that don't match the tool's schema never reach policy: a rule written for the
    // number 22 must not be passed by the string "22".
    let mut violations = guard::input_schema(&action.tool, action.upstream.as_deref(), intake.input).into_iter();
    if let Some(first) = violations.next() {
        let mut screened = deny(first, None, None);
        if let Screening::Decided { decision, .. } = &mut screened.screening {
            decision.reasons.extend(violations);
        }
        return screened;
    }
    if let Some(bucket) = state.bucket
        && let Err(wait) = bucket.take(limits.actions_per_minute, intake.now)
    {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        return deny(limits::rate_limited(&intake.agent.id, limits.actions_per_minute, wait), Some(ms), None);
    }
    if limits.loop_repeats >= 2 && intake.repeats >= limits.loop_repeats {
        let reason = format!(
            "the same call to `{}` was made {} times within {}s; the agent looks stuck",
            action.tool, intake.repeats, limits.loop_window_seconds
        );
        let msg = format!("{reason}; the session is paused until a human resumes it");
        return deny(Reason::new(limits::RULE_LOOP, msg), None, Some(Pause { rule: limits::RULE_LOOP, reason }));
    }
    let mut breaker_transition = None;
    if limits.breaker_enabled()
        && let Some(breaker) = state.breaker
    {
        let (admission, transition) = breaker.admit(intake.now, limits.breaker_cooldown_seconds);
        breaker_transition = transition;
        if let Admission::Reject { reason } = admission {
            let mut screened = deny(reason, None, None);
            screened.breaker_transition = breaker_transition;
            return screened;
        }
    }
    Screened {
        screening: Screening::Policy {
            input: policy_input(intake.agent, intake.identity, intake.session, action, intake.now),
            facts: PolicyFacts {
                tier: intake.agent.tier,
                read_only: intake.read_only,
                catalog_cost_usd: intake.catalog_cost_usd,
                budget_usd_per_day: limits.budget_usd_per_day,
                budget_usd_per_session: limits.budget_usd_per_session,
                on_budget_exceeded: limits.on_budget_exceeded,
                agent_spent_today_usd: intake.agent_spent_today_usd,
                session_spent_usd: intake.session.spent_usd,
                reserved: intake.reserved,
                default_ttl_seconds: intake.defaults.ttl_seconds,
                plan: None,
            },
        },
        breaker_transition,
    }
}

/// The policy's answer for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyAnswer {
    /// What the policy's rules gave, or why evaluation failed (a deny).
    pub output: Result<PolicyOutput, PolicyFailure>,
    /// The revision that answered.
    pub revision: String,
    /// Evaluation time in microseconds.
    pub eval_us: u64,
}

/// Pipeline steps 3 and 4 and the budgets: combines the policy's answer into a decision, prices
/// it (policy `cost_usd`, else the catalog), applies the tier floor and then the budgets. A deny
/// from policy stays a deny whatever the facts say.
pub fn conclude(answer: PolicyAnswer, facts: &PolicyFacts) -> Decision {
    let defaults = ApprovalDefaults { ttl_seconds: facts.default_ttl_seconds };
    let (each_call, drift_allowed) = match &answer.output {
        Ok(output) => {
            (crate::plan::each_call_rules(&output.require_approval), crate::plan::drift_allowed(&output.allow_drift))
        }
        Err(_) => Default::default(),
    };
    let mut decision = combine(answer.output, &defaults, &answer.revision, answer.eval_us);
    if decision.cost_usd.is_none() {
        decision.cost_usd = facts.catalog_cost_usd;
    }
    let decision = apply_tier_floor(decision, facts.tier, facts.read_only, &defaults);
    // The plan in force: a matching step carries its approval, drift needs one of its own.
    let decision = crate::plan::apply(
        decision,
        facts.plan.as_ref(),
        &crate::plan::PolicySays { each_call, drift_allowed },
        facts.default_ttl_seconds,
    );
    let budgets = GuardLimits {
        budget_usd_per_day: facts.budget_usd_per_day,
        budget_usd_per_session: facts.budget_usd_per_session,
        on_budget_exceeded: facts.on_budget_exceeded,
        ..GuardLimits::default()
    };
    limits::apply_budget(
        decision,
        &budgets,
        facts.agent_spent_today_usd,
        facts.session_spent_usd,
        facts.reserved,
        facts.default_ttl_seconds,
    )
}

/// What a decision does to its session and action.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The session after the action was counted.
    pub session: Session,
    /// The action's status after the decision.
    pub status: ActionStatus,
    /// What the approval needs, when one is required.
    pub approval: Option<ApprovalRequirements>,
    /// Money that counts toward the agent's day now (an allowed action's price).
    pub spend_usd: f64,
    /// A pause the decision causes (the guard's, or too many denials in a row).
    pub pause: Option<Pause>,
}

/// Pipeline step 7 for the decision itself: counts the action in its session, spends an allowed
/// action's price, and pauses the session after too many denials in a row.
pub fn settle(
    session: &Session,
    decision: &Decision,
    limits: &GuardLimits,
    guard_pause: Option<Pause>,
    defaults: &ApprovalDefaults,
    now: DateTime<Utc>,
) -> Settlement {
    let mut session = session.clone();
    let mut pause = guard_pause;
    session.actions += 1;
    session.updated_at = now;
    let mut spend_usd = 0.0;
    let mut approval = None;
    let status = match decision.effect {
        Effect::Deny => {
            session.denials += 1;
            session.consecutive_denials = session.consecutive_denials.saturating_add(1);
            if pause.is_none()
                && limits.max_consecutive_denials > 0
                && session.consecutive_denials >= limits.max_consecutive_denials
            {
                let last = decision.reasons.first().map(|r| format!("[{}] {}", r.rule, r.msg)).unwrap_or_default();
                pause = Some(Pause {
                    rule: limits::RULE_DENIALS,
                    reason: format!("{} actions were denied in a row (last: {last})", session.consecutive_denials),
                });
            }
            ActionStatus::Denied
        }
        Effect::Allow => {
            session.consecutive_denials = 0;
            spend_usd = counted_price(decision.cost_usd);
            session.spent_usd += spend_usd;
            ActionStatus::Executing
        }
        Effect::RequireApproval => {
            session.consecutive_denials = 0;
            approval =
                Some(decision.approval.clone().unwrap_or_else(|| ApprovalRequirements::any(1, defaults.ttl_seconds)));
            ActionStatus::PendingApproval
        }
    };
    Settlement { session, status, approval, spend_usd, pause }
}

/// The part of a decided price that counts as spend: a finite, positive amount.
pub fn counted_price(cost_usd: Option<f64>) -> f64 {
    crate::money::Usd::counted(cost_usd)
}

/// What one spending action ([`ActionStatus::SPENDING`]) adds to its agent's spend: the price
/// its decision set, plus the part of a cost reported with its result that counts (all of a
/// valid one when the decision set no price, nothing otherwise). Every journal backend sums
/// spend with this.
pub fn action_cost(decided: Option<f64>, reported: Option<f64>) -> f64 {
    counted_price(decided) + limits::reported_cost_counted(decided, reported)
}

/// Pauses an active session (the caller journals it and tells the agent's owner); returns
/// whether it changed. A paused or closed session stays as it is.
pub fn pause_session(session: &mut Session, pause: &Pause, now: DateTime<Utc>) -> bool {
    if session.status != SessionStatus::Active {
        return false;
    }
    session.status = SessionStatus::Paused;
    session.status_reason = Some(format!("[{}] {}", pause.rule, pause.reason));
    session.updated_at = now;
    true
}

/// What a finished action does to its session: failure streaks, and a pause when the streak
/// reaches the limit.
pub fn count_outcome(
    session: &mut Session,
    action: &Action,
    ok: bool,
    error: Option<&str>,
    limits: &GuardLimits,
) -> Option<Pause> {
    if ok {
        session.consecutive_failures = 0;
        return None;
    }
    session.failures += 1;
    session.consecutive_failures = session.consecutive_failures.saturating_add(1);
    if limits.max_consecutive_failures > 0 && session.consecutive_failures >= limits.max_consecutive_failures {
        return Some(Pause {
            rule: limits::RULE_FAILURES,
            reason: format!(
                "{} actions failed in a row (last: `{}`: {})",
                session.consecutive_failures,
                action.tool,
                error.unwrap_or("failed")
            ),
        });
    }
    None
}

/// How long the loop window reaches back from `now`.
pub fn loop_window(limits: &GuardLimits) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(limits.loop_window_seconds).unwrap_or(i64::MAX / 2_000))
}

/// A duration in whole seconds as a `chrono` duration, saturating.
pub fn seconds(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2_000))
}

/// Builds the policy input document (versioned in `docs/policy.md`).
pub fn policy_input(
    agent: &Agent,
    identity: Option<&Identity>,
    session: &Session,
    action: &Action,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "kind": KIND_TOOL_CALL,
        "agent": agent_input(agent),
        "identity": identity,
        "session": session_input(session),
        "action": {
            "tool": action.tool,
            "upstream": action.upstream,
            "name": action.name,
            "server": action.server,
            "arguments": action.arguments,
            "annotations": action.annotations,
            "justification": action.justification,
            "digest": action.digest,
        },
        "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// `input.kind` of a tool call.
pub const KIND_TOOL_CALL: &str = "tool.call";

/// The policy input of a read through the MCP gateway that is not a tool call (`kind` is
/// `resource.read`, `resource.subscribe`, `prompt.get` or `completion.complete`): the same
/// `agent` and `session` as a call's, and `read` (its upstream, target and arguments) instead of
/// `action`, so that rules written for calls do not match reads.
pub fn read_input(
    agent: &Agent,
    identity: Option<&Identity>,
    session: &Session,
    kind: &str,
    read: Value,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "kind": kind,
        "agent": agent_input(agent),
        "identity": identity,
        "session": session_input(session),
        "read": read,
        "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

fn agent_input(agent: &Agent) -> Value {
    json!({
        "id": agent.id,
        "owner": agent.owner,
        "oncall": agent.oncall,
        "tier": agent.tier.as_str(),
        "labels": agent.labels,
    })
}

fn session_input(session: &Session) -> Value {
    json!({
        "id": session.id,
        "task": session.task,
        "labels": session.labels,
        "on_behalf_of": session.on_behalf_of,
        "actions": session.actions,
        "failures": session.failures,
        "denials": session.denials,
        "spent_usd": session.spent_usd,
    })
}

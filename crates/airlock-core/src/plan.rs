//! Plans: a goal and ordered steps an agent declares, approved by humans once, and the rule that
//! holds the session's calls to it (`docs/plans.md`, ADR 0023).
//!
//! A plan is proposed in a session and decided like a call: policy sees it as
//! `input.kind = "plan.propose"` with `input.plan`, and its approval is an ordinary [`Approval`]
//! (quorum, groups, MFA, maker-checker, expiry). Once approved, each later call of the session is
//! matched to a step by the server (tool glob and argument schema) and the result travels in the
//! decision's facts as [`PlanFacts`]; [`apply`] then says what the plan changes about the call's
//! decision:
//!
//! - a call that matches a step carries the plan's approval: each approval requirement that the
//!   plan's votes already meet is dropped, unless the policy rule asked for it `each_call`; what
//!   is left (a production step, a rule reserved for another group) still needs its own approval;
//! - a call that matches no step is *drift*: it needs an approval of its own
//!   ([`RULE_PLAN_DRIFT`]) whatever policy allowed;
//! - a call that matches a step after the plan's deadline, or whose price would take the plan past
//!   its budget, is denied.
//!
//! Everything here is pure, so live decisions, shadow evaluation and `airlock replay` agree.
//!
//! [`Approval`]: crate::model::Approval

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{ApprovalRequirements, Decision, Effect, Reason, Risk, RuleRequirement, Verdict, Vote};

/// The tool name of a plan proposal's action (what humans see in the approval queue), and of the
/// MCP tool airlock offers for it.
pub const PLAN_TOOL: &str = "airlock__propose_plan";
/// The MCP tool airlock offers to claim a step assigned to the caller's agent.
pub const CLAIM_TOOL: &str = "airlock__claim_step";
/// `input.kind` of a plan proposal.
pub const KIND_PLAN_PROPOSE: &str = "plan.propose";
/// Reason rule of a call covered by an approved plan.
pub const RULE_PLAN: &str = "airlock.plan";
/// Reason rule of a call that matches no step of the plan in force.
pub const RULE_PLAN_DRIFT: &str = "airlock.plan_drift";
/// Reason rule of a call that would take its plan past the plan's budget.
pub const RULE_PLAN_BUDGET: &str = "airlock.plan_budget";
/// Reason rule of a call for a plan step after the plan's deadline.
pub const RULE_PLAN_DEADLINE: &str = "airlock.plan_deadline";

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 100;
/// The longest goal, in characters.
pub const MAX_GOAL_CHARS: usize = 4000;

/// One step of a plan, as the agent declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Stable name of the step within the plan (`1`, `backup`); kept across amendments, so a
    /// step that did not change keeps its progress. Defaults to its position, from 1.
    #[serde(default)]
    pub id: String,
    /// The tool, by full name or glob (`db__migrate`, `k8s__*`).
    pub tool: String,
    /// A JSON Schema the call's arguments must satisfy; `{}` accepts any.
    #[serde(default = "any_schema")]
    pub arguments: Value,
    /// What the step is for, in words.
    #[serde(default)]
    pub description: String,
    /// What the agent expects the step to cost, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_cost_usd: Option<f64>,
    /// The agents that may run the step (hand-offs): an agent id or a glob over agent ids
    /// (`executor-*`). An assigned step runs only under a lease one of them claimed; unset, the
    /// step runs in the plan's own session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// How long a claim of the step holds, in seconds (default [`DEFAULT_LEASE_SECONDS`]).
    /// Needs `assignee`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
    /// How many times the step may be claimed in all, first claim included (default
    /// [`DEFAULT_MAX_ATTEMPTS`]). Needs `assignee`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// How long a claim of an assigned step holds unless the step says otherwise.
pub const DEFAULT_LEASE_SECONDS: u64 = 300;
/// The longest `lease_seconds` (one day).
pub const MAX_LEASE_SECONDS: u64 = 24 * 3600;
/// How many times an assigned step may be claimed unless it says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The most `max_attempts` a step may set.
pub const MAX_ATTEMPTS: u32 = 100;
/// Reason rule of a call that names a lease the step's fencing token no longer honours (stale,
/// expired, used, another agent's) or whose call does not fit the leased step.
pub const RULE_PLAN_LEASE: &str = "airlock.plan_lease";

impl PlanStep {
    /// How long a claim holds.
    pub fn lease(&self) -> chrono::Duration {
        let secs = self.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
        chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// How many claims the step allows in all.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS)
    }

    /// Whether `agent_id` is one of the step's assignees.
    pub fn assigned_to(&self, agent_id: &str) -> bool {
        self.assignee.as_deref().is_some_and(|a| tool_matches(a, agent_id))
    }
}

fn any_schema() -> Value {
    json!({})
}

/// A plan as proposed: one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDraft {
    /// What the plan achieves.
    pub goal: String,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
    /// The most the plan's calls may cost together, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// When the plan stops covering calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The plan is stuck when no step makes progress for this long (seconds): airlock journals
    /// `plan.stuck` and sends the `plan.stuck` webhook. Unset: the plan is never stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck_after_seconds: Option<u64>,
    /// Whether a stuck plan also pauses its session (rule `airlock.plan_stuck`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_when_stuck: bool,
    /// Failed calls on this many distinct steps within `cascade_window_seconds` pause the
    /// session (cascading errors). Default 3; `0` turns the check off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_failures: Option<u32>,
    /// The window of `cascade_failures`, in seconds. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_window_seconds: Option<u64>,
}

/// Failed steps that pause a plan's session unless the plan says otherwise.
pub const DEFAULT_CASCADE_FAILURES: u32 = 3;
/// The window of [`DEFAULT_CASCADE_FAILURES`], in seconds.
pub const DEFAULT_CASCADE_WINDOW_SECONDS: u64 = 600;

/// The longest `stuck_after_seconds` (30 days).
pub const MAX_STUCK_AFTER_SECONDS: u64 = 30 * 24 * 3600;
/// Reason rule of a session paused because its plan is stuck (`pause_when_stuck`).
pub const RULE_PLAN_STUCK: &str = "airlock.plan_stuck";
/// Reason rule of a session paused because its plan's steps failed one after another.
pub const RULE_PLAN_CASCADE: &str = "airlock.plan_cascade";

/// Why a draft can't be a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DraftError(pub String);

impl PlanDraft {
    /// Checks the draft's shape and gives each step without an id its position. Argument schemas
    /// are compiled by the server, which owns the JSON Schema engine.
    pub fn normalise(mut self, now: DateTime<Utc>) -> Result<PlanDraft, DraftError> {
        let bad = |m: String| Err(DraftError(m));
        self.goal = self.goal.trim().to_string();
        if self.goal.is_empty() || self.goal.chars().count() > MAX_GOAL_CHARS {
            return bad(format!("`goal` must be 1 to {MAX_GOAL_CHARS} characters"));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return bad(format!("`steps` must hold 1 to {MAX_STEPS} steps"));
        }
        if let Some(b) = self.budget_usd
            && !(b.is_finite() && b >= 0.0)
        {
            return bad(format!("`budget_usd` must be a non-negative number, got `{b}`"));
        }
        if let Some(d) = self.deadline
            && d <= now
        {
            return bad(format!("`deadline` `{}` is already past", d.to_rfc3339()));
        }
        if let Some(s) = self.stuck_after_seconds
            && !(1..=MAX_STUCK_AFTER_SECONDS).contains(&s)
        {
            return bad(format!("`stuck_after_seconds` must be between 1 and {MAX_STUCK_AFTER_SECONDS}, got {s}"));
        }
        if self.pause_when_stuck && self.stuck_after_seconds.is_none() {
            return bad("`pause_when_stuck` needs `stuck_after_seconds`".to_string());
        }
        if let Some(w) = self.cascade_window_seconds
            && !(1..=MAX_STUCK_AFTER_SECONDS).contains(&w)
        {
            return bad(format!("`cascade_window_seconds` must be between 1 and {MAX_STUCK_AFTER_SECONDS}, got {w}"));
        }
        let mut ids = BTreeSet::new();
        for (i, step) in self.steps.iter_mut().enumerate() {
            let at = format!("steps[{i}]");
            if step.id.is_empty() {
                step.id = (i + 1).to_string();
            }
            if step.id.len() > 64 {
                return bad(format!("`{at}.id` must be at most 64 characters"));
            }
            if !ids.insert(step.id.clone()) {
                return bad(format!("`{at}.id`: step id `{}` is used twice", step.id));
            }
            if step.tool.is_empty() || step.tool.len() > 256 {
                return bad(format!("`{at}.tool` must be 1 to 256 characters"));
            }
            if globset::Glob::new(&step.tool).is_err() {
                return bad(format!("`{at}.tool`: `{}` is not a valid glob", step.tool));
            }
            if !step.arguments.is_object() && !step.arguments.is_boolean() {
                return bad(format!("`{at}.arguments` must be a JSON Schema (an object)"));
            }
            if let Some(c) = step.expected_cost_usd
                && !(c.is_finite() && c >= 0.0)
            {
                return bad(format!("`{at}.expected_cost_usd` must be a non-negative number, got `{c}`"));
            }
            if step.description.chars().count() > MAX_GOAL_CHARS {
                return bad(format!("`{at}.description` must be at most {MAX_GOAL_CHARS} characters"));
            }
            if let Some(a) = &step.assignee
                && (a.is_empty()
                    || a.len() > 128
                    || a.chars().any(char::is_whitespace)
                    || globset::Glob::new(a).is_err())
            {
                return bad(format!(
                    "`{at}.assignee` must be an agent id or a glob over agent ids (1 to 128 characters, no spaces), got `{a}`"
                ));
            }
            if step.assignee.is_none() && (step.lease_seconds.is_some() || step.max_attempts.is_some()) {
                return bad(format!("`{at}`: `lease_seconds` and `max_attempts` need an `assignee`"));
            }
            if let Some(l) = step.lease_seconds
                && !(1..=MAX_LEASE_SECONDS).contains(&l)
            {
                return bad(format!("`{at}.lease_seconds` must be between 1 and {MAX_LEASE_SECONDS}, got {l}"));
            }
            if let Some(n) = step.max_attempts
                && !(1..=MAX_ATTEMPTS).contains(&n)
            {
                return bad(format!("`{at}.max_attempts` must be between 1 and {MAX_ATTEMPTS}, got {n}"));
            }
        }
        Ok(self)
    }

    /// Failed distinct steps that pause the session, and the window they count in (`None`: off).
    pub fn cascade(&self) -> Option<(usize, chrono::Duration)> {
        let n = self.cascade_failures.unwrap_or(DEFAULT_CASCADE_FAILURES);
        let window = self.cascade_window_seconds.unwrap_or(DEFAULT_CASCADE_WINDOW_SECONDS);
        (n > 0).then(|| (n as usize, chrono::Duration::seconds(i64::try_from(window).unwrap_or(i64::MAX))))
    }

    /// The step named `id`.
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Whether `tool` is covered by a step's tool name or glob.
pub fn tool_matches(pattern: &str, tool: &str) -> bool {
    pattern == tool || globset::Glob::new(pattern).map(|g| g.compile_matcher().is_match(tool)).unwrap_or(false)
}

/// Lifecycle of one version of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Waiting for its approval.
    Pending,
    /// Approved (or allowed by policy): in force until a newer version is approved.
    Approved,
    /// A newer version was approved.
    Superseded,
    /// Refused by policy or by a human.
    Denied,
    /// Its approval expired.
    Expired,
    /// Withdrawn (a kill switch) before it was approved.
    Cancelled,
}

impl PlanStatus {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Pending => "pending",
            PlanStatus::Approved => "approved",
            PlanStatus::Superseded => "superseded",
            PlanStatus::Denied => "denied",
            PlanStatus::Expired => "expired",
            PlanStatus::Cancelled => "cancelled",
        }
    }
}

/// What the decision of one call knows about the plan in force in its session; journaled with
/// the decision's facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFacts {
    /// The plan.
    pub plan_id: String,
    /// The version in force.
    pub version: u32,
    /// The step the call matched; `None` is drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The votes that approved the version in force (empty when policy allowed it outright).
    #[serde(default)]
    pub votes: Vec<Vote>,
    /// Whether the version's approval needed MFA.
    #[serde(default)]
    pub mfa: bool,
    /// The plan's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// What the plan's calls had cost when this one was decided.
    #[serde(default)]
    pub spent_usd: f64,
    /// Whether the plan's deadline had passed when this call was decided.
    #[serde(default)]
    pub deadline_passed: bool,
}

impl PlanFacts {
    /// Whether the call matches no step.
    pub fn is_drift(&self) -> bool {
        self.step.is_none()
    }
}

/// The policy rules of `output` that ask for approval of each call, even inside an approved plan
/// (`"each_call": true` on a `require_approval` entry).
pub fn each_call_rules(require_approval: &[Value]) -> BTreeSet<String> {
    require_approval
        .iter()
        .filter(|v| v.get("each_call").and_then(Value::as_bool) == Some(true))
        .map(|v| v.get("rule").and_then(Value::as_str).unwrap_or("require_approval").to_string())
        .collect()
}

/// The rules of `allow_drift` entries that matched: policy lets the call run outside the plan
/// without an approval of its own. Entries are objects with `rule` (and `msg`), or strings.
pub fn drift_allowed(allow_drift: &[Value]) -> Vec<String> {
    allow_drift
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.get("rule").and_then(Value::as_str).unwrap_or("allow_drift").to_string(),
        })
        .collect()
}

/// What the policy's answer says about plans, besides its decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySays {
    /// Rules a plan never covers (`"each_call": true` on `require_approval`).
    pub each_call: BTreeSet<String>,
    /// Rules of the `allow_drift` entries that matched.
    pub drift_allowed: Vec<String>,
}

/// What the plan in force does to a call's decision (see the module documentation).
pub fn apply(mut decision: Decision, plan: Option<&PlanFacts>, says: &PolicySays, ttl: u64) -> Decision {
    let each_call = &says.each_call;
    let Some(plan) = plan else { return decision };
    let Some(step) = &plan.step else {
        let at = format!("the call matches no step of plan {} (version {})", plan.plan_id, plan.version);
        if !says.drift_allowed.is_empty() {
            // Policy lets it run outside the plan: still drift, recorded as such, with no
            // approval of its own beyond what policy asked.
            let by = says.drift_allowed.join(", ");
            decision.reasons.push(Reason::new(RULE_PLAN_DRIFT, format!("{at}: drift, allowed by policy ({by})")));
            return decision;
        }
        let reason = Reason::new(RULE_PLAN_DRIFT, format!("{at}: it is drift and needs an approval of its own"));
        match decision.effect {
            Effect::Deny => decision.reasons.push(reason),
            Effect::RequireApproval => decision.reasons.insert(0, reason),
            Effect::Allow => {
                decision.effect = Effect::RequireApproval;
                decision.risk = decision.risk.max(Risk::Medium);
                decision.approval = Some(ApprovalRequirements::any(1, ttl));
                decision.reasons.insert(0, reason);
            }
        }
        return decision;
    };
    if decision.effect == Effect::Deny {
        return decision;
    }
    let at = format!("step `{step}` of plan {} (version {})", plan.plan_id, plan.version);
    if plan.deadline_passed {
        return deny(decision, Reason::new(RULE_PLAN_DEADLINE, format!("{at}: the plan's deadline has passed")));
    }
    if let Some(budget) = plan.budget_usd {
        let price = crate::money::Usd::counted(decision.cost_usd);
        if plan.spent_usd + price > budget + 1e-9 {
            return deny(
                decision,
                Reason::new(
                    RULE_PLAN_BUDGET,
                    format!(
                        "{at}: this call (${price:.2}) would take the plan past its budget (${:.2} of ${budget:.2} spent)",
                        plan.spent_usd
                    ),
                ),
            );
        }
    }
    let approvers: Vec<&str> =
        plan.votes.iter().filter(|v| v.verdict == Verdict::Approve).map(|v| v.human.as_str()).collect();
    let by = if approvers.is_empty() { "policy".to_string() } else { approvers.join(", ") };
    let covered = Reason::new(RULE_PLAN, format!("{at}, approved by {by}"));
    if decision.effect == Effect::Allow {
        decision.reasons.insert(0, covered);
        return decision;
    }
    let Some(req) = decision.approval.clone() else { return decision };
    let left: Vec<RuleRequirement> =
        req.each().into_iter().filter(|r| each_call.contains(&r.rule) || !met_by(r, req.mfa, plan)).collect();
    if left.is_empty() {
        decision.effect = Effect::Allow;
        decision.approval = None;
        decision.reasons.insert(0, covered);
        return decision;
    }
    if left.len() < req.each().len() {
        let mut narrowed = ApprovalRequirements::any(1, req.ttl_seconds);
        narrowed.mfa = req.mfa;
        narrowed.quorum = left.iter().map(|r| r.quorum).max().unwrap_or(1);
        narrowed.groups = left.iter().flat_map(|r| r.groups.iter().cloned()).collect();
        narrowed.groups.sort();
        narrowed.groups.dedup();
        if left.iter().any(|r| r.groups.is_empty()) {
            narrowed.groups.clear();
        }
        if !req.rules.is_empty() {
            narrowed.rules = left;
        }
        decision.approval = Some(narrowed);
        let mut note = covered;
        note.msg = format!("{}; what it does not cover still needs approval", note.msg);
        decision.reasons.push(note);
    }
    decision
}

/// Whether the plan's approving votes already meet one requirement: enough distinct approvers
/// from its groups, each confirmed with MFA when the call's approval needs it.
fn met_by(requirement: &RuleRequirement, mfa: bool, plan: &PlanFacts) -> bool {
    let counted: BTreeSet<&str> = plan
        .votes
        .iter()
        .filter(|v| v.verdict == Verdict::Approve)
        .filter(|v| !mfa || v.mfa)
        .filter(|v| requirement.groups.is_empty() || v.groups.iter().any(|g| requirement.groups.contains(g)))
        .map(|v| v.human.as_str())
        .collect();
    u32::try_from(counted.len()).unwrap_or(u32::MAX) >= requirement.quorum
}

fn deny(mut decision: Decision, reason: Reason) -> Decision {
    decision.effect = Effect::Deny;
    decision.approval = None;
    decision.risk = decision.risk.max(Risk::High);
    decision.reasons.insert(0, reason);
    decision
}

/// How one version of a plan differs from another, step by step (by step id).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlanDiff {
    /// Whether the goal changed.
    pub goal_changed: bool,
    /// Whether the budget changed.
    pub budget_changed: bool,
    /// Whether the deadline changed.
    pub deadline_changed: bool,
    /// Whether the monitors changed (`stuck_after_seconds`, `pause_when_stuck`,
    /// `cascade_failures`, `cascade_window_seconds`).
    pub monitors_changed: bool,
    /// Steps only the new version has.
    pub added: Vec<PlanStep>,
    /// Steps only the old version has.
    pub removed: Vec<PlanStep>,
    /// Steps with the same id and different content: `{id, from, to}`.
    pub changed: Vec<Value>,
    /// Ids of the steps that are the same in both.
    pub unchanged: Vec<String>,
}

/// What changed from `old` to `new`.
pub fn diff(old: &PlanDraft, new: &PlanDraft) -> PlanDiff {
    let mut d = PlanDiff {
        goal_changed: old.goal != new.goal,
        budget_changed: old.budget_usd != new.budget_usd,
        deadline_changed: old.deadline != new.deadline,
        monitors_changed: (
            old.stuck_after_seconds,
            old.pause_when_stuck,
            old.cascade_failures,
            old.cascade_window_seconds,
        ) != (
            new.stuck_after_seconds,
            new.pause_when_stuck,
            new.cascade_failures,
            new.cascade_window_seconds,
        ),
        ..PlanDiff::default()
    };
    for step in &new.steps {
        match old.step(&step.id) {
            None => d.added.push(step.clone()),
            Some(was) if was == step => d.unchanged.push(step.id.clone()),
            Some(was) => d.changed.push(json!({"id": step.id, "from": was, "to": step})),
        }
    }
    d.removed = old.steps.iter().filter(|s| new.step(&s.id).is_none()).cloned().collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DecidedBy;

    fn vote(human: &str, groups: &[&str]) -> Vote {
        Vote {
            human: human.into(),
            verdict: Verdict::Approve,
            comment: "ok".into(),
            mfa: false,
            totp_step: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            at: DateTime::<Utc>::MIN_UTC,
        }
    }

    fn held(rules: Vec<RuleRequirement>) -> Decision {
        let mut req = ApprovalRequirements::any(1, 60);
        req.rules = rules;
        Decision {
            effect: Effect::RequireApproval,
            reasons: vec![Reason::new("SC1", "scaling")],
            risk: Risk::Medium,
            approval: Some(req),
            cost_usd: None,
            policy_revision: "r".into(),
            decided_by: DecidedBy::Policy,
            eval_us: 0,
            retry_after_ms: None,
            warnings: vec![],
            redact: vec![],
        }
    }

    fn facts(step: Option<&str>, votes: Vec<Vote>) -> PlanFacts {
        PlanFacts {
            plan_id: "pln_1".into(),
            version: 1,
            step: step.map(str::to_string),
            votes,
            mfa: false,
            budget_usd: None,
            spent_usd: 0.0,
            deadline_passed: false,
        }
    }

    fn rule(name: &str, quorum: u32, groups: &[&str]) -> RuleRequirement {
        RuleRequirement { rule: name.into(), quorum, groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn a_step_approved_by_enough_of_the_right_people_runs_without_asking_again() {
        let plan = facts(Some("1"), vec![vote("alice", &["sre"]), vote("bob", &["sre"])]);
        let d = apply(held(vec![rule("SC1", 2, &["sre"])]), Some(&plan), &PolicySays::default(), 60);
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.reasons[0].rule, RULE_PLAN);
    }

    #[test]
    fn a_plan_covers_only_what_its_votes_meet() {
        let plan = facts(Some("1"), vec![vote("alice", &["sre"])]);
        let d = apply(
            held(vec![rule("SC1", 1, &["sre"]), rule("DBA", 1, &["dba"])]),
            Some(&plan),
            &PolicySays::default(),
            60,
        );
        assert_eq!(d.effect, Effect::RequireApproval);
        let req = d.approval.unwrap();
        assert_eq!(req.rules, vec![rule("DBA", 1, &["dba"])]);
        // A plan policy allowed outright (no votes) covers nothing.
        let d = apply(held(vec![rule("SC1", 1, &[])]), Some(&facts(Some("1"), vec![])), &PolicySays::default(), 60);
        assert_eq!(d.effect, Effect::RequireApproval);
    }

    #[test]
    fn each_call_rules_are_never_covered() {
        let plan = facts(Some("1"), vec![vote("alice", &["sre"]), vote("bob", &["sre"])]);
        let says = PolicySays { each_call: ["PROD".to_string()].into(), drift_allowed: vec![] };
        let d = apply(held(vec![rule("PROD", 1, &["sre"])]), Some(&plan), &says, 60);
        assert_eq!(d.effect, Effect::RequireApproval);
    }

    #[test]
    fn drift_needs_its_own_approval_and_a_deny_stays_a_deny() {
        let mut allowed = held(vec![]);
        allowed.effect = Effect::Allow;
        allowed.approval = None;
        let d = apply(allowed.clone(), Some(&facts(None, vec![vote("alice", &[])])), &PolicySays::default(), 60);
        assert_eq!(d.effect, Effect::RequireApproval);
        assert_eq!(d.reasons[0].rule, RULE_PLAN_DRIFT);
        let mut denied = allowed;
        denied.effect = Effect::Deny;
        let d = apply(denied, Some(&facts(Some("1"), vec![vote("alice", &[])])), &PolicySays::default(), 60);
        assert_eq!(d.effect, Effect::Deny);
    }

    #[test]
    fn policy_may_let_drift_run_and_it_is_still_marked() {
        let mut allowed = held(vec![]);
        allowed.effect = Effect::Allow;
        allowed.approval = None;
        let says = PolicySays { each_call: BTreeSet::new(), drift_allowed: vec!["RO1".into()] };
        let d = apply(allowed, Some(&facts(None, vec![])), &says, 60);
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.reasons.last().map(|r| r.rule.as_str()), Some(RULE_PLAN_DRIFT));
        assert_eq!(drift_allowed(&[json!({"rule": "RO1"}), json!("reads")]), vec!["RO1", "reads"]);
    }

    #[test]
    fn budget_and_deadline_deny_a_step() {
        let mut plan = facts(Some("1"), vec![vote("alice", &[])]);
        plan.budget_usd = Some(2.0);
        plan.spent_usd = 1.5;
        let mut priced = held(vec![rule("SC1", 1, &[])]);
        priced.cost_usd = Some(1.0);
        assert_eq!(apply(priced.clone(), Some(&plan), &PolicySays::default(), 60).reasons[0].rule, RULE_PLAN_BUDGET);
        plan.budget_usd = None;
        plan.deadline_passed = true;
        assert_eq!(apply(priced, Some(&plan), &PolicySays::default(), 60).reasons[0].rule, RULE_PLAN_DEADLINE);
    }

    #[test]
    fn drafts_are_checked_and_steps_named() {
        let now = Utc::now();
        let draft: PlanDraft =
            serde_json::from_value(json!({"goal": "g", "steps": [{"tool": "a"}, {"tool": "b*"}]})).unwrap();
        let d = draft.normalise(now).unwrap();
        assert_eq!(d.steps[1].id, "2");
        let twice: PlanDraft =
            serde_json::from_value(json!({"goal": "g", "steps": [{"id": "x", "tool": "a"}, {"id": "x", "tool": "b"}]}))
                .unwrap();
        assert!(twice.normalise(now).unwrap_err().0.contains("used twice"));
        let empty: PlanDraft = serde_json::from_value(json!({"goal": "g", "steps": []})).unwrap();
        assert!(empty.normalise(now).is_err());
    }

    #[test]
    fn the_diff_names_added_changed_and_removed_steps() {
        let now = Utc::now();
        let old: PlanDraft =
            serde_json::from_value(json!({"goal": "g", "steps": [{"tool": "a"}, {"tool": "b"}]})).unwrap();
        let new: PlanDraft =
            serde_json::from_value(json!({"goal": "g", "steps": [{"tool": "a"}, {"tool": "c"}, {"tool": "d"}]}))
                .unwrap();
        let d = diff(&old.normalise(now).unwrap(), &new.normalise(now).unwrap());
        assert_eq!(d.unchanged, vec!["1"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.added.len(), 1);
        assert!(d.removed.is_empty());
    }
}

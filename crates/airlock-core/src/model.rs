//! The domain model: who acts (agents, humans), on what (sessions, actions), and what airlock
//! decided (decisions, approvals, kill switches).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How much an agent may do without a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// May only run read-only actions.
    Advisory,
    /// Anything that is not read-only needs at least one human approval, whatever policy says.
    Change,
    /// Gets exactly what policy says.
    Autonomous,
}

impl Tier {
    /// The name used in configuration, the API and the policy input.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Advisory => "advisory",
            Tier::Change => "change",
            Tier::Autonomous => "autonomous",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-human caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable identifier, unique among agents and humans.
    pub id: String,
    /// The team or person accountable for the agent.
    pub owner: String,
    /// Who is paged when the agent needs a human.
    pub oncall: Option<String>,
    /// The agent's risk tier.
    pub tier: Tier,
    /// Free-form labels, visible to policy as `input.agent.labels`.
    pub labels: BTreeMap<String, String>,
}

/// A role a human may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May vote on approvals.
    Approve,
    /// May operate airlock: kill switches, policy, sessions.
    Admin,
}

/// An approver or operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Human {
    /// Stable identifier, unique among agents and humans.
    pub id: String,
    /// Groups used by approval requirements (`groups = ["sre"]`).
    pub groups: Vec<String>,
    /// What the human may do.
    pub roles: Vec<Role>,
    /// Whether a TOTP secret is configured for step-up confirmation.
    pub has_totp: bool,
}

impl Human {
    /// Whether the human holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Lifecycle of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Accepting actions.
    Active,
    /// Every action is denied until a human resumes the session.
    Paused,
    /// Finished; no further actions.
    Closed,
}

/// Where an object's spans live in a distributed trace (W3C ids, lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRef {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
}

/// One unit of agent work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `ses_…`
    pub id: String,
    /// The agent that owns the session.
    pub agent_id: String,
    /// What the agent says it is doing.
    pub task: String,
    /// Free-form labels, visible to policy as `input.session.labels`.
    pub labels: BTreeMap<String, String>,
    /// The human the session acts for, if any (maker-checker).
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// Why the session is paused, when it is.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Number of actions requested in the session.
    pub actions: u64,
    /// Number of actions that failed.
    pub failures: u64,
    /// Number of actions denied.
    #[serde(default)]
    pub denials: u64,
    /// Failed actions in a row (reset by a success or a resume).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Denied actions in a row (reset by a non-denied action or a resume).
    #[serde(default)]
    pub consecutive_denials: u32,
    /// Money spent by allowed actions, in US dollars.
    pub spent_usd: f64,
    /// When the session was opened.
    pub created_at: DateTime<Utc>,
    /// When the session last changed.
    pub updated_at: DateTime<Utc>,
    /// The session's root span (`invoke_agent`), when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceRef>,
    /// When a human last resumed the session: calls before it no longer count towards loop
    /// detection, wherever the session is loaded from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<DateTime<Utc>>,
}

impl Session {
    /// A session just opened: active, nothing done, nothing spent.
    pub fn opened(id: String, agent_id: String, task: String, at: DateTime<Utc>) -> Session {
        Session {
            id,
            agent_id,
            task,
            labels: BTreeMap::new(),
            on_behalf_of: None,
            status: SessionStatus::Active,
            status_reason: None,
            actions: 0,
            failures: 0,
            denials: 0,
            consecutive_failures: 0,
            consecutive_denials: 0,
            spent_usd: 0.0,
            created_at: at,
            updated_at: at,
            trace: None,
            resumed_at: None,
        }
    }
}

/// Lifecycle of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for human approval.
    PendingApproval,
    /// Approved; not yet run.
    Approved,
    /// Released for execution (by airlock against an upstream, or by the agent itself).
    Executing,
    /// Ran and succeeded.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// An upstream call was sent and no answer was recorded: it timed out, was cancelled (a kill
    /// switch, the caller), or airlock stopped while it was out. The upstream may have acted;
    /// never retried automatically.
    Unknown,
    /// Refused by a guard, policy or a human.
    Denied,
    /// Its approval expired before it was granted.
    Expired,
    /// Withdrawn (for example by a kill switch) before it ran.
    Cancelled,
}

impl ActionStatus {
    /// The name used in the API and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::PendingApproval => "pending_approval",
            ActionStatus::Approved => "approved",
            ActionStatus::Executing => "executing",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Unknown => "unknown",
            ActionStatus::Denied => "denied",
            ActionStatus::Expired => "expired",
            ActionStatus::Cancelled => "cancelled",
        }
    }

    /// Whether an identical call in the same session joins this action instead of opening a new
    /// one: it is still waiting (for approval, or approved and not yet run).
    pub fn is_waiting(self) -> bool {
        ActionStatus::WAITING.contains(&self)
    }

    /// The statuses of actions whose cost counts toward budgets: allowed or approved, whether
    /// or not they ran. Actions still pending approval, and denied, expired or cancelled ones,
    /// spent nothing.
    pub const SPENDING: [ActionStatus; 5] = [
        ActionStatus::Approved,
        ActionStatus::Executing,
        ActionStatus::Succeeded,
        ActionStatus::Failed,
        ActionStatus::Unknown,
    ];

    /// The statuses in which an action is still waiting (see [`ActionStatus::is_waiting`]).
    pub const WAITING: [ActionStatus; 2] = [ActionStatus::PendingApproval, ActionStatus::Approved];

    /// Whether the action can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded
                | ActionStatus::Failed
                | ActionStatus::Unknown
                | ActionStatus::Denied
                | ActionStatus::Expired
                | ActionStatus::Cancelled
        )
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Run it.
    Allow,
    /// Do not run it.
    Deny,
    /// Run it only after humans approve.
    RequireApproval,
}

impl Effect {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How risky an action is judged to be; ordered from least to most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Routine.
    #[default]
    Low,
    /// Worth a look.
    Medium,
    /// Could hurt.
    High,
    /// Could hurt a lot.
    Critical,
}

impl Risk {
    /// The name used in the API and policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    /// Parses `low`, `medium`, `high` or `critical` (any case).
    pub fn parse(s: &str) -> Option<Risk> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            "critical" => Some(Risk::Critical),
            _ => None,
        }
    }
}

/// One reason behind a decision: which rule said what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Rule identifier, such as `TF100`, or `airlock.kill_switch` for host rules.
    pub rule: String,
    /// Human-readable message.
    pub msg: String,
}

impl Reason {
    /// A reason from `rule` with message `msg`.
    pub fn new(rule: impl Into<String>, msg: impl Into<String>) -> Self {
        Reason { rule: rule.into(), msg: msg.into() }
    }
}

/// What an approval needs before the action may run.
///
/// When several policy rules ask for approval, each rule's own requirement must be met
/// ([`ApprovalRequirements::rules`]); one vote counts towards every rule whose groups include
/// the voter. `quorum` and `groups` summarise them (the largest quorum, every group named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequirements {
    /// The largest number of distinct approvers any rule needs.
    pub quorum: u32,
    /// Every group a rule names; empty means any approver.
    pub groups: Vec<String>,
    /// Each approver confirms with a TOTP code.
    pub mfa: bool,
    /// Seconds until the approval expires.
    pub ttl_seconds: u64,
    /// Each rule's own requirement; all must be met. Empty for a single requirement (the tier
    /// floor, a budget, approvals recorded before per-rule requirements), which is `quorum`
    /// distinct approvers from `groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleRequirement>,
}

/// One policy rule's approval requirement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleRequirement {
    /// The rule id (`SC1`).
    pub rule: String,
    /// Distinct approvers this rule needs.
    pub quorum: u32,
    /// Approvers counted for this rule must be in one of these groups; empty means any.
    pub groups: Vec<String>,
}

impl ApprovalRequirements {
    /// One requirement of `quorum` approvers from any group.
    pub fn any(quorum: u32, ttl_seconds: u64) -> ApprovalRequirements {
        ApprovalRequirements { quorum, groups: Vec::new(), mfa: false, ttl_seconds, rules: Vec::new() }
    }

    /// The requirements each vote is counted against: the rules, or the single summary one.
    pub fn each(&self) -> Vec<RuleRequirement> {
        if self.rules.is_empty() {
            vec![RuleRequirement { rule: String::new(), quorum: self.quorum, groups: self.groups.clone() }]
        } else {
            self.rules.clone()
        }
    }

    /// In words: `1 approval from `security` (SEC1) and 2 from `sre` (SC2), with MFA`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .each()
            .iter()
            .map(|r| {
                let from = if r.groups.is_empty() {
                    String::new()
                } else {
                    format!(" from {}", r.groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(" or "))
                };
                let rule = if r.rule.is_empty() { String::new() } else { format!(" ({})", r.rule) };
                let noun = if r.quorum == 1 { "approval" } else { "approvals" };
                format!("{} {noun}{from}{rule}", r.quorum)
            })
            .collect();
        let mfa = if self.mfa { ", with MFA" } else { "" };
        format!("{}{mfa}", parts.join(" and "))
    }
}

/// The outcome of the decision pipeline for one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What was decided.
    pub effect: Effect,
    /// Why, in order: host guard reasons first, then policy reasons.
    pub reasons: Vec<Reason>,
    /// Judged risk.
    pub risk: Risk,
    /// What an approval needs, when `effect` is `require_approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRequirements>,
    /// Cost in US dollars from policy `cost_usd`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Content hash of the policy that made the decision.
    pub policy_revision: String,
    /// Which stage decided.
    pub decided_by: DecidedBy,
    /// Policy evaluation time in microseconds.
    pub eval_us: u64,
    /// When a rate limit denied the action: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Rules in `warn` mode that matched: recorded, not enforced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Reason>,
    /// Paths policy `redact` keeps out of exported telemetry (`*`: everything); see
    /// [`crate::redact`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
}

/// Which stage of the pipeline made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// A host guard (kill switch, allowlist, session state, tier, rate limit, loop, breaker,
    /// budget).
    Guard,
    /// The Rego policy.
    Policy,
    /// The tier floor of a `change` agent.
    Tier,
}

impl DecidedBy {
    /// The name used in the API and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Guard => "guard",
            DecidedBy::Policy => "policy",
            DecidedBy::Tier => "tier",
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who reported an action's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reporter {
    /// The agent, for an action it executed itself.
    Agent,
    /// The upstream MCP server airlock called.
    Upstream,
    /// airlock itself (an outcome it had to record, such as a restart during the call).
    Airlock,
}

impl Reporter {
    /// The name used in the API and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Agent => "agent",
            Reporter::Upstream => "upstream",
            Reporter::Airlock => "airlock",
        }
    }
}

/// A requested call and everything airlock knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// `act_…`
    pub id: String,
    /// The session the action belongs to.
    pub session_id: String,
    /// 1-based position in the session.
    pub seq: u64,
    /// The agent that asked.
    pub agent_id: String,
    /// Full tool name as the agent sees it (`infra__scale_node_pool`).
    pub tool: String,
    /// The upstream that serves the tool, if it is not agent-executed.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The tool's name at its upstream (`scale_node_pool`), or the tool name.
    pub name: String,
    /// The virtual server (`/mcp/{server}`) the call came through; `None` on `/mcp` and the
    /// HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Call arguments.
    pub arguments: Value,
    /// Tool annotations (MCP `readOnlyHint`, …) after local overrides.
    #[serde(default)]
    pub annotations: Value,
    /// Why the agent says it wants this.
    pub justification: String,
    /// `sha256:` of canonical tool + arguments.
    pub digest: String,
    /// Lifecycle state.
    pub status: ActionStatus,
    /// The decision.
    pub decision: Decision,
    /// The approval, when one was required.
    #[serde(default)]
    pub approval_id: Option<String>,
    /// The outcome, once known.
    #[serde(default)]
    pub result: Option<ActionResult>,
    /// The client's `Idempotency-Key`, if it sent one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When the action was requested.
    pub created_at: DateTime<Utc>,
    /// When the action last changed.
    pub updated_at: DateTime<Utc>,
    /// The action's `execute_tool` span, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceRef>,
    /// The replica running the upstream call while it is `executing`, when replicas share the
    /// journal: if that replica is gone, the call's outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// The outcome of an executed action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// Whether the call succeeded.
    pub ok: bool,
    /// What the call returned.
    #[serde(default)]
    pub output: Value,
    /// Error text when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Who reported it.
    pub reported_by: Reporter,
    /// Wall time of the call, when airlock measured it.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// What the call cost in US dollars, as reported with the result. It counts toward budgets
    /// only when the decision had no cost of its own ([`crate::limits::reported_cost_counted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// When the result was recorded.
    pub at: DateTime<Utc>,
}

/// Lifecycle of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Collecting votes.
    Pending,
    /// Quorum reached.
    Approved,
    /// A human denied it.
    Denied,
    /// Its time ran out.
    Expired,
    /// Withdrawn (kill switch, session closed).
    Cancelled,
}

impl ApprovalStatus {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        match s {
            "pending" => Some(ApprovalStatus::Pending),
            "approved" => Some(ApprovalStatus::Approved),
            "denied" => Some(ApprovalStatus::Denied),
            "expired" => Some(ApprovalStatus::Expired),
            "cancelled" => Some(ApprovalStatus::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human's verdict on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// In favour.
    Approve,
    /// Against; one deny ends the approval.
    Deny,
}

/// One human's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Who voted.
    pub human: String,
    /// What they said.
    pub verdict: Verdict,
    /// Why.
    pub comment: String,
    /// Whether they confirmed with a TOTP code.
    #[serde(default)]
    pub mfa: bool,
    /// The TOTP time step of the code used, so a code is accepted once even across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<u64>,
    /// The voter's groups when they voted: which rules' requirements the vote counts towards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A request for humans to approve one action, bound to its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// `apr_…`
    pub id: String,
    /// The action it gates.
    pub action_id: String,
    /// The action's session.
    pub session_id: String,
    /// The agent that asked.
    pub agent_id: String,
    /// The digest the approval is bound to.
    pub digest: String,
    /// What it needs.
    pub requirements: ApprovalRequirements,
    /// Lifecycle state.
    pub status: ApprovalStatus,
    /// Votes cast so far.
    pub votes: Vec<Vote>,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it expires if still pending.
    pub expires_at: DateTime<Utc>,
    /// When it was resolved.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Approval {
    /// Number of approving votes.
    pub fn approvals(&self) -> u32 {
        let n = self.votes.iter().filter(|v| v.verdict == Verdict::Approve).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// What a kill switch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillScope {
    /// Every action.
    All,
    /// One agent's actions.
    Agent,
    /// Every tool of one upstream.
    Upstream,
    /// One tool (exact name or glob).
    Tool,
}

impl KillScope {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KillScope::All => "all",
            KillScope::Agent => "agent",
            KillScope::Upstream => "upstream",
            KillScope::Tool => "tool",
        }
    }
}

/// An operator's order to stop actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// `kill_…`
    pub id: String,
    /// What it covers.
    pub scope: KillScope,
    /// The agent, upstream or tool it covers; empty for `all`.
    #[serde(default)]
    pub target: Option<String>,
    /// Why; quoted in every denial it causes.
    pub reason: String,
    /// Who engaged it.
    pub engaged_by: String,
    /// When.
    pub engaged_at: DateTime<Utc>,
    /// Who released it, if released.
    #[serde(default)]
    pub released_by: Option<String>,
    /// When it was released.
    #[serde(default)]
    pub released_at: Option<DateTime<Utc>>,
}

impl KillSwitch {
    /// Whether the switch is still engaged.
    pub fn is_active(&self) -> bool {
        self.released_at.is_none()
    }
}

//! Journal event kinds. The journal stores each event as a kind name plus a JSON payload; these
//! are the names, one place for all of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A session was opened.
    #[serde(rename = "session.opened")]
    SessionOpened,
    /// A session was paused, resumed or closed.
    #[serde(rename = "session.status_changed")]
    SessionStatusChanged,
    /// An agent asked for an action.
    #[serde(rename = "action.requested")]
    ActionRequested,
    /// The pipeline decided an action.
    #[serde(rename = "action.decided")]
    ActionDecided,
    /// An identical call joined an action that was still waiting.
    #[serde(rename = "action.joined")]
    ActionJoined,
    /// An approval was requested.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// A human voted.
    #[serde(rename = "approval.vote_cast")]
    VoteCast,
    /// A vote was refused, with the rule that refused it.
    #[serde(rename = "approval.vote_refused")]
    VoteRefused,
    /// An approval was approved, denied or cancelled.
    #[serde(rename = "approval.resolved")]
    ApprovalResolved,
    /// An approval expired.
    #[serde(rename = "approval.expired")]
    ApprovalExpired,
    /// An action was released for execution.
    #[serde(rename = "action.executing")]
    ActionExecuting,
    /// An action's result was recorded.
    #[serde(rename = "action.completed")]
    ActionCompleted,
    /// An action was cancelled before it ran.
    #[serde(rename = "action.cancelled")]
    ActionCancelled,
    /// An approved action was not run within `[approvals] execute_within_seconds`.
    #[serde(rename = "action.expired")]
    ActionExpired,
    /// A human's TOTP codes were locked after too many failed ones.
    #[serde(rename = "mfa.locked")]
    MfaLocked,
    /// An admin lifted a human's TOTP lock.
    #[serde(rename = "mfa.unlocked")]
    MfaUnlocked,
    /// A kill switch was engaged.
    #[serde(rename = "kill.engaged")]
    KillEngaged,
    /// A kill switch was released.
    #[serde(rename = "kill.released")]
    KillReleased,
    /// A tool's circuit breaker changed state.
    #[serde(rename = "breaker.changed")]
    BreakerChanged,
    /// A policy revision became active (start, reload, rollback, promote).
    #[serde(rename = "policy.activated")]
    PolicyActivated,
    /// The candidate policy in shadow mode would have decided an action differently.
    #[serde(rename = "policy.shadow_disagreement")]
    ShadowDisagreement,
    /// A candidate policy was loaded, its canary share changed, or it was unloaded; the event
    /// carries its files, so decisions a canary made can be replayed from the journal.
    #[serde(rename = "policy.candidate")]
    PolicyCandidate,
    /// A message crossed the MCP gateway between an upstream and a client other than a call or a
    /// list (sampling, elicitation, roots, logging, subscriptions), or was refused.
    #[serde(rename = "mcp.forwarded")]
    McpForwarded,
    /// A read through the MCP gateway that is not a tool call (a resource, a prompt, a
    /// completion, a subscription) was screened: allowed or refused, and why.
    #[serde(rename = "mcp.read")]
    McpRead,
    /// An agent proposed a plan, or a new version of one (an amendment), and policy decided it.
    #[serde(rename = "plan.proposed")]
    PlanProposed,
    /// A version of a plan was approved and is now in force.
    #[serde(rename = "plan.approved")]
    PlanApproved,
    /// A call was matched to a step of the plan in force.
    #[serde(rename = "plan.step_matched")]
    PlanStepMatched,
    /// A call matched no step of the plan in force.
    #[serde(rename = "plan.drift")]
    PlanDrift,
    /// No step of the plan in force made progress for its `stuck_after_seconds`.
    #[serde(rename = "plan.stuck")]
    PlanStuck,
    /// Calls for distinct steps of the plan in force failed within the cascade window: the
    /// session was paused.
    #[serde(rename = "plan.cascade")]
    PlanCascade,
    /// An assigned agent claimed a step of a plan and got a lease with a fencing token
    /// (journaled in the plan's own stream, named by the plan's id).
    #[serde(rename = "plan.step_claimed")]
    PlanStepClaimed,
    /// The holder of a step's lease gave it back before it expired.
    #[serde(rename = "plan.lease_released")]
    PlanLeaseReleased,
}

impl EventKind {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionOpened => "session.opened",
            EventKind::SessionStatusChanged => "session.status_changed",
            EventKind::ActionRequested => "action.requested",
            EventKind::ActionDecided => "action.decided",
            EventKind::ActionJoined => "action.joined",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::VoteCast => "approval.vote_cast",
            EventKind::VoteRefused => "approval.vote_refused",
            EventKind::ApprovalResolved => "approval.resolved",
            EventKind::ApprovalExpired => "approval.expired",
            EventKind::ActionExecuting => "action.executing",
            EventKind::ActionCompleted => "action.completed",
            EventKind::ActionCancelled => "action.cancelled",
            EventKind::ActionExpired => "action.expired",
            EventKind::MfaLocked => "mfa.locked",
            EventKind::MfaUnlocked => "mfa.unlocked",
            EventKind::KillEngaged => "kill.engaged",
            EventKind::KillReleased => "kill.released",
            EventKind::BreakerChanged => "breaker.changed",
            EventKind::PolicyActivated => "policy.activated",
            EventKind::PolicyCandidate => "policy.candidate",
            EventKind::ShadowDisagreement => "policy.shadow_disagreement",
            EventKind::McpForwarded => "mcp.forwarded",
            EventKind::McpRead => "mcp.read",
            EventKind::PlanProposed => "plan.proposed",
            EventKind::PlanApproved => "plan.approved",
            EventKind::PlanStepMatched => "plan.step_matched",
            EventKind::PlanDrift => "plan.drift",
            EventKind::PlanStuck => "plan.stuck",
            EventKind::PlanCascade => "plan.cascade",
            EventKind::PlanStepClaimed => "plan.step_claimed",
            EventKind::PlanLeaseReleased => "plan.lease_released",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

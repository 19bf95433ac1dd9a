//! Who may vote on an approval, and when the votes resolve it.
//!
//! Every path that counts a human's decision (the API, the CLI, the review UI, resuming a
//! paused session) asks [`eligibility`] the same question, so the rules cannot drift apart. The
//! TOTP check itself is the server's (it needs the secret); this module only says that a code is
//! required.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Approval, ApprovalStatus, Human, Role, RuleRequirement, Session, Verdict};

/// Rule name: the human lacks the role.
pub const RULE_ROLE: &str = "role";
/// Rule name: a vote or resume needs a comment.
pub const RULE_COMMENT: &str = "comment_required";
/// Rule name: one vote per human per approval.
pub const RULE_VOTE_ONCE: &str = "vote_once";
/// Rule name: the human is in none of the allowed groups.
pub const RULE_GROUP: &str = "group";
/// Rule name: the human requested the work (maker-checker).
pub const RULE_MAKER_CHECKER: &str = "maker_checker";
/// Rule name: MFA is required and not possible or not given.
pub const RULE_MFA: &str = "mfa";
/// Rule name: the human's TOTP codes are locked after too many failed ones.
pub const RULE_MFA_LOCKED: &str = "mfa_locked";

/// Why a human may not vote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct Refusal {
    /// Stable rule name ([`RULE_ROLE`], [`RULE_GROUP`], …).
    pub rule: &'static str,
    /// What happened and what to do.
    pub msg: String,
}

impl Refusal {
    fn new(rule: &'static str, msg: String) -> Refusal {
        Refusal { rule, msg }
    }
}

/// Whether `human` may vote on `approval` in `session` at all (before any comment or code):
/// the `approve` role, not voted yet, in an allowed group, not the session's requester (unless
/// `allow_requester`), and able to confirm with TOTP when MFA is required.
pub fn eligibility(
    human: &Human,
    approval: &Approval,
    session: &Session,
    allow_requester: bool,
) -> Result<(), Refusal> {
    if !human.has_role(Role::Approve) {
        return Err(Refusal::new(RULE_ROLE, format!("`{}` does not have the `approve` role", human.id)));
    }
    if approval.votes.iter().any(|v| v.human == human.id) {
        return Err(Refusal::new(
            RULE_VOTE_ONCE,
            format!("`{}` has already voted on approval {}", human.id, approval.id),
        ));
    }
    in_allowed_group(human, approval)?;
    not_requester(human, session, allow_requester)?;
    if approval.requirements.mfa && !human.has_totp {
        return Err(Refusal::new(
            RULE_MFA,
            format!("approval {} needs MFA and `{}` has no TOTP secret configured", approval.id, human.id),
        ));
    }
    Ok(())
}

/// Checks a vote with its comment. `Ok(true)` means a TOTP code must still be verified.
pub fn check_vote(
    human: &Human,
    approval: &Approval,
    session: &Session,
    comment: &str,
    allow_requester: bool,
) -> Result<bool, Refusal> {
    if !human.has_role(Role::Approve) {
        return Err(Refusal::new(RULE_ROLE, format!("`{}` does not have the `approve` role", human.id)));
    }
    if comment.trim().is_empty() {
        return Err(Refusal::new(RULE_COMMENT, "a vote needs a comment that says why".into()));
    }
    eligibility(human, approval, session, allow_requester)?;
    Ok(approval.requirements.mfa)
}

/// Whether a voter in `groups` counts towards `requirement`.
fn counts_for(groups: &[String], requirement: &RuleRequirement) -> bool {
    requirement.groups.is_empty() || groups.iter().any(|g| requirement.groups.contains(g))
}

/// A human may vote when their vote counts towards at least one rule's requirement.
fn in_allowed_group(human: &Human, approval: &Approval) -> Result<(), Refusal> {
    let groups = &approval.requirements.groups;
    if approval.requirements.each().iter().any(|r| counts_for(&human.groups, r)) {
        return Ok(());
    }
    Err(Refusal::new(
        RULE_GROUP,
        format!(
            "approval {} needs approvers from {}; `{}` is in none of them",
            approval.id,
            groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
            human.id
        ),
    ))
}

/// Maker-checker: the human a session acts for may not approve its actions, nor resume it.
pub fn not_requester(human: &Human, session: &Session, allow_requester: bool) -> Result<(), Refusal> {
    if !allow_requester && session.on_behalf_of.as_deref() == Some(human.id.as_str()) {
        return Err(Refusal::new(
            RULE_MAKER_CHECKER,
            format!("`{}` requested this session's work and can't approve its actions; ask another approver", human.id),
        ));
    }
    Ok(())
}

/// Who may resume a paused session: a human with `approve` or `admin`, with a comment, who is
/// not the session's requester (an admin may override maker-checker only when
/// `allow_requester` is set, as for votes).
pub fn check_resume(human: &Human, session: &Session, comment: &str, allow_requester: bool) -> Result<(), Refusal> {
    if !(human.has_role(Role::Approve) || human.has_role(Role::Admin)) {
        return Err(Refusal::new(
            RULE_ROLE,
            format!("`{}` needs the `approve` or `admin` role to resume sessions", human.id),
        ));
    }
    if comment.trim().is_empty() {
        return Err(Refusal::new(RULE_COMMENT, "resuming a session needs a comment that says why".into()));
    }
    not_requester(human, session, allow_requester).map_err(|_| {
        Refusal::new(
            RULE_MAKER_CHECKER,
            format!("`{}` requested this session's work and can't resume it; ask another approver", human.id),
        )
    })
}

/// The distinct humans whose approving votes count towards `requirement`.
pub fn approvers_for(approval: &Approval, requirement: &RuleRequirement) -> usize {
    let mut ids: Vec<&str> = approval
        .votes
        .iter()
        .filter(|v| v.verdict == Verdict::Approve && counts_for(&v.groups, requirement))
        .map(|v| v.human.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// What the votes so far resolve the approval to: denied by any deny; approved once every
/// rule's requirement is met, each by its own quorum of distinct approvers from its groups (a
/// vote counts towards every rule whose groups include the voter); else still pending (`None`).
///
/// Votes recorded before voters' groups were kept count towards a single requirement only (an
/// approval of that time has no per-rule requirements, and its votes were checked against its
/// groups when cast).
pub fn resolve(approval: &Approval) -> Option<ApprovalStatus> {
    if approval.votes.iter().any(|v| v.verdict == Verdict::Deny) {
        return Some(ApprovalStatus::Denied);
    }
    let legacy = approval.requirements.rules.is_empty();
    let met = approval.requirements.each().iter().all(|r| {
        let quorum = usize::try_from(r.quorum.max(1)).unwrap_or(usize::MAX);
        let counted = if legacy {
            let any = RuleRequirement { rule: String::new(), quorum: r.quorum, groups: Vec::new() };
            approvers_for(approval, &any)
        } else {
            approvers_for(approval, r)
        };
        counted >= quorum
    });
    met.then_some(ApprovalStatus::Approved)
}

/// How many failed TOTP codes lock a human's step-up confirmation, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaLimits {
    /// Failed codes in a row that lock (0 = never lock).
    pub max_failures: u32,
    /// How long the lock lasts.
    pub lockout_seconds: u64,
}

impl Default for MfaLimits {
    fn default() -> Self {
        MfaLimits { max_failures: 5, lockout_seconds: 900 }
    }
}

/// One human's failed TOTP codes: three codes are valid at any moment, so unlimited guesses
/// would find one in minutes. After [`MfaLimits::max_failures`] failures in a row the human's
/// MFA votes are refused (even with a right code) until the lock runs out or an admin lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaGuard {
    /// The human.
    pub human: String,
    /// Failed codes in a row since the last success, lock or unlock.
    pub failures: u32,
    /// When the current lock ends, if locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
}

impl MfaGuard {
    /// A guard with no failures.
    pub fn new(human: &str) -> MfaGuard {
        MfaGuard { human: human.to_string(), failures: 0, locked_until: None }
    }

    /// The end of the lock, when locked at `now`.
    pub fn locked_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }

    /// Counts a failed code at `now`; returns the end of the lock when this failure locks.
    pub fn record_failure(&mut self, now: DateTime<Utc>, limits: MfaLimits) -> Option<DateTime<Utc>> {
        if self.locked_until.is_some_and(|until| until <= now) {
            // An expired lock starts a fresh count.
            self.locked_until = None;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if limits.max_failures > 0 && self.failures >= limits.max_failures && self.locked_until.is_none() {
            let until = now + crate::pipeline::seconds(limits.lockout_seconds);
            self.locked_until = Some(until);
            return Some(until);
        }
        None
    }

    /// A right code: the count starts over.
    pub fn record_success(&mut self) {
        self.failures = 0;
        self.locked_until = None;
    }

    /// The refusal for a vote while locked.
    pub fn refusal(&self, until: DateTime<Utc>) -> Refusal {
        Refusal::new(
            RULE_MFA_LOCKED,
            format!(
                "TOTP codes of `{}` are locked until {} after {} failed codes in a row; no code is checked until then. \
                 An admin can lift the lock (`airlock humans unlock {}`)",
                self.human,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                self.failures,
                self.human
            ),
        )
    }
}

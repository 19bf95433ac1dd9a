//! Turning policy output into one decision, and the host's tier floor.
//!
//! The combination rule (DESIGN.md): any `deny` → deny; else any `require_approval` → require
//! approval with the strictest requirements of all matching entries (max quorum, union of groups,
//! any MFA, min ttl, max risk); else allow. A policy that failed — compile error, evaluation
//! error, time-out, or an entry of the wrong shape — is a deny whose reason says so.

use serde_json::Value;

use crate::model::{ApprovalRequirements, DecidedBy, Decision, Effect, Reason, Risk, RuleRequirement, Tier};
use crate::money::Usd;
use crate::redact::{REDACT_ALL, RULE_REDACT_ERROR, paths_from_policy};

/// Rule name used when policy evaluation itself failed.
pub const RULE_POLICY_ERROR: &str = "airlock.policy_error";
/// Rule name used when a `change` agent's allowed write is held for approval.
pub const RULE_TIER_FLOOR: &str = "airlock.tier_floor";
/// Reason rule of an approved action that was not run in time and expired.
pub const RULE_APPROVAL_UNUSED: &str = "airlock.approval_unused";

/// What the host read from the policy, before interpretation: the values of the rules
/// `deny`, `require_approval`, `warn`, `cost_usd` and `redact` of package `airlock` (undefined
/// rules are empty).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutput {
    /// Elements of the `deny` set.
    pub deny: Vec<Value>,
    /// Elements of the `require_approval` set.
    pub require_approval: Vec<Value>,
    /// Value of `cost_usd`, if defined.
    pub cost_usd: Option<Value>,
    /// Elements of the `warn` set: recorded, never enforced.
    pub warn: Vec<Value>,
    /// Value of `redact`, if defined, or why it could not be evaluated. Unlike the other rules,
    /// a failing `redact` does not fail the decision: it only means no content is exported.
    pub redact: Result<Option<Value>, PolicyFailure>,
    /// Elements of the `allow_drift` set: reasons to let a call outside the plan in force run
    /// without an approval of its own ([`crate::plan`]).
    pub allow_drift: Vec<Value>,
}

impl Default for PolicyOutput {
    fn default() -> Self {
        PolicyOutput {
            deny: Vec::new(),
            require_approval: Vec::new(),
            cost_usd: None,
            warn: Vec::new(),
            redact: Ok(None),
            allow_drift: Vec::new(),
        }
    }
}

/// Why a policy gave no usable answer. Every one of these denies the action: [`combine`] turns
/// it into a [`RULE_POLICY_ERROR`] reason whose message ends with this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFailure {
    /// A host rule failed to evaluate: a Rego error (a conflict, a missing function, a bad
    /// argument) or the evaluation time limit.
    #[error("`{rule}`: {message}")]
    Evaluation {
        /// The rule's path, such as `data.airlock.deny`.
        rule: String,
        /// What the evaluator said, on one line.
        message: String,
    },
    /// A host rule evaluated, but its value could not be read as JSON.
    #[error("`{rule}`: {message}")]
    Conversion {
        /// The rule's path, such as `data.airlock.deny`.
        rule: String,
        /// Why the value could not be read.
        message: String,
    },
    /// A host rule that must be a set (`deny`, `require_approval`, `warn`) holds something else.
    #[error("`{rule}` must be a set of objects, got `{value}`")]
    NotASet {
        /// The rule's path, such as `data.airlock.deny`.
        rule: String,
        /// The value it holds.
        value: Value,
    },
    /// An entry of `deny`, `require_approval` or `warn` has a field of the wrong type or range.
    #[error("`{set}` entry {}: {problem}", .index + 1)]
    Entry {
        /// The set: `deny`, `require_approval` or `warn`.
        set: String,
        /// The entry's position in the set, from 0 (the message counts from 1).
        index: usize,
        /// What is wrong with it.
        problem: EntryProblem,
    },
    /// `cost_usd` is a number but not a finite, non-negative one.
    #[error("`cost_usd` must be a non-negative number, got `{value}`")]
    CostOutOfRange {
        /// The number policy gave.
        value: serde_json::Number,
    },
    /// `cost_usd` is not a number.
    #[error("`cost_usd` must be a number, got `{value}`")]
    CostNotANumber {
        /// The value policy gave.
        value: Value,
    },
    /// Evaluation stopped before it gave an answer: the work running it panicked or was
    /// cancelled.
    #[error("policy evaluation stopped: {message}")]
    Stopped {
        /// Why it stopped.
        message: String,
    },
}

/// What is wrong with one entry of `deny`, `require_approval` or `warn`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// `rule` is not a string.
    #[error("`rule` must be a string")]
    Rule,
    /// `msg` (or `message`) is not a string.
    #[error("`msg` must be a string")]
    Msg,
    /// `risk` is not one of the risk levels.
    #[error("`risk` must be one of low, medium, high, critical, got `{0}`")]
    Risk(Value),
    /// `quorum` is not an integer from 1 to 100.
    #[error("`quorum` must be an integer from 1 to 100, got `{0}`")]
    Quorum(Value),
    /// `groups` is neither a string nor a list of strings.
    #[error("`groups` must be a list of strings, got `{0}`")]
    Groups(Value),
    /// `mfa` is not a boolean.
    #[error("`mfa` must be true or false, got `{0}`")]
    Mfa(Value),
    /// `ttl_seconds` is not an integer from 1 to [`MAX_APPROVAL_TTL_SECONDS`].
    #[error("`ttl_seconds` must be an integer from 1 to 2592000 (30 days), got `{0}`")]
    TtlSeconds(Value),
}

/// The longest an approval may stay open, from policy (`ttl_seconds`) or configuration
/// (`[approvals] default_ttl_seconds`): 30 days. A longer one is a policy error, so a deny: a
/// policy can pass values from an agent's arguments into its entries, and an expiry centuries
/// away is no expiry.
pub const MAX_APPROVAL_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// Settings the combiner needs from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDefaults {
    /// Expiry used when no entry names `ttl_seconds`.
    pub ttl_seconds: u64,
}

impl Default for ApprovalDefaults {
    fn default() -> Self {
        ApprovalDefaults { ttl_seconds: 3600 }
    }
}

/// Combines a policy evaluation into a decision. `outcome` is `Err` when evaluation failed;
/// that is a deny, as is an output that [`PolicyFailure`] describes.
pub fn combine(
    outcome: Result<PolicyOutput, PolicyFailure>,
    defaults: &ApprovalDefaults,
    policy_revision: &str,
    eval_us: u64,
) -> Decision {
    let output = match outcome {
        Ok(output) => output,
        Err(failure) => return policy_failure(failure.to_string(), policy_revision, eval_us),
    };
    match interpret(&output, defaults) {
        Ok(mut decision) => {
            decision.policy_revision = policy_revision.to_string();
            decision.eval_us = eval_us;
            decision
        }
        Err(failure) => policy_failure(failure.to_string(), policy_revision, eval_us),
    }
}

/// A deny caused by a broken or failing policy. What policy would redact is unknown, so it
/// redacts everything.
pub fn policy_failure(msg: String, policy_revision: &str, eval_us: u64) -> Decision {
    Decision {
        effect: Effect::Deny,
        reasons: vec![Reason::new(RULE_POLICY_ERROR, format!("policy failed, so the action is denied: {msg}"))],
        risk: Risk::High,
        approval: None,
        cost_usd: None,
        policy_revision: policy_revision.to_string(),
        decided_by: DecidedBy::Policy,
        eval_us,
        retry_after_ms: None,
        warnings: Vec::new(),
        redact: vec![crate::redact::REDACT_ALL.to_string()],
    }
}

struct Entry {
    reason: Reason,
    risk: Option<Risk>,
    quorum: Option<u32>,
    groups: Vec<String>,
    mfa: bool,
    ttl_seconds: Option<u64>,
}

fn interpret(output: &PolicyOutput, defaults: &ApprovalDefaults) -> Result<Decision, PolicyFailure> {
    // Entries marked `"enforcement": "warn"` (and the `warn` set) are recorded, not enforced,
    // as in Gatekeeper's dry-run and Kyverno's audit mode.
    let is_warn = |v: &Value| v.get("enforcement").and_then(Value::as_str) == Some("warn");
    let mut warnings = output
        .warn
        .iter()
        .enumerate()
        .map(|(i, v)| parse_entry("warn", i, v).map(|e| e.reason))
        .collect::<Result<Vec<_>, _>>()?;
    let mut denies = Vec::new();
    for (i, v) in output.deny.iter().enumerate() {
        let e = parse_entry("deny", i, v)?;
        if is_warn(v) {
            warnings.push(e.reason);
        } else {
            denies.push(e);
        }
    }
    let mut approvals = Vec::new();
    for (i, v) in output.require_approval.iter().enumerate() {
        let e = parse_entry("require_approval", i, v)?;
        if is_warn(v) {
            warnings.push(e.reason);
        } else {
            approvals.push(e);
        }
    }
    let cost_usd = match &output.cost_usd {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if Usd::new(f).is_ok() => Some(f),
            _ => return Err(PolicyFailure::CostOutOfRange { value: n.clone() }),
        },
        Some(other) => return Err(PolicyFailure::CostNotANumber { value: other.clone() }),
    };
    // A broken `redact` keeps all content out of telemetry and says so; it does not deny the
    // action, since what is exported to telemetry does not change what the action may do.
    let broken_redact = |why: &dyn std::fmt::Display| {
        Reason::new(
            RULE_REDACT_ERROR,
            format!("policy `redact` failed, so no arguments or results of this action are exported: {why}"),
        )
    };
    let redact = match output.redact.as_ref().map(|v| paths_from_policy(v.as_ref())) {
        Ok(Ok(paths)) => paths,
        Ok(Err(unusable)) => {
            warnings.push(broken_redact(&unusable));
            vec![REDACT_ALL.to_string()]
        }
        Err(failure) => {
            warnings.push(broken_redact(failure));
            vec![REDACT_ALL.to_string()]
        }
    };

    let max_risk =
        |entries: &[Entry], default: Risk| entries.iter().filter_map(|e| e.risk).max().unwrap_or(default).max(default);
    let mut decision = Decision {
        effect: Effect::Allow,
        reasons: Vec::new(),
        risk: Risk::Low,
        approval: None,
        cost_usd,
        policy_revision: String::new(),
        decided_by: DecidedBy::Policy,
        eval_us: 0,
        retry_after_ms: None,
        warnings,
        redact,
    };
    if !denies.is_empty() {
        decision.effect = Effect::Deny;
        decision.risk = max_risk(&denies, Risk::High);
        decision.reasons = denies.into_iter().map(|e| e.reason).collect();
        // Approval reasons are context for a reader even when a deny wins.
        decision.reasons.extend(approvals.into_iter().map(|e| e.reason));
    } else if !approvals.is_empty() {
        decision.effect = Effect::RequireApproval;
        decision.risk = max_risk(&approvals, Risk::Medium);
        let mut req = ApprovalRequirements::any(1, defaults.ttl_seconds);
        let mut ttl: Option<u64> = None;
        for e in &approvals {
            req.quorum = req.quorum.max(e.quorum.unwrap_or(1));
            req.groups.extend(e.groups.iter().cloned());
            // Each rule keeps its own requirement: a union of groups would let one group
            // approve what another rule reserved for a different group.
            let mut groups = e.groups.clone();
            groups.sort();
            groups.dedup();
            req.rules.push(RuleRequirement { rule: e.reason.rule.clone(), quorum: e.quorum.unwrap_or(1), groups });
            req.mfa |= e.mfa;
            if let Some(t) = e.ttl_seconds {
                ttl = Some(ttl.map_or(t, |cur| cur.min(t)));
            }
        }
        if let Some(t) = ttl {
            req.ttl_seconds = t;
        }
        req.groups.sort();
        req.groups.dedup();
        // The same requirements in any order are the same approval.
        req.rules.sort();
        req.rules.dedup();
        // A rule that names no group can be met by any approver, so any approver may vote.
        if req.rules.iter().any(|r| r.groups.is_empty()) {
            req.groups.clear();
        }
        decision.approval = Some(req);
        decision.reasons = approvals.into_iter().map(|e| e.reason).collect();
    }
    Ok(decision)
}

fn parse_entry(set: &str, index: usize, value: &Value) -> Result<Entry, PolicyFailure> {
    let bad = |problem: EntryProblem| PolicyFailure::Entry { set: set.to_string(), index, problem };
    let mut entry = Entry {
        reason: Reason::new(set, ""),
        risk: None,
        quorum: None,
        groups: Vec::new(),
        mfa: false,
        ttl_seconds: None,
    };
    let obj = match value {
        // conftest-style `deny contains msg if …` with a plain message.
        Value::String(s) => {
            entry.reason.msg = s.clone();
            return Ok(entry);
        }
        Value::Object(obj) => obj,
        other => {
            entry.reason.msg = crate::digest::canonical_json(other);
            return Ok(entry);
        }
    };
    if let Some(rule) = obj.get("rule") {
        entry.reason.rule = as_string(rule).ok_or_else(|| bad(EntryProblem::Rule))?;
    }
    match obj.get("msg").or_else(|| obj.get("message")) {
        Some(msg) => entry.reason.msg = as_string(msg).ok_or_else(|| bad(EntryProblem::Msg))?,
        None => entry.reason.msg = format!("rule {} matched", entry.reason.rule),
    }
    if let Some(risk) = obj.get("risk") {
        let parsed = risk.as_str().and_then(Risk::parse);
        entry.risk = Some(parsed.ok_or_else(|| bad(EntryProblem::Risk(risk.clone())))?);
    }
    if let Some(q) = obj.get("quorum") {
        let n = q.as_u64().filter(|n| *n >= 1 && *n <= 100);
        entry.quorum = Some(n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad(EntryProblem::Quorum(q.clone())))?);
    }
    if let Some(groups) = obj.get("groups") {
        let list = match groups {
            Value::Array(items) => items.iter().map(as_string).collect::<Option<Vec<_>>>(),
            Value::String(s) => Some(vec![s.clone()]),
            _ => None,
        };
        entry.groups = list.ok_or_else(|| bad(EntryProblem::Groups(groups.clone())))?;
    }
    if let Some(mfa) = obj.get("mfa") {
        entry.mfa = mfa.as_bool().ok_or_else(|| bad(EntryProblem::Mfa(mfa.clone())))?;
    }
    if let Some(ttl) = obj.get("ttl_seconds") {
        entry.ttl_seconds = Some(
            ttl.as_u64()
                .filter(|t| (1..=MAX_APPROVAL_TTL_SECONDS).contains(t))
                .ok_or_else(|| bad(EntryProblem::TtlSeconds(ttl.clone())))?,
        );
    }
    Ok(entry)
}

fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Applies the host's tier floor (pipeline step 4): for a `change` agent, an action that policy
/// allowed and that is not read-only still needs one human approval. Policy can't loosen it.
pub fn apply_tier_floor(mut decision: Decision, tier: Tier, read_only: bool, defaults: &ApprovalDefaults) -> Decision {
    if tier == Tier::Change && !read_only && decision.effect == Effect::Allow {
        decision.effect = Effect::RequireApproval;
        decision.risk = decision.risk.max(Risk::Medium);
        decision.decided_by = DecidedBy::Tier;
        decision.approval = Some(ApprovalRequirements::any(1, defaults.ttl_seconds));
        decision.reasons.push(Reason::new(
            RULE_TIER_FLOOR,
            "agents of tier `change` need a human approval for actions that are not read-only",
        ));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn run(deny: Vec<Value>, approve: Vec<Value>) -> Decision {
        combine(
            Ok(PolicyOutput { deny, require_approval: approve, ..Default::default() }),
            &ApprovalDefaults::default(),
            "rev",
            1,
        )
    }

    #[test]
    fn empty_output_allows() {
        let d = run(vec![], vec![]);
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.risk, Risk::Low);
        assert!(d.reasons.is_empty());
    }

    #[test]
    fn any_deny_wins_over_approval() {
        let d = run(vec![json!({"rule": "TF100", "msg": "no"})], vec![json!({"rule": "A1", "msg": "ask"})]);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.reasons[0], Reason::new("TF100", "no"));
        assert!(d.approval.is_none());
    }

    #[test]
    fn strictest_requirements_win() {
        let d = run(
            vec![],
            vec![
                json!({"rule": "A", "msg": "a", "quorum": 2, "groups": ["sre"], "ttl_seconds": 600, "risk": "high"}),
                json!({"rule": "B", "msg": "b", "quorum": 1, "groups": ["security", "sre"], "mfa": true, "ttl_seconds": 900}),
            ],
        );
        assert_eq!(d.effect, Effect::RequireApproval);
        assert_eq!(d.risk, Risk::High);
        assert_eq!(
            d.approval,
            Some(ApprovalRequirements {
                quorum: 2,
                groups: vec!["security".into(), "sre".into()],
                mfa: true,
                ttl_seconds: 600,
                rules: vec![
                    RuleRequirement { rule: "A".into(), quorum: 2, groups: vec!["sre".into()] },
                    RuleRequirement { rule: "B".into(), quorum: 1, groups: vec!["security".into(), "sre".into()] },
                ],
            })
        );
    }

    #[test]
    fn conftest_style_strings_are_messages() {
        let d = run(vec![json!("bucket must be encrypted")], vec![]);
        assert_eq!(d.reasons, vec![Reason::new("deny", "bucket must be encrypted")]);
    }

    #[test]
    fn malformed_entries_fail_closed() {
        let d = run(vec![], vec![json!({"rule": "A", "msg": "a", "quorum": "two"})]);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.reasons[0].rule, RULE_POLICY_ERROR);
        assert!(d.reasons[0].msg.contains("quorum"), "{}", d.reasons[0].msg);
    }

    fn timed_out() -> PolicyFailure {
        PolicyFailure::Evaluation { rule: "data.airlock.deny".into(), message: "execution exceeded time limit".into() }
    }

    #[test]
    fn evaluation_errors_fail_closed() {
        let d = combine(Err(timed_out()), &ApprovalDefaults::default(), "rev", 5);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(
            d.reasons[0].msg,
            "policy failed, so the action is denied: `data.airlock.deny`: execution exceeded time limit"
        );
    }

    #[test]
    fn malformed_output_is_described_exactly() {
        let failure =
            |output: PolicyOutput| interpret(&output, &ApprovalDefaults::default()).err().map(|e| e.to_string());
        let entry = |v: Value| failure(PolicyOutput { require_approval: vec![json!("fine"), v], ..Default::default() });
        let cost = |v: Value| failure(PolicyOutput { cost_usd: Some(v), ..Default::default() });
        let cases = [
            (entry(json!({"rule": 7})), "`require_approval` entry 2: `rule` must be a string"),
            (entry(json!({"message": false})), "`require_approval` entry 2: `msg` must be a string"),
            (
                entry(json!({"risk": "extreme"})),
                "`require_approval` entry 2: `risk` must be one of low, medium, high, critical, got `\"extreme\"`",
            ),
            (
                entry(json!({"quorum": 0})),
                "`require_approval` entry 2: `quorum` must be an integer from 1 to 100, got `0`",
            ),
            (
                entry(json!({"groups": [1]})),
                "`require_approval` entry 2: `groups` must be a list of strings, got `[1]`",
            ),
            (entry(json!({"mfa": "yes"})), "`require_approval` entry 2: `mfa` must be true or false, got `\"yes\"`"),
            (
                entry(json!({"ttl_seconds": -5})),
                "`require_approval` entry 2: `ttl_seconds` must be an integer from 1 to 2592000 (30 days), got `-5`",
            ),
            (
                entry(json!({"ttl_seconds": u64::MAX})),
                "`require_approval` entry 2: `ttl_seconds` must be an integer from 1 to 2592000 (30 days), got `18446744073709551615`",
            ),
            (cost(json!(-1.5)), "`cost_usd` must be a non-negative number, got `-1.5`"),
            (cost(json!("cheap")), "`cost_usd` must be a number, got `\"cheap\"`"),
        ];
        for (got, want) in cases {
            assert_eq!(got.as_deref(), Some(want));
        }
        let stopped = PolicyFailure::Stopped { message: "task 7 panicked".into() };
        assert_eq!(stopped.to_string(), "policy evaluation stopped: task 7 panicked");
        let not_a_set = PolicyFailure::NotASet { rule: "data.airlock.deny".into(), value: json!(3) };
        assert_eq!(not_a_set.to_string(), "`data.airlock.deny` must be a set of objects, got `3`");
    }

    #[test]
    fn bad_cost_fails_closed() {
        let d = combine(
            Ok(PolicyOutput { cost_usd: Some(json!("cheap")), ..Default::default() }),
            &ApprovalDefaults::default(),
            "rev",
            1,
        );
        assert_eq!(d.effect, Effect::Deny);
    }

    #[test]
    fn warn_rules_are_recorded_not_enforced() {
        let d = combine(
            Ok(PolicyOutput {
                deny: vec![json!({"rule": "D1", "msg": "dry run", "enforcement": "warn"})],
                warn: vec![json!({"rule": "W1", "msg": "heads up"})],
                ..Default::default()
            }),
            &ApprovalDefaults::default(),
            "rev",
            1,
        );
        assert_eq!(d.effect, Effect::Allow);
        let rules: Vec<&str> = d.warnings.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(rules, vec!["W1", "D1"]);
    }

    #[test]
    fn redact_paths_are_kept_and_a_broken_redact_hides_everything_without_denying() {
        let with = |redact: Result<Option<Value>, PolicyFailure>| {
            combine(Ok(PolicyOutput { redact, ..Default::default() }), &ApprovalDefaults::default(), "rev", 1)
        };
        let d = with(Ok(Some(json!(["arguments.password", "result.token"]))));
        assert_eq!(d.effect, Effect::Allow);
        assert_eq!(d.redact, vec!["arguments.password", "result.token"]);
        assert!(d.warnings.is_empty());
        assert!(with(Ok(None)).redact.is_empty());
        let conflict =
            PolicyFailure::Evaluation { rule: "data.airlock.redact".into(), message: "conflicting values".into() };
        for broken in [Ok(Some(json!([7]))), Ok(Some(json!(["password"]))), Err(conflict.clone())] {
            let d = with(broken.clone());
            assert_eq!(d.effect, Effect::Allow, "{broken:?}");
            assert_eq!(d.redact, vec![crate::redact::REDACT_ALL], "{broken:?}");
            assert_eq!(d.warnings[0].rule, RULE_REDACT_ERROR, "{broken:?}");
        }
        let prefix = "policy `redact` failed, so no arguments or results of this action are exported: ";
        assert_eq!(
            with(Ok(Some(json!(["password"])))).warnings[0].msg,
            format!(
                "{prefix}redact path `password` must start with `arguments` or `result` (or be `*` for everything)"
            )
        );
        assert_eq!(with(Err(conflict)).warnings[0].msg, format!("{prefix}`data.airlock.redact`: conflicting values"));
        // A failed policy redacts everything too: what it would have redacted is unknown.
        let failed = combine(Err(timed_out()), &ApprovalDefaults::default(), "rev", 1);
        assert_eq!(failed.redact, vec![crate::redact::REDACT_ALL]);
    }

    #[test]
    fn tier_floor_holds_change_agents_writes() {
        let defaults = ApprovalDefaults::default();
        let allow = run(vec![], vec![]);
        let held = apply_tier_floor(allow.clone(), Tier::Change, false, &defaults);
        assert_eq!(held.effect, Effect::RequireApproval);
        assert_eq!(held.reasons.last().map(|r| r.rule.as_str()), Some(RULE_TIER_FLOOR));
        assert_eq!(apply_tier_floor(allow.clone(), Tier::Change, true, &defaults).effect, Effect::Allow);
        assert_eq!(apply_tier_floor(allow, Tier::Autonomous, false, &defaults).effect, Effect::Allow);
        let deny = run(vec![json!("no")], vec![]);
        assert_eq!(apply_tier_floor(deny, Tier::Change, false, &defaults).effect, Effect::Deny);
    }

    fn arb_entry() -> impl Strategy<Value = Value> {
        (
            1u32..5,
            proptest::option::of(prop::sample::select(vec!["sre", "security", "dba"])),
            any::<bool>(),
            1u64..10_000,
        )
            .prop_map(|(q, g, mfa, ttl)| {
                let groups: Vec<&str> = g.into_iter().collect();
                json!({"rule": "R", "msg": "m", "quorum": q, "groups": groups, "mfa": mfa, "ttl_seconds": ttl})
            })
    }

    proptest! {
        #[test]
        fn combination_is_order_independent_and_strictest(mut entries in prop::collection::vec(arb_entry(), 1..6), has_deny in any::<bool>()) {
            let deny = if has_deny { vec![json!("no")] } else { vec![] };
            let a = run(deny.clone(), entries.clone());
            entries.reverse();
            let b = run(deny, entries.clone());
            prop_assert_eq!(a.effect, b.effect);
            prop_assert_eq!(&a.approval, &b.approval);
            if has_deny {
                prop_assert_eq!(a.effect, Effect::Deny);
            } else {
                let req = a.approval.unwrap();
                let max_q = entries.iter().map(|e| e["quorum"].as_u64().unwrap() as u32).max().unwrap();
                let min_ttl = entries.iter().map(|e| e["ttl_seconds"].as_u64().unwrap()).min().unwrap();
                prop_assert_eq!(req.quorum, max_q);
                prop_assert_eq!(req.ttl_seconds, min_ttl);
                prop_assert_eq!(req.mfa, entries.iter().any(|e| e["mfa"] == json!(true)));
            }
        }
    }
}

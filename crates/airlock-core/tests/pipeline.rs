//! Property tests of the decision pipeline: the promises a platform team relies on hold for any
//! combination of guards, policy output, tiers, budgets and votes.

use std::collections::BTreeMap;

use airlock_core::decision::{ApprovalDefaults, PolicyFailure, PolicyOutput, apply_tier_floor};
use airlock_core::guard::{InputCheck, InputViolation, MAX_INPUT_VIOLATIONS, RULE_INPUT_SCHEMA, RULE_KILL_SWITCH};
use airlock_core::limits::{Breaker, GuardLimits, OnBudgetExceeded, TokenBucket};
use airlock_core::pipeline::{self, GuardState, Intake, PolicyAnswer, PolicyFacts, Screening};
use airlock_core::vote;
use airlock_core::{
    Action, ActionStatus, Agent, Approval, ApprovalRequirements, ApprovalStatus, DecidedBy, Decision, Effect, Human,
    KillScope, KillSwitch, Reason, Risk, Role, RuleRequirement, Session, SessionStatus, Tier, Verdict, Vote,
};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).single().unwrap_or_default()
}

fn strictness(e: Effect) -> u8 {
    match e {
        Effect::Allow => 0,
        Effect::RequireApproval => 1,
        Effect::Deny => 2,
    }
}

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Advisory), Just(Tier::Change), Just(Tier::Autonomous)]
}

fn session_status() -> impl Strategy<Value = SessionStatus> {
    prop_oneof![Just(SessionStatus::Active), Just(SessionStatus::Paused), Just(SessionStatus::Closed)]
}

fn agent(tier: Tier) -> Agent {
    Agent { id: "ops-bot".into(), owner: "platform".into(), oncall: None, tier, labels: BTreeMap::new() }
}

fn session(status: SessionStatus, spent: f64, denials: u32) -> Session {
    Session {
        on_behalf_of: Some("alice".into()),
        status,
        actions: 3,
        consecutive_denials: denials,
        spent_usd: spent,
        ..Session::opened("ses_1".into(), "ops-bot".into(), "t".into(), t0())
    }
}

fn action(tool: &str, upstream: Option<&str>) -> Action {
    Action {
        id: "act_1".into(),
        session_id: "ses_1".into(),
        seq: 4,
        agent_id: "ops-bot".into(),
        tool: tool.into(),
        upstream: upstream.map(str::to_string),
        name: tool.into(),
        server: None,
        arguments: json!({"count": 3}),
        annotations: json!({}),
        justification: "why".into(),
        digest: airlock_core::action_digest(tool, &json!({"count": 3})),
        status: ActionStatus::Denied,
        decision: pipeline::guard_deny(Reason::new("x", "x"), "rev", None),
        approval_id: None,
        replica: None,
        result: None,
        idempotency_key: None,
        created_at: t0(),
        updated_at: t0(),
        trace: None,
    }
}

fn kill(scope: KillScope, target: Option<&str>) -> KillSwitch {
    KillSwitch {
        id: "kill_1".into(),
        scope,
        target: target.map(str::to_string),
        reason: "incident".into(),
        engaged_by: "root".into(),
        engaged_at: t0(),
        released_by: None,
        released_at: None,
    }
}

fn input_check() -> impl Strategy<Value = InputCheck> {
    prop_oneof![
        Just(InputCheck::Unchecked),
        Just(InputCheck::Valid),
        (1usize..15).prop_map(|n| InputCheck::Invalid(
            (0..n)
                .map(|i| InputViolation { path: format!("arguments.a{i}"), problem: "value is wrong".into() })
                .collect()
        )),
        Just(InputCheck::Unusable { error: "bad schema".into() }),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop::option::of(1u32..4),
        prop::bool::ANY,
        prop::option::of(prop_oneof![Just("sre"), Just("security")]),
        prop::bool::ANY,
    )
        .prop_map(|(quorum, mfa, group, warn)| {
            let mut e = json!({"rule": "R", "msg": "m", "mfa": mfa});
            if let Some(q) = quorum {
                e["quorum"] = json!(q);
            }
            if let Some(g) = group {
                e["groups"] = json!([g]);
            }
            if warn {
                e["enforcement"] = json!("warn");
            }
            e
        })
}

fn policy_output() -> impl Strategy<Value = Result<PolicyOutput, PolicyFailure>> {
    let ok = (
        prop::collection::vec(entry(), 0..3),
        prop::collection::vec(entry(), 0..3),
        prop::option::of(prop_oneof![
            Just(json!(0.0)),
            Just(json!(2.5)),
            Just(json!(40)),
            Just(json!(-1)),
            Just(json!("x"))
        ]),
    )
        .prop_map(|(deny, require_approval, cost_usd)| {
            Ok(PolicyOutput { deny, require_approval, cost_usd, ..Default::default() })
        });
    let timed_out =
        PolicyFailure::Evaluation { rule: "data.airlock.deny".into(), message: "execution exceeded time limit".into() };
    prop_oneof![4 => ok, 1 => Just(Err(timed_out))]
}

fn facts() -> impl Strategy<Value = PolicyFacts> {
    (
        tier(),
        prop::bool::ANY,
        prop::option::of(0.0f64..20.0),
        prop_oneof![Just(0.0), 1.0f64..50.0],
        prop_oneof![Just(0.0), 1.0f64..50.0],
        prop_oneof![Just(OnBudgetExceeded::Deny), Just(OnBudgetExceeded::RequireApproval)],
        0.0f64..60.0,
        0.0f64..60.0,
    )
        .prop_map(|(tier, read_only, catalog, day, ses, on, spent_day, spent_ses)| PolicyFacts {
            tier,
            read_only,
            catalog_cost_usd: catalog,
            budget_usd_per_day: day,
            budget_usd_per_session: ses,
            on_budget_exceeded: on,
            agent_spent_today_usd: spent_day,
            reserved: Default::default(),
            session_spent_usd: spent_ses,
            default_ttl_seconds: 3600,
            plan: None,
        })
}

fn enforced_denies(out: &Result<PolicyOutput, PolicyFailure>) -> bool {
    match out {
        Err(_) => true,
        Ok(o) => o.deny.iter().any(|d| d.get("enforcement").and_then(Value::as_str) != Some("warn")),
    }
}

proptest! {
    /// A deny from policy (or a policy that failed) stays a deny through the catalog price, the
    /// tier floor and the budgets; and what a budget says only ever tightens.
    #[test]
    fn a_policy_deny_never_becomes_an_allow(output in policy_output(), facts in facts()) {
        let denies = enforced_denies(&output);
        let decision = pipeline::conclude(PolicyAnswer { output, revision: "rev".into(), eval_us: 3 }, &facts);
        if denies {
            prop_assert_eq!(decision.effect, Effect::Deny);
        }
        let settled = pipeline::settle(&session(SessionStatus::Active, 0.0, 0), &decision, &GuardLimits::default(), None, &ApprovalDefaults::default(), t0());
        if decision.effect == Effect::Deny {
            prop_assert_eq!(settled.status, ActionStatus::Denied);
            prop_assert_eq!(settled.spend_usd, 0.0);
        }
    }

    /// Whatever the session, tier, limits and policy would have said: an engaged kill switch
    /// that covers the call denies it before policy runs.
    #[test]
    fn an_engaged_kill_switch_always_denies(
        tier in tier(),
        status in session_status(),
        read_only in prop::bool::ANY,
        allowed in prop::bool::ANY,
        scope in 0u8..4,
        repeats in 1u32..10,
        per_minute in 0u32..3,
        input in input_check(),
    ) {
        let agent = agent(tier);
        let session = session(status, 0.0, 0);
        let action = action("infra__scale", Some("infra"));
        let ks = match scope {
            0 => kill(KillScope::All, None),
            1 => kill(KillScope::Agent, Some("ops-bot")),
            2 => kill(KillScope::Upstream, Some("infra")),
            _ => kill(KillScope::Tool, Some("infra__*")),
        };
        let limits = GuardLimits { actions_per_minute: per_minute, ..GuardLimits::default() };
        let kills = [ks];
        let defaults = ApprovalDefaults::default();
        let intake = Intake {
            agent: &agent, identity: None, limits: &limits, session: &session, action: &action, read_only, tool_allowed: allowed,
            input: &input, catalog_cost_usd: None, kill_switches: &kills, repeats, agent_spent_today_usd: 0.0, reserved: Default::default(),
            defaults: &defaults, policy_revision: "rev", now: t0(),
        };
        let mut bucket = TokenBucket::new(per_minute, 0, t0());
        let mut breaker = Breaker::new("infra__scale");
        let screened = pipeline::screen(&intake, GuardState { bucket: Some(&mut bucket), breaker: Some(&mut breaker) });
        match screened.screening {
            Screening::Decided { decision, .. } => {
                prop_assert_eq!(decision.effect, Effect::Deny);
                prop_assert_eq!(decision.decided_by, DecidedBy::Guard);
                prop_assert_eq!(decision.reasons[0].rule.as_str(), RULE_KILL_SWITCH);
            }
            Screening::Policy { .. } => prop_assert!(false, "policy ran under an engaged kill switch"),
        }
        // A refused call does not spend the agent's rate limit.
        prop_assert_eq!(bucket, TokenBucket::new(per_minute, 0, t0()));
    }

    /// Arguments that miss the tool's input schema, or a schema that can't be used, deny the
    /// call before policy runs, with one `airlock.input_schema` reason per violation (at most
    /// ten), whatever the tier or the limits; a call that passes the schema or has none to
    /// check is left to the later guards and policy.
    #[test]
    fn arguments_that_miss_the_input_schema_never_reach_policy(
        tier in tier(),
        read_only in prop::bool::ANY,
        per_minute in 0u32..3,
        input in input_check(),
    ) {
        let agent = agent(tier);
        let session = session(SessionStatus::Active, 0.0, 0);
        let action = action("infra__scale", Some("infra"));
        let limits = GuardLimits { actions_per_minute: per_minute, ..GuardLimits::default() };
        let defaults = ApprovalDefaults::default();
        let intake = Intake {
            agent: &agent, identity: None, limits: &limits, session: &session, action: &action, read_only, tool_allowed: true,
            input: &input, catalog_cost_usd: None, kill_switches: &[], repeats: 1, agent_spent_today_usd: 0.0, reserved: Default::default(),
            defaults: &defaults, policy_revision: "rev", now: t0(),
        };
        let mut bucket = TokenBucket::new(per_minute, 0, t0());
        let screened = pipeline::screen(&intake, GuardState { bucket: Some(&mut bucket), breaker: None });
        let tier_denies = tier == Tier::Advisory && !read_only;
        match (&input, screened.screening) {
            (_, Screening::Decided { decision, .. }) if tier_denies => {
                prop_assert_eq!(decision.reasons[0].rule.as_str(), airlock_core::guard::RULE_TIER);
            }
            (InputCheck::Invalid(_) | InputCheck::Unusable { .. }, Screening::Decided { decision, pause }) => {
                prop_assert_eq!(decision.effect, Effect::Deny);
                prop_assert_eq!(decision.decided_by, DecidedBy::Guard);
                prop_assert!(pause.is_none());
                let expected = match &input {
                    InputCheck::Invalid(v) => v.len().min(MAX_INPUT_VIOLATIONS),
                    _ => 1,
                };
                prop_assert_eq!(decision.reasons.len(), expected);
                prop_assert!(decision.reasons.iter().all(|r| r.rule == RULE_INPUT_SCHEMA));
                // A refused call does not spend the agent's rate limit.
                prop_assert_eq!(bucket, TokenBucket::new(per_minute, 0, t0()));
            }
            (InputCheck::Invalid(_) | InputCheck::Unusable { .. }, Screening::Policy { .. }) => {
                prop_assert!(false, "policy ran on arguments that miss the schema");
            }
            (_, Screening::Decided { decision, .. }) => {
                prop_assert!(decision.reasons.iter().all(|r| r.rule != RULE_INPUT_SCHEMA));
            }
            (_, Screening::Policy { .. }) => {}
        }
    }

    /// The tier floor never loosens a decision, for any tier and any tool.
    #[test]
    fn the_tier_floor_only_tightens(output in policy_output(), tier in tier(), read_only in prop::bool::ANY) {
        let defaults = ApprovalDefaults::default();
        let before = airlock_core::combine(output, &defaults, "rev", 1);
        let after = apply_tier_floor(before.clone(), tier, read_only, &defaults);
        prop_assert!(strictness(after.effect) >= strictness(before.effect));
        if before.effect == Effect::RequireApproval {
            prop_assert_eq!(&after.approval, &before.approval);
        }
        // And in the whole post-policy pipeline: a `change` or `advisory` agent never gets
        // more than an `autonomous` one.
        let auto = PolicyFacts { tier: Tier::Autonomous, read_only, catalog_cost_usd: None, budget_usd_per_day: 0.0,
            budget_usd_per_session: 0.0, on_budget_exceeded: OnBudgetExceeded::Deny, agent_spent_today_usd: 0.0, reserved: Default::default(),
            session_spent_usd: 0.0, default_ttl_seconds: 3600, plan: None };
        let tiered = PolicyFacts { tier, ..auto.clone() };
        let answer = |d: &Decision| PolicyAnswer { output: Ok(PolicyOutput::default()), revision: d.policy_revision.clone(), eval_us: 0 };
        let a = pipeline::conclude(answer(&before), &auto);
        let b = pipeline::conclude(answer(&before), &tiered);
        prop_assert!(strictness(b.effect) >= strictness(a.effect));
    }

    /// However votes arrive (repeats, the wrong groups, the requester, no role), an approval is
    /// approved only when, for every rule that asked for it, at least that rule's quorum of
    /// distinct eligible humans from that rule's groups approved it.
    #[test]
    fn quorum_is_never_met_by_fewer_distinct_eligible_humans(
        rules in prop::collection::vec((1u32..4, prop::option::of(prop_oneof![Just("sre"), Just("security")])), 1..3),
        humans in prop::collection::vec((prop::bool::ANY, prop::bool::ANY, prop::bool::ANY), 1..6),
        attempts in prop::collection::vec((0usize..6, prop::bool::weighted(0.9)), 0..20),
        allow_requester in prop::bool::ANY,
    ) {
        let people: Vec<Human> = humans.iter().enumerate().map(|(i, (approver, sre, security))| Human {
            id: if i == 0 { "alice".into() } else { format!("h{i}") },
            groups: [(*sre, "sre"), (*security, "security")].iter().filter(|(b, _)| *b).map(|(_, g)| g.to_string()).collect(),
            roles: if *approver { vec![Role::Approve] } else { vec![Role::Admin] },
            has_totp: false,
        }).collect();
        // The requirements as policy's combination builds them: one per rule, plus a summary.
        let mut requirements = ApprovalRequirements::any(1, 60);
        for (i, (quorum, group)) in rules.iter().enumerate() {
            let groups: Vec<String> = group.iter().map(|g| g.to_string()).collect();
            requirements.quorum = requirements.quorum.max(*quorum);
            requirements.groups.extend(groups.clone());
            requirements.rules.push(RuleRequirement { rule: format!("R{i}"), quorum: *quorum, groups });
        }
        requirements.groups.sort();
        requirements.groups.dedup();
        if requirements.rules.iter().any(|r| r.groups.is_empty()) {
            requirements.groups.clear();
        }
        let session = session(SessionStatus::Active, 0.0, 0);
        let mut approval = Approval {
            id: "apr_1".into(), action_id: "act_1".into(), session_id: "ses_1".into(), agent_id: "ops-bot".into(),
            digest: "sha256:x".into(), requirements,
            status: ApprovalStatus::Pending, votes: Vec::new(), created_at: t0(), expires_at: t0(), resolved_at: None,
        };
        let may_approve = |h: &Human| h.has_role(Role::Approve) && (allow_requester || h.id != "alice");
        let counts_for = |h: &Human, r: &RuleRequirement| r.groups.is_empty() || h.groups.iter().any(|g| r.groups.contains(g));
        for (who, approve) in attempts {
            let Some(h) = people.get(who) else { continue };
            let verdict = if approve { Verdict::Approve } else { Verdict::Deny };
            if vote::check_vote(h, &approval, &session, "ok", allow_requester).is_ok() {
                approval.votes.push(Vote { human: h.id.clone(), verdict, comment: "ok".into(), mfa: false, totp_step: None, groups: h.groups.clone(), at: t0() });
            }
            if let Some(status) = vote::resolve(&approval) {
                approval.status = status;
                break;
            }
        }
        if approval.status == ApprovalStatus::Approved {
            for r in &approval.requirements.rules {
                let mut approvers: Vec<&str> = approval.votes.iter()
                    .filter(|v| v.verdict == Verdict::Approve)
                    .filter(|v| people.iter().any(|h| h.id == v.human && may_approve(h) && counts_for(h, r)))
                    .map(|v| v.human.as_str()).collect();
                approvers.sort_unstable();
                approvers.dedup();
                prop_assert!(approvers.len() >= r.quorum as usize, "rule {} approved by {:?}", r.rule, approvers);
            }
        }
        // Every recorded vote came from a human who may vote and counts for some rule.
        for v in &approval.votes {
            prop_assert!(people.iter().any(|h| h.id == v.human && may_approve(h)
                && approval.requirements.rules.iter().any(|r| counts_for(h, r))));
        }
    }
}

#[test]
fn two_rules_need_both_groups_and_one_vote_counts_for_both() {
    // {groups: [security]} and {groups: [sre], quorum: 2}: two SREs are not enough.
    let mut requirements = ApprovalRequirements::any(2, 60);
    requirements.groups = vec!["security".into(), "sre".into()];
    requirements.rules = vec![
        RuleRequirement { rule: "SEC1".into(), quorum: 1, groups: vec!["security".into()] },
        RuleRequirement { rule: "SC2".into(), quorum: 2, groups: vec!["sre".into()] },
    ];
    let mut approval = Approval {
        id: "apr_1".into(),
        action_id: "act_1".into(),
        session_id: "ses_1".into(),
        agent_id: "ops-bot".into(),
        digest: "sha256:x".into(),
        requirements,
        status: ApprovalStatus::Pending,
        votes: Vec::new(),
        created_at: t0(),
        expires_at: t0(),
        resolved_at: None,
    };
    let vote = |id: &str, groups: &[&str]| Vote {
        human: id.into(),
        verdict: Verdict::Approve,
        comment: "ok".into(),
        mfa: false,
        totp_step: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        at: t0(),
    };
    approval.votes = vec![vote("bob", &["sre"]), vote("dan", &["sre"])];
    assert_eq!(vote::resolve(&approval), None, "two SREs approved without security");
    approval.votes.push(vote("carol", &["security"]));
    assert_eq!(vote::resolve(&approval), Some(ApprovalStatus::Approved));
    // One human in both groups counts for both rules.
    approval.votes = vec![vote("bob", &["sre"]), vote("erin", &["sre", "security"])];
    assert_eq!(vote::resolve(&approval), Some(ApprovalStatus::Approved));
    assert_eq!(approval.requirements.describe(), "1 approval from `security` (SEC1) and 2 approvals from `sre` (SC2)");
}

#[test]
fn a_guard_deny_keeps_its_reason_and_redacts_everything() {
    let d = pipeline::guard_deny(Reason::new("airlock.rate_limit", "slow down"), "rev", Some(1500));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.risk, Risk::High);
    assert_eq!(d.retry_after_ms, Some(1500));
    assert_eq!(d.redact, vec!["*".to_string()]);
}

#[test]
fn facts_from_an_old_recorded_input_refuse_an_unknown_tier() {
    let input = json!({"agent": {"tier": "superuser"}, "action": {"annotations": {}}, "session": {"spent_usd": 1.0}});
    let err = PolicyFacts::from_recorded_input(&input, 60).unwrap_err();
    assert_eq!(err.to_string(), "the recorded input names an unknown tier `superuser`");
    let err = PolicyFacts::from_recorded_input(&json!({"agent": {}}), 60).unwrap_err();
    assert_eq!(err.to_string(), "the recorded input has no `agent.tier`");
    let input = json!({"agent": {"tier": "change"}, "action": {"annotations": {"readOnlyHint": true}}, "session": {"spent_usd": 1.0}});
    let facts = PolicyFacts::from_recorded_input(&input, 60).unwrap();
    assert_eq!((facts.tier, facts.read_only, facts.session_spent_usd), (Tier::Change, true, 1.0));
}

#[test]
fn a_decided_cost_wins_and_a_reported_one_counts_only_without_it() {
    use airlock_core::pipeline::action_cost;
    assert_eq!(action_cost(Some(1.0), Some(5.0)), 1.0);
    assert_eq!(action_cost(Some(0.0), Some(5.0)), 0.0);
    assert_eq!(action_cost(None, Some(0.25)), 0.25);
    assert_eq!(action_cost(None, Some(-3.0)), 0.0);
    assert_eq!(action_cost(None, None), 0.0);
    assert_eq!(action_cost(Some(-2.0), Some(5.0)), 0.0, "a price is never negative spend");
}

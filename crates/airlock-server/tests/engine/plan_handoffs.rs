//! Hand-offs on the engine's clock: a planner assigns a step to executor agents; the first
//! executor's lease expires (the clock is moved, not waited for), a second executor claims the
//! step, and the first one's late call with the old fencing token is refused; the step runs once.

use airlock_server::engine::{ActionRequest, Error, LeaseRef, PlanProposal, ResultReport};
use serde_json::json;

use super::start;

const POLICY: &str = r#"
package airlock
import rego.v1
require_approval contains {"rule": "PLAN1", "msg": "plans need an SRE", "groups": ["sre"]} if input.kind == "plan.propose"
"#;

const CONFIG: &str = r#"
[server]
data_dir = "data"
[policy]
dir = "."
[guards]
actions_per_minute = 0
[[agents]]
id = "planner"
token = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
owner = "platform"
tier = "autonomous"
[[agents]]
id = "exec-a"
token = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
owner = "platform"
tier = "autonomous"
[[agents]]
id = "exec-b"
token = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
owner = "platform"
tier = "autonomous"
[[agents]]
id = "exec-c"
token = "sha256:6666666666666666666666666666666666666666666666666666666666666666"
owner = "platform"
tier = "autonomous"
tools = ["pki.*"]
[[agents]]
id = "intruder"
token = "sha256:5555555555555555555555555555555555555555555555555555555555555555"
owner = "platform"
tier = "autonomous"
[[humans]]
id = "alice"
token = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
groups = ["sre"]
roles = ["approve"]
"#;

fn call(tool: &str, args: serde_json::Value, lease: Option<(&str, &str, u64)>) -> ActionRequest {
    ActionRequest {
        tool: tool.into(),
        arguments: args,
        justification: "hand-off".into(),
        idempotency_key: None,
        reported_annotations: None,
        traceparent: None,
        mcp_session: None,
        server: None,
        plan_lease: lease.map(|(plan, step, token)| LeaseRef { plan_id: plan.into(), step: step.into(), token }),
    }
}

/// `agent` calls `pki.deploy` with `args` in `session` under lease `token` of step `deploy`.
async fn deploy(
    run: &super::Run,
    agent: &airlock_server::config::AgentConfig,
    session: &str,
    plan: &str,
    args: serde_json::Value,
    token: u64,
) -> airlock_server::engine::ActionView {
    let request = call("pki.deploy", args, Some((plan, "deploy", token)));
    run.engine.submit(agent, session, request).await.expect("decided").view
}

fn rule(view: &airlock_server::engine::ActionView) -> String {
    view.action.decision.reasons.first().map(|r| r.rule.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_stale_fencing_token_is_refused_after_another_executor_took_the_expired_step() {
    let mut run = start("plan hand-offs", CONFIG, POLICY, &Default::default()).await;
    let planner = run.agent(Some("planner"));
    let exec_a = run.agent(Some("exec-a"));
    let exec_b = run.agent(Some("exec-b"));
    let intruder = run.agent(Some("intruder"));
    let plan_session = run.session(Some("plan"), &planner).await;
    let session_a = run.session(Some("a"), &exec_a).await;
    let session_b = run.session(Some("b"), &exec_b).await;

    let proposal: PlanProposal = serde_json::from_value(json!({
        "goal": "rotate the edge certificates",
        "steps": [
            {"id": "issue", "tool": "pki.issue"},
            {"id": "deploy", "tool": "pki.deploy", "assignee": "exec-*", "lease_seconds": 60, "max_attempts": 2,
             "arguments": {"type": "object", "properties": {"fleet": {"const": "edge"}}, "required": ["fleet"]}}
        ]
    }))
    .unwrap();
    let plan = run.engine.propose_plan(&planner, &plan_session, None, proposal).await.unwrap();
    run.approve_plan(&plan, "alice").await;
    let pid = plan.id.as_str();

    // Only an assignee claims; a step nobody is assigned runs in the plan's session unclaimed.
    match run.engine.claim_step(&intruder, &plan_session, pid, "deploy").await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("an agent assigned nothing can't even see the plan: {other:?}"),
    }
    match run.engine.claim_step(&exec_a, &plan_session, pid, "issue").await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("not assigned"), "{msg}"),
        other => panic!("{other:?}"),
    }

    // An assignee whose allowlist leaves out claiming can't claim over any route.
    let exec_c = run.agent(Some("exec-c"));
    match run.engine.claim_step(&exec_c, &plan_session, pid, "deploy").await {
        Err(Error::Forbidden { rule, .. }) => assert_eq!(rule, "airlock.tool_allowlist"),
        other => panic!("{other:?}"),
    }
    // A lease that names no plan is refused before anything is read or locked.
    for (plan_id, step) in [("_system", "deploy"), (plan_session.as_str(), "deploy"), (pid, &"s".repeat(65)[..])] {
        let request = call("pki.deploy", json!({"fleet": "edge"}), Some((plan_id, step, 1)));
        match run.engine.submit(&exec_a, &session_a, request).await {
            Err(Error::Invalid(msg)) => assert!(msg.contains("plan_lease"), "{msg}"),
            other => panic!("{plan_id}: {other:?}"),
        }
    }

    // The first executor claims the step: token 1, for 60 s. Asking again gives the same lease.
    let (first, new) = run.engine.claim_step(&exec_a, &plan_session, pid, "deploy").await.unwrap();
    assert!(new);
    assert_eq!((first.token, first.attempt, first.status), (1, 1, "held"));
    assert_eq!((first.expires_at - first.claimed_at).num_seconds(), 60);
    let (again, new) = run.engine.claim_step(&exec_a, &plan_session, pid, "deploy").await.unwrap();
    assert!(!new);
    assert_eq!(again.token, 1);
    match run.engine.claim_step(&exec_b, &plan_session, pid, "deploy").await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("claimed by agent `exec-a`"), "{msg}"),
        other => panic!("a live lease keeps the step: {other:?}"),
    }

    // The planner can't run the assigned step itself: in its session that call is drift.
    let own =
        run.engine.submit(&planner, &plan_session, call("pki.deploy", json!({"fleet": "edge"}), None)).await.unwrap();
    assert_eq!(rule(&own.view), "airlock.plan_drift", "{:?}", own.view.action.decision);

    // The first executor stalls past its lease; the second takes the step with token 2.
    run.clock.advance(chrono::Duration::seconds(61));
    let (second, new) = run.engine.claim_step(&exec_b, &plan_session, pid, "deploy").await.unwrap();
    assert!(new);
    assert_eq!((second.token, second.attempt, second.agent_id.as_str()), (2, 2, "exec-b"));

    // The first executor wakes up and calls with its old token: refused as stale.
    let late = deploy(&run, &exec_a, &session_a, pid, json!({"fleet": "edge"}), 1).await;
    assert_eq!(late.action.status, airlock_core::ActionStatus::Denied);
    assert_eq!(rule(&late), "airlock.plan_lease");
    assert!(late.action.decision.reasons[0].msg.contains("stale fencing token 1"), "{:?}", late.action.decision);
    // Nor may it borrow the second executor's token: a token is bound to its holder.
    let borrowed = deploy(&run, &exec_a, &session_a, pid, json!({"fleet": "edge"}), 2).await;
    assert_eq!(rule(&borrowed), "airlock.plan_lease");
    assert!(borrowed.action.decision.reasons[0].msg.contains("held by agent `exec-b`"));

    // A call outside the step is refused under the lease, and does not use it up.
    let wrong = deploy(&run, &exec_b, &session_b, pid, json!({"fleet": "core"}), 2).await;
    assert_eq!(rule(&wrong), "airlock.plan_lease");
    assert!(wrong.action.decision.reasons[0].msg.contains("argument schema"));

    // The second executor's call runs on the plan's approval, once.
    let ran = deploy(&run, &exec_b, &session_b, pid, json!({"fleet": "edge"}), 2).await;
    assert_eq!(ran.action.status, airlock_core::ActionStatus::Executing, "{:?}", ran.action.decision);
    assert_eq!(rule(&ran), "airlock.plan");
    let report = ResultReport { ok: true, output: json!({"deployed": 12}), error: None, cost_usd: None };
    run.engine.report_result(&exec_b, &ran.action.id, report).await.unwrap();
    let twice = deploy(&run, &exec_b, &session_b, pid, json!({"fleet": "edge", "again": true}), 2).await;
    assert_eq!(rule(&twice), "airlock.plan_lease");
    assert!(twice.action.decision.reasons[0].msg.contains("already admitted"), "{:?}", twice.action.decision);
    match run.engine.claim_step(&exec_a, &plan_session, pid, "deploy").await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("is done"), "{msg}"),
        other => panic!("a done step is not claimed again: {other:?}"),
    }

    // The plan shows one execution of the step, and what became of each lease.
    let view = run.engine.plan(&plan_session, pid, Some("exec-a")).await.expect("an assignee reads the plan");
    let deploy = view.steps.iter().find(|s| s.step.id == "deploy").unwrap();
    assert_eq!(deploy.status, "done");
    assert_eq!(deploy.actions, vec![ran.action.id.clone()]);
    let leases: Vec<(u64, &str, &str)> =
        deploy.leases.iter().map(|l| (l.token, l.agent_id.as_str(), l.status)).collect();
    assert_eq!(leases, vec![(1, "exec-a", "superseded"), (2, "exec-b", "used")]);
    assert!(run.engine.plan(&plan_session, pid, Some("intruder")).await.is_err());
    // The executor's call is the plan's progress, for the stuck-plan monitor too.
    assert_eq!(view.last_progress_at, Some(ran.action.created_at), "{view:?}");

    // Both are in the plan's own journal stream.
    let kinds: Vec<String> = run.store.events(pid).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["plan.step_claimed", "plan.step_claimed", "plan.step_matched"]);
}

#[tokio::test]
async fn an_expired_step_is_retried_up_to_its_limit_and_a_given_back_lease_frees_it_at_once() {
    let mut run = start("plan hand-off retries", CONFIG, POLICY, &Default::default()).await;
    let planner = run.agent(Some("planner"));
    let exec_a = run.agent(Some("exec-a"));
    let exec_b = run.agent(Some("exec-b"));
    let plan_session = run.session(Some("plan"), &planner).await;
    let proposal: PlanProposal = serde_json::from_value(json!({
        "goal": "drain the old node pool",
        "steps": [{"id": "drain", "tool": "k8s.drain", "assignee": "exec-*", "lease_seconds": 30, "max_attempts": 2}]
    }))
    .unwrap();
    let plan = run.engine.propose_plan(&planner, &plan_session, None, proposal).await.unwrap();
    run.approve_plan(&plan, "alice").await;
    let pid = plan.id.as_str();

    let (first, _) = run.engine.claim_step(&exec_a, &plan_session, pid, "drain").await.unwrap();
    // Given back: another executor may claim at once, without waiting for the expiry.
    let released = run.engine.release_step(&exec_a, &plan_session, pid, "drain", first.token).await.unwrap();
    assert_eq!(released.status, "released");
    match run.engine.release_step(&exec_b, &plan_session, pid, "drain", first.token).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("only the holder gives a lease back: {other:?}"),
    }
    // A stopped agent claims nothing, and does not use up an attempt trying.
    let ks =
        run.engine.engage_kill("root", airlock_core::KillScope::Agent, Some("exec-b".into()), "runaway".into()).await;
    let ks = ks.unwrap();
    match run.engine.claim_step(&exec_b, &plan_session, pid, "drain").await {
        Err(Error::Forbidden { rule, msg }) => assert_eq!(rule, "airlock.kill_switch", "{msg}"),
        other => panic!("{other:?}"),
    }
    run.engine.release_kill("root", &ks.id).await.unwrap();
    let (second, _) = run.engine.claim_step(&exec_b, &plan_session, pid, "drain").await.unwrap();
    assert_eq!((second.token, second.attempt), (2, 2));
    // Expired, and out of attempts: amending the plan is the way to try again.
    run.clock.advance(chrono::Duration::seconds(30));
    match run.engine.claim_step(&exec_a, &plan_session, pid, "drain").await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("max_attempts"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let view = run.engine.plan(&plan_session, pid, None).await.unwrap();
    let statuses: Vec<&str> = view.steps[0].leases.iter().map(|l| l.status).collect();
    assert_eq!(statuses, ["superseded", "expired"]);
}

#[tokio::test]
async fn failures_of_handed_off_steps_pause_the_plans_session() {
    let mut run = start("plan hand-off cascade", CONFIG, POLICY, &Default::default()).await;
    let planner = run.agent(Some("planner"));
    let exec_a = run.agent(Some("exec-a"));
    let plan_session = run.session(Some("plan"), &planner).await;
    let session_a = run.session(Some("a"), &exec_a).await;
    let proposal: PlanProposal = serde_json::from_value(json!({
        "goal": "patch three regions",
        "cascade_failures": 2,
        "steps": [
            {"id": "eu", "tool": "os.patch", "assignee": "exec-a", "arguments": {"properties": {"region": {"const": "eu"}}}},
            {"id": "us", "tool": "os.patch", "assignee": "exec-a", "arguments": {"properties": {"region": {"const": "us"}}}},
            {"id": "ap", "tool": "os.patch", "assignee": "exec-a", "arguments": {"properties": {"region": {"const": "ap"}}}}
        ]
    }))
    .unwrap();
    let plan = run.engine.propose_plan(&planner, &plan_session, None, proposal).await.unwrap();
    run.approve_plan(&plan, "alice").await;
    let pid = plan.id.as_str();

    for (n, region) in ["eu", "us"].into_iter().enumerate() {
        let (lease, _) = run.engine.claim_step(&exec_a, &plan_session, pid, region).await.unwrap();
        let request = call("os.patch", json!({"region": region}), Some((pid, region, lease.token)));
        let ran = run.engine.submit(&exec_a, &session_a, request).await.unwrap().view;
        assert_eq!(rule(&ran), "airlock.plan", "{:?}", ran.action.decision);
        let failed =
            ResultReport { ok: false, output: json!(null), error: Some("kernel panic".into()), cost_usd: None };
        run.engine.report_result(&exec_a, &ran.action.id, failed).await.unwrap();
        let planner_view = run.engine.session(&plan_session, None).await.unwrap();
        let paused = planner_view.status == airlock_core::SessionStatus::Paused;
        assert_eq!(paused, n == 1, "after {} failed steps: {planner_view:?}", n + 1);
    }
    // The plan's session is paused, with why; its executors can't go on until a human resumes it.
    let kinds: Vec<String> = run.store.events(&plan_session).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"plan.cascade".to_string()), "{kinds:?}");
    match run.engine.claim_step(&exec_a, &plan_session, pid, "ap").await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("paused"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

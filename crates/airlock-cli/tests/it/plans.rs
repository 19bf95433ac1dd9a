//! Plans: an agent declares a goal and steps, humans approve the plan once, and the session's
//! calls are held to it (docs/plans.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// Plans need two SREs; changes need one SRE, call by call or through a plan; production is
/// approved call by call even inside a plan.
const PLAN_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN1", "msg": "plans need two SREs", "groups": ["sre"], "quorum": 2} if {
    input.kind == "plan.propose"
}

require_approval contains {"rule": "CH1", "msg": "changes need an SRE", "groups": ["sre"]} if {
    input.kind == "tool.call"
    not endswith(input.action.tool, ".list")
}

require_approval contains {"rule": "PROD1", "msg": "production is approved call by call", "groups": ["sre"], "each_call": true} if {
    input.action.arguments.env == "production"
}
"#;

fn three_steps() -> Value {
    json!({
        "goal": "migrate the orders database to schema 42",
        "budget_usd": 100,
        "steps": [
            {"id": "backup", "tool": "db.backup", "description": "back up orders",
             "arguments": {"type": "object", "properties": {"db": {"const": "orders"}}, "required": ["db"]}},
            {"id": "migrate", "tool": "db.migrate",
             "arguments": {"type": "object", "properties": {"version": {"type": "integer", "maximum": 42}}, "required": ["version"]}},
            {"id": "deploy", "tool": "deploy.*",
             "arguments": {"type": "object", "properties": {"env": {"enum": ["staging", "production"]}}, "required": ["env"]}}
        ]
    })
}

/// Proposes `plan` in `session` and has alice and bob approve it; returns the plan's id.
async fn approved_plan(al: &Airlock, session: &str, plan: Value) -> String {
    let r = al.post(&format!("/v1/sessions/{session}/plans"), BOT, plan).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "pending", "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let approval = r.body["versions"][0]["approval_id"].as_str().unwrap().to_string();
    approve_twice(al, &approval).await;
    id
}

async fn approve_twice(al: &Airlock, approval: &str) {
    let first =
        al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "plan reads well"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["approval"]["status"], "pending", "one SRE is not a quorum of two");
    let second = al.post(&format!("/v1/approvals/{approval}/approve"), BOB, json!({"comment": "agreed"})).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["approval"]["status"], "approved", "{}", second.body);
    assert_eq!(second.body["status"], "succeeded", "the proposal is adopted: {}", second.body);
}

async fn report_ok(al: &Airlock, action: &Value) {
    let id = action["id"].as_str().unwrap();
    let r = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

fn first_rule(action: &Value) -> &str {
    action["decision"]["reasons"][0]["rule"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_plan_approved_once_carries_its_steps_and_a_call_outside_it_is_held_as_drift() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;

    // Without a plan, each change needs its own approval.
    let before = al.act(BOT, &session, "db.backup", json!({"db": "users"})).await;
    assert_eq!(before.status, StatusCode::ACCEPTED, "{}", before.body);

    // The agent can't approve its own plan, and another agent can't see it.
    let r = al.post(&format!("/v1/sessions/{session}/plans"), BOT, three_steps()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let plan = r.body["id"].as_str().unwrap().to_string();
    let approval = r.body["versions"][0]["approval_id"].as_str().unwrap().to_string();
    let own = al.post(&format!("/v1/approvals/{approval}/approve"), BOT, json!({"comment": "mine"})).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    let other = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), CHANGE_BOT).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.body);
    // The approval queue shows the plan, step by step.
    let queued = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(queued.body["action"]["tool"], "airlock__propose_plan", "{}", queued.body);
    assert_eq!(queued.body["action"]["arguments"]["plan"]["steps"][1]["id"], "migrate");
    // While the plan waits, it covers nothing.
    let early = al.act(BOT, &session, "db.migrate", json!({"version": 41})).await;
    assert_eq!(early.status, StatusCode::ACCEPTED, "{}", early.body);
    assert_ne!(first_rule(&early.body), "airlock.plan_drift");
    approve_twice(&al, &approval).await;

    // The plan survives a restart.
    al.stop();
    let al = fx.start();
    let shown = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), BOT).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["status"], "approved");
    assert_eq!(shown.body["in_force"], 1);
    assert_eq!(shown.body["versions"][0]["approved_by"], json!(["alice", "bob"]));

    // An argument outside a step's schema is not smuggled through it: it is drift.
    let smuggled = al.act(BOT, &session, "db.migrate", json!({"version": 43})).await;
    assert_eq!(smuggled.status, StatusCode::ACCEPTED, "{}", smuggled.body);
    assert_eq!(first_rule(&smuggled.body), "airlock.plan_drift", "{}", smuggled.body);

    // The three calls of the plan run without another approval.
    for (tool, args, step) in [
        ("db.backup", json!({"db": "orders"}), "backup"),
        ("db.migrate", json!({"version": 42}), "migrate"),
        ("deploy.app", json!({"env": "staging"}), "deploy"),
    ] {
        let r = al.act(BOT, &session, tool, args).await;
        assert_eq!(r.status, StatusCode::OK, "{tool}: {}", r.body);
        assert_eq!(r.body["status"], "executing", "{tool}: {}", r.body);
        assert_eq!(first_rule(&r.body), "airlock.plan", "{tool}: {}", r.body);
        let msg = r.body["decision"]["reasons"][0]["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("step `{step}`")) && msg.contains("alice, bob"), "{msg}");
        report_ok(&al, &r.body).await;
    }
    let done = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), ALICE).await;
    let statuses: Vec<&str> =
        done.body["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["done", "done", "done"], "{}", done.body);

    // A fourth call outside the plan is held as drift, and the timeline says so.
    let fourth = al.act(BOT, &session, "db.vacuum", json!({"db": "orders"})).await;
    assert_eq!(fourth.status, StatusCode::ACCEPTED, "{}", fourth.body);
    assert_eq!(fourth.body["status"], "pending_approval");
    assert_eq!(first_rule(&fourth.body), "airlock.plan_drift", "{}", fourth.body);
    let timeline = al.get(&format!("/v1/sessions/{session}/timeline"), ALICE).await;
    let entries = timeline.body["timeline"].as_array().unwrap();
    let drift = entries
        .iter()
        .find(|e| e["kind"] == "plan.drift" && e["action_id"] == fourth.body["id"])
        .unwrap_or_else(|| panic!("no drift entry: {}", timeline.body));
    assert!(drift["summary"].as_str().unwrap().contains("drift: db.vacuum"), "{drift}");
    assert_eq!(entries.iter().filter(|e| e["kind"] == "plan.step_matched").count(), 3);
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "plan.approved" && e["summary"].as_str().unwrap().contains("approved by alice, bob"))
    );

    // Another session of the same agent is not covered by this session's plan.
    let other_session = al.session(BOT).await;
    let elsewhere = al.act(BOT, &other_session, "deploy.app", json!({"env": "staging"})).await;
    assert_eq!(elsewhere.status, StatusCode::ACCEPTED, "{}", elsewhere.body);
    assert_ne!(first_rule(&elsewhere.body), "airlock.plan");

    // Drift is counted.
    let metrics = scrape(&al).await;
    assert!(sample(&metrics, "airlock_plan_drift_total") >= 2.0, "{metrics}");
}

#[tokio::test]
async fn a_production_step_still_needs_its_own_approval_inside_an_approved_plan() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    approved_plan(&al, &session, three_steps()).await;

    let prod = al.act(BOT, &session, "deploy.app", json!({"env": "production"})).await;
    assert_eq!(prod.status, StatusCode::ACCEPTED, "{}", prod.body);
    assert_eq!(prod.body["status"], "pending_approval");
    // Only the production rule is left: the plan met the rest.
    assert_eq!(
        prod.body["approval"]["requirements"]["rules"],
        json!([{"rule": "PROD1", "quorum": 1, "groups": ["sre"]}])
    );
    let rules: Vec<&str> =
        prod.body["decision"]["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"PROD1") && rules.contains(&"airlock.plan"), "{rules:?}");
    let approval = prod.body["approval"]["id"].as_str().unwrap();
    let voted =
        al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "prod window open"})).await;
    assert_eq!(voted.body["status"], "approved", "{}", voted.body);
}

#[tokio::test]
async fn an_amendment_shows_its_difference_and_its_new_step_runs_once_approved() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let one_step = json!({"goal": "back up orders", "steps": [{"id": "backup", "tool": "db.backup"}]});
    let plan = approved_plan(&al, &session, one_step).await;
    let r = al.act(BOT, &session, "db.backup", json!({"db": "orders"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    report_ok(&al, &r.body).await;

    let amended = json!({"goal": "back up and vacuum orders", "steps": [
        {"id": "backup", "tool": "db.backup"},
        {"id": "vacuum", "tool": "db.vacuum", "arguments": {"type": "object", "properties": {"db": {"const": "orders"}}}}
    ]});
    let r = al.post(&format!("/v1/sessions/{session}/plans/{plan}/amend"), BOT, amended).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["in_force"], 1);
    assert_eq!(r.body["pending"], 2);
    assert_eq!(r.body["diff"]["added"][0]["id"], "vacuum", "{}", r.body);
    assert_eq!(r.body["diff"]["unchanged"], json!(["backup"]));
    assert_eq!(r.body["diff"]["goal_changed"], true);
    let (code, out, err) = run(&["plans", "show", &session, &plan, "--server", &al.url], &[("AIRLOCK_TOKEN", ALICE)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pending version 2 changes:") && out.contains("+ step vacuum db.vacuum"), "{out}");
    // A second amendment while one waits is refused.
    let again = al
        .post(
            &format!("/v1/sessions/{session}/plans/{plan}/amend"),
            BOT,
            json!({"goal": "x", "steps": [{"tool": "a"}]}),
        )
        .await;
    again.assert_problem(StatusCode::CONFLICT, "still waiting for approval");
    // Until the amendment is approved, its new step is drift.
    let early = al.act(BOT, &session, "db.vacuum", json!({"db": "orders"})).await;
    assert_eq!(first_rule(&early.body), "airlock.plan_drift", "{}", early.body);

    let approval = r.body["versions"][1]["approval_id"].as_str().unwrap().to_string();
    approve_twice(&al, &approval).await;
    let vacuum = al.act(BOT, &session, "db.vacuum", json!({"db": "orders", "full": true})).await;
    assert_eq!(vacuum.status, StatusCode::OK, "{}", vacuum.body);
    assert_eq!(first_rule(&vacuum.body), "airlock.plan", "{}", vacuum.body);

    // The backup step kept its progress; every version is kept.
    let shown = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), ALICE).await;
    assert_eq!(shown.body["in_force"], 2);
    assert_eq!(shown.body["steps"][0]["status"], "done", "{}", shown.body);
    let versions: Vec<&str> =
        shown.body["versions"].as_array().unwrap().iter().map(|v| v["status"].as_str().unwrap()).collect();
    assert_eq!(versions, ["superseded", "approved"]);
    let events = al.get(&format!("/v1/sessions/{session}/events"), ALICE).await;
    let proposed = events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "plan.proposed").count();
    assert_eq!(proposed, 2);

    // `airlock plans` shows the same to a human at a terminal.
    let alice = [("AIRLOCK_TOKEN", ALICE)];
    let (code, out, err) = run(&["plans", "list", &session, "--server", &al.url], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&plan) && out.contains("approved") && out.contains("back up and vacuum"), "{out}");
    let (code, out, err) = run(&["plans", "show", &session, &plan, "--server", &al.url], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vacuum") && out.contains("superseded") && out.contains("alice, bob"), "{out}");
}

#[tokio::test]
async fn a_bad_plan_is_refused_with_what_and_where() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let url = format!("/v1/sessions/{session}/plans");
    let r = al.post(&url, BOT, json!({"goal": "g", "steps": []})).await;
    r.assert_problem(StatusCode::BAD_REQUEST, "`steps` must hold 1 to 100 steps");
    let r = al.post(&url, BOT, json!({"goal": "g", "steps": [{"tool": "a", "arguments": {"type": 12}}]})).await;
    r.assert_problem(StatusCode::BAD_REQUEST, "`steps[0].arguments` is not a usable JSON Schema");
    let r = al.post(&url, BOT, json!({"goal": "g", "steps": [{"tool": "a", "argumnets": {}}]})).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "argumnets");
    // Humans vote on plans; they don't propose them.
    let r = al.post(&url, ALICE, json!({"goal": "g", "steps": [{"tool": "a"}]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // A session has one plan; changes to it are amendments.
    let first = al.post(&url, BOT, json!({"goal": "g", "steps": [{"tool": "a"}]})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let second = al.post(&url, BOT, json!({"goal": "g2", "steps": [{"tool": "b"}]})).await;
    second.assert_problem(StatusCode::CONFLICT, "already has plan");
    // A malformed id in the path is a problem document too.
    let r = al.get(&format!("/v1/sessions/{session}/plans/%FF"), ALICE).await;
    r.assert_problem(StatusCode::BAD_REQUEST, "invalid path");
    let r = al.get("/v1/sessions/%FF/plans", ALICE).await;
    r.assert_problem(StatusCode::BAD_REQUEST, "invalid path");
}

#[tokio::test]
async fn an_mcp_agent_proposes_and_amends_a_plan_with_the_tool_airlock_offers() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let mcp = crate::raw_mcp::Mcp::new(&al);
    let mcp_session = mcp.initialize(BOT).await;
    let listed = mcp.request(BOT, &mcp_session, 2, "tools/list", json!({})).await.result(2);
    let offered = listed["tools"].as_array().unwrap();
    assert!(offered.iter().any(|t| t["name"] == "airlock__propose_plan"), "{listed}");

    let reply = mcp
        .call(
            BOT,
            &mcp_session,
            3,
            "airlock__propose_plan",
            json!({"goal": "back up orders", "steps": [{"tool": "db.backup"}]}),
        )
        .await;
    let (is_error, text) = reply.text(3);
    assert!(!is_error, "{text}");
    assert!(text.contains("waits for approval"), "{text}");

    // The plan is in the airlock session behind the MCP session, for humans to approve.
    let sessions = al.get("/v1/sessions", BOT).await;
    let session = sessions.body["sessions"][0]["id"].as_str().unwrap().to_string();
    let plans = al.get(&format!("/v1/sessions/{session}/plans"), ALICE).await;
    let plan = plans.body["plans"][0].clone();
    assert_eq!(plan["goal"], "back up orders", "{}", plans.body);
    approve_twice(&al, plan["versions"][0]["approval_id"].as_str().unwrap()).await;

    let plan_id = plan["id"].as_str().unwrap();
    let amend = json!({"plan_id": plan_id, "goal": "back up and vacuum", "steps": [{"tool": "db.backup"}, {"tool": "db.vacuum"}]});
    let (is_error, text) = mcp.call(BOT, &mcp_session, 4, "airlock__propose_plan", amend).await.text(4);
    assert!(!is_error, "{text}");
    assert!(text.contains("version 2 waits for approval"), "{text}");
    // A malformed plan is an error result that says what is wrong.
    let bad = json!({"goal": "g", "steps": [{"tool": "a", "argumnets": {}}]});
    let (is_error, text) = mcp.call(BOT, &mcp_session, 5, "airlock__propose_plan", bad).await.text(5);
    assert!(is_error && text.contains("argumnets"), "{text}");
}

#[tokio::test]
async fn the_review_ui_shows_a_pending_plan_step_by_step_for_a_vote() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let r = al.post(&format!("/v1/sessions/{session}/plans"), BOT, three_steps()).await;
    let approval = r.body["versions"][0]["approval_id"].as_str().unwrap().to_string();
    let (status, cookie) = sign_in(&al, ALICE).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = client()
        .get(format!("{}/ui/approvals/{approval}", al.url))
        .header("cookie", cookie.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for shown in
        ["airlock__propose_plan", "migrate the orders database", "db.backup", "db.migrate", "deploy.*", "PLAN1"]
    {
        assert!(html.contains(shown), "`{shown}` is not on the review page");
    }
}

/// Cascading errors: calls for three distinct steps of an approved plan fail; the third failure
/// pauses the session (webhook, timeline), later calls are denied until a human resumes it, and
/// the plan keeps what ran against each step.
#[tokio::test]
async fn failures_on_three_steps_of_a_plan_pause_its_session() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(PLAN_POLICY, &notify_toml(&url));
    let al = fx.start();
    let session = al.session(BOT).await;
    let plan = approved_plan(
        &al,
        &session,
        json!({"goal": "restart the web tier", "steps": [
            {"id": "drain", "tool": "lb.drain"}, {"id": "restart", "tool": "svc.restart"}, {"id": "undrain", "tool": "lb.undrain"}
        ]}),
    )
    .await;

    let mut ran = Vec::new();
    for (i, tool) in ["lb.drain", "svc.restart", "lb.undrain"].into_iter().enumerate() {
        let r = al.act(BOT, &session, tool, json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{tool}: {}", r.body);
        assert_eq!(first_rule(&r.body), "airlock.plan", "{tool}: {}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        let failed =
            al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": false, "error": "connection reset"})).await;
        assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
        let s = al.get(&format!("/v1/sessions/{session}"), ALICE).await;
        let want = if i < 2 { "active" } else { "paused" };
        assert_eq!(s.body["status"], want, "after {tool} failed: {}", s.body);
        ran.push(id);
    }

    let (_, paused) = received.wait_for("session.paused", std::time::Duration::from_secs(10)).await;
    assert_eq!(paused["rule"], "airlock.plan_cascade", "{paused}");
    assert!(paused["reason"].as_str().unwrap().contains("3 steps of plan"), "{paused}");

    // Calls wait for a human: denied while the session is paused.
    let held = al.act(BOT, &session, "lb.drain", json!({"again": true})).await;
    assert_eq!(held.status, StatusCode::FORBIDDEN, "{}", held.body);

    let timeline = al.get(&format!("/v1/sessions/{session}/timeline"), ALICE).await;
    let entries = timeline.body["timeline"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["kind"] == "plan.cascade"
            && e["summary"].as_str().unwrap().contains(&format!("plan {plan} paused the session"))),
        "{}",
        timeline.body
    );

    // The plan records what ran against each step, and is not finished.
    let shown = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), ALICE).await;
    assert_eq!(shown.body["finished"], false, "{}", shown.body);
    assert!(shown.body["last_progress_at"].is_string(), "{}", shown.body);
    for (step, id) in shown.body["steps"].as_array().unwrap().iter().zip(&ran) {
        assert_eq!(step["status"], "pending", "a failed call leaves its step open: {step}");
        assert_eq!(step["actions"], json!([id]), "{step}");
    }

    // A human resumes it; the retried step runs on the plan's approval.
    let resumed = al.post(&format!("/v1/sessions/{session}/resume"), ALICE, json!({"comment": "upstream fixed"})).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    let retry = al.act(BOT, &session, "lb.drain", json!({})).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(first_rule(&retry.body), "airlock.plan", "{}", retry.body);
}

//! Hand-offs against the real binary: a planner's plan assigns steps to executor agents, who
//! claim them and call under the lease in their own sessions, over HTTP and over MCP
//! (docs/plans.md#hand-offs). The engine-level test (`airlock-server`'s
//! `plan_handoffs`) moves the clock over the same expiry; the binary has no clock to move, so
//! here the lease is one second long and the second executor claims as soon as it has ended.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const EXEC_A: &str = "exec-a-token";
const EXEC_B: &str = "exec-b-token";

/// Plans need two SREs; every change needs an SRE, call by call or through a plan.
const POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN1", "msg": "plans need two SREs", "groups": ["sre"], "quorum": 2} if {
    input.kind == "plan.propose"
}

require_approval contains {"rule": "CH1", "msg": "changes need an SRE", "groups": ["sre"]} if {
    input.kind == "tool.call"
    not endswith(input.action.tool, ".list")
}
"#;

fn executors(extra: &str) -> String {
    format!(
        "\n[[agents]]\nid = \"exec-a\"\ntoken = \"{}\"\nowner = \"platform\"\ntier = \"autonomous\"\n\n\
         [[agents]]\nid = \"exec-b\"\ntoken = \"{}\"\nowner = \"platform\"\ntier = \"autonomous\"\n{extra}",
        hash(EXEC_A),
        hash(EXEC_B)
    )
}

/// The planner proposes `plan` in `session`, alice and bob approve it; its id.
async fn approved_plan(al: &Airlock, session: &str, plan: Value) -> String {
    let r = al.post(&format!("/v1/sessions/{session}/plans"), BOT, plan).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let approval = r.body["versions"][0]["approval_id"].as_str().unwrap();
    for human in [ALICE, BOB] {
        let v =
            al.post(&format!("/v1/approvals/{approval}/approve"), human, json!({"comment": "plan reads well"})).await;
        assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    }
    r.body["id"].as_str().unwrap().to_string()
}

/// An executor's call in its own session under `lease`.
async fn leased(al: &Airlock, token: &str, session: &str, tool: &str, arguments: Value, lease: &Value) -> Reply {
    let body = json!({"tool": tool, "arguments": arguments, "plan_lease": lease});
    al.post(&format!("/v1/sessions/{session}/actions"), token, body).await
}

/// A page of the review UI as alice sees it.
async fn ui_page(al: &Airlock, path: &str) -> String {
    let (_, cookie) = sign_in(al, ALICE).await;
    let page = client().get(format!("{}{path}", al.url)).header("cookie", cookie.expect("a UI session")).send().await;
    let page = page.unwrap();
    assert_eq!(page.status(), 200, "{path}");
    page.text().await.unwrap()
}

fn rule(action: &Value) -> &str {
    action["decision"]["reasons"][0]["rule"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_call_with_a_stale_fencing_token_is_denied_and_the_step_runs_once() {
    let fx = Fixture::with_extra(POLICY, &executors(""));
    let al = fx.start();
    let planner = al.session(BOT).await;
    let pid = approved_plan(
        &al,
        &planner,
        json!({
            "goal": "roll the new edge certificates out",
            "steps": [
                {"id": "issue", "tool": "pki.issue", "description": "the planner issues them"},
                {"id": "deploy", "tool": "pki.deploy", "assignee": "exec-*", "lease_seconds": 1,
                 "description": "an executor deploys them",
                 "arguments": {"type": "object", "properties": {"fleet": {"const": "edge"}}, "required": ["fleet"]}}
            ]
        }),
    )
    .await;
    let claim = format!("/v1/sessions/{planner}/plans/{pid}/steps/deploy/claim");

    // The planner hands the step over: it can't claim it, and its own call for it is drift.
    al.post(&claim, BOT, json!({})).await.assert_problem(StatusCode::FORBIDDEN, "assigned to `exec-*`");
    let own = al.act(BOT, &planner, "pki.deploy", json!({"fleet": "edge"})).await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{}", own.body);
    assert_eq!(rule(&own.body), "airlock.plan_drift", "{}", own.body);

    // The first executor claims it and reads the plan it was handed.
    let first = al.post(&claim, EXEC_A, json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!((first.body["token"].as_u64(), first.body["status"].as_str()), (Some(1), Some("held")));
    let seen = al.get(&format!("/v1/sessions/{planner}/plans/{pid}"), EXEC_A).await;
    assert_eq!(seen.status, StatusCode::OK, "an assignee reads the plan: {}", seen.body);
    assert_eq!(seen.body["steps"][1]["leases"][0]["agent_id"], "exec-a");
    al.post(&claim, EXEC_B, json!({})).await.assert_problem(StatusCode::CONFLICT, "claimed by agent `exec-a`");

    // It stalls; once its lease has run out the second executor takes the step, token 2.
    let second = poll(
        Duration::from_secs(10),
        || al.post(&claim, EXEC_B, json!({})),
        |r: &Reply| r.status == StatusCode::CREATED,
    )
    .await;
    assert_eq!((second.body["token"].as_u64(), second.body["attempt"].as_u64()), (Some(2), Some(2)), "{}", second.body);

    // The first executor wakes up and calls with its old token, in its own session: denied.
    let session_a = al.session(EXEC_A).await;
    let late = leased(
        &al,
        EXEC_A,
        &session_a,
        "pki.deploy",
        json!({"fleet": "edge"}),
        &json!({"plan_id": pid, "step": "deploy", "token": 1}),
    )
    .await;
    assert_eq!(late.status, StatusCode::FORBIDDEN, "{}", late.body);
    assert_eq!(rule(&late.body), "airlock.plan_lease");
    assert!(
        late.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("stale fencing token 1"),
        "{}",
        late.body
    );

    // The second executor's call runs on the plan's approval: no approval of its own.
    let session_b = al.session(EXEC_B).await;
    let lease = json!({"plan_id": pid, "step": "deploy", "token": 2});
    let ran = leased(&al, EXEC_B, &session_b, "pki.deploy", json!({"fleet": "edge"}), &lease).await;
    assert_eq!(ran.status, StatusCode::OK, "{}", ran.body);
    assert_eq!((ran.body["status"].as_str(), rule(&ran.body)), (Some("executing"), "airlock.plan"), "{}", ran.body);
    let id = ran.body["id"].as_str().unwrap();
    let done = al.post(&format!("/v1/actions/{id}/result"), EXEC_B, json!({"ok": true})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    // Once: the same lease admits nothing more, and nobody can claim the step again.
    let again = leased(&al, EXEC_B, &session_b, "pki.deploy", json!({"fleet": "edge", "retry": 1}), &lease).await;
    assert_eq!((again.status, rule(&again.body)), (StatusCode::FORBIDDEN, "airlock.plan_lease"), "{}", again.body);
    al.post(&claim, EXEC_A, json!({})).await.assert_problem(StatusCode::CONFLICT, "is done");

    let view = al.get(&format!("/v1/sessions/{planner}/plans/{pid}"), ALICE).await;
    let deploy = &view.body["steps"][1];
    assert_eq!(deploy["status"], "done", "{}", view.body);
    assert_eq!(deploy["actions"], json!([id]), "exactly one execution of the step: {}", view.body);
    let leases: Vec<(u64, &str)> = deploy["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["token"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(leases, vec![(1, "superseded"), (2, "used")]);
    // The planner's timeline shows the hand-offs in place: both claims, and the call that ran.
    let timeline = al.get(&format!("/v1/sessions/{planner}/timeline"), ALICE).await;
    let summaries: Vec<&str> =
        timeline.body["timeline"].as_array().unwrap().iter().filter_map(|e| e["summary"].as_str()).collect();
    for needle in
        ["exec-a claimed step `deploy`", "exec-b claimed step `deploy`", "pki.deploy by exec-b matched step `deploy`"]
    {
        assert!(summaries.iter().any(|s| s.contains(needle)), "{needle}: {summaries:#?}");
    }
    // So does the plan's page in the review UI, with who held each lease.
    let html = ui_page(&al, &format!("/ui/sessions/{planner}/plans/{pid}")).await;
    assert!(html.contains("claims of this step") && html.contains("exec-b") && html.contains("superseded"), "{html}");
    // Another agent's session stays out of reach of the executors.
    assert_eq!(al.get(&format!("/v1/sessions/{planner}/plans"), EXEC_A).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_speaking_mcp_runs_its_step_under_the_lease_in_meta() {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, RequestMetaObject};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let upstream = format!(
        "\n[[upstreams]]\nname = \"fake\"\ncommand = \"python3\"\nargs = [\"{}\"]\n",
        fake_mcp_server().display()
    );
    let fx = Fixture::with_extra(POLICY, &executors(&upstream));
    let al = fx.start();
    al.wait_for_upstream("fake").await;
    let planner = al.session(BOT).await;
    let pid = approved_plan(
        &al,
        &planner,
        json!({"goal": "announce the maintenance window",
                   "steps": [{"id": "announce", "tool": "fake__echo", "assignee": "exec-a"}]}),
    )
    .await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", al.url)).auth_header(EXEC_A);
    let c = ClientConfig::new(ClientCapabilities::default(), Implementation::new("executor", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP handshake");
    let call = |token: Value| {
        let mut meta = RequestMetaObject::new();
        meta.0.insert("airlock/plan_lease".into(), json!({"plan_id": pid, "step": "announce", "token": token}));
        let mut params = CallToolRequestParams::new("fake__echo");
        params.arguments = json!({"window": "sat 02:00"}).as_object().cloned();
        params.meta = Some(meta);
        params
    };
    let text = |r: &rmcp::model::CallToolResult| serde_json::to_value(&r.content).unwrap().to_string();

    // The executor claims the step with the tool airlock offers, from the hand-over it got.
    let tools = c.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "airlock__claim_step"));
    let mut claim = CallToolRequestParams::new("airlock__claim_step");
    claim.arguments = json!({"session_id": planner, "plan_id": pid, "step": "announce"}).as_object().cloned();
    let lease = c.call_tool(claim).await.expect("tools/call");
    assert_ne!(lease.is_error, Some(true), "{}", text(&lease));
    assert!(text(&lease).contains("lease 1 on step `announce`"), "{}", text(&lease));

    // A token never granted is refused; a malformed lease is an error that says its shape.
    let forged = c.call_tool(call(json!(7))).await.expect("tools/call");
    assert_eq!(forged.is_error, Some(true));
    assert!(text(&forged).contains("no lease with token 7"), "{}", text(&forged));
    let malformed = c.call_tool(call(json!("seven"))).await.expect("tools/call");
    assert_eq!(malformed.is_error, Some(true));
    assert!(text(&malformed).contains("airlock/plan_lease"), "{}", text(&malformed));
    // The granted token runs the step at the upstream, on the plan's approval.
    let ran = c.call_tool(call(json!(1))).await.expect("tools/call");
    assert_ne!(ran.is_error, Some(true), "{}", text(&ran));
    assert_eq!(ran.structured_content, Some(json!({"window": "sat 02:00"})));
    c.cancel().await.unwrap();

    let view = al.get(&format!("/v1/sessions/{planner}/plans/{pid}"), ALICE).await;
    assert_eq!(view.body["steps"][0]["status"], "done", "{}", view.body);
    assert_eq!(view.body["finished"], true);
}

/// Production still asks call by call, inside a plan and under a lease.
const PROD_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN1", "msg": "plans need two SREs", "groups": ["sre"], "quorum": 2} if {
    input.kind == "plan.propose"
}

require_approval contains {"rule": "PROD1", "msg": "production is approved call by call", "groups": ["sre"], "each_call": true} if {
    input.action.arguments.env == "production"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_step_handed_off_still_asks_and_its_approval_shows_the_plan() {
    let fx = Fixture::with_extra(PROD_POLICY, &executors(""));
    let al = fx.start();
    let planner = al.session(BOT).await;
    let pid = approved_plan(
        &al,
        &planner,
        json!({"goal": "ship release 7",
                   "steps": [{"id": "ship", "tool": "deploy.release", "assignee": "exec-a",
                              "arguments": {"type": "object", "properties": {"env": {"const": "production"}}}}]}),
    )
    .await;
    let lease = al.post(&format!("/v1/sessions/{planner}/plans/{pid}/steps/ship/claim"), EXEC_A, json!({})).await;
    assert_eq!(lease.status, StatusCode::CREATED, "{}", lease.body);

    // The plan's approval does not cover an `each_call` rule: the executor's call waits.
    let session_a = al.session(EXEC_A).await;
    let held = leased(
        &al,
        EXEC_A,
        &session_a,
        "deploy.release",
        json!({"env": "production"}),
        &json!({"plan_id": pid, "step": "ship", "token": 1}),
    )
    .await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    assert_eq!(held.body["status"], "pending_approval");
    assert_eq!(rule(&held.body), "PROD1", "{}", held.body);
    // While it waits the step is running: not even its executor can claim it again, and an
    // agent assigned nothing in the plan doesn't see it.
    al.post(&format!("/v1/sessions/{planner}/plans/{pid}/steps/ship/claim"), EXEC_A, json!({}))
        .await
        .assert_problem(StatusCode::CONFLICT, "is running");
    al.post(&format!("/v1/sessions/{planner}/plans/{pid}/steps/ship/claim"), EXEC_B, json!({}))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not found");

    // Its approval page says which plan step it runs, linked to the plan.
    let approval = held.body["approval_id"].as_str().unwrap();
    let html = ui_page(&al, &format!("/ui/approvals/{approval}")).await;
    assert!(html.contains("Plan step"), "{html}");
    assert!(html.contains(&format!(r#"href="/ui/sessions/{planner}/plans/{pid}""#)), "{html}");
    assert!(html.contains("lease 1"), "{html}");

    // Approved, it runs: the step is done, once.
    let r =
        al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "release window open"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = held.body["id"].as_str().unwrap();
    let done = al.post(&format!("/v1/actions/{id}/result"), EXEC_A, json!({"ok": true})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let view = al.get(&format!("/v1/sessions/{planner}/plans/{pid}"), ALICE).await;
    assert_eq!(view.body["steps"][0]["status"], "done", "{}", view.body);
    assert_eq!(view.body["steps"][0]["actions"], json!([id]));
}

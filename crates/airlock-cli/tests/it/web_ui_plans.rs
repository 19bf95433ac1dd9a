//! Plans in the review UI against the real binary: a human approves a plan in a real browser
//! (`tests/browser/plan_approve.mjs`), its first step then runs on that approval, and an
//! amendment's approval page marks the step it adds.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;
use crate::web_ui::{BrowserRun, check_screenshots, repo};

/// Plans need an SRE; so does every call outside a plan.
const PLAN_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN1", "msg": "plans need an SRE", "groups": ["sre"]} if {
    input.kind == "plan.propose"
}

require_approval contains {"rule": "CH1", "msg": "changes need an SRE", "groups": ["sre"]} if {
    input.kind == "tool.call"
}
"#;

fn steps() -> Value {
    json!([
        {"id": "backup", "tool": "db.backup", "description": "back up the orders database", "expected_cost_usd": 1.5,
         "arguments": {"type": "object", "properties": {"db": {"const": "orders"}}, "required": ["db"]}},
        {"id": "migrate", "tool": "db.migrate", "description": "migrate it to schema 42 <script>alert(1)</script>",
         "arguments": {"type": "object", "properties": {"version": {"type": "integer", "maximum": 42}}, "required": ["version"]}},
        {"id": "deploy", "tool": "deploy.*", "description": "deploy the code that needs it", "assignee": "bot"}
    ])
}

/// Runs `plan_approve.mjs` as alice against `al`, for `approval`; returns its summary.
fn approve_in_browser(al: &Airlock, approval: &str) -> Value {
    let shots = repo().join("target/browser-screenshots-plans");
    let driver =
        BrowserRun::start("plan_approve.mjs", &al.url, &shots, &[("HUMAN_TOKEN", ALICE), ("APPROVAL_ID", approval)]);
    let summary = driver.next("approving the plan", Duration::from_secs(120));
    driver.finish(&summary);
    check_screenshots(&summary);
    summary
}

/// GET `path` of the review UI with the `session` cookie; returns the page.
async fn ui_page(al: &Airlock, session: &str, path: &str) -> String {
    let r = client().get(format!("{}{path}", al.url)).header("cookie", session).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_approves_a_plan_in_the_browser_and_its_steps_run_on_that_approval() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let proposed = al
        .post(
            &format!("/v1/sessions/{s}/plans"),
            BOT,
            json!({"goal": "migrate the orders database to schema 42", "budget_usd": 20, "steps": steps()}),
        )
        .await;
    assert_eq!(proposed.status, StatusCode::ACCEPTED, "{}", proposed.body);
    let plan = proposed.body["id"].as_str().unwrap().to_string();
    let approval = proposed.body["versions"][0]["approval_id"].as_str().unwrap().to_string();

    let summary = approve_in_browser(&al, &approval);
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["approval"], approval.as_str(), "{summary}");
    assert_eq!(summary["inbox_tool"], "airlock__propose_plan", "{summary}");
    assert_eq!(summary["goal"], "migrate the orders database to schema 42", "{summary}");
    assert_eq!(summary["steps"], json!(["backup", "migrate", "deploy"]), "{summary}");
    assert_eq!(summary["step_tools"], json!(["db.backup", "db.migrate", "deploy.*"]), "{summary}");
    assert_eq!(summary["schemas"], 2, "the third step takes any arguments: {summary}");
    assert_eq!(summary["raw_json_folded"], true, "{summary}");
    assert_eq!(summary["plan_href"], format!("/ui/sessions/{s}/plans/{plan}").as_str(), "{summary}");
    assert_eq!(summary["status"], "approved", "{summary}");
    assert_eq!(summary["plan_status"], "approved", "{summary}");
    assert_eq!(summary["plan_steps"][0], json!(["backup", "pending"]), "{summary}");
    assert_eq!(summary["mobile_overflow"], false, "{summary}");

    // The API agrees: version 1 is in force, approved by alice in the browser.
    let shown = al.get(&format!("/v1/sessions/{s}/plans/{plan}"), ALICE).await;
    assert_eq!(shown.body["status"], "approved", "{}", shown.body);
    assert_eq!(shown.body["in_force"], 1, "{}", shown.body);
    assert_eq!(shown.body["versions"][0]["approved_by"], json!(["alice"]), "{}", shown.body);

    // A call that matches the first step runs on the plan's approval, without one of its own.
    let backup = al.act(BOT, &s, "db.backup", json!({"db": "orders"})).await;
    assert_eq!(backup.status, StatusCode::OK, "{}", backup.body);
    assert_eq!(backup.body["status"], "executing", "{}", backup.body);
    assert_eq!(backup.body["decision"]["reasons"][0]["rule"], "airlock.plan", "{}", backup.body);
    let id = backup.body["id"].as_str().unwrap();
    let r = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // An amendment that adds a step: its approval page shows the step as added, and the plan's
    // page shows the backup done with its call, and the amendment waiting.
    let mut amended = steps();
    amended.as_array_mut().unwrap().push(json!({"id": "verify", "tool": "db.check", "description": "check the rows"}));
    let r = al
        .post(
            &format!("/v1/sessions/{s}/plans/{plan}/amend"),
            BOT,
            json!({"goal": "migrate the orders database to schema 42", "budget_usd": 20, "steps": amended}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let second = r.body["versions"][1]["approval_id"].as_str().unwrap().to_string();
    let (status, cookie) = sign_in(&al, ALICE).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    let html = ui_page(&al, &cookie, &format!("/ui/approvals/{second}")).await;
    assert!(html.contains("Change from version 1 in force"), "{html}");
    assert!(html.contains(r#"<li class="add" data-step="verify">"#), "{html}");
    assert!(html.contains(r#"<li class="step step-added" data-step="verify">"#), "{html}");
    assert!(!html.contains(r#"class="del""#) && !html.contains(r#"<li class="chg""#), "only a step was added: {html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert"), "{html}");
    let html = ui_page(&al, &cookie, &format!("/ui/sessions/{s}/plans/{plan}")).await;
    assert!(html.contains("Amendment waiting: version 2"), "{html}");
    assert!(html.contains(&format!(r#"href="/ui/approvals/{second}""#)), "{html}");
    assert!(html.contains(id) && html.contains(r#"<span class="badge st-done">done</span>"#), "{html}");
}

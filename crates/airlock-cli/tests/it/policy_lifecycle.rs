//! Policy lifecycle: reload (refused when broken or when its own tests fail), rollback from the
//! journal (kept across restarts), SIGHUP, shadow mode with promote, warn-mode rules, golden fixtures and coverage.

use std::time::Duration;

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn revision(al: &Airlock) -> String {
    al.get("/v1/policy", ADMIN).await.body["active"]["revision"].as_str().unwrap().to_string()
}

fn write_policy(fx: &Fixture, text: &str) {
    std::fs::write(fx.dir.path().join("policies/main.rego"), text).unwrap();
}

const TICKET_FREEZE: &str =
    "\ndeny contains {\"rule\": \"TK1\", \"msg\": \"ticket freeze\"} if input.action.tool == \"ticket.create\"\n";

#[tokio::test]
async fn reload_refuses_a_broken_policy_and_rollback_restores_the_previous_one() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let first = revision(&al).await;

    // Broken: the active revision stays, and decisions go on.
    write_policy(&fx, "package airlock\n\ndeny contains x if {\n");
    al.post("/v1/policy/reload", ADMIN, json!({})).await.assert_problem(StatusCode::BAD_REQUEST, "does not load");
    assert_eq!(revision(&al).await, first);
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);

    // Its own tests fail: refused too.
    write_policy(&fx, &format!("{POLICY}{TICKET_FREEZE}"));
    std::fs::write(
        fx.dir.path().join("policies/main_test.rego"),
        "package airlock\n\ntest_tickets_allowed if {\n  count(deny) == 0 with input as {\"action\": {\"tool\": \"ticket.create\"}}\n}\n",
    )
    .unwrap();
    al.post("/v1/policy/reload", ADMIN, json!({}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "test_tickets_allowed");
    assert_eq!(revision(&al).await, first);

    // Fixed tests: the reload goes through and decisions change.
    std::fs::remove_file(fx.dir.path().join("policies/main_test.rego")).unwrap();
    let r = al.post("/v1/policy/reload", ALICE, json!({})).await;
    r.assert_problem(StatusCode::FORBIDDEN, "admin");
    let r = al.post("/v1/policy/reload", ADMIN, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["changed"], true);
    let second = revision(&al).await;
    assert_ne!(second, first);
    let denied = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(denied.body["decision"]["reasons"][0]["rule"], "TK1");
    assert_eq!(denied.body["decision"]["policy_revision"], second.as_str());

    // Rollback restores the first revision from the journal; the files are untouched.
    let (code, out, err) = run(&["policy", "rollback", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("active: "), "{out}");
    assert_eq!(revision(&al).await, first);
    assert!(std::fs::read_to_string(fx.dir.path().join("policies/main.rego")).unwrap().contains("TK1"));
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 3})).await.status, StatusCode::OK);

    let status = al.get("/v1/policy", ADMIN).await;
    let history: Vec<&str> =
        status.body["history"].as_array().unwrap().iter().map(|h| h["revision"].as_str().unwrap()).collect();
    assert_eq!(history[..2], [first.as_str(), second.as_str()]);
}

/// A rollback used to be lost on restart: start-up activated whatever `[policy] dir` held. Now
/// the revision active when airlock stopped stays, as long as the directory holds what airlock
/// last read from it; files deployed while it was stopped win over it.
#[tokio::test]
async fn a_rollback_survives_a_restart_and_files_deployed_while_stopped_win() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let first = revision(&al).await;
    write_policy(&fx, &format!("{POLICY}{TICKET_FREEZE}"));
    let r = al.post("/v1/policy/reload", ADMIN, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = revision(&al).await;
    let r = al.post("/v1/policy/rollback", ADMIN, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(revision(&al).await, first);

    al.crash();
    let al = fx.start();
    assert_eq!(revision(&al).await, first, "the rollback was lost on restart");
    let s = al.session(BOT).await;
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);

    al.stop();
    write_policy(&fx, &format!("{POLICY}{TICKET_FREEZE}\n# deployed while stopped\n"));
    let al = fx.start();
    let third = revision(&al).await;
    assert!(third != first && third != second, "the deployed files were not activated: {third}");
    let s = al.session(BOT).await;
    let denied = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(denied.body["decision"]["reasons"][0]["rule"], "TK1", "{}", denied.body);
    al.stop();
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let first = revision(&al).await;
    write_policy(&fx, &format!("{POLICY}{TICKET_FREEZE}"));
    let pid = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ps -eo pid,args | grep '[a]irlock serve --config {}' | awk '{{print $1}}'",
            fx.config().display()
        ))
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty());
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let now = poll(Duration::from_secs(20), || revision(&al), |r| *r != first).await;
    assert_ne!(now, first, "SIGHUP did not reload the policy");
}

/// An install whose `candidate/` directory holds the active policy plus a ticket freeze (TK1).
fn with_freeze_candidate() -> Fixture {
    let fx = Fixture::new(POLICY);
    let candidate = fx.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    std::fs::write(candidate.join("main.rego"), format!("{POLICY}{TICKET_FREEZE}")).unwrap();
    fx
}

#[tokio::test]
async fn a_shadow_candidate_records_disagreements_without_changing_outcomes() {
    let fx = with_freeze_candidate();
    let al = fx.start();
    let active = revision(&al).await;
    let (code, _, err) =
        run(&["policy", "shadow", "--dir", "candidate", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{err}");

    let s = al.session(BOT).await;
    let live = al.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(live.status, StatusCode::OK, "shadow mode changed a live outcome: {}", live.body);
    al.act(BOT, &s, "inventory.list", json!({})).await;

    // The candidate runs after the fact, off the decision path: wait for it.
    let shadow = || async { al.get("/v1/policy/shadow", ADMIN).await.body };
    let report = poll(Duration::from_secs(10), shadow, |r| r["evaluated"] == 2).await;
    assert_eq!(report["evaluated"], 2, "{report}");
    assert_eq!(report["disagreements"], 1);
    assert_eq!(report["flips"]["allow -> deny"], 1);
    assert_eq!(report["rules"]["TK1"]["added"], 1);
    assert_eq!(report["recent"][0]["action_id"], live.body["id"]);
    // The report counts a disagreement before its event is journaled: wait for the event too.
    let disagreed =
        |r: &Reply| r.body["events"].as_array().unwrap().iter().any(|e| e["kind"] == "policy.shadow_disagreement");
    let path = format!("/v1/sessions/{s}/events");
    let events = poll(Duration::from_secs(10), || al.get(&path, ALICE), disagreed).await;
    assert!(disagreed(&events), "{}", events.body);
    let (_, out, _) = run(&["policy", "diff", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert!(out.contains("1 disagreements") && out.contains("TK1: +1"), "{out}");

    let promoted = al.post("/v1/policy/promote", ADMIN, json!({})).await;
    assert_eq!(promoted.body["previous"], active.as_str());
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 2})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(al.get("/v1/policy", ADMIN).await.body["candidate"], Value::Null);
}

#[tokio::test]
async fn a_canary_lets_the_candidate_decide_for_a_share_of_sessions() {
    let fx = with_freeze_candidate();
    let al = fx.start();
    let active = revision(&al).await;
    let admin = [("AIRLOCK_TOKEN", ADMIN)];
    let (code, out, err) =
        run(&["policy", "shadow", "--dir", "candidate", "--canary", "50", "--server", &al.url], &admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("decides for 50% of sessions"), "{out}");
    let status = al.get("/v1/policy", ADMIN).await.body;
    assert_eq!(status["candidate"]["canary_percent"], 50, "{status}");
    let candidate_revision = status["candidate"]["revision"].as_str().unwrap().to_string();

    // Half the sessions (by a hash of their id) get the candidate, which freezes tickets; each
    // session keeps its policy for every call.
    let (mut frozen, mut open) = (0, 0);
    for _ in 0..40 {
        let s = al.session(BOT).await;
        let first = al.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
        let second = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
        assert_eq!(first.status, second.status, "a session switched policy: {} / {}", first.body, second.body);
        let revision = first.body["decision"]["policy_revision"].as_str().unwrap().to_string();
        if first.status == StatusCode::FORBIDDEN {
            assert_eq!(revision, candidate_revision);
            assert_eq!(first.body["decision"]["reasons"][0]["rule"], "TK1");
            frozen += 1;
        } else {
            assert_eq!(first.status, StatusCode::OK, "{}", first.body);
            assert_eq!(revision, active);
            open += 1;
        }
    }
    assert!(frozen > 0 && open > 0, "a 50% canary decided {frozen} of 40 sessions");

    // Back to 0 %: every new session is on the active policy again, and the candidate still shadows.
    let (code, out, err) = run(&["policy", "canary", "0", "--server", &al.url], &admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("runs in shadow mode"), "{out}");
    for _ in 0..10 {
        let s = al.session(BOT).await;
        assert_eq!(al.act(BOT, &s, "ticket.create", json!({})).await.status, StatusCode::OK);
    }
    // Both changes are in the journal, the load with the candidate's files: a canary decision's
    // revision can be traced to the rules that made it.
    let (code, out, err) = run(&["audit", "export", "--since", "1h", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let changes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "policy.candidate")
        .collect();
    assert_eq!(changes.len(), 2, "{out}");
    assert_eq!(changes[0]["payload"]["action"], "loaded");
    assert_eq!(changes[0]["payload"]["revision"], candidate_revision.as_str());
    assert_eq!(changes[0]["payload"]["by"], "root");
    assert!(changes[0]["payload"]["sources"].to_string().contains("TK1"), "{}", changes[0]);
    assert_eq!(changes[1]["payload"]["canary_percent"], 0);

    let bad = al.post("/v1/policy/canary", ADMIN, json!({"percent": 101})).await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
    al.delete("/v1/policy/candidate", ADMIN).await;
    let none = al.post("/v1/policy/canary", ADMIN, json!({"percent": 10})).await;
    assert_eq!(none.status, StatusCode::CONFLICT, "{}", none.body);
}

#[tokio::test]
async fn warn_rules_are_recorded_and_not_enforced() {
    let policy = format!(
        "{POLICY}\nwarn contains {{\"rule\": \"W1\", \"msg\": \"big ticket\"}} if input.action.tool == \"ticket.create\"\n\
         deny contains {{\"rule\": \"D9\", \"msg\": \"dry run\", \"enforcement\": \"warn\"}} if input.action.tool == \"ticket.create\"\n"
    );
    let fx = Fixture::new(&policy);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "ticket.create", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let warnings: Vec<&str> =
        r.body["decision"]["warnings"].as_array().unwrap().iter().map(|w| w["rule"].as_str().unwrap()).collect();
    assert_eq!(warnings, vec!["W1", "D9"]);
}

#[test]
fn golden_fixtures_pin_decisions_and_coverage_shows_unreached_lines() {
    let fx = Fixture::new(POLICY);
    let fixtures = fx.dir.path().join("policies/fixtures");
    for (name, input, expected) in [
        ("drop-denied", json!({"action": {"tool": "db.drop"}}), json!({"effect": "deny", "rules": ["DB1"]})),
        (
            "scale-held",
            json!({"action": {"tool": "nodepool.scale", "arguments": {"count": 2}}}),
            json!({"effect": "require_approval", "rules": ["SC1"]}),
        ),
    ] {
        std::fs::create_dir_all(fixtures.join(name)).unwrap();
        std::fs::write(fixtures.join(name).join("input.json"), input.to_string()).unwrap();
        std::fs::write(fixtures.join(name).join("expected.json"), expected.to_string()).unwrap();
    }
    let config = fx.config();
    let (code, out, _) = run(&["test", "-v", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS  fixture drop-denied") && out.contains("2 passed, 0 failed"), "{out}");

    // A rule that changes behaviour breaks its fixture.
    write_policy(&fx, &POLICY.replace("input.action.tool == \"db.drop\"", "input.action.tool == \"db.drop_table\""));
    let (code, out, _) = run(&["test", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  fixture drop-denied") && out.contains("expected deny [\"DB1\"], got allow []"),
        "{out}"
    );

    let (_, out, _) = run(&["test", "--coverage", "--config", config.to_str().unwrap()], &[]);
    assert!(out.contains("coverage") && out.contains("main.rego") && out.contains("not reached: lines"), "{out}");
}

#[tokio::test]
async fn policy_status_and_the_shadow_report_are_for_admins_only() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    for path in ["/v1/policy", "/v1/policy/shadow"] {
        // An approver, a human without roles and an agent are refused, naming the rule.
        for (token, rule) in [(ALICE, "role"), (VIEWER, "role"), (BOT, "human_only")] {
            let r = al.get(path, token).await;
            r.assert_problem(StatusCode::FORBIDDEN, if rule == "role" { "admin" } else { "only humans" });
            assert_eq!(r.body["rule"], rule, "{path}: {}", r.body);
        }
        let r = al.get(path, ADMIN).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    }
    assert!(al.get("/v1/policy", ADMIN).await.body["active"]["revision"].as_str().unwrap().starts_with("sha256:"));
    // The command line says the same.
    let (code, _, err) = run(&["policy", "status", "--server", &al.url], &[("AIRLOCK_TOKEN", ALICE)]);
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    let (code, out, err) = run(&["policy", "status", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sha256:"), "{out}");
}

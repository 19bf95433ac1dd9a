//! The HTTP API against the real binary: allow, deny, approvals and their long-poll, joins,
//! idempotency, time-outs, kill switches, restarts, authentication and bad input.

use std::time::Duration;

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn allowed_action_runs_and_records_its_result() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "ticket.create", json!({"title": "disk full"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "executing");
    assert_eq!(r.body["decision"]["effect"], "allow");
    assert!(r.body["decision"]["policy_revision"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r.body["decision"]["reasons"], json!([]));
    let id = r.body["id"].as_str().unwrap();

    let done = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true, "output": {"ticket": 42}})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["status"], "succeeded");
    assert_eq!(done.body["result"]["output"]["ticket"], 42);
    // A result is taken once.
    let again = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": false})).await;
    again.assert_problem(StatusCode::CONFLICT, "once");

    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["actions"].as_array().unwrap().len(), 1);
    assert_eq!(session.body["actions"][0]["status"], "succeeded");
}

#[tokio::test]
async fn denied_action_carries_the_policy_reason() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "db.drop", json!({"name": "orders"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["status"], "denied");
    assert_eq!(r.body["decision"]["effect"], "deny");
    assert_eq!(r.body["decision"]["reasons"][0], json!({"rule": "DB1", "msg": "dropping databases is forbidden"}));
    assert_eq!(r.body["decision"]["risk"], "high");
    // A denied action takes no result.
    let id = r.body["id"].as_str().unwrap();
    al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true}))
        .await
        .assert_problem(StatusCode::CONFLICT, "denied");
}

#[tokio::test]
async fn approval_releases_a_long_polling_agent() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 12})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "pending_approval");
    assert_eq!(r.body["decision"]["effect"], "require_approval");
    assert_eq!(r.body["decision"]["approval"]["groups"], json!(["sre"]));
    let action = r.body["id"].as_str().unwrap().to_string();
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();

    // Nothing changes without a human: a short poll returns the same state.
    let short = al.get(&format!("/v1/actions/{action}?wait=0.05"), BOT).await;
    assert_eq!(short.body["status"], "pending_approval");

    let pending = al.get("/v1/approvals?status=pending", ALICE).await;
    let ids: Vec<&str> =
        pending.body["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![approval.as_str()]);
    assert_eq!(pending.body["approvals"][0]["action"]["tool"], "nodepool.scale");

    let started = std::time::Instant::now();
    let url = format!("/v1/actions/{action}?wait=20");
    let (poll, vote) = tokio::join!(al.get(&url, BOT), async {
        // The vote comes once the poll is known to be waiting.
        let waiting =
            poll(Duration::from_secs(10), || scrape(&al), |m| sample(m, "airlock_action_waiters") >= 1.0).await;
        assert_eq!(sample(&waiting, "airlock_action_waiters"), 1.0, "{waiting}");
        al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "traffic spike, ok"})).await
    });
    assert_eq!(vote.status, StatusCode::OK, "{}", vote.body);
    assert_eq!(poll.status, StatusCode::OK, "{}", poll.body);
    assert_eq!(poll.body["status"], "approved");
    assert_eq!(poll.body["approval"]["status"], "approved");
    assert_eq!(poll.body["approval"]["votes"][0]["human"], "alice");
    assert!(started.elapsed() < Duration::from_secs(15), "the long-poll was not released by the vote");

    // The agent runs it and reports.
    let done = al.post(&format!("/v1/actions/{action}/result"), BOT, json!({"ok": true})).await;
    assert_eq!(done.body["status"], "succeeded");
}

#[tokio::test]
async fn identical_call_joins_the_pending_action() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let first = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 12})).await;
    // Same call, keys in another order: same digest.
    let second = al
        .post(
            &format!("/v1/sessions/{s}/actions"),
            BOT,
            json!({"arguments": {"count": 12, "pool": "web"}, "tool": "nodepool.scale", "justification": "retry"}),
        )
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(second.body["approval"]["id"], first.body["approval"]["id"]);
    assert_eq!(second.headers.get("airlock-joined").unwrap(), "true");
    let pending = al.get("/v1/approvals?status=pending", ALICE).await;
    assert_eq!(pending.body["approvals"].as_array().unwrap().len(), 1);

    // A different argument is a different action with its own approval.
    let third = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 13})).await;
    assert_ne!(third.body["id"], first.body["id"]);
    assert_eq!(al.get("/v1/approvals?status=pending", ALICE).await.body["approvals"].as_array().unwrap().len(), 2);

    // Another session does not join.
    let other = al.session(BOT).await;
    let fourth = al.act(BOT, &other, "nodepool.scale", json!({"pool": "web", "count": 12})).await;
    assert_ne!(fourth.body["id"], first.body["id"]);

    // Once approved, the identical call joins the approved action (it has not run yet).
    let approval = first.body["approval"]["id"].as_str().unwrap();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    let fifth = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 12})).await;
    assert_eq!(fifth.status, StatusCode::OK);
    assert_eq!(fifth.body["id"], first.body["id"]);
    assert_eq!(fifth.body["status"], "approved");
}

#[tokio::test]
async fn idempotency_key_retry_returns_the_first_outcome() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let body = serde_json::to_vec(&json!({"tool": "ticket.create", "arguments": {"title": "x"}})).unwrap();
    let headers = [("idempotency-key", "req-7"), ("content-type", "application/json")];
    let first = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, body.clone(), &headers).await;
    assert_eq!(first.status, StatusCode::OK);
    let retry = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, body, &headers).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body["id"], first.body["id"]);
    assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["actions"].as_array().unwrap().len(), 1, "the retry ran the pipeline again");

    // The same key for a different call is refused.
    let other = serde_json::to_vec(&json!({"tool": "ticket.create", "arguments": {"title": "y"}})).unwrap();
    al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, other, &headers)
        .await
        .assert_problem(StatusCode::CONFLICT, "Idempotency-Key");

    // A denied first outcome replays as denied.
    let deny = serde_json::to_vec(&json!({"tool": "db.drop", "arguments": {}})).unwrap();
    let h2 = [("idempotency-key", "req-8")];
    let d1 = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, deny.clone(), &h2).await;
    let d2 = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, deny, &h2).await;
    assert_eq!((d1.status, d2.status), (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN));
    assert_eq!(d1.body["id"], d2.body["id"]);

    // A keyed call that joined a waiting action replays that action after it finished, instead
    // of asking (and running) again.
    let scale = json!({"tool": "nodepool.scale", "arguments": {"pool": "gpu", "count": 8}});
    let scale = serde_json::to_vec(&scale).unwrap();
    let opened = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, scale.clone(), &[]).await;
    assert_eq!(opened.status, StatusCode::ACCEPTED);
    let h3 = [("idempotency-key", "req-9")];
    let joined = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, scale.clone(), &h3).await;
    assert_eq!(joined.body["id"], opened.body["id"], "{}", joined.body);
    let approval = opened.body["approval"]["id"].as_str().unwrap();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    let id = opened.body["id"].as_str().unwrap();
    let done = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true})).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    let retry = al.raw_post(&format!("/v1/sessions/{s}/actions"), BOT, scale, &h3).await;
    assert_eq!(retry.body["id"], opened.body["id"], "the keyed retry became a new action: {}", retry.body);
    assert_eq!(retry.body["status"], "succeeded");
    assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");
}

#[tokio::test]
async fn a_policy_that_runs_past_its_time_limit_denies() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "slow", json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.policy_error");
    let msg = r.body["decision"]["reasons"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("time limit"), "{msg}");
}

#[tokio::test]
async fn kill_switch_denies_the_next_request_until_released() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);

    // A pending approval under the switch is cancelled.
    let pending = al.act(BOT, &s, "nodepool.scale", json!({"pool": "a", "count": 3})).await;
    assert_eq!(pending.status, StatusCode::ACCEPTED);

    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "agent", "target": "bot", "reason": "incident 1234"})).await;
    assert_eq!(ks.status, StatusCode::CREATED, "{}", ks.body);
    let ks_id = ks.body["id"].as_str().unwrap().to_string();

    let r = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch");
    assert!(r.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("incident 1234"));
    let cancelled = al.get(&format!("/v1/actions/{}", pending.body["id"].as_str().unwrap()), BOT).await;
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(cancelled.body["approval"]["status"], "cancelled");

    // Another agent is not covered.
    let s2 = al.session(CHANGE_BOT).await;
    assert_eq!(al.act(CHANGE_BOT, &s2, "inventory.list", json!({})).await.status, StatusCode::OK);

    let listed = al.get("/v1/kill", ADMIN).await;
    assert_eq!(listed.body["kill_switches"][0]["id"], ks_id.as_str());
    // Only admins engage or release.
    al.post("/v1/kill", ALICE, json!({"scope": "all", "reason": "x"}))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin");
    al.delete(&format!("/v1/kill/{ks_id}"), ALICE).await.assert_problem(StatusCode::FORBIDDEN, "admin");
    al.post("/v1/kill", ADMIN, json!({"scope": "tool"})).await.assert_problem(StatusCode::BAD_REQUEST, "target");

    assert_eq!(al.delete(&format!("/v1/kill/{ks_id}"), ADMIN).await.status, StatusCode::OK);
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 3})).await.status, StatusCode::OK);
    assert_eq!(al.get("/v1/kill", ADMIN).await.body["kill_switches"], json!([]));
}

#[tokio::test]
async fn restart_keeps_sessions_pending_approvals_and_kill_switches() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let pending = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 60})).await;
    let action = pending.body["id"].as_str().unwrap().to_string();
    let approval = pending.body["approval"]["id"].as_str().unwrap().to_string();
    // One of the two votes the quorum needs, before the restart.
    let v1 = al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "first"})).await;
    assert_eq!(v1.body["approval"]["status"], "pending");
    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "tool", "target": "firewall.*", "reason": "freeze"})).await;
    let ks_id = ks.body["id"].as_str().unwrap().to_string();
    al.crash();

    let al = fx.start();
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.status, StatusCode::OK);
    assert_eq!(session.body["actions"][0]["id"], action.as_str());
    let listed = al.get("/v1/approvals?status=pending", BOB).await;
    assert_eq!(listed.body["approvals"][0]["id"], approval.as_str());
    assert_eq!(listed.body["approvals"][0]["votes"][0]["human"], "alice");
    assert_eq!(al.get("/v1/kill", ADMIN).await.body["kill_switches"][0]["id"], ks_id.as_str());
    let blocked = al.act(BOT, &s, "firewall.close", json!({"port": 1})).await;
    assert_eq!(blocked.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch");

    // The identical call still joins after the restart, and the second vote completes the quorum.
    let joined = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 60})).await;
    assert_eq!(joined.body["id"], action.as_str());
    let v2 = al.post(&format!("/v1/approvals/{approval}/approve"), BOB, json!({"comment": "second"})).await;
    assert_eq!(v2.body["approval"]["status"], "approved", "{}", v2.body);
    assert_eq!(v2.body["status"], "approved");
    al.stop();
}

#[tokio::test]
async fn a_second_server_on_the_same_journal_is_refused() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let err = Airlock::start(&fx.config()).err().expect("a second airlock started on the same journal");
    assert!(err.contains("in use by another airlock process (pid "), "{err}");
    assert!(err.contains("data_dir"), "the error should say how to fix it: {err}");
    // The first one is unaffected, and once it stops the journal opens again with its state.
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);
    al.stop();
    let again = fx.start();
    assert_eq!(again.get(&format!("/v1/sessions/{s}"), BOT).await.body["actions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn closing_a_session_cancels_what_waits_in_it() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let pending = al.act(BOT, &s, "nodepool.scale", json!({"pool": "a", "count": 2})).await;
    let approved = al.act(BOT, &s, "nodepool.scale", json!({"pool": "b", "count": 2})).await;
    let approval = approved.body["approval"]["id"].as_str().unwrap();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    let running = al.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(running.body["status"], "executing");
    let close = format!("/v1/sessions/{s}/close");

    // Only its agent or an admin.
    al.post(&close, ALICE, json!({})).await.assert_problem(StatusCode::FORBIDDEN, "admin");
    al.post(&close, CHANGE_BOT, json!({})).await.assert_problem(StatusCode::NOT_FOUND, &s);
    let closed = al.post(&close, BOT, json!({"reason": "task done"})).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["status"], "closed");
    assert_eq!(closed.body["status_reason"], "task done");

    let action = |r: &Reply| format!("/v1/actions/{}", r.body["id"].as_str().unwrap());
    let p = al.get(&action(&pending), BOT).await;
    assert_eq!(
        (p.body["status"].as_str(), p.body["approval"]["status"].as_str()),
        (Some("cancelled"), Some("cancelled"))
    );
    assert_eq!(al.get(&action(&approved), BOT).await.body["status"], "cancelled");
    assert_eq!(al.get("/v1/approvals?status=pending", ALICE).await.body["approvals"], json!([]));
    // What was already running can still report its outcome; nothing new is accepted.
    let done = al.post(&format!("{}/result", action(&running)), BOT, json!({"ok": true})).await;
    assert_eq!(done.body["status"], "succeeded", "{}", done.body);
    let after = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN);
    assert!(after.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("closed"), "{}", after.body);
    // Closing again changes nothing; the close survives a restart.
    assert_eq!(al.post(&close, BOT, json!({})).await.body["status_reason"], "task done");
    al.stop();
    let al = fx.start();
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["status"], "closed");

    // Admins close from the command line.
    let other = al.session(BOT).await;
    let (code, out, err) =
        run(&["sessions", "close", &other, "-m", "runaway agent", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("closed") && out.contains("runaway agent"), "{out}");
}

#[tokio::test]
async fn approval_rules_are_enforced() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 60})).await;
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["approval"]["requirements"]["quorum"], 2);
    let url = format!("/v1/approvals/{approval}/approve");

    al.post(&url, VIEWER, json!({"comment": "lgtm"})).await.assert_problem(StatusCode::FORBIDDEN, "approve");
    assert_eq!(al.post(&url, VIEWER, json!({"comment": "lgtm"})).await.body["rule"], "role");
    let carol = al.post(&url, CAROL, json!({"comment": "lgtm"})).await;
    carol.assert_problem(StatusCode::FORBIDDEN, "sre");
    assert_eq!(carol.body["rule"], "group");
    al.post(&url, ALICE, json!({"comment": ""})).await.assert_problem(StatusCode::FORBIDDEN, "comment");
    assert_eq!(al.post(&url, ALICE, json!({"comment": "ok"})).await.status, StatusCode::OK);
    let twice = al.post(&url, ALICE, json!({"comment": "ok again"})).await;
    assert_eq!(twice.body["rule"], "vote_once");
    al.post(&url, BOT, json!({"comment": "me too"})).await.assert_problem(StatusCode::FORBIDDEN, "humans");

    // One deny ends it.
    let denied = al.post(&format!("/v1/approvals/{approval}/deny"), BOB, json!({"comment": "not now"})).await;
    assert_eq!(denied.body["approval"]["status"], "denied");
    assert_eq!(denied.body["status"], "denied");
    al.post(&url, BOB, json!({"comment": "changed my mind"})).await.assert_problem(StatusCode::CONFLICT, "denied");

    // Every vote and refusal is in the journal.
    let events = al.get(&format!("/v1/sessions/{s}/events"), ALICE).await;
    let kinds: Vec<&str> =
        events.body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "approval.vote_refused").count(), 5, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "approval.vote_cast").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"approval.resolved"));
}

#[tokio::test]
async fn maker_checker_and_mfa() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let r = al.post("/v1/sessions", BOT, json!({"task": "for alice", "on_behalf_of": "alice"})).await;
    let s = r.body["id"].as_str().unwrap().to_string();
    let a = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 1})).await;
    let url = format!("/v1/approvals/{}/approve", a.body["approval"]["id"].as_str().unwrap());
    let refused = al.post(&url, ALICE, json!({"comment": "mine"})).await;
    assert_eq!(refused.body["rule"], "maker_checker", "{}", refused.body);
    assert_eq!(al.post(&url, BOB, json!({"comment": "checked"})).await.body["status"], "approved");

    let f = al.act(BOT, &s, "firewall.open", json!({"port": 443})).await;
    let url = format!("/v1/approvals/{}/approve", f.body["approval"]["id"].as_str().unwrap());
    let no_code = al.post(&url, CAROL, json!({"comment": "ok"})).await;
    assert_eq!(no_code.body["rule"], "mfa");
    let wrong = al.post(&url, CAROL, json!({"comment": "ok", "totp": "000000"})).await;
    assert_eq!(wrong.body["rule"], "mfa");
    let no_secret = al.post(&url, BOB, json!({"comment": "ok", "totp": "123456"})).await;
    assert_eq!(no_secret.body["rule"], "mfa");
    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let ok = al.post(&url, CAROL, json!({"comment": "ok", "totp": code})).await;
    assert_eq!(ok.body["status"], "approved", "{}", ok.body);

    // The same code can't be used twice.
    let g = al.act(BOT, &s, "firewall.open", json!({"port": 8443})).await;
    let url = format!("/v1/approvals/{}/approve", g.body["approval"]["id"].as_str().unwrap());
    let reused = al.post(&url, CAROL, json!({"comment": "ok", "totp": code})).await;
    assert_eq!(reused.body["rule"], "mfa");
    assert!(reused.body["detail"].as_str().unwrap().contains("already used"), "{}", reused.body);
}

#[tokio::test]
async fn one_totp_code_approves_once_even_in_concurrent_votes() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    // Two sessions, so the two votes don't queue behind one session's lock.
    let mut urls = Vec::new();
    for port in [80, 8080] {
        let s = al.session(BOT).await;
        let f = al.act(BOT, &s, "firewall.open", json!({"port": port})).await;
        urls.push(format!("/v1/approvals/{}/approve", f.body["approval"]["id"].as_str().unwrap()));
    }
    let code = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let body = json!({"comment": "ok", "totp": code});
    let (a, b) = tokio::join!(al.post(&urls[0], CAROL, body.clone()), al.post(&urls[1], CAROL, body.clone()));
    let approved = [&a, &b].iter().filter(|r| r.body["status"] == "approved").count();
    let reused = [&a, &b]
        .iter()
        .filter(|r| r.body["rule"] == "mfa" && r.body["detail"].as_str().is_some_and(|d| d.contains("already used")))
        .count();
    assert_eq!((approved, reused), (1, 1), "{} / {}", a.body, b.body);
}

#[tokio::test]
async fn a_kill_switch_cancels_approved_actions_that_have_not_run() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 6})).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let approval = r.body["approval"]["id"].as_str().unwrap();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(al.get(&format!("/v1/actions/{id}"), BOT).await.body["status"], "approved");

    let ks = al.post("/v1/kill", ADMIN, json!({"scope": "agent", "target": "bot", "reason": "incident 77"})).await;
    assert_eq!(ks.status, StatusCode::CREATED, "{}", ks.body);
    let action = al.get(&format!("/v1/actions/{id}"), BOT).await.body;
    assert_eq!(action["status"], "cancelled", "an approval given before the kill switch still let it run: {action}");
    // Re-submitting the call does not join the old approval: the switch denies it.
    let again = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 6})).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.body);
    assert_eq!(again.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch");
    al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true}))
        .await
        .assert_problem(StatusCode::CONFLICT, "cancelled");
}

#[tokio::test]
async fn tiers_bound_what_agents_may_do() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    // change tier: an allowed write still needs a human.
    let s = al.session(CHANGE_BOT).await;
    let w = al.act(CHANGE_BOT, &s, "ticket.create", json!({})).await;
    assert_eq!(w.status, StatusCode::ACCEPTED, "{}", w.body);
    assert_eq!(w.body["decision"]["reasons"][0]["rule"], "airlock.tier_floor");
    assert_eq!(al.act(CHANGE_BOT, &s, "inventory.list", json!({})).await.status, StatusCode::OK);
    // advisory tier: writes are denied by the host before policy.
    let s = al.session(READER).await;
    let d = al.act(READER, &s, "ticket.create", json!({})).await;
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    assert_eq!(d.body["decision"]["reasons"][0]["rule"], "airlock.tier");
    assert_eq!(d.body["decision"]["decided_by"], "guard");
    assert_eq!(al.act(READER, &s, "inventory.list", json!({})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn authentication_and_roles() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let missing = al.request(reqwest::Method::POST, "/v1/sessions", None, Some(json!({}))).await;
    missing.assert_problem(StatusCode::UNAUTHORIZED, "Authorization");
    assert!(missing.headers.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Bearer"));
    al.post("/v1/sessions", "not-a-token", json!({})).await.assert_problem(StatusCode::UNAUTHORIZED, "not valid");
    al.get("/v1/approvals", BOT).await.assert_problem(StatusCode::FORBIDDEN, "humans");
    al.post("/v1/sessions", ALICE, json!({})).await.assert_problem(StatusCode::FORBIDDEN, "agent");
    // An agent can't see another agent's session.
    let s = al.session(BOT).await;
    al.get(&format!("/v1/sessions/{s}"), CHANGE_BOT).await.assert_problem(StatusCode::NOT_FOUND, "session");
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), VIEWER).await.status, StatusCode::OK);
    let health = al.request(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.body["status"], "ok");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let fx = Fixture::new(POLICY);
    // A small limit, so the oversized body fits the socket buffers and the client always reads
    // the answer instead of racing the server's close.
    let text = std::fs::read_to_string(fx.config()).unwrap();
    std::fs::write(fx.config(), text.replacen("data_dir = \"data\"", "data_dir = \"data\"\nmax_body_bytes = 4096", 1))
        .unwrap();
    let al = fx.start();
    let s = al.session(BOT).await;
    let path = format!("/v1/sessions/{s}/actions");
    al.raw_post(&path, BOT, b"{\"tool\": ".to_vec(), &[("content-type", "application/json")])
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "not valid JSON");
    al.raw_post(&path, BOT, br#"{"tool": 3}"#.to_vec(), &[])
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "`tool`: invalid type");
    al.raw_post(&path, BOT, br#"{"tool": "x", "arguments": [1]}"#.to_vec(), &[])
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "`arguments` must be a JSON object");
    al.raw_post(&path, BOT, br#"{"tool": "x", "argumnts": {}}"#.to_vec(), &[])
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown field `argumnts`");
    let big = format!(r#"{{"tool": "x", "arguments": {{"blob": "{}"}}}}"#, "a".repeat(8 * 1024));
    al.raw_post(&path, BOT, big.into_bytes(), &[])
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "max_body_bytes");
    al.get("/v1/nothing-here", BOT).await.assert_problem(StatusCode::NOT_FOUND, "docs/api.md");
    al.get("/v1/actions/act_missing", BOT).await.assert_problem(StatusCode::NOT_FOUND, "act_missing");
    al.get("/v1/approvals?status=maybe", ALICE).await.assert_problem(StatusCode::BAD_REQUEST, "pending");
    // Nothing was recorded for the refused requests.
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["actions"], json!([]));
    // Query strings are checked too, with the same kind of answer.
    let first = al.act(BOT, &s, "ticket.create", json!({"n": 0})).await;
    let first = first.body["id"].as_str().unwrap().to_string();
    al.get(&format!("/v1/actions/{first}?wait=soon"), BOT).await.assert_problem(StatusCode::BAD_REQUEST, "wait");
    al.get("/v1/approvals?limit=lots", ALICE).await.assert_problem(StatusCode::BAD_REQUEST, "limit");
}

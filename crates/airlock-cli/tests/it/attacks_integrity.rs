//! Attacks on what airlock must keep obeying, against the real binary: a paused session that
//! tries to run what was approved before the pause.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

/// An agent loops, its session is paused, and it re-sends a call a human approved before the
/// pause. The identical call used to join the approved action before any guard ran, handing it
/// back to the agent to run. Now the guards deny it while the session is paused; after a human
/// resumes the session the same call joins the approval again.
#[tokio::test]
async fn a_paused_session_cannot_run_what_was_approved_before_the_pause() {
    let fx = Fixture::with_extra(POLICY, "\n[guards]\nloop_repeats = 2\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    let scale = json!({"pool": "web", "count": 3});
    let held = al.act(BOT, &s, "nodepool.scale", scale.clone()).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let action = held.body["id"].as_str().unwrap().to_string();
    let approval = held.body["approval"]["id"].as_str().unwrap();
    let vote = al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(vote.status, StatusCode::OK, "{}", vote.body);

    // The agent loops; the session is paused.
    al.act(BOT, &s, "inventory.list", json!({"region": "eu"})).await;
    let looped = al.act(BOT, &s, "inventory.list", json!({"region": "eu"})).await;
    assert_eq!(looped.body["decision"]["reasons"][0]["rule"], "airlock.loop", "{}", looped.body);
    assert_eq!(al.get(&format!("/v1/sessions/{s}"), BOT).await.body["status"], "paused");

    let again = al.act(BOT, &s, "nodepool.scale", scale.clone()).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "the approved call was handed back: {}", again.body);
    assert_eq!(again.body["decision"]["reasons"][0]["rule"], "airlock.session_state");
    assert_ne!(again.body["id"], action.as_str());
    assert_eq!(al.get(&format!("/v1/actions/{action}"), BOT).await.body["status"], "approved");

    let resumed = al.post(&format!("/v1/sessions/{s}/resume"), BOB, json!({"comment": "loop understood"})).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    let joined = al.act(BOT, &s, "nodepool.scale", scale).await;
    assert_eq!(joined.body["id"], action.as_str(), "{}", joined.body);
    assert_eq!(joined.body["status"], "approved", "{}", joined.body);
    al.stop();
}

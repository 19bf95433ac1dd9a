//! Attacks on budgets through approvals: calls held for a human used to spend nothing until
//! approved, so ten held calls approved together could spend twice the budget. Now a held call
//! reserves its price, and its approval checks the budget again. Real binary, HTTP API.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;

/// Every `held.call` costs $10 and needs a human.
const HELD: &str = r#"package airlock

import rego.v1

cost_usd := 10 if input.action.tool == "held.call"

require_approval contains {"rule": "HOLD", "msg": "a human looks first", "groups": ["sre"]} if {
    input.action.tool == "held.call"
}
"#;

async fn approve(al: &Airlock, approval: &str) -> serde_json::Value {
    let r = al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test]
async fn held_calls_approved_together_cannot_spend_past_the_budget() {
    let fx = Fixture::with_extra(HELD, "\n[guards]\nbudget_usd_per_session = 50\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for n in 0..10 {
        let r = al.act(BOT, &s, "held.call", json!({"n": n})).await;
        match r.status {
            StatusCode::ACCEPTED => held.push(r.body["approval"]["id"].as_str().unwrap().to_string()),
            StatusCode::FORBIDDEN => {
                assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.budget", "{}", r.body);
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    // Five fit the budget of 50 (their prices are reserved while they wait).
    assert_eq!((held.len(), refused), (5, 5));
    for approval in &held {
        approve(&al, approval).await;
    }
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await.body;
    assert_eq!(session["spent_usd"], 50.0, "{session}");
}

#[tokio::test]
async fn spending_while_a_call_waits_is_counted_when_it_is_approved() {
    let fx = Fixture::with_extra(HELD, "\n[guards]\nbudget_usd_per_session = 25\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    let first = al.act(BOT, &s, "held.call", json!({"n": 1})).await;
    let second = al.act(BOT, &s, "held.call", json!({"n": 2})).await;
    assert_eq!((first.status, second.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    // While they wait, an unpriced call reports a cost of $15.
    let free = al.act(BOT, &s, "ticket.note", json!({"text": "spend"})).await;
    let id = free.body["id"].as_str().unwrap();
    let reported = al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": true, "cost_usd": 15})).await;
    assert_eq!(reported.status, StatusCode::OK, "{}", reported.body);

    let a = approve(&al, first.body["approval"]["id"].as_str().unwrap()).await;
    assert_eq!(a["status"], "approved", "{a}");
    let b = approve(&al, second.body["approval"]["id"].as_str().unwrap()).await;
    assert_eq!(b["status"], "denied", "{b}");
    let why = b["decision"]["reasons"][0].clone();
    assert_eq!(why["rule"], "airlock.budget", "{b}");
    assert!(why["msg"].as_str().unwrap().contains("while it waited"), "{why}");
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await.body;
    assert_eq!(session["spent_usd"], 25.0, "{session}");
}

//! Webhook notifications: signed deliveries to a receiver, and the durable outbox surviving a
//! crash of airlock while the receiver is down.

use std::time::Duration;

use crate::common::*;
use axum::http::HeaderMap;
use serde_json::json;

/// A delivery a receiver following docs/configuration.md accepts.
fn verify_signature(headers: &HeaderMap, raw: &str) {
    let now = chrono::Utc::now().timestamp();
    let verified = verify_webhook(HOOK_SECRET, headers, raw.as_bytes(), now, &mut Default::default());
    assert_eq!(verified, Ok(true), "{headers:?}");
}

#[tokio::test]
async fn approvals_are_announced_to_signed_webhooks() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(POLICY, &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();

    let (headers, body) = received.wait_for("approval.requested", Duration::from_secs(10)).await;
    assert_eq!(headers.get("x-airlock-event").unwrap(), "approval.requested");
    assert!(headers.get("webhook-id").is_some());
    assert_eq!(headers.get("x-airlock-delivery"), headers.get("webhook-id"));
    let raw = received.0.lock().unwrap()[0].1.clone();
    verify_signature(&headers, &raw);
    assert_eq!(body["approval"]["id"], approval.as_str());
    assert_eq!(body["action"]["tool"], "nodepool.scale");
    assert_eq!(body["action"]["arguments"]["count"], 3);
    assert_eq!(body["agent"]["owner"], "platform");
    assert_eq!(body["action"]["decision"]["reasons"][0]["rule"], "SC1");
    assert!(body["links"]["ui"].as_str().unwrap().ends_with(&format!("/ui/approvals/{approval}")));

    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "fine"})).await;
    let (_, resolved) = received.wait_for("approval.resolved", Duration::from_secs(10)).await;
    assert_eq!(resolved["approval"]["status"], "approved");
    assert_eq!(resolved["approval"]["votes"][0]["human"], "alice");
}

#[tokio::test]
async fn an_undelivered_notification_survives_a_crash() {
    // A port with nothing listening yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let fx = Fixture::with_extra(POLICY, &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "db", "count": 2})).await;
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();
    // Let the first delivery attempt fail (the journal's outbox records it), then crash.
    let journal =
        rusqlite::Connection::open_with_flags(fx.journal(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let attempts = || async {
        let row = "SELECT attempts, last_error FROM outbox WHERE event = 'approval.requested' AND delivered_at IS NULL";
        journal.query_row(row, [], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Option<String>>(1)?))).ok()
    };
    let failed = poll(Duration::from_secs(10), attempts, |a| a.as_ref().is_some_and(|(n, _)| *n >= 1)).await;
    let (tries, error) = failed.unwrap_or_else(|| panic!("no undelivered approval.requested in the outbox"));
    assert!(tries >= 1 && error.is_some(), "no failed delivery recorded: {tries} attempts, last error {error:?}");
    drop(journal);
    al.crash();
    // Its next attempt an hour away, as after many failed attempts.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let journal = rusqlite::Connection::open(fx.journal()).unwrap();
    journal.execute("UPDATE outbox SET next_at = ?1 WHERE delivered_at IS NULL", [&later]).unwrap();
    drop(journal);

    // Started again, airlock tries it at once rather than when its backoff says.
    let (_, received, _task) = receiver(port).await;
    let al = fx.start();
    let (headers, body) = received.wait_for("approval.requested", Duration::from_secs(10)).await;
    assert_eq!(body["approval"]["id"], approval.as_str());
    let raw = received.0.lock().unwrap()[0].1.clone();
    verify_signature(&headers, &raw);
    // Delivered once, and recorded as delivered: it is never sent again.
    let journal =
        rusqlite::Connection::open_with_flags(fx.journal(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let delivered = || async {
        let row = "SELECT delivered_at FROM outbox WHERE event = 'approval.requested'";
        journal.query_row(row, [], |r| r.get::<_, Option<String>>(0)).ok().flatten()
    };
    let delivered = poll(Duration::from_secs(10), delivered, Option::is_some).await;
    assert!(delivered.is_some(), "the delivery was not recorded in the outbox");
    let count = received.events().iter().filter(|(_, b)| b["event"] == "approval.requested").count();
    assert_eq!(count, 1);
    drop(al);
}

#[tokio::test]
async fn pauses_and_open_breakers_escalate_to_the_owner() {
    let (url, received, _task) = receiver(0).await;
    let extra = format!(
        "{}\n[guards]\nloop_repeats = 2\nbreaker_failures = 1\nmax_consecutive_failures = 0\n",
        notify_toml(&url)
    );
    let fx = Fixture::with_extra(POLICY, &extra);
    let al = fx.start();
    let s = al.session(BOT).await;
    al.act(BOT, &s, "inventory.list", json!({"x": 1})).await;
    al.act(BOT, &s, "inventory.list", json!({"x": 1})).await;
    let (_, paused) = received.wait_for("session.paused", Duration::from_secs(10)).await;
    assert_eq!(paused["session"]["id"], s.as_str());
    assert_eq!(paused["rule"], "airlock.loop");
    assert_eq!(paused["agent"]["owner"], "platform");
    assert!(paused["links"]["resume"].as_str().unwrap().ends_with(&format!("/v1/sessions/{s}/resume")));

    let s2 = al.session(BOT).await;
    let r = al.act(BOT, &s2, "flaky.op", json!({})).await;
    let id = r.body["id"].as_str().unwrap();
    al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": false, "error": "503"})).await;
    let (_, opened) = received.wait_for("breaker.opened", Duration::from_secs(10)).await;
    assert_eq!(opened["breaker"]["tool"], "flaky.op");
    assert_eq!(opened["breaker"]["state"], "open");

    // The session's timeline tells the story with links.
    let t = al.get(&format!("/v1/sessions/{s}/timeline"), ALICE).await;
    let summaries: Vec<&str> =
        t.body["timeline"].as_array().unwrap().iter().map(|e| e["summary"].as_str().unwrap()).collect();
    assert!(summaries[0].starts_with("session opened by bot"), "{summaries:?}");
    assert!(summaries.iter().any(|x| x.starts_with("#1 inventory.list requested")), "{summaries:?}");
    assert!(summaries.iter().any(|x| x.starts_with("allow by policy")), "{summaries:?}");
    assert!(summaries.iter().any(|x| x.contains("deny by guard") && x.contains("[airlock.loop]")), "{summaries:?}");
    assert!(summaries.iter().any(|x| x.starts_with("session paused by airlock [airlock.loop]")), "{summaries:?}");
    let decided = t.body["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "action.decided").unwrap();
    assert!(decided["links"]["action"].as_str().unwrap().starts_with("/v1/actions/act_"));
}

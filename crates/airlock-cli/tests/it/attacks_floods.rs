//! Attacks on availability through the journal: one agent filling the disk with refused calls,
//! sessions or huge arguments, and what airlock still does when the disk is nearly full. Real
//! binary, real SQLite journal, small configured limits.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn events(al: &Airlock, session: &str) -> Vec<Value> {
    al.get(&format!("/v1/sessions/{session}/events"), ADMIN).await.body["events"].as_array().unwrap().clone()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

/// Thirty calls past a limit of two a minute used to be thirty full journal records. Now the
/// rate limit answers first: one refused call per agent per 10 s is journaled (with how many were
/// left out before it), the rest are counted.
#[tokio::test]
async fn rate_limited_calls_are_counted_not_each_journaled() {
    let fx = Fixture::with_extra(POLICY, "\n[guards]\nactions_per_minute = 2\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    let mut limited = 0;
    for n in 0..30 {
        let r = al.act(BOT, &s, "ticket.note", json!({"n": n, "pad": "x".repeat(2000)})).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(r.headers.contains_key("retry-after"), "{}", r.body);
        }
    }
    assert_eq!(limited, 28);
    let journal = events(&al, &s).await;
    // Two allowed calls and one sampled refusal.
    assert_eq!(count(&journal, "action.requested"), 3, "{journal:?}");
    let metrics = scrape(&al).await;
    assert_eq!(sample(&metrics, "airlock_rate_limited_unjournaled_total"), 27.0, "{metrics}");
}

#[tokio::test]
async fn an_agent_cannot_open_sessions_without_limit() {
    let fx = Fixture::with_extra(POLICY, "\n[guards]\nsessions_per_minute = 3\n");
    let al = fx.start();
    for _ in 0..3 {
        al.session(BOT).await;
    }
    let r = al.post("/v1/sessions", BOT, json!({"task": "one more"})).await;
    r.assert_problem(StatusCode::TOO_MANY_REQUESTS, "sessions_per_minute");
    assert!(r.headers.contains_key("retry-after"));
    // Another agent is not held by the first one's flood.
    let other = al.post("/v1/sessions", CHANGE_BOT, json!({"task": "mine"})).await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
}

#[tokio::test]
async fn a_denied_call_does_not_leave_megabytes_in_the_journal() {
    let fx = Fixture::with_server(POLICY, "max_body_bytes = 4194304", "");
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "db.drop", json!({"name": "orders", "comment": "x".repeat(1_000_000)})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let digest = r.body["digest"].as_str().unwrap().to_string();
    let journal = events(&al, &s).await;
    let requested = journal.iter().find(|e| e["kind"] == "action.requested").unwrap();
    let stored = &requested["payload"]["arguments"];
    assert_eq!(stored["airlock_truncated"], true, "{stored}");
    assert_eq!(stored["digest"], digest);
    assert!(stored["bytes"].as_u64().unwrap() > 1_000_000);
    let decided = journal.iter().find(|e| e["kind"] == "action.decided").unwrap();
    assert_eq!(decided["payload"]["input"]["action"]["arguments"]["airlock_truncated"], true);
    assert!(serde_json::to_string(&journal).unwrap().len() < 64 * 1024, "the journal holds the megabyte");
}

/// With less free disk than the floor (here an impossible floor of 1 PiB), nothing new starts
/// (507), while the safety and read paths keep working.
#[tokio::test]
async fn below_the_disk_floor_new_work_is_refused_and_safety_still_works() {
    let fx = Fixture::with_server(POLICY, "min_free_disk_mb = 1073741824", "");
    let al = fx.start();
    let r = al.post("/v1/sessions", BOT, json!({"task": "new work"})).await;
    r.assert_problem(StatusCode::INSUFFICIENT_STORAGE, "min_free_disk_mb");
    let kill = al.post("/v1/kill", ADMIN, json!({"scope": "all", "reason": "disk nearly full"})).await;
    assert_eq!(kill.status, StatusCode::CREATED, "{}", kill.body);
    assert_eq!(al.get("/healthz", ADMIN).await.status, StatusCode::OK);
    assert_eq!(al.get("/v1/approvals", ALICE).await.status, StatusCode::OK);
    let released = al.delete(&format!("/v1/kill/{}", kill.body["id"].as_str().unwrap()), ADMIN).await;
    assert!(released.status.is_success(), "{}", released.body);
}

//! Attacks on what leaves airlock, each against the real binary: webhook deliveries (replayed,
//! changed, carrying secrets), `/metrics` (series made up by agents, read by anyone) and the
//! review UI (arguments with invisible or direction-changing characters). Each test plays the
//! attacker and checks that the attack fails; docs/security.md says which test shows what.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// The test policy plus a `redact` path, so webhook bodies have something to leave out.
fn policy_with_redact() -> String {
    format!("{POLICY}\nredact contains \"arguments.password\"\n")
}

/// The Python block of docs/configuration.md marked `verify-webhook`.
fn documented_python_verifier() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md")).unwrap();
    let marker = doc.find("<!-- verify-webhook").expect("the verify-webhook marker in docs/configuration.md");
    let rest = &doc[marker..];
    let start = rest.find("```python\n").expect("a python block after the marker") + "```python\n".len();
    let end = rest[start..].find("\n```").expect("the end of the python block");
    rest[start..start + end].to_string()
}

/// Runs the documented verifier on `cases` (headers, body, now) in one receiver process, so ids
/// it accepted are remembered from case to case. Each answer is `true`, `false` or the
/// `Rejected` message.
fn run_documented_verifier(cases: &[(HeaderMap, String, i64)]) -> Vec<Value> {
    let cases: Vec<Value> = cases
        .iter()
        .map(|(h, body, now)| {
            let headers: serde_json::Map<String, Value> =
                h.iter().map(|(k, v)| (k.as_str().to_string(), json!(v.to_str().unwrap_or_default()))).collect();
            json!({"headers": headers, "body": body, "now": now})
        })
        .collect();
    let driver = format!(
        "{}\n\nimport json, sys\nout = []\nfor c in json.load(sys.stdin):\n    try:\n        \
         out.append(verify(sys.argv[1], c['headers'], c['body'].encode(), now=c['now']))\n    except Rejected as e:\n        \
         out.append(str(e))\nprint(json.dumps(out))\n",
        documented_python_verifier()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &driver, HOOK_SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be on PATH");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(Value::Array(cases).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the documented verifier failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A captured delivery can't be used again: replayed at once its id is known, replayed later its
/// timestamp is stale, and neither a fresh timestamp nor a changed body carries a valid
/// signature. Checked with the receiver-side check the docs give, in Rust and by running the
/// docs' own Python snippet. A signature over the body alone (what airlock sent before) passed
/// all of these replays.
#[tokio::test]
async fn a_captured_webhook_delivery_cannot_be_replayed_or_changed() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(POLICY, &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    let (headers, _, raw) = received.wait_for_raw("approval.requested", Duration::from_secs(10)).await;
    drop(al);

    let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() <= 60, "the timestamp is the time of the attempt: {ts} vs {now}");
    assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1,"), "{headers:?}");
    assert!(headers.get("x-airlock-signature-256").is_none(), "the body-only signature is no longer sent");

    // The genuine delivery is accepted once.
    let mut seen = HashMap::new();
    assert_eq!(verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), now, &mut seen), Ok(true));
    // Replayed at once: the id was seen.
    assert_eq!(verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), now + 1, &mut seen), Ok(false));
    // Replayed later, to a receiver that has long forgotten the id: the timestamp is stale.
    let later = ts + WEBHOOK_TOLERANCE_SECS + 1;
    let mut fresh_receiver = HashMap::new();
    assert_eq!(
        verify_webhook(HOOK_SECRET, &headers, raw.as_bytes(), later, &mut fresh_receiver),
        Err(Rejected::StaleTimestamp)
    );
    // Replayed later with the timestamp brought up to date: the signature covers it.
    let mut refreshed = headers.clone();
    refreshed.insert("webhook-timestamp", HeaderValue::from_str(&later.to_string()).unwrap());
    assert_eq!(
        verify_webhook(HOOK_SECRET, &refreshed, raw.as_bytes(), later, &mut fresh_receiver),
        Err(Rejected::BadSignature)
    );
    // With a new id, to get past the receiver's memory: the signature covers it too.
    let mut renamed = headers.clone();
    renamed.insert("webhook-id", HeaderValue::from_static("999999"));
    assert_eq!(
        verify_webhook(HOOK_SECRET, &renamed, raw.as_bytes(), now, &mut HashMap::new()),
        Err(Rejected::BadSignature)
    );
    // With a changed body: the signature covers the body.
    let changed = raw.replace("\"count\":3", "\"count\":300");
    assert_ne!(changed, raw);
    assert_eq!(
        verify_webhook(HOOK_SECRET, &headers, changed.as_bytes(), now, &mut HashMap::new()),
        Err(Rejected::BadSignature)
    );

    // The snippet in the docs says the same: one receiver process sees all of these.
    let answers = run_documented_verifier(&[
        (headers.clone(), raw.clone(), now),
        (headers.clone(), raw.clone(), now + 1),
        (headers.clone(), raw.clone(), later + WEBHOOK_TOLERANCE_SECS + 1),
        (refreshed, raw.clone(), later),
        (renamed, raw.clone(), now),
        (headers, changed, now),
    ]);
    assert_eq!(answers[0], json!(true), "{answers:?}");
    assert_eq!(answers[1], json!(false), "{answers:?}");
    assert!(answers[2].as_str().is_some_and(|m| m.starts_with("stale timestamp")), "{answers:?}");
    for rejected in &answers[3..] {
        assert!(rejected.as_str().is_some_and(|m| m.starts_with("bad signature")), "{answers:?}");
    }
}

/// An argument that policy `redact`s does not reach the webhook receiver, in any event about the
/// action; the other arguments do.
#[tokio::test]
async fn a_redacted_argument_does_not_reach_the_webhook_receiver() {
    let (url, received, _task) = receiver(0).await;
    let fx = Fixture::with_extra(&policy_with_redact(), &notify_toml(&url));
    let al = fx.start();
    let s = al.session(BOT).await;
    let secret = "hunter2-do-not-leak";
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3, "password": secret})).await;
    assert_eq!(r.body["decision"]["redact"], json!(["arguments.password"]), "{}", r.body);
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "fine"})).await;

    let (_, requested, raw_requested) = received.wait_for_raw("approval.requested", Duration::from_secs(10)).await;
    let (_, resolved, raw_resolved) = received.wait_for_raw("approval.resolved", Duration::from_secs(10)).await;
    for (body, raw) in [(&requested, &raw_requested), (&resolved, &raw_resolved)] {
        assert!(!raw.contains(secret), "the redacted value reached the receiver: {raw}");
        assert_eq!(body["action"]["arguments"], json!({"pool": "web", "count": 3, "password": "[REDACTED]"}));
    }
    // Humans who sign in still see what they approve.
    let action = al.get(&format!("/v1/actions/{}", r.body["id"].as_str().unwrap()), ALICE).await;
    assert_eq!(action.body["arguments"]["password"], secret);
}

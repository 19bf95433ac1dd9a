//! `/metrics`: Prometheus text with real histograms, and counters that move with traffic.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn counters_move_with_traffic() {
    // Named exactly, so it keeps its name in the `tool` label (any other tool is `other`).
    let fx = Fixture::with_extra(POLICY, "\n[[tools]]\nname = \"nodepool.scale\"\n");
    let al = fx.start();
    let before = scrape(&al).await;
    let s = al.session(BOT).await;
    for n in 0..3 {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    al.act(BOT, &s, "db.drop", json!({})).await;
    let pending = al.act(BOT, &s, "nodepool.scale", json!({"pool": "a", "count": 2})).await;

    let mid = scrape(&al).await;
    let allow = r#"airlock_decisions_total{effect="allow",rule="none"}"#;
    let deny = r#"airlock_decisions_total{effect="deny",rule="DB1"}"#;
    assert_eq!(sample(&mid, allow) - sample(&before, allow), 3.0, "{mid}");
    assert_eq!(sample(&mid, deny) - sample(&before, deny), 1.0, "{mid}");
    assert_eq!(sample(&mid, "airlock_approvals_pending"), 1.0, "{mid}");
    // Real histograms with buckets.
    assert!(mid.contains("airlock_decision_duration_seconds_bucket{le="), "{mid}");
    assert!(sample(&mid, "airlock_decision_duration_seconds_count") >= 5.0, "{mid}");
    assert!(sample(&mid, "airlock_journal_batch_size_count") >= 1.0, "{mid}");
    assert!(mid.contains("airlock_journal_commit_duration_seconds_bucket"), "{mid}");

    let approval = pending.body["approval"]["id"].as_str().unwrap();
    al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    let id = pending.body["id"].as_str().unwrap();
    al.post(&format!("/v1/actions/{id}/result"), BOT, json!({"ok": false, "error": "boom"})).await;
    let after = scrape(&al).await;
    assert_eq!(sample(&after, "airlock_approvals_pending"), 0.0, "{after}");
    assert!(sample(&after, r#"airlock_approval_wait_seconds_count{status="approved"}"#) >= 1.0, "{after}");
    assert_eq!(sample(&after, r#"airlock_actions_total{tool="nodepool.scale",outcome="failed"}"#), 1.0, "{after}");
    assert_eq!(sample(&after, r#"airlock_spend_usd_total{agent="bot"}"#), 1.5, "{after}");
}

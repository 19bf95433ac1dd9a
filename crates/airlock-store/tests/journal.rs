//! The SQLite journal: durability across reopen, atomic commits, group commit and the hash chain.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_core::{
    Action, ActionResult, ActionStatus, EventKind, KillScope, KillSwitch, Reporter, Session, SessionStatus,
};
use airlock_store::{Commit, Projection, SqliteOptions, SqliteStore, Store};
use chrono::Utc;
use serde_json::json;

fn session(id: &str) -> Session {
    let now = Utc::now();
    Session {
        id: id.into(),
        agent_id: "bot".into(),
        task: "task".into(),
        labels: BTreeMap::new(),
        on_behalf_of: None,
        status: SessionStatus::Active,
        status_reason: None,
        actions: 0,
        failures: 0,
        denials: 0,
        consecutive_failures: 0,
        consecutive_denials: 0,
        spent_usd: 0.0,
        created_at: now,
        updated_at: now,
        trace: None,
    }
}

fn open_session(id: &str) -> Commit {
    let mut c = Commit::default();
    c.event(id, EventKind::SessionOpened, Utc::now(), json!({"id": id})).project(Projection::Session(session(id)));
    c
}

#[tokio::test]
async fn commits_survive_reopen_and_chains_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.commit(open_session("ses_a")).await.unwrap();
        let mut c = Commit::default();
        c.event("ses_a", EventKind::ActionRequested, Utc::now(), json!({"n": 1}));
        store.commit(c).await.unwrap();
        let ks = KillSwitch {
            id: "kill_1".into(),
            scope: KillScope::All,
            target: None,
            reason: "r".into(),
            engaged_by: "alice".into(),
            engaged_at: Utc::now(),
            released_by: None,
            released_at: None,
        };
        let mut c = Commit::default();
        c.event(airlock_store::SYSTEM_STREAM, EventKind::KillEngaged, Utc::now(), json!({"id": "kill_1"}))
            .project(Projection::KillSwitch(ks));
        store.commit(c).await.unwrap();
    }
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(store.session("ses_a").await.unwrap().unwrap().task, "task");
    assert_eq!(store.kill_switches(true).await.unwrap().len(), 1);
    // The chain continues where it stopped.
    let mut c = Commit::default();
    c.event("ses_a", EventKind::ActionRequested, Utc::now(), json!({"n": 2}));
    store.commit(c).await.unwrap();
    let events = store.events("ses_a").await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(events[1].hash, events[2].prev_hash);
    let report = store.verify().await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 4);
    assert_eq!(report.streams, 2);
}

#[tokio::test]
async fn concurrent_commits_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("j.db"), SqliteOptions::default()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.commit(open_session(&format!("ses_{i}"))).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.commits, 200);
    assert!(stats.batches < 200, "no batching happened: {stats:?}");
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_failing_commit_leaves_no_trace_and_does_not_break_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("j.db"), SqliteOptions::default()).unwrap();
    store.commit(open_session("ses_a")).await.unwrap();
    let now = Utc::now();
    let action = |id: &str| airlock_core::Action {
        id: id.into(),
        session_id: "ses_a".into(),
        seq: 1,
        agent_id: "bot".into(),
        tool: "t".into(),
        upstream: None,
        name: "t".into(),
        arguments: json!({}),
        annotations: json!({}),
        justification: String::new(),
        digest: "sha256:x".into(),
        status: airlock_core::ActionStatus::Executing,
        decision: airlock_core::decision::policy_failure("x".into(), "rev", 0),
        approval_id: None,
        result: None,
        idempotency_key: Some("key-1".into()),
        created_at: now,
        updated_at: now,
        trace: None,
    };
    let mut first = Commit::default();
    first
        .event("ses_a", EventKind::ActionRequested, now, json!({"id": "act_1"}))
        .project(Projection::Action(Box::new(action("act_1"))));
    store.commit(first).await.unwrap();
    // Same idempotency key, different action: refused whole, event included.
    let mut dup = Commit::default();
    dup.event("ses_a", EventKind::ActionRequested, now, json!({"id": "act_2"}))
        .project(Projection::Action(Box::new(action("act_2"))));
    let err = store.commit(dup).await.unwrap_err();
    assert!(matches!(err, airlock_store::Error::Conflict(_)), "{err}");
    assert!(store.action("act_2").await.unwrap().is_none());
    assert_eq!(store.events("ses_a").await.unwrap().len(), 2);
    let mut next = Commit::default();
    next.event("ses_a", EventKind::ActionJoined, now, json!({}));
    store.commit(next).await.unwrap();
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    store.commit(open_session("ses_a")).await.unwrap();
    for n in 0..3 {
        let mut c = Commit::default();
        c.event("ses_a", EventKind::ActionRequested, Utc::now(), json!({"n": n}));
        store.commit(c).await.unwrap();
    }
    drop(store);
    assert!(SqliteStore::verify_file(&path).unwrap().ok());

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET payload = replace(payload, '\"n\":1', '\"n\":7') WHERE stream = 'ses_a' AND seq = 3",
        [],
    )
    .unwrap();
    let report = SqliteStore::verify_file(&path).unwrap();
    let problem = report.first_problem.unwrap();
    assert_eq!((problem.stream.as_str(), problem.seq), ("ses_a", 3));
    assert!(problem.problem.contains("altered"), "{}", problem.problem);

    conn.execute("UPDATE events SET payload = replace(payload, '\"n\":7', '\"n\":1') WHERE seq = 3", []).unwrap();
    assert!(SqliteStore::verify_file(&path).unwrap().ok());
    conn.execute("DELETE FROM events WHERE stream = 'ses_a' AND seq = 2", []).unwrap();
    let problem = SqliteStore::verify_file(&path).unwrap().first_problem.unwrap();
    assert_eq!(problem.seq, 2);
    assert!(problem.problem.contains("removed"), "{}", problem.problem);
}

/// Counts the events in the database file alone, as if its WAL were lost: only what a
/// checkpoint has copied back is there.
fn events_in_main_file(path: &std::path::Path) -> i64 {
    let copy = tempfile::tempdir().unwrap();
    let alone = copy.path().join("alone.db");
    std::fs::copy(path, &alone).unwrap();
    let conn = rusqlite::Connection::open(&alone).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap_or(0)
}

#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background_and_a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err().to_string();
    assert!(err.contains("in use by another airlock process"), "{err}");
    // One transaction per commit, enough to pass the checkpoint threshold.
    for i in 0..120 {
        store.commit(open_session(&format!("ses_{i}"))).await.unwrap();
    }
    let mut copied = 0;
    for _ in 0..50 {
        copied = events_in_main_file(&path);
        if copied >= 80 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(copied >= 80, "no checkpoint copied the WAL into the database file ({copied} events there)");
    // Everything is in the file after a clean close, and the lock is released.
    drop(store);
    assert_eq!(events_in_main_file(&path), 120);
    SqliteStore::open(&path, SqliteOptions::default()).unwrap();
}

/// An action of agent `bot` in `ses_a`, with the cost its decision set and the one reported with
/// its result.
fn priced_action(id: &str, seq: u64, status: ActionStatus, decided: Option<f64>, reported: Option<f64>) -> Action {
    let now = Utc::now();
    let mut decision = airlock_core::decision::policy_failure("x".into(), "rev", 0);
    decision.cost_usd = decided;
    Action {
        id: id.into(),
        session_id: "ses_a".into(),
        seq,
        agent_id: "bot".into(),
        tool: "t".into(),
        upstream: None,
        name: "t".into(),
        arguments: json!({}),
        annotations: json!({}),
        justification: String::new(),
        digest: format!("sha256:{id}"),
        status,
        decision,
        approval_id: None,
        result: reported.map(|cost| ActionResult {
            ok: true,
            output: json!({}),
            error: None,
            reported_by: Reporter::Agent,
            duration_ms: None,
            cost_usd: Some(cost),
            at: now,
        }),
        idempotency_key: None,
        created_at: now,
        updated_at: now,
        trace: None,
    }
}

#[tokio::test]
async fn spend_counts_decided_costs_and_only_valid_reported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("j.db"), SqliteOptions::default()).unwrap();
    let since = Utc::now() - chrono::Duration::seconds(60);
    let mut c = open_session("ses_a");
    for action in [
        priced_action("act_1", 1, ActionStatus::Succeeded, Some(1.0), Some(9.0)),
        priced_action("act_2", 2, ActionStatus::Succeeded, None, Some(0.5)),
        priced_action("act_3", 3, ActionStatus::Approved, Some(0.25), None),
        // Not allowed or approved: nothing spent.
        priced_action("act_4", 4, ActionStatus::PendingApproval, Some(100.0), None),
        priced_action("act_5", 5, ActionStatus::Denied, Some(100.0), None),
    ] {
        c.project(Projection::Action(Box::new(action)));
    }
    store.commit(c).await.unwrap();
    assert_eq!(store.agent_spend_since("bot", since).await.unwrap(), 1.75);
    // A negative cost reported with a result does not lower the spend.
    let mut c = Commit::default();
    c.project(Projection::Action(Box::new(priced_action("act_6", 6, ActionStatus::Failed, None, Some(-1.5)))));
    store.commit(c).await.unwrap();
    assert_eq!(store.agent_spend_since("bot", since).await.unwrap(), 1.75);
    assert_eq!(store.agent_spend_since("bot", Utc::now() + chrono::Duration::seconds(60)).await.unwrap(), 0.0);
    assert_eq!(store.agent_spend_since("other", since).await.unwrap(), 0.0);
}

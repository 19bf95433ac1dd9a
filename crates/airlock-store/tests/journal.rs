//! The journal, held to the same behaviour on every backend: SQLite (what airlock runs on by
//! default), PostgreSQL (what several replicas share; a database of its own per test, see
//! `airlock-test-postgres`) and memory (what other crates' tests run on), so that a test passing
//! on the memory store means the same on the real ones. Tests of SQLite itself — reopening the
//! file, group commit, the WAL, the writer lock, tampering with the file — run on SQLite only;
//! those of PostgreSQL itself are in `postgres.rs`.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::limits::{Breaker, BreakerState};
use airlock_core::{
    Action, ActionResult, ActionStatus, Approval, ApprovalRequirements, ApprovalStatus, EventKind, KillScope,
    KillSwitch, Reporter, Session, SessionStatus,
};
use airlock_store::{
    Commit, DeliveryUpdate, Error, MemoryStore, NewNotification, PolicyRecord, PostgresOptions, PostgresStore,
    Projection, SYSTEM_STREAM, SessionFilter, SqliteOptions, SqliteStore, Store, StoredCheckpoint,
};
use airlock_test_postgres::TestDatabase;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// The backends.

/// A store under test.
enum Backend {
    Sqlite { store: Arc<SqliteStore>, path: PathBuf, _dir: tempfile::TempDir },
    // The store is dropped before its database.
    Postgres { store: Arc<PostgresStore>, _db: TestDatabase },
    Memory(Arc<MemoryStore>),
}

fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    Backend::Sqlite { store, path, _dir: dir }
}

async fn postgres_backend() -> Backend {
    let db = TestDatabase::create().await;
    let store = Arc::new(PostgresStore::open(PostgresOptions::parse(db.url()).unwrap()).await.unwrap());
    Backend::Postgres { store, _db: db }
}

fn memory_backend() -> Backend {
    Backend::Memory(Arc::new(MemoryStore::new()))
}

impl Backend {
    fn shared(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { store, .. } => store.clone(),
            Backend::Postgres { store, .. } => store.clone(),
            Backend::Memory(store) => store.clone(),
        }
    }

    /// Checkpoint notes saved so far, read the way each backend offers them.
    async fn checkpoints(&self) -> Vec<StoredCheckpoint> {
        match self {
            Backend::Sqlite { path, .. } => SqliteStore::read_checkpoints(path).unwrap(),
            Backend::Postgres { store, .. } => store.checkpoints().await.unwrap(),
            Backend::Memory(store) => store.checkpoints(),
        }
    }
}

impl Deref for Backend {
    type Target = dyn Store;

    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            Backend::Sqlite { store, .. } => store.as_ref(),
            Backend::Postgres { store, .. } => store.as_ref(),
            Backend::Memory(store) => store.as_ref(),
        }
    }
}

/// Runs each named `async fn(Backend)` once per backend, as `<name>::sqlite`,
/// `<name>::postgres` and `<name>::memory`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test(super::sqlite_backend()).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$test(super::postgres_backend().await).await
            }

            #[tokio::test]
            async fn memory() {
                super::$test(super::memory_backend()).await
            }
        }
    )*};
}

on_every_backend!(
    commits_chain_events_per_stream_and_verify,
    concurrent_commits_all_land,
    a_refused_commit_leaves_no_trace_and_the_chain_goes_on,
    idempotency_keys_find_the_action_and_are_used_once,
    sessions_are_listed_newest_first_by_filter_and_limit,
    actions_are_found_by_session_status_and_agent,
    approvals_are_listed_and_fall_due,
    kill_switches_are_listed_newest_first,
    the_outbox_hands_out_due_notifications_until_delivered,
    checkpoints_and_the_tree_head_cover_the_journal,
    policy_history_is_most_recent_first,
    breakers_keep_their_last_state,
    spend_counts_decided_costs_and_only_valid_reported_ones,
);

// ---------------------------------------------------------------------------------------------
// Records to write.

/// A fixed moment plus `secs` seconds, so that both backends see the same times.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap() + Duration::seconds(secs)
}

fn session_at(id: &str, agent: &str, created: DateTime<Utc>) -> Session {
    Session::opened(id.into(), agent.into(), "task".into(), created)
}

fn session(id: &str) -> Session {
    session_at(id, "bot", Utc::now())
}

fn open_session(id: &str) -> Commit {
    let mut c = Commit::default();
    c.event(id, EventKind::SessionOpened, Utc::now(), json!({"id": id})).project(Projection::Session(session(id)));
    c
}

/// Action `id` of agent `bot`, number `seq` of session `ses_a`, created at `at(seq)`.
fn action(id: &str, seq: u64, status: ActionStatus) -> Action {
    Action {
        id: id.into(),
        session_id: "ses_a".into(),
        seq,
        agent_id: "bot".into(),
        tool: "t".into(),
        upstream: None,
        name: "t".into(),
        server: None,
        arguments: json!({}),
        annotations: json!({}),
        justification: String::new(),
        digest: format!("sha256:{id}"),
        status,
        decision: airlock_core::decision::policy_failure("x".into(), "rev", 0),
        approval_id: None,
        replica: None,
        result: None,
        idempotency_key: None,
        created_at: at(seq as i64),
        updated_at: at(seq as i64),
        trace: None,
    }
}

/// An action with the cost its decision set and the one reported with its result.
fn priced_action(id: &str, seq: u64, status: ActionStatus, decided: Option<f64>, reported: Option<f64>) -> Action {
    let mut a = action(id, seq, status);
    a.decision.cost_usd = decided;
    a.result = reported.map(|cost| ActionResult {
        ok: true,
        output: json!({}),
        error: None,
        reported_by: Reporter::Agent,
        duration_ms: None,
        cost_usd: Some(cost),
        at: a.created_at,
    });
    a
}

fn keyed_action(id: &str, seq: u64, key: &str) -> Action {
    let mut a = action(id, seq, ActionStatus::Executing);
    a.idempotency_key = Some(key.into());
    a
}

fn approval(id: &str, status: ApprovalStatus, created: i64, expires: i64) -> Approval {
    Approval {
        id: id.into(),
        action_id: format!("act_{id}"),
        session_id: "ses_a".into(),
        agent_id: "bot".into(),
        digest: "sha256:x".into(),
        requirements: ApprovalRequirements::any(1, 60),
        status,
        votes: Vec::new(),
        created_at: at(created),
        expires_at: at(expires),
        resolved_at: None,
    }
}

fn kill_switch(id: &str, engaged: i64) -> KillSwitch {
    KillSwitch {
        id: id.into(),
        scope: KillScope::All,
        target: None,
        reason: "r".into(),
        engaged_by: "alice".into(),
        engaged_at: at(engaged),
        released_by: None,
        released_at: None,
    }
}

fn policy(revision: &str, activated: i64) -> PolicyRecord {
    PolicyRecord {
        revision: revision.into(),
        sources: vec![("airlock.rego".into(), format!("package airlock # {revision}"))],
        activated_at: at(activated),
        activated_by: "start".into(),
    }
}

fn projecting(projections: impl IntoIterator<Item = Projection>) -> Commit {
    let mut c = Commit::default();
    for p in projections {
        c.project(p);
    }
    c
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

fn action_ids(actions: &[Action]) -> Vec<String> {
    ids(actions, |a| &a.id)
}

// ---------------------------------------------------------------------------------------------
// On every backend.

async fn commits_chain_events_per_stream_and_verify(store: Backend) {
    let empty = store.verify().await.unwrap();
    assert!(empty.ok());
    assert_eq!((empty.events, empty.streams), (0, 0));
    assert!(store.events("ses_a").await.unwrap().is_empty());

    store.commit(open_session("ses_a")).await.unwrap();
    let mut c = Commit::default();
    c.event("ses_a", EventKind::ActionRequested, at(1), json!({"n": 1, "b": [true, null], "a": "x"}));
    c.event(SYSTEM_STREAM, EventKind::KillEngaged, at(2), json!({"id": "kill_1"}));
    c.event("ses_a", EventKind::ActionRequested, at(3), json!({"n": 2}));
    store.commit(c).await.unwrap();

    let events = store.events("ses_a").await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(events[0].prev_hash, airlock_store::GENESIS_HASH);
    assert_eq!(events[0].hash, events[1].prev_hash);
    assert_eq!(events[1].hash, events[2].prev_hash);
    assert_eq!(events[1].payload, json!({"a": "x", "b": [true, null], "n": 1}));
    assert_eq!((events[1].kind.as_str(), events[1].at.as_str()), ("action.requested", "2026-03-01T09:00:01.000000Z"));
    // Positions are global and follow the order of writing.
    let system = store.events(SYSTEM_STREAM).await.unwrap();
    assert_eq!((system[0].seq, system[0].pos), (1, 3));
    assert_eq!(events.iter().map(|e| e.pos).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert_eq!(system[0].prev_hash, airlock_store::GENESIS_HASH);

    let report = store.verify().await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.events, report.streams), (4, 2));
}

async fn concurrent_commits_all_land(store: Backend) {
    let shared = store.shared();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = shared.clone();
            tokio::spawn(async move { store.commit(open_session(&format!("ses_{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = store.sessions(SessionFilter { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 100);
    let report = store.verify().await.unwrap();
    assert!(report.ok());
    assert_eq!((report.events, report.streams), (100, 100));
    assert_eq!(store.tree_head().await.unwrap().0, 100);
}

async fn a_refused_commit_leaves_no_trace_and_the_chain_goes_on(store: Backend) {
    store.commit(open_session("ses_a")).await.unwrap();
    let mut first = Commit::default();
    first
        .event("ses_a", EventKind::ActionRequested, at(1), json!({"id": "act_1"}))
        .project(Projection::Action(Box::new(keyed_action("act_1", 1, "key-1"))));
    store.commit(first).await.unwrap();
    // Same idempotency key, different action: refused whole, event and session change included.
    let mut changed = session("ses_a");
    changed.task = "changed".into();
    let mut dup = Commit::default();
    dup.event("ses_a", EventKind::ActionRequested, at(2), json!({"id": "act_2"}))
        .project(Projection::Session(changed))
        .project(Projection::Action(Box::new(keyed_action("act_2", 2, "key-1"))));
    let err = store.commit(dup).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(store.action("act_2").await.unwrap().is_none());
    assert_eq!(store.session("ses_a").await.unwrap().unwrap().task, "task");
    assert_eq!(store.events("ses_a").await.unwrap().len(), 2);
    // Rewriting the action that holds the key is no conflict.
    let mut again = keyed_action("act_1", 1, "key-1");
    again.status = ActionStatus::Succeeded;
    store.commit(projecting([Projection::Action(Box::new(again))])).await.unwrap();
    assert_eq!(store.action("act_1").await.unwrap().unwrap().status, ActionStatus::Succeeded);
    // The chain continues from the last event that landed.
    let mut next = Commit::default();
    next.event("ses_a", EventKind::ActionJoined, at(3), json!({}));
    store.commit(next).await.unwrap();
    let events = store.events("ses_a").await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(store.verify().await.unwrap().ok());
}

async fn idempotency_keys_find_the_action_and_are_used_once(store: Backend) {
    let joined =
        |key: &str| Projection::IdempotencyKey { agent_id: "bot".into(), key: key.into(), action_id: "act_1".into() };
    store.commit(projecting([Projection::Action(Box::new(keyed_action("act_1", 1, "opened")))])).await.unwrap();
    store.commit(projecting([joined("joined")])).await.unwrap();
    for key in ["opened", "joined"] {
        let found = store.action_by_idempotency_key("bot", key).await.unwrap();
        assert_eq!(found.map(|a| a.id).as_deref(), Some("act_1"), "{key}");
    }
    assert!(store.action_by_idempotency_key("bot", "other").await.unwrap().is_none());
    assert!(store.action_by_idempotency_key("someone-else", "opened").await.unwrap().is_none());
    // A joining key is recorded once; a second use is a conflict, in one commit or two.
    let err = store.commit(projecting([joined("joined")])).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let err = store.commit(projecting([joined("twice"), joined("twice")])).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(store.action_by_idempotency_key("bot", "twice").await.unwrap().is_none());
    // Two new actions with one key in one commit: refused.
    let err = store
        .commit(projecting([
            Projection::Action(Box::new(keyed_action("act_2", 2, "same"))),
            Projection::Action(Box::new(keyed_action("act_3", 3, "same"))),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert!(store.action("act_2").await.unwrap().is_none());
    // Keys are per agent.
    let mut other = keyed_action("act_4", 4, "opened");
    other.agent_id = "other-bot".into();
    store.commit(projecting([Projection::Action(Box::new(other))])).await.unwrap();
    let found = store.action_by_idempotency_key("other-bot", "opened").await.unwrap();
    assert_eq!(found.map(|a| a.id).as_deref(), Some("act_4"));
}

async fn sessions_are_listed_newest_first_by_filter_and_limit(store: Backend) {
    let mut paused = session_at("ses_b", "bot", at(2));
    paused.status = SessionStatus::Paused;
    store
        .commit(projecting([
            Projection::Session(session_at("ses_a", "bot", at(1))),
            Projection::Session(paused),
            Projection::Session(session_at("ses_c", "other", at(3))),
            // Same time as ses_b: the larger id comes first.
            Projection::Session(session_at("ses_d", "bot", at(2))),
        ]))
        .await
        .unwrap();
    let list = |filter: SessionFilter| {
        let store = store.shared();
        async move { ids(&store.sessions(filter).await.unwrap(), |s| &s.id) }
    };
    assert_eq!(list(SessionFilter::default()).await, ["ses_c", "ses_d", "ses_b", "ses_a"]);
    assert_eq!(list(SessionFilter { limit: 2, ..Default::default() }).await, ["ses_c", "ses_d"]);
    let bot = SessionFilter { agent_id: Some("bot".into()), ..Default::default() };
    assert_eq!(list(bot.clone()).await, ["ses_d", "ses_b", "ses_a"]);
    let paused = SessionFilter { status: Some(SessionStatus::Paused), ..bot };
    assert_eq!(list(paused).await, ["ses_b"]);
    assert!(store.session("ses_x").await.unwrap().is_none());

    // A rewrite changes the state and the document, not the creation time or the owner.
    let mut closed = session_at("ses_a", "someone-else", at(9));
    closed.status = SessionStatus::Closed;
    store.commit(projecting([Projection::Session(closed)])).await.unwrap();
    assert_eq!(list(SessionFilter::default()).await, ["ses_c", "ses_d", "ses_b", "ses_a"]);
    assert_eq!(list(SessionFilter { status: Some(SessionStatus::Closed), ..Default::default() }).await, ["ses_a"]);
    assert_eq!(store.session("ses_a").await.unwrap().unwrap().status, SessionStatus::Closed);
}

async fn actions_are_found_by_session_status_and_agent(store: Backend) {
    let mut elsewhere = action("act_x", 1, ActionStatus::PendingApproval);
    elsewhere.session_id = "ses_b".into();
    let mut other_agent = action("act_y", 9, ActionStatus::Approved);
    other_agent.agent_id = "other".into();
    other_agent.session_id = "ses_c".into();
    store
        .commit(projecting([
            Projection::Action(Box::new(action("act_3", 3, ActionStatus::Approved))),
            Projection::Action(Box::new(action("act_1", 1, ActionStatus::Executing))),
            Projection::Action(Box::new(action("act_2", 2, ActionStatus::PendingApproval))),
            Projection::Action(Box::new(action("act_4", 4, ActionStatus::Executing))),
            Projection::Action(Box::new(action("act_5", 5, ActionStatus::Denied))),
            Projection::Action(Box::new(elsewhere)),
            Projection::Action(Box::new(other_agent)),
        ]))
        .await
        .unwrap();
    assert_eq!(
        action_ids(&store.session_actions("ses_a").await.unwrap()),
        ["act_1", "act_2", "act_3", "act_4", "act_5"]
    );
    assert_eq!(action_ids(&store.waiting_actions("ses_a").await.unwrap()), ["act_2", "act_3"]);
    assert_eq!(action_ids(&store.waiting_actions("ses_b").await.unwrap()), ["act_x"]);
    assert!(store.session_actions("ses_none").await.unwrap().is_empty());
    // Oldest first, across sessions.
    assert_eq!(action_ids(&store.actions_in_status(ActionStatus::Executing).await.unwrap()), ["act_1", "act_4"]);
    assert_eq!(action_ids(&store.actions_in_status(ActionStatus::PendingApproval).await.unwrap()), ["act_x", "act_2"]);
    assert!(store.actions_in_status(ActionStatus::Unknown).await.unwrap().is_empty());
    // Once run, an action no longer waits.
    store
        .commit(projecting([Projection::Action(Box::new(action("act_3", 3, ActionStatus::Succeeded)))]))
        .await
        .unwrap();
    assert_eq!(action_ids(&store.waiting_actions("ses_a").await.unwrap()), ["act_2"]);
    // Every action counts toward the rate, whatever became of it.
    assert_eq!(store.agent_actions_since("bot", at(0)).await.unwrap(), 6);
    assert_eq!(store.agent_actions_since("bot", at(3)).await.unwrap(), 3);
    assert_eq!(store.agent_actions_since("other", at(0)).await.unwrap(), 1);
    assert_eq!(store.agent_actions_since("nobody", at(0)).await.unwrap(), 0);
}

async fn approvals_are_listed_and_fall_due(store: Backend) {
    store
        .commit(projecting([
            Projection::Approval(approval("apr_1", ApprovalStatus::Pending, 1, 30)),
            Projection::Approval(approval("apr_2", ApprovalStatus::Pending, 2, 20)),
            Projection::Approval(approval("apr_3", ApprovalStatus::Approved, 3, 10)),
            Projection::Approval(approval("apr_4", ApprovalStatus::Pending, 4, 90)),
        ]))
        .await
        .unwrap();
    let list = |status: Option<ApprovalStatus>, limit: usize| {
        let store = store.shared();
        async move { ids(&store.approvals(status, limit).await.unwrap(), |a| &a.id) }
    };
    assert_eq!(list(None, 0).await, ["apr_4", "apr_3", "apr_2", "apr_1"]);
    assert_eq!(list(None, 1).await, ["apr_4"]);
    assert_eq!(list(Some(ApprovalStatus::Pending), 0).await, ["apr_4", "apr_2", "apr_1"]);
    assert_eq!(store.approval("apr_3").await.unwrap().unwrap().status, ApprovalStatus::Approved);
    assert!(store.approval("apr_x").await.unwrap().is_none());
    // Due: pending and expiring at or before now, soonest first.
    assert!(store.approvals_due(at(19)).await.unwrap().is_empty());
    assert_eq!(ids(&store.approvals_due(at(30)).await.unwrap(), |a| &a.id), ["apr_2", "apr_1"]);
    // A rewrite can move the expiry.
    store
        .commit(projecting([
            Projection::Approval(approval("apr_4", ApprovalStatus::Pending, 4, 5)),
            Projection::Approval(approval("apr_2", ApprovalStatus::Expired, 2, 20)),
        ]))
        .await
        .unwrap();
    assert_eq!(ids(&store.approvals_due(at(30)).await.unwrap(), |a| &a.id), ["apr_4", "apr_1"]);
}

async fn kill_switches_are_listed_newest_first(store: Backend) {
    store
        .commit(projecting([
            Projection::KillSwitch(kill_switch("kill_1", 1)),
            Projection::KillSwitch(kill_switch("kill_3", 3)),
            Projection::KillSwitch(kill_switch("kill_2", 3)),
        ]))
        .await
        .unwrap();
    let mut released = kill_switch("kill_3", 3);
    (released.released_by, released.released_at) = (Some("bob".into()), Some(at(4)));
    store.commit(projecting([Projection::KillSwitch(released)])).await.unwrap();
    assert_eq!(ids(&store.kill_switches(false).await.unwrap(), |k| &k.id), ["kill_3", "kill_2", "kill_1"]);
    assert_eq!(ids(&store.kill_switches(true).await.unwrap(), |k| &k.id), ["kill_2", "kill_1"]);
}

async fn the_outbox_hands_out_due_notifications_until_delivered(store: Backend) {
    let note = |endpoint: &str, secs: i64| NewNotification {
        endpoint: endpoint.into(),
        event: "approval.requested".into(),
        body: json!({"n": secs, "endpoint": endpoint}),
        at: at(secs),
    };
    let outbox = vec![note("a", 2), note("b", 1), note("c", 2), note("d", 9)];
    store.commit(Commit { outbox, ..Default::default() }).await.unwrap();
    let due = store.notifications_due(at(5), 10).await.unwrap();
    assert_eq!(ids(&due, |n| &n.endpoint), ["b", "a", "c"]);
    let first = &due[1];
    assert_eq!((first.attempts, first.last_error.as_deref()), (0, None));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&first.body).unwrap(), json!({"n": 2, "endpoint": "a"}));
    let (id_a, id_b, id_c) = (due[1].id, due[0].id, due[2].id);
    assert_eq!(ids(&store.notifications_due(at(5), 1).await.unwrap(), |n| &n.endpoint), ["b"]);
    assert_eq!(ids(&store.notifications_due(at(5), 0).await.unwrap(), |n| &n.endpoint), ["b"]);

    // Delivered: never again. Failed: again at the time given, or never (given up).
    let deliveries = vec![
        DeliveryUpdate::Delivered { id: id_b, at: at(5) },
        DeliveryUpdate::Failed { id: id_a, error: "502".into(), next_at: Some(at(8)) },
        DeliveryUpdate::Failed { id: id_c, error: "gone".into(), next_at: None },
        DeliveryUpdate::Delivered { id: 999, at: at(5) },
    ];
    store.commit(Commit { deliveries, ..Default::default() }).await.unwrap();
    assert!(store.notifications_due(at(7), 10).await.unwrap().is_empty());
    let due = store.notifications_due(at(9), 10).await.unwrap();
    assert_eq!(ids(&due, |n| &n.endpoint), ["a", "d"]);
    assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (1, Some("502")));

    // On a restart everything still being retried is due at once; what was delivered or given
    // up stays so, and the attempts are still counted.
    let retry = vec![DeliveryUpdate::RetryAll { at: at(6) }];
    store.commit(Commit { deliveries: retry, ..Default::default() }).await.unwrap();
    let due = store.notifications_due(at(6), 10).await.unwrap();
    assert_eq!(ids(&due, |n| &n.endpoint), ["a", "d"]);
    assert_eq!((due[0].attempts, due[0].last_error.as_deref()), (1, Some("502")));
}

async fn checkpoints_and_the_tree_head_cover_the_journal(store: Backend) {
    assert_eq!(store.tree_head().await.unwrap(), (0, airlock_store::merkle_root(&[])));
    for i in 0..5 {
        store.commit(open_session(&format!("ses_{i}"))).await.unwrap();
    }
    let mut hashes = Vec::new();
    for i in 0..5 {
        hashes.extend(store.events(&format!("ses_{i}")).await.unwrap().into_iter().map(|e| e.hash));
    }
    let (size, root) = store.tree_head().await.unwrap();
    assert_eq!((size, root), (5, airlock_store::merkle_root(&hashes)));
    store.save_checkpoint(size, "note one".into(), at(1)).await.unwrap();
    store.save_checkpoint(size, "note two".into(), at(2)).await.unwrap();
    let saved = store.checkpoints().await;
    assert_eq!(saved.iter().map(|c| (c.size, c.note.as_str())).collect::<Vec<_>>(), [(5, "note one"), (5, "note two")]);
    assert_eq!(saved[0].created_at, "2026-03-01T09:00:01.000000Z");
    // A checkpoint is no event.
    assert_eq!(store.tree_head().await.unwrap().0, 5);
    // Events added after a tree head are in the next one, as if it were computed afresh.
    for i in 5..8 {
        store.commit(open_session(&format!("ses_{i}"))).await.unwrap();
        hashes.extend(store.events(&format!("ses_{i}")).await.unwrap().into_iter().map(|e| e.hash));
        assert_eq!(store.tree_head().await.unwrap(), (i as u64 + 1, airlock_store::merkle_root(&hashes)));
    }
}

async fn policy_history_is_most_recent_first(store: Backend) {
    store
        .commit(projecting([
            Projection::PolicyRevision(policy("sha256:a", 1)),
            Projection::PolicyRevision(policy("sha256:b", 2)),
            Projection::PolicyRevision(policy("sha256:c", 3)),
        ]))
        .await
        .unwrap();
    let history = |limit: usize| {
        let store = store.shared();
        async move { ids(&store.policy_history(limit).await.unwrap(), |p| &p.revision) }
    };
    assert_eq!(history(10).await, ["sha256:c", "sha256:b", "sha256:a"]);
    assert_eq!(history(2).await, ["sha256:c", "sha256:b"]);
    assert_eq!(history(0).await, ["sha256:c"]);
    // Activating an earlier revision again brings it to the top, once.
    store.commit(projecting([Projection::PolicyRevision(policy("sha256:a", 4))])).await.unwrap();
    assert_eq!(history(10).await, ["sha256:a", "sha256:c", "sha256:b"]);
    assert_eq!(store.policy_history(1).await.unwrap()[0].sources[0].0, "airlock.rego");
}

async fn breakers_keep_their_last_state(store: Backend) {
    assert!(store.breakers().await.unwrap().is_empty());
    store
        .commit(projecting([
            Projection::Breaker(Breaker::new("z__tool")),
            Projection::Breaker(Breaker::new("a__tool")),
        ]))
        .await
        .unwrap();
    let mut open = Breaker::new("z__tool");
    (open.state, open.consecutive_failures, open.opened_at) = (BreakerState::Open, 5, Some(at(1)));
    store.commit(projecting([Projection::Breaker(open.clone())])).await.unwrap();
    let breakers = store.breakers().await.unwrap();
    assert_eq!(ids(&breakers, |b| &b.tool), ["a__tool", "z__tool"]);
    assert_eq!(breakers[1], open);
}

async fn spend_counts_decided_costs_and_only_valid_reported_ones(store: Backend) {
    store
        .commit(projecting(
            [
                priced_action("act_1", 1, ActionStatus::Succeeded, Some(1.0), Some(9.0)),
                priced_action("act_2", 2, ActionStatus::Succeeded, None, Some(0.5)),
                priced_action("act_3", 3, ActionStatus::Approved, Some(0.25), None),
                priced_action("act_4", 4, ActionStatus::Executing, Some(2.0), None),
                // Not allowed or approved (yet): nothing spent.
                priced_action("act_5", 5, ActionStatus::PendingApproval, Some(100.0), None),
                priced_action("act_6", 6, ActionStatus::Denied, Some(100.0), None),
                priced_action("act_7", 7, ActionStatus::Cancelled, None, Some(100.0)),
            ]
            .map(|a| Projection::Action(Box::new(a))),
        ))
        .await
        .unwrap();
    assert_eq!(store.agent_spend_since("bot", at(0)).await.unwrap(), 3.75);
    assert_eq!(store.agent_spend_since("bot", at(3)).await.unwrap(), 2.25);
    // A negative cost reported with a result does not lower the spend.
    let refund = priced_action("act_8", 8, ActionStatus::Failed, None, Some(-1.5));
    store.commit(projecting([Projection::Action(Box::new(refund))])).await.unwrap();
    assert_eq!(store.agent_spend_since("bot", at(0)).await.unwrap(), 3.75);
    assert_eq!(store.agent_spend_since("bot", at(60)).await.unwrap(), 0.0);
    assert_eq!(store.agent_spend_since("other", at(0)).await.unwrap(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Across backends.

#[tokio::test]
async fn every_backend_builds_the_same_chains() {
    let backends = [sqlite_backend(), memory_backend(), postgres_backend().await];
    for store in &backends {
        for i in 0..3 {
            let id = format!("ses_{i}");
            let mut c = Commit::default();
            c.event(&id, EventKind::SessionOpened, at(i), json!({"id": id, "labels": {"b": 1, "a": 2}}))
                .project(Projection::Session(session_at(&id, "bot", at(i))));
            store.commit(c).await.unwrap();
            let mut c = Commit::default();
            c.event(&id, EventKind::ActionRequested, at(10 + i), json!({"n": i}));
            c.event(SYSTEM_STREAM, EventKind::PolicyActivated, at(10 + i), json!({"by": "root"}));
            store.commit(c).await.unwrap();
        }
    }
    let [sqlite, others @ ..] = &backends;
    for other in others {
        for stream in ["ses_0", "ses_1", "ses_2", SYSTEM_STREAM] {
            let (a, b) = (sqlite.events(stream).await.unwrap(), other.events(stream).await.unwrap());
            assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap(), "{stream}");
        }
        assert_eq!(sqlite.tree_head().await.unwrap(), other.tree_head().await.unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite only.

#[tokio::test]
async fn sqlite_commits_survive_reopen_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.commit(open_session("ses_a")).await.unwrap();
        let mut c = Commit::default();
        c.event("ses_a", EventKind::ActionRequested, Utc::now(), json!({"n": 1}));
        store.commit(c).await.unwrap();
        let mut c = Commit::default();
        c.event(SYSTEM_STREAM, EventKind::KillEngaged, Utc::now(), json!({"id": "kill_1"}))
            .project(Projection::KillSwitch(kill_switch("kill_1", 0)));
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
async fn sqlite_concurrent_commits_share_transactions() {
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
async fn sqlite_tampering_is_detected() {
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
async fn sqlite_the_wal_is_checkpointed_in_the_background_and_a_second_writer_is_refused() {
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

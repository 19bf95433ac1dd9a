//! The PostgreSQL backend itself: what the shared journal tests (`journal.rs`) cannot show —
//! several replicas on one database, group commit, the schema's versions, recovering from lost
//! connections, tampering in the tables and the copy of an SQLite journal. Each test has a
//! database of its own (`airlock-test-postgres`).

use std::sync::Arc;

use airlock_core::EventKind;
use airlock_store::{
    Commit, Error, JournalReader, NewNotification, PostgresOptions, PostgresStore, Projection, SYSTEM_STREAM,
    SessionFilter, SqliteOptions, SqliteStore, Store,
};
use airlock_test_postgres::TestDatabase;
use chrono::Utc;
use serde_json::json;

fn options(db: &TestDatabase) -> PostgresOptions {
    PostgresOptions::parse(db.url()).unwrap()
}

async fn open(db: &TestDatabase) -> PostgresStore {
    PostgresStore::open(options(db)).await.unwrap()
}

/// A store that shares the database with other writers (every store may).
async fn replica(db: &TestDatabase) -> PostgresStore {
    open(db).await
}

async fn sql(db: &TestDatabase, statements: &str) {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(statements).await.unwrap();
}

fn open_session(id: &str) -> Commit {
    let mut c = Commit::default();
    let session = airlock_core::Session::opened(id.into(), "bot".into(), "task".into(), Utc::now());
    c.event(id, EventKind::SessionOpened, Utc::now(), json!({"id": id})).project(Projection::Session(session));
    c
}

fn request(stream: &str, n: u64) -> Commit {
    let mut c = Commit::default();
    c.event(stream, EventKind::ActionRequested, Utc::now(), json!({"n": n}));
    c
}

#[tokio::test]
async fn replicas_on_one_database_keep_one_journal_order_and_every_chain() {
    let db = TestDatabase::create().await;
    let (a, b) = (Arc::new(replica(&db).await), Arc::new(replica(&db).await));
    a.commit(open_session("ses_a")).await.unwrap();
    // Both replicas extend the same chains at once: each reads the heads inside its
    // transaction, under the journal lock, so neither forks a chain.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store: Arc<dyn Store> = if i % 2 == 0 { a.clone() } else { b.clone() };
        let stream = if i % 3 == 0 { SYSTEM_STREAM } else { "ses_a" };
        tasks.push(tokio::spawn(async move { store.commit(request(stream, i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for store in [&a, &b] {
        let report = store.verify().await.unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.events, report.streams), (41, 2));
        assert_eq!(store.tree_head().await.unwrap().0, 41);
    }
    assert_eq!(a.tree_head().await.unwrap(), b.tree_head().await.unwrap());
    // Positions are 1..=41 without a gap.
    let mut positions: Vec<i64> = a.events("ses_a").await.unwrap().iter().map(|e| e.pos).collect();
    positions.extend(a.events(SYSTEM_STREAM).await.unwrap().iter().map(|e| e.pos));
    positions.sort_unstable();
    assert_eq!(positions, (1..=41).collect::<Vec<_>>());
    // A replica started later continues the chains where they end.
    drop((a, b));
    let c = replica(&db).await;
    c.commit(request("ses_a", 99)).await.unwrap();
    let events = c.events("ses_a").await.unwrap();
    assert_eq!(events.last().unwrap().seq, events.len() as u64);
    assert!(c.verify().await.unwrap().ok());
}

#[tokio::test]
async fn one_replica_leads_and_a_survivor_takes_over_when_it_is_gone() {
    let db = TestDatabase::create().await;
    let first = open(&db).await;
    let mut leads = first.leader().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), leads.wait_for(|l| *l)).await.unwrap().unwrap();
    let second = open(&db).await;
    let mut follows = second.leader().unwrap();
    // Both write; only the first leads.
    first.commit(open_session("ses_a")).await.unwrap();
    second.commit(request("ses_a", 1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!*follows.borrow_and_update(), "two replicas lead at once");
    drop(first);
    tokio::time::timeout(std::time::Duration::from_secs(10), follows.wait_for(|l| *l)).await.unwrap().unwrap();
    assert_eq!(second.events("ses_a").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_replica_hears_what_another_committed_and_holds_its_locks_across_replicas() {
    use airlock_store::{Change, LockScope};
    let db = TestDatabase::create().await;
    let (a, b) = (open(&db).await, open(&db).await);
    let mut heard = b.changes().unwrap();
    // A store is listening once it is open.
    assert!(b.following());
    let mut c = Commit::default();
    let ks = airlock_core::KillSwitch {
        id: "ks_1".into(),
        scope: airlock_core::KillScope::All,
        target: None,
        reason: "test".into(),
        engaged_by: "root".into(),
        engaged_at: Utc::now(),
        released_at: None,
        released_by: None,
    };
    c.event(SYSTEM_STREAM, EventKind::KillEngaged, Utc::now(), json!({})).project(Projection::KillSwitch(ks));
    a.commit(c).await.unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match heard.recv().await.unwrap() {
                Change::Resync => continue,
                other => break other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(change, Change::KillSwitches);
    // A session's lock taken on one replica makes the other wait until it is dropped.
    let held = a.lock(LockScope::Session("ses_x")).await.unwrap().unwrap();
    let waiting = tokio::spawn(async move { b.lock(LockScope::Session("ses_x")).await.map(|_| ()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second replica took a lock the first holds");
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn concurrent_commits_share_transactions() {
    let db = TestDatabase::create().await;
    let store = Arc::new(open(&db).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(open_session(&format!("ses_{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.commits, 200);
    assert!(stats.batches < 200, "no batching happened: {stats:?}");
    assert_eq!(store.sessions(SessionFilter { limit: 1000, ..Default::default() }).await.unwrap().len(), 200);
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn the_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let db = TestDatabase::create().await;
    // Nothing there yet: a reader says how to make the journal.
    let err = JournalReader::postgres(&options(&db)).await.unwrap_err().to_string();
    assert!(err.contains("`airlock migrate` makes one"), "{err}");
    let first = PostgresStore::migrate(&options(&db)).await.unwrap();
    assert_eq!((first.from, first.to), (0, airlock_store::SCHEMA_VERSION));
    let again = PostgresStore::migrate(&options(&db)).await.unwrap();
    assert_eq!((again.from, again.to), (airlock_store::SCHEMA_VERSION, airlock_store::SCHEMA_VERSION));
    JournalReader::postgres(&options(&db)).await.unwrap();
    // A later airlock migrated it further: this one neither starts nor reads on it.
    sql(&db, "INSERT INTO airlock_schema (version, name) VALUES (99, 'from the future')").await;
    let err = PostgresStore::open(options(&db)).await.unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("version 99, newer than this airlock knows"), "{err}");
    let err = JournalReader::postgres(&options(&db)).await.unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn lost_connections_fail_requests_and_the_store_recovers_by_itself() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.commit(open_session("ses_a")).await.unwrap();
    // The server ends every connection of the database (a restart or a failover would).
    let (admin, connection) = tokio_postgres::connect(db.server_url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let ended = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .await
        .unwrap();
    assert!(ended.get::<_, i64>(0) >= 1);
    // A request may fail while the pool finds out; soon every one works again, with no restart.
    let mut recovered = false;
    for n in 0..50 {
        if store.commit(request("ses_a", n)).await.is_ok() && store.ping().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store did not reconnect");
    let report = store.verify().await.unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test]
async fn tampering_in_the_tables_is_detected() {
    let db = TestDatabase::create().await;
    let store = open(&db).await;
    store.commit(open_session("ses_a")).await.unwrap();
    for n in 0..3 {
        store.commit(request("ses_a", n)).await.unwrap();
    }
    let reader = JournalReader::postgres(&options(&db)).await.unwrap();
    assert!(reader.verify().await.unwrap().ok());
    sql(&db, r#"UPDATE events SET payload = replace(payload, '"n":1', '"n":7') WHERE stream = 'ses_a' AND seq = 3"#)
        .await;
    let problem = reader.verify().await.unwrap().first_problem.unwrap();
    assert_eq!((problem.stream.as_str(), problem.seq), ("ses_a", 3));
    assert!(problem.problem.contains("altered"), "{}", problem.problem);
    sql(&db, "DELETE FROM events WHERE stream = 'ses_a' AND seq = 2").await;
    let problem = reader.verify().await.unwrap().first_problem.unwrap();
    assert!(problem.problem.contains("removed"), "{}", problem.problem);
}

#[tokio::test]
async fn an_sqlite_journal_is_copied_with_every_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    {
        let sqlite = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        for i in 0..5 {
            let id = format!("ses_{i}");
            sqlite.commit(open_session(&id)).await.unwrap();
            sqlite.commit(request(&id, i)).await.unwrap();
        }
        let mut c = request(SYSTEM_STREAM, 7);
        c.outbox.push(NewNotification {
            endpoint: "pager".into(),
            event: "approval.requested".into(),
            body: json!({"n": 1}),
            at: Utc::now(),
        });
        sqlite.commit(c).await.unwrap();
        let (size, _) = sqlite.tree_head().await.unwrap();
        sqlite.save_checkpoint(size, "a signed note".into(), Utc::now()).await.unwrap();
    }
    let source = JournalReader::Sqlite(path.clone());
    let db = TestDatabase::create().await;
    let report = PostgresStore::copy_from_sqlite(&path, &options(&db)).await.unwrap();
    assert_eq!((report.events, report.streams), (11, 6));
    assert!(report.rows.contains(&("sessions".to_string(), 5)), "{:?}", report.rows);

    let copy = JournalReader::postgres(&options(&db)).await.unwrap();
    assert_eq!(copy.event_hashes().await.unwrap(), source.event_hashes().await.unwrap());
    let since = chrono::DateTime::UNIX_EPOCH;
    let (a, b) = (copy.events_since(&since).await.unwrap(), source.events_since(&since).await.unwrap());
    assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
    let notes: Vec<String> = copy.checkpoints().await.unwrap().into_iter().map(|c| c.note).collect();
    assert_eq!(notes, ["a signed note"]);
    assert!(copy.verify().await.unwrap().ok());

    // The copy is a journal to go on with: chains, positions and outbox ids continue.
    let store = open(&db).await;
    assert_eq!(store.sessions(SessionFilter::default()).await.unwrap().len(), 5);
    let mut c = request("ses_0", 1);
    c.outbox.push(NewNotification { endpoint: "pager".into(), event: "x".into(), body: json!({}), at: Utc::now() });
    store.commit(c).await.unwrap();
    assert_eq!(store.tree_head().await.unwrap().0, 12);
    let due: Vec<i64> = store.notifications_due(Utc::now(), 10).await.unwrap().iter().map(|n| n.id).collect();
    assert_eq!(due, [1, 2]);
    assert!(store.verify().await.unwrap().ok());
    // A database that holds a journal is not copied into.
    let err = PostgresStore::copy_from_sqlite(&path, &options(&db)).await.unwrap_err().to_string();
    assert!(err.contains("already holds a journal"), "{err}");
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_named_with_the_reason() {
    let mut nowhere = PostgresOptions::parse("postgres://postgres:pw@127.0.0.1:1/nowhere").unwrap();
    nowhere.connect_timeout = std::time::Duration::from_secs(1);
    let err = PostgresStore::open(nowhere).await.unwrap_err().to_string();
    assert!(err.contains("`postgres://postgres@127.0.0.1:1/nowhere`"), "{err}");
    assert!(err.contains("error connecting to server"), "{err}");
    assert!(!err.contains("pw"), "{err}");
    // A server that answers, without that database, says which.
    let db = TestDatabase::create().await;
    let missing = airlock_test_postgres::with_database(db.url(), "airlock_no_such_database");
    let err = JournalReader::postgres(&PostgresOptions::parse(&missing).unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("database \"airlock_no_such_database\" does not exist"), "{err}");
}

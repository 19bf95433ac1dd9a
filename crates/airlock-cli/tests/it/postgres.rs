//! The real binary with its journal in PostgreSQL (`[storage] backend = "postgres"`): state that
//! survives a restart, `audit verify` on the database, `migrate --from-sqlite`, and a database
//! that goes away and comes back. Each test has a database of its own
//! (`airlock-test-postgres`; `tests/postgres/install.sh` provides the server).

use std::time::Duration;

use crate::common::*;
use airlock_test_postgres::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The `[storage]` table of a config whose journal is in the database `AIRLOCK_DATABASE_URL` names.
const STORAGE: &str =
    "\n[storage]\nbackend = \"postgres\"\nurl = \"env:AIRLOCK_DATABASE_URL\"\nconnect_timeout_seconds = 2\n";

fn env(db: &TestDatabase) -> [(&str, &str); 1] {
    [("AIRLOCK_DATABASE_URL", db.url())]
}

fn start(fx: &Fixture, db: &TestDatabase) -> Airlock {
    Airlock::start_with_env(&fx.config(), &env(db)).unwrap_or_else(|e| panic!("airlock did not start: {e}"))
}

/// `airlock audit verify --json` on the fixture's journal: exit code and report.
fn verify(fx: &Fixture, db: &TestDatabase) -> (i32, Value) {
    let config = fx.config();
    let (code, out, err) = run(&["audit", "verify", "--json", "--config", config.to_str().unwrap()], &env(db));
    (code, serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}")))
}

/// A session with a call held for approval and approved, an allowed call, and a kill switch on
/// `deploy.run`: the session's id, the approved call's and the kill switch's.
async fn record(al: &Airlock) -> (String, String, String) {
    let s = al.session(BOT).await;
    let held = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let (action, approval) = (held.body["id"].as_str().unwrap(), held.body["approval"]["id"].as_str().unwrap());
    let vote = al.post(&format!("/v1/approvals/{approval}/approve"), ALICE, json!({"comment": "ok"})).await;
    assert_eq!(vote.status, StatusCode::OK, "{}", vote.body);
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);
    let kill =
        al.post("/v1/kill", ADMIN, json!({"scope": "tool", "target": "deploy.run", "reason": "incident 9"})).await;
    assert_eq!(kill.status, StatusCode::CREATED, "{}", kill.body);
    (s, action.to_string(), kill.body["id"].as_str().unwrap().to_string())
}

/// What [`record`] left is there, as it was left.
async fn recorded(al: &Airlock, (session, action, kill): &(String, String, String)) {
    let a = al.get(&format!("/v1/actions/{action}"), BOT).await;
    assert_eq!(
        (a.body["status"].as_str(), a.body["approval"]["status"].as_str()),
        (Some("approved"), Some("approved"))
    );
    let s = al.get(&format!("/v1/sessions/{session}"), BOT).await;
    assert_eq!(s.body["actions"].as_array().map(Vec::len), Some(2), "{}", s.body);
    let kills = al.get("/v1/kill", ADMIN).await;
    assert_eq!(kills.body["kill_switches"][0]["id"], kill.as_str(), "{}", kills.body);
    let r = al.act(BOT, session, "deploy.run", json!({"name": "x"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["decision"]["reasons"][0]["rule"], "airlock.kill_switch", "{}", r.body);
}

#[tokio::test]
async fn the_journal_in_postgres_survives_a_restart_and_verifies() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let al = start(&fx, &db);
    let health = al.request(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["database"], json!({"backend": "postgres", "ok": true}));
    let state = record(&al).await;
    al.stop();
    assert!(!fx.journal().exists(), "a journal file was written beside the database");

    let al = start(&fx, &db);
    recorded(&al, &state).await;
    // The chains continue where they stopped.
    let s = &state.0;
    assert_eq!(al.act(BOT, s, "ticket.create", json!({"n": 2})).await.status, StatusCode::OK);
    al.stop();

    let (code, report) = verify(&fx, &db);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["journal"].as_str().unwrap().starts_with("postgres://postgres@"), "{report}");
    assert!(report["report"]["events"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["checkpoints"]["checked"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["checkpoints"]["covered"], report["report"]["events"], "{report}");
}

#[tokio::test]
async fn migrate_copies_an_sqlite_journal_with_every_hash() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let state = record(&al).await;
    al.stop();
    let config = fx.config();
    let config = config.to_str().unwrap();
    let (code, before, err) = run(&["audit", "verify", "--json", "--config", config], &[]);
    assert_eq!(code, 0, "{before}{err}");
    let before: Value = serde_json::from_str(&before).unwrap();

    // The same installation, its journal moved to PostgreSQL (the signing key stays in data_dir).
    let db = TestDatabase::create().await;
    let text = std::fs::read_to_string(fx.config()).unwrap();
    std::fs::write(fx.config(), text + STORAGE).unwrap();
    let sqlite = fx.journal();
    let migrate = ["migrate", "--config", config, "--from-sqlite", sqlite.to_str().unwrap()];
    let (code, out, err) = run(&migrate, &env(&db));
    assert_eq!(code, 0, "{out}{err}");
    let events = before["report"]["events"].as_u64().unwrap();
    assert!(out.contains(&format!("copied {events} events")), "{out}");

    let (code, after) = verify(&fx, &db);
    assert_eq!(code, 0, "{after}");
    assert_eq!(after["report"]["events"], before["report"]["events"]);
    assert_eq!(after["checkpoints"], before["checkpoints"], "the signed checkpoints do not cover the copy");

    let al = start(&fx, &db);
    recorded(&al, &state).await;
    al.stop();
    // Only into an empty database; and only for a PostgreSQL journal.
    let (code, _, err) = run(&migrate, &env(&db));
    assert_eq!(code, 1);
    assert!(err.contains("already holds a journal"), "{err}");
    let (code, out, err) = run(&["migrate", "--config", config, "--json"], &env(&db));
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["schema"], 1, "{out}");
}

#[tokio::test]
async fn a_lost_database_answers_503_until_it_is_back() {
    let db = TestDatabase::create().await;
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let al = start(&fx, &db);
    let s = al.session(BOT).await;
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 1})).await.status, StatusCode::OK);

    db.accept_connections(false).await;
    let health = al.request(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{}", health.body);
    assert_eq!(health.body["database"], json!({"backend": "postgres", "ok": false}));
    let r = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    r.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "nothing was decided");
    assert_eq!(r.body["type"], "urn:airlock:problem:journal-unavailable");

    // Back: the same process answers again, without a restart.
    db.accept_connections(true).await;
    let health = poll(
        Duration::from_secs(15),
        || al.request(reqwest::Method::GET, "/healthz", None, None),
        |r| r.status == StatusCode::OK,
    )
    .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({"n": 3})).await.status, StatusCode::OK);
    al.stop();
    let (code, report) = verify(&fx, &db);
    assert_eq!(code, 0, "{report}");
}

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

/// A PostgreSQL server of this test's own, in a temporary directory on a free port, from the
/// binaries `tests/postgres/install.sh` found or installed (Debian's `postgresql`): one the test
/// can really stop and start. Stopped when dropped.
struct PrivateServer {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateServer {
    fn bin_dir() -> std::path::PathBuf {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql (tests/postgres/install.sh installs them)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .collect();
        found.sort();
        found.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
    }

    /// Runs a PostgreSQL program, as the `postgres` user when the test runs as root (initdb and
    /// postgres refuse root).
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        let out = as_postgres(&self.bin.join(program)).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn create() -> PrivateServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = std::process::Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).output();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = PrivateServer { bin: Self::bin_dir(), dir, port };
        server.run("initdb", &["-D", &server.data(), "-U", "postgres", "-A", "trust", "--no-sync"]);
        server.start();
        server
    }

    fn start(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"]);
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl")).args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
    }
}

/// A command for a PostgreSQL program: through `runuser -u postgres` when this process is root.
fn as_postgres(program: &std::path::Path) -> std::process::Command {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

#[tokio::test]
async fn the_database_server_stopped_and_started_again_under_airlock() {
    let server = PrivateServer::create();
    let url = server.url();
    let fx = Fixture::with_extra(POLICY, STORAGE);
    let env = [("AIRLOCK_DATABASE_URL", url.as_str())];
    let al = Airlock::start_with_env(&fx.config(), &env).unwrap_or_else(|e| panic!("airlock did not start: {e}"));
    let s = al.session(BOT).await;
    let before = al.act(BOT, &s, "ticket.create", json!({"n": 1})).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    // The server shuts down: no decision without a journal.
    server.stop();
    let r = al.act(BOT, &s, "ticket.create", json!({"n": 2})).await;
    r.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "nothing was decided");
    let health = al.request(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{}", health.body);

    // It starts again: the same process recovers by itself, and what it acknowledged is there.
    server.start();
    let health = poll(
        Duration::from_secs(20),
        || al.request(reqwest::Method::GET, "/healthz", None, None),
        |r| r.status == StatusCode::OK,
    )
    .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let after = al.act(BOT, &s, "ticket.create", json!({"n": 3})).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    let id = before.body["id"].as_str().unwrap();
    assert_eq!(al.get(&format!("/v1/actions/{id}"), BOT).await.body["status"], "executing");
    let session = al.get(&format!("/v1/sessions/{s}"), BOT).await;
    assert_eq!(session.body["actions"].as_array().map(Vec::len), Some(2), "{}", session.body);
    al.stop();
    let config = fx.config();
    let (code, out, err) = run(&["audit", "verify", "--json", "--config", config.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}{err}");
}

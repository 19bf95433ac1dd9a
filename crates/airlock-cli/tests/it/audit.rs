//! Signed checkpoints, `audit verify` against each kind of tampering, `audit export`, and
//! `replay` of recorded decisions against a candidate policy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// Copies the data directory (journal with its WAL files, audit keys) so each tampering starts
/// from the same untouched journal.
fn copy_install(fx: &Fixture) -> (tempfile::TempDir, PathBuf) {
    let dst = tempfile::tempdir().unwrap();
    let data = dst.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(fx.dir.path().join("data")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(dst.path().join("policies")).unwrap();
    std::fs::copy(fx.dir.path().join("policies/main.rego"), dst.path().join("policies/main.rego")).unwrap();
    let config = dst.path().join("airlock.toml");
    std::fs::copy(fx.config(), &config).unwrap();
    (dst, config)
}

fn journal(config: &Path) -> PathBuf {
    config.parent().unwrap().join("data/journal.db")
}

fn verify(config: &Path) -> (i32, Value) {
    let (code, out, err) = run(&["audit", "verify", "--json", "--config", config.to_str().unwrap()], &[]);
    (code, serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}")))
}

fn sql(config: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(journal(config)).unwrap();
    let n = conn.execute(statement, []).unwrap();
    assert!(n > 0, "`{statement}` changed nothing");
}

/// Checkpoints in the journal: `(count, events covered by the newest)`.
fn checkpoints(journal: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT count(*), coalesce(max(size), 0) FROM checkpoints", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
}

async fn recorded_install() -> (Fixture, String) {
    // The interval stays at its five minutes: the checkpoints below come from the event count.
    let fx = Fixture::with_extra(POLICY, "\n[audit]\ncheckpoint_every_events = 8\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    for n in 0..4 {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    al.act(BOT, &s, "db.drop", json!({"name": "orders"})).await;
    al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 3})).await;
    // The checkpoint of the first events, one signed because enough events came in, then the
    // final one at shutdown.
    let by_count = poll(Duration::from_secs(10), || async { checkpoints(&fx.journal()) }, |(_, size)| *size >= 8).await;
    assert!(by_count.0 >= 2, "no checkpoint after 8 events: {by_count:?}");
    al.act(BOT, &s, "ticket.create", json!({"n": 9})).await;
    al.stop();
    (fx, s)
}

#[tokio::test]
async fn audit_verify_names_each_kind_of_tampering() {
    let (fx, session) = recorded_install().await;
    assert!(fx.dir.path().join("data/audit.pub").exists());
    let (code, v) = verify(&fx.config());
    assert_eq!(code, 0, "{v}");
    assert!(v["checkpoints"]["checked"].as_u64().unwrap() >= 2, "{v}");
    let total: u64 = v["report"]["events"].as_u64().unwrap();

    // 1. An event changed.
    let (_d, cfg) = copy_install(&fx);
    sql(&cfg, "UPDATE events SET payload = replace(payload, 'orders', 'orderz') WHERE payload LIKE '%orders%'");
    let (code, v) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(v["report"]["first_problem"]["problem"].as_str().unwrap().contains("altered"), "{v}");

    // 2. An event deleted from the middle of a chain.
    let (_d, cfg) = copy_install(&fx);
    sql(&cfg, &format!("DELETE FROM events WHERE stream = '{session}' AND seq = 3"));
    let (code, v) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(v["report"]["first_problem"]["problem"].as_str().unwrap().contains("removed"), "{v}");

    // 3. The newest events truncated: every chain is still intact, the checkpoints are not.
    let (_d, cfg) = copy_install(&fx);
    sql(&cfg, "DELETE FROM events WHERE pos IN (SELECT pos FROM events ORDER BY pos DESC LIMIT 2)");
    let (code, v) = verify(&cfg);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["report"]["first_problem"], Value::Null, "the chains alone can't see truncation");
    let problem = v["checkpoints"]["problem"].as_str().unwrap();
    assert!(problem.contains("truncated") && problem.contains(&format!("{total} events")), "{problem}");

    // 4. A checkpoint's signature altered.
    let (_d, cfg) = copy_install(&fx);
    let conn = rusqlite::Connection::open(journal(&cfg)).unwrap();
    let note: String = conn.query_row("SELECT note FROM checkpoints ORDER BY id LIMIT 1", [], |r| r.get(0)).unwrap();
    let sig_line = note.lines().last().unwrap().to_string();
    let mut chars: Vec<char> = sig_line.chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let forged = note.replace(&sig_line, &chars.into_iter().collect::<String>());
    conn.execute("UPDATE checkpoints SET note = ?1 WHERE note = ?2", [&forged, &note]).unwrap();
    drop(conn);
    let (code, v) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(v["checkpoints"]["problem"].as_str().unwrap().contains("checkpoint 1"), "{v}");

    // 5. A checkpoint signed by someone else's key does not verify.
    let (code, out, _) = run(
        &[
            "audit",
            "verify",
            "--config",
            fx.config().to_str().unwrap(),
            "--public-key",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("FAILED"), "{out}");
}

#[tokio::test]
async fn export_writes_events_and_checkpoints_as_json_lines() {
    let (fx, _session) = recorded_install().await;
    let (code, out, err) = run(&["audit", "export", "--since", "1h", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let events = lines.iter().filter(|l| l["type"] == "event").count();
    let checkpoints: Vec<&Value> = lines.iter().filter(|l| l["type"] == "checkpoint").collect();
    assert!(events >= 15, "{events}");
    assert!(!checkpoints.is_empty());
    assert!(lines[0]["hash"].as_str().unwrap().starts_with("sha256:"));
    assert!(lines[0]["prev_hash"].is_string());
    assert!(checkpoints[0]["note"].as_str().unwrap().contains("\n\n\u{2014} airlock "));
    assert!(checkpoints[0]["public_key"].is_string());
}

#[tokio::test]
async fn replay_shows_where_a_candidate_policy_would_decide_differently() {
    let (fx, session) = recorded_install().await;
    let candidate = fx.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    // The candidate also denies tickets, and no longer denies database drops.
    let policy = POLICY.replace("if input.action.tool == \"db.drop\"", "if input.action.tool == \"db.dropped-never\"")
        + "\ndeny contains {\"rule\": \"TK1\", \"msg\": \"ticket freeze\"} if input.action.tool == \"ticket.create\"\n";
    std::fs::write(candidate.join("main.rego"), policy).unwrap();
    let config = fx.config();
    let args =
        ["replay", "session", &session, "--policy", candidate.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let (code, out, err) = run(&[&args[..], &["--json"]].concat(), &[]);
    assert_eq!(code, 1, "tightening must fail: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v["summary"];
    assert_eq!(s["replayed"], 7);
    assert_eq!(s["flips"]["allow -> deny"], 5, "{s}");
    assert_eq!(s["flips"]["deny -> allow"], 1, "{s}");
    assert_eq!(s["unchanged"], 1);
    assert_eq!(s["rules"]["TK1"]["added"], 5);
    assert_eq!(s["rules"]["DB1"]["removed"], 1);
    assert_eq!(s["tightening"], 5);

    let (code, out, _) = run(&[&args[..], &["--allow-tightening"]].concat(), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("allow -> deny") && out.contains("TK1"), "{out}");

    // The active policy itself replays without a single flip.
    let (code, out, _) = run(
        &[
            "replay",
            "--since",
            "1h",
            "--policy",
            fx.dir.path().join("policies").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["unchanged"], v["summary"]["replayed"], "{v}");
}

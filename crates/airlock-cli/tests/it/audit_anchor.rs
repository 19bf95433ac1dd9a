//! The journal's integrity against someone who can rewrite `data_dir`: anchors (`audit anchor`,
//! `verify --anchor`) catch the newest events cut together with their checkpoints; `verify`
//! refuses to pass without a public key unless told `--skip-checkpoints`; the signing key can
//! live outside `data_dir`; checkpoints come with the first event, every N events and at
//! shutdown.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::*;

/// RFC 8032 test 1: an Ed25519 seed and its public key, so the tests know the public key of a
/// configured signing key without computing it.
const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn public_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(hex::decode(PUBLIC_HEX).unwrap())
}

fn cfg(fx: &Fixture) -> String {
    fx.config().to_str().unwrap().to_string()
}

/// `audit verify` with `args`, as JSON: exit code and the document.
fn verify_json(fx: &Fixture, args: &[&str], envs: &[(&str, &str)]) -> (i32, Value) {
    let config = cfg(fx);
    let (code, out, err) = run(&[&["audit", "verify", "--json", "--config", &config], args].concat(), envs);
    (code, serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}{err}")))
}

/// Checkpoints in the journal: `(count, events covered by the newest)`.
fn checkpoints(journal: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT count(*), coalesce(max(size), 0) FROM checkpoints", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
}

fn events(journal: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(journal, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap()
}

/// A session with a few allowed and denied actions, then a clean stop.
async fn record(al: Airlock, actions: usize) {
    let s = al.session(BOT).await;
    for n in 0..actions {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    al.act(BOT, &s, "db.drop", json!({"name": "orders"})).await;
    al.stop();
}

/// The attack: whoever can write the journal deletes its newest events and every checkpoint
/// made after the cut. What remains is consistent with itself (every chain intact, every
/// remaining checkpoint covers events still there), so `verify` alone passes; the anchor taken
/// before the cut makes `verify --anchor` fail, and so it does when new events fill the gap.
#[tokio::test]
async fn cutting_the_newest_events_and_their_checkpoints_fails_verify_with_an_anchor() {
    let fx = Fixture::with_extra(POLICY, "\n[audit]\ncheckpoint_every_events = 4\n");
    record(fx.start(), 5).await;
    let total = events(&fx.journal());
    assert!(total >= 12, "{total} events");

    // The anchor is the newest checkpoint: the one signed at shutdown, over every event.
    let anchor = fx.dir.path().join("anchor.json");
    let config = cfg(&fx);
    let (code, out, err) = run(&["audit", "anchor", "--config", &config, "--out", anchor.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("anchored the first {total} events")), "{err}");
    let a: Value = serde_json::from_str(&std::fs::read_to_string(&anchor).unwrap()).unwrap();
    assert_eq!(a["size"], total, "{a}");
    assert_eq!(a["origin"], "airlock");
    let public = std::fs::read_to_string(fx.dir.path().join("data/audit.pub")).unwrap();
    assert_eq!(a["public_key"], public.trim());
    assert!(a["note"].as_str().unwrap().starts_with(&format!("airlock\n{total}\n")), "{a}");
    // Printed to standard output, it is the same document.
    let (code, out, _) = run(&["audit", "anchor", "--config", &config], &[]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), a);

    let anchor_arg = ["--anchor", anchor.to_str().unwrap()];
    let (code, v) = verify_json(&fx, &anchor_arg, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["anchor"]["problem"], Value::Null, "{v}");

    // The cut: the newest 3 events, and every checkpoint that covered any of them.
    let kept = total - 3;
    let conn = rusqlite::Connection::open(fx.journal()).unwrap();
    conn.execute("DELETE FROM events WHERE pos IN (SELECT pos FROM events ORDER BY pos DESC LIMIT 3)", []).unwrap();
    let removed = conn.execute("DELETE FROM checkpoints WHERE size > ?1", [kept]).unwrap();
    assert!(removed >= 1, "the shutdown checkpoint covered the cut events");
    drop(conn);
    assert!(checkpoints(&fx.journal()).0 >= 1, "checkpoints made before the cut remain");

    // Without the anchor the journal looks fine: that is the hole the anchor closes.
    let (code, v) = verify_json(&fx, &[], &[]);
    assert_eq!(code, 0, "a consistent cut passes on the journal alone: {v}");
    assert_eq!(v["checkpoints"]["problem"], Value::Null, "{v}");
    assert_eq!(v["checkpoints"]["events"], kept, "{v}");

    let (code, v) = verify_json(&fx, &anchor_arg, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["report"]["first_problem"], Value::Null, "the chains are intact: {v}");
    assert_eq!(v["checkpoints"]["problem"], Value::Null, "the remaining checkpoints are fine: {v}");
    assert_eq!(
        v["anchor"]["problem"],
        format!(
            "the anchor covers {total} events but the journal has only {kept}: events were removed or the newest were truncated"
        ),
        "{v}"
    );
    let (code, out, _) = run(&["audit", "verify", "--config", &config, anchor_arg[0], anchor_arg[1]], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!("FAILED: the anchor covers {total} events but the journal has only {kept}")),
        "{out}"
    );

    // The gap filled with new events: long enough again, but not what the anchor covered.
    record(fx.start(), 3).await;
    assert!(events(&fx.journal()) > total);
    let (code, v) = verify_json(&fx, &anchor_arg, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["checkpoints"]["problem"], Value::Null, "the new run signed what it found: {v}");
    let problem = v["anchor"]["problem"].as_str().unwrap();
    assert!(problem.contains(&format!("does not match the first {total} events")), "{problem}");
}

/// The anchor carries the key it was taken with, which then checks the journal's checkpoints in
/// preference to `data_dir/audit.pub`: replacing that file changes nothing. A key given to
/// `verify` must have signed the anchor, and a file that is not an anchor is refused.
#[tokio::test]
async fn an_anchor_is_checked_with_its_own_key_unless_another_is_given() {
    let fx = Fixture::new(POLICY);
    record(fx.start(), 1).await;
    let config = cfg(&fx);
    let (code, out, _) = run(&["audit", "anchor", "--config", &config], &[]);
    assert_eq!(code, 0);
    let anchor = fx.dir.path().join("anchor.json");
    std::fs::write(&anchor, &out).unwrap();
    let anchor_arg = ["--anchor", anchor.to_str().unwrap()];

    // The key next to the journal replaced: the journal alone no longer verifies, the anchor's
    // key still does.
    std::fs::write(fx.dir.path().join("data/audit.pub"), public_b64()).unwrap();
    let (code, v) = verify_json(&fx, &[], &[]);
    assert_eq!(code, 1, "{v}");
    assert!(v["checkpoints"]["problem"].as_str().unwrap().contains("no signature by this key"), "{v}");
    let (code, v) = verify_json(&fx, &anchor_arg, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["public_key"]["source"], "anchor", "{v}");

    // Another key given: neither the checkpoints nor the anchor are signed by it.
    let (code, v) = verify_json(&fx, &[&anchor_arg[..], &["--public-key", PUBLIC_HEX]].concat(), &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["anchor"]["problem"], "the anchor does not verify with this key: no signature by this key", "{v}");

    std::fs::write(&anchor, "{\"size\": 3}").unwrap();
    let (code, out, err) = run(&["audit", "verify", "--config", &config, anchor_arg[0], anchor_arg[1]], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("neither the JSON `airlock audit anchor` prints nor a signed checkpoint note"), "{err}");
}

/// `verify` without any public key fails, and says how to give one; `--skip-checkpoints` is the
/// explicit way to check only the chains. With the key next to the journal it says so.
#[tokio::test]
async fn verify_without_a_public_key_fails_unless_told_to_skip_checkpoints() {
    let fx = Fixture::new(POLICY);
    record(fx.start(), 2).await;
    let config = cfg(&fx);
    let pub_file = fx.dir.path().join("data/audit.pub");

    let (code, out, _) = run(&["audit", "verify", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signatures checked with `data_dir/audit.pub`, next to the journal: whoever can rewrite the journal can replace it"), "{out}");

    // Kept elsewhere, and removed from `data_dir`.
    let kept = fx.dir.path().join("audit.pub.copy");
    std::fs::rename(&pub_file, &kept).unwrap();
    let (code, out, _) = run(&["audit", "verify", "--config", &config], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED: no public key to check the signed checkpoints with: pass --public-key"), "{out}");
    let (code, v) = verify_json(&fx, &[], &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["public_key"], Value::Null);
    assert!(v["checkpoints"]["problem"].as_str().unwrap().starts_with("no public key"), "{v}");

    let (code, out, _) = run(&["audit", "verify", "--config", &config, "--skip-checkpoints"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoints: not checked (--skip-checkpoints)"), "{out}");
    let (code, v) = verify_json(&fx, &["--skip-checkpoints"], &[]);
    assert_eq!((code, &v["checkpoints_skipped"], &v["checkpoints"]), (0, &json!(true), &Value::Null), "{v}");
    // Skipping and checking at once makes no sense.
    let (code, _, err) = run(&["audit", "verify", "--config", &config, "--skip-checkpoints", "--anchor", "x"], &[]);
    assert_eq!(code, 2, "{err}");

    // The key given, as a file or as the key itself.
    let (code, v) = verify_json(&fx, &["--public-key", kept.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["public_key"]["source"], "given");
    assert!(v["checkpoints"]["checked"].as_u64().unwrap() >= 1, "{v}");
    let key = std::fs::read_to_string(&kept).unwrap();
    let (code, out, _) = run(&["audit", "verify", "--config", &config, "--public-key", key.trim()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signatures checked with the key given with --public-key\n"), "{out}");
    let (code, _, err) = run(&["audit", "verify", "--config", &config, "--public-key", "no-such-key"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("`no-such-key` is neither a public key"), "{err}");

    // `audit anchor` needs a key as well.
    let (code, _, err) = run(&["audit", "anchor", "--config", &config], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no public key to check the newest checkpoint with"), "{err}");
}

/// The signing key from the environment, or from a file outside `data_dir`: no key file is
/// created in `data_dir`, checkpoints are signed with the configured key, and `verify` checks
/// them with its public half (or the public key given, for an auditor without the key).
#[tokio::test]
async fn the_signing_key_can_live_outside_data_dir() {
    // From the environment.
    let fx = Fixture::with_extra(POLICY, "\n[audit]\nsigning_key = \"env:AUDIT_KEY\"\n");
    let env = [("AUDIT_KEY", SEED_HEX)];
    record(Airlock::start_with_env(&fx.config(), &env).unwrap(), 2).await;
    assert!(!fx.dir.path().join("data/audit.key").exists());
    let (code, v) = verify_json(&fx, &[], &env);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["public_key"], json!({"key": public_b64(), "source": "signing_key"}));
    assert!(v["checkpoints"]["checked"].as_u64().unwrap() >= 1, "{v}");
    let (code, v) = verify_json(&fx, &["--public-key", PUBLIC_HEX], &env);
    assert_eq!(code, 0, "{v}");

    // From a file beside the config, outside `data_dir`; a relative path is from the config.
    let fx = Fixture::with_extra(POLICY, "\n[audit]\nsigning_key = \"keys/audit.key\"\n");
    std::fs::create_dir_all(fx.dir.path().join("keys")).unwrap();
    std::fs::write(fx.dir.path().join("keys/audit.key"), format!("{SEED_HEX}\n")).unwrap();
    record(fx.start(), 2).await;
    assert!(!fx.dir.path().join("data/audit.key").exists());
    let (code, v) = verify_json(&fx, &[], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["public_key"], json!({"key": public_b64(), "source": "signing_key"}));
    let config = cfg(&fx);
    let (code, out, _) = run(&["audit", "anchor", "--config", &config], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["public_key"], public_b64());

    // A journal signed by someone else's key (the file replaced) does not verify.
    std::fs::write(fx.dir.path().join("keys/audit.key"), format!("{}\n", "07".repeat(32))).unwrap();
    let (code, v) = verify_json(&fx, &[], &[]);
    assert_eq!(code, 1, "{v}");
    assert!(v["checkpoints"]["problem"].as_str().unwrap().contains("no signature by this key"), "{v}");

    // A missing key file is a config problem that `check` reports.
    std::fs::remove_file(fx.dir.path().join("keys/audit.key")).unwrap();
    let (code, _, err) = run(&["check", "--config", &config], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("audit.signing_key: `") && err.contains("keys/audit.key` is not a file"), "{err}");
}

/// A checkpoint is signed with the first event of a run, as soon as `checkpoint_every_events`
/// more events were committed (the interval stays at its five minutes), and at a clean shutdown
/// over every event.
#[tokio::test]
async fn checkpoints_come_with_the_first_event_every_n_events_and_at_shutdown() {
    let fx = Fixture::with_extra(POLICY, "\n[audit]\ncheckpoint_every_events = 6\n");
    let al = fx.start();
    let s = al.session(BOT).await;
    let first = poll(Duration::from_secs(10), || async { checkpoints(&fx.journal()) }, |(n, _)| *n >= 1).await;
    assert_eq!(first.0, 1, "one checkpoint for the first events: {first:?}");
    for n in 0..6 {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    let by_count = poll(Duration::from_secs(10), || async { checkpoints(&fx.journal()) }, |(n, _)| *n >= 2).await;
    assert!(by_count.1 > first.1, "{by_count:?}");
    al.stop();

    // With the default count (1000), nothing is signed between the first event and shutdown.
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let first = poll(Duration::from_secs(10), || async { checkpoints(&fx.journal()) }, |(n, _)| *n >= 1).await;
    for n in 0..3 {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    let total = events(&fx.journal());
    assert!(total > first.1);
    assert_eq!(checkpoints(&fx.journal()), first, "the newest events wait for the next checkpoint");
    al.stop();
    assert_eq!(checkpoints(&fx.journal()), (2, total), "one more checkpoint at shutdown, over every event");
}

//! Attacks on approvals, against the real binary.
//!
//! Guessing TOTP codes with a stolen approver token. Three codes are valid at any
//! moment, so at hundreds of guesses a second one would come up within minutes. After
//! `[approvals] mfa_max_failures` wrong codes in a row (5 by default) the human's codes are
//! locked for `mfa_lockout_seconds` (15 minutes): the next code is refused without being
//! checked, even when it is right, the 403 says so and until when, the lock survives a crash of
//! airlock, and only an admin lifts it early.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

/// A six-digit code that is none of the three codes accepted around now.
fn wrong_code(n: u32) -> String {
    let now = Utc::now();
    let valid: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|s| airlock_server::mfa::code_at(CAROL_TOTP, now + chrono::Duration::seconds(*s)).unwrap())
        .collect();
    (n * 7919..).map(|i| format!("{:06}", i % 1_000_000)).find(|c| !valid.contains(c)).unwrap()
}

fn right_code() -> String {
    airlock_server::mfa::code_at(CAROL_TOTP, Utc::now()).unwrap()
}

#[tokio::test]
async fn the_sixth_totp_code_is_refused_even_when_right_and_the_lock_survives_a_crash() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let held = al.act(BOT, &s, "firewall.open", json!({"port": 22})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let approval = held.body["approval"]["id"].as_str().unwrap().to_string();
    let vote = format!("/v1/approvals/{approval}/approve");

    for n in 0..5 {
        let r = al.post(&vote, CAROL, json!({"comment": "ok", "totp": wrong_code(n)})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "wrong code {n}: {}", r.body);
        // The fifth failure locks, and its answer says so.
        let rule = if n < 4 { "mfa" } else { "mfa_locked" };
        assert_eq!(r.body["rule"], rule, "wrong code {n}: {}", r.body);
    }
    // The sixth is right, and refused unchecked; the answer says why, until when, and the fix.
    let locked = al.post(&vote, CAROL, json!({"comment": "ok", "totp": right_code()})).await;
    assert_eq!(locked.status, StatusCode::FORBIDDEN, "{}", locked.body);
    assert_eq!(locked.body["rule"], "mfa_locked", "{}", locked.body);
    let detail = locked.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("locked until") && detail.contains("airlock humans unlock carol"), "{detail}");

    // Approvers see the lock on the approval.
    let view = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(view.body["mfa_locks"][0]["human"], "carol", "{}", view.body);
    assert_eq!(view.body["status"], "pending", "{}", view.body);

    // A crash does not lift it.
    al.crash();
    let al = fx.start();
    let again = al.post(&vote, CAROL, json!({"comment": "ok", "totp": right_code()})).await;
    assert_eq!(again.body["rule"], "mfa_locked", "the lock did not survive a restart: {}", again.body);

    // Only an admin lifts it early; the lock and its lifting are in the journal.
    let (code, out, err) = run(&["humans", "unlock", "carol", "--server", &al.url], &[("AIRLOCK_TOKEN", ALICE)]);
    assert_ne!(code, 0, "a non-admin lifted the lock: {out}");
    assert!(err.contains("admin"), "{err}");
    let (code, out, err) = run(&["humans", "unlock", "carol", "--server", &al.url], &[("AIRLOCK_TOKEN", ADMIN)]);
    assert_eq!(code, 0, "{out}{err}");
    let approved = al.post(&vote, CAROL, json!({"comment": "ok", "totp": right_code()})).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "approved", "{}", approved.body);
    al.stop();
    let journal =
        rusqlite::Connection::open_with_flags(fx.journal(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut q = journal.prepare("SELECT kind, payload FROM events WHERE stream = '_system' ORDER BY pos").unwrap();
    let events: Vec<(String, String)> =
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    let kinds: Vec<&str> = events.iter().filter(|(_, p)| p.contains("carol")).map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["mfa.locked", "mfa.unlocked"], "{events:?}");
}

/// Two `require_approval` entries, `{groups: ["security"]}` and `{groups: ["sre"], quorum: 2}`,
/// used to be merged into "two approvers from security or sre", so two SREs approved what
/// security had to see. Each entry's own requirement must be met.
#[tokio::test]
async fn two_sres_cannot_approve_what_a_security_rule_holds() {
    let policy = format!(
        "{POLICY}\nrequire_approval contains {{\"rule\": \"SEC1\", \"msg\": \"firewall rules need security\", \"groups\": [\"security\"]}} if input.action.tool == \"firewall.rule\"\nrequire_approval contains {{\"rule\": \"SRE2\", \"msg\": \"and two SREs\", \"groups\": [\"sre\"], \"quorum\": 2}} if input.action.tool == \"firewall.rule\"\n"
    );
    let fx = Fixture::new(&policy);
    let al = fx.start();
    let s = al.session(BOT).await;
    let held = al.act(BOT, &s, "firewall.rule", json!({"port": 443})).await;
    assert_eq!(held.status, StatusCode::ACCEPTED, "{}", held.body);
    let action = held.body["id"].as_str().unwrap().to_string();
    let approval = held.body["approval"]["id"].as_str().unwrap().to_string();
    let rules = &held.body["approval"]["requirements"]["rules"];
    assert_eq!(rules.as_array().map(Vec::len), Some(2), "{}", held.body);

    let vote = format!("/v1/approvals/{approval}/approve");
    for sre in [ALICE, BOB] {
        let r = al.post(&vote, sre, json!({"comment": "fine by me"})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let status = al.get(&format!("/v1/actions/{action}"), BOT).await.body["status"].clone();
    assert_eq!(status, "pending_approval", "two SREs approved without security");

    let r = al.post(&vote, CAROL, json!({"comment": "security ok"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let status = al.get(&format!("/v1/actions/{action}"), BOT).await.body["status"].clone();
    assert_eq!(status, "approved");
    al.stop();
}

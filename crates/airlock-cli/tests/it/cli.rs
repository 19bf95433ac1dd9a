//! The `airlock` command line: check, eval, test, audit verify, token, and the client commands
//! against a running server.

use std::path::PathBuf;

use crate::common::*;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_config_and_policy_is_valid() {
    let (code, out, err) =
        run(&["check", "--config", repo().join("examples/quickstart/airlock.toml").to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("6 passed, 0 failed"), "{out}");
    for dir in ["examples/quickstart/policies", "examples/terraform/policies", "examples/policies"] {
        let (code, out, err) = run(&["test", "--policy", repo().join(dir).to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{dir}: {out}{err}");
        assert!(out.contains(" passed, 0 failed"), "{out}");
    }
}

/// The policy library's fixtures: `airlock eval` gives the documented exit code on each.
#[test]
fn the_policy_library_gates_each_fixture_with_its_exit_code() {
    let dir = repo().join("examples/policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.join("fixtures")).unwrap() {
        let fixture = entry.unwrap().path();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap()).unwrap();
        let code_for = match expected["effect"].as_str().unwrap() {
            "allow" => 0,
            "deny" => 1,
            "require_approval" => 2,
            other => panic!("unknown effect {other}"),
        };
        let (code, out, err) = run(
            &[
                "eval",
                "--json",
                "--policy",
                dir.to_str().unwrap(),
                "--input",
                fixture.join("input.json").to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, code_for, "{}: {out}{err}", fixture.display());
        let v: Value = serde_json::from_str(&out).unwrap();
        let rules: Vec<&str> =
            v["decision"]["reasons"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
        let want: Vec<&str> = expected["rules"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(rules, want, "{}", fixture.display());
        seen += 1;
    }
    assert_eq!(seen, 9);
}

#[test]
fn check_lists_every_problem_with_its_key() {
    let fx = Fixture::new(POLICY);
    let text = std::fs::read_to_string(fx.config()).unwrap();
    let broken = text.replacen("tier = \"autonomous\"", "tier = \"autonomous\"\ncolour = \"blue\"", 1).replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"localhost\"",
        1,
    );
    std::fs::write(fx.config(), broken).unwrap();
    let (code, out, err) = run(&["check", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("agents[0].colour: unknown key"), "{err}");
    assert!(err.contains("server.listen"), "{err}");
    let (code, out, _) = run(&["check", "--json", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn a_policy_that_does_not_compile_fails_check_and_stops_serve() {
    let fx = Fixture::new("package airlock\n\ndeny contains x if {\n  x := \n");
    let (code, _, err) = run(&["check", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("main.rego"), "{err}");
    let started = Airlock::start(&fx.config());
    let err = started.err().expect("serve started with a broken policy");
    assert!(err.contains("policy does not load"), "{err}");
    assert!(err.contains("main.rego"), "{err}");
}

#[test]
fn eval_gates_terraform_plans_by_exit_code() {
    let policies = repo().join("examples/terraform/policies");
    for (plan, expected, effect) in [
        ("allow.json", 0, "allow"),
        ("deny-gpu-outside-prod.json", 1, "deny"),
        ("approve-database-delete.json", 2, "require_approval"),
    ] {
        let input = repo().join("examples/terraform/plans").join(plan);
        let (code, out, err) =
            run(&["eval", "--json", "--policy", policies.to_str().unwrap(), "--input", input.to_str().unwrap()], &[]);
        assert_eq!(code, expected, "{plan}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["decision"]["effect"], effect, "{plan}");
    }
    let (code, out, _) = run(
        &[
            "eval",
            "--policy",
            policies.to_str().unwrap(),
            "--input",
            repo().join("examples/terraform/plans/deny-gpu-outside-prod.json").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("[TF100]"), "{out}");

    // Not JSON, or a policy that fails: 3, never a pass.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
    let (code, _, err) = run(
        &["eval", "--policy", policies.to_str().unwrap(), "--input", dir.path().join("bad.json").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    let fx = Fixture::new(POLICY);
    std::fs::write(dir.path().join("slow.json"), r#"{"action": {"tool": "slow"}}"#).unwrap();
    let (code, out, _) = run(
        &["eval", "--config", fx.config().to_str().unwrap(), "--input", dir.path().join("slow.json").to_str().unwrap()],
        &[("CAROL_TOTP", CAROL_TOTP)],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("time limit"), "{out}");
}

#[test]
fn failing_policy_tests_fail_the_command() {
    let fx = Fixture::new(POLICY);
    std::fs::write(
        fx.dir.path().join("policies/main_test.rego"),
        "package airlock\n\ntest_drop_denied if {\n  count(deny) == 1 with input as {\"action\": {\"tool\": \"db.drop\"}}\n}\n\ntest_wrong if {\n  count(deny) == 5 with input as {\"action\": {\"tool\": \"db.drop\"}}\n}\n",
    )
    .unwrap();
    let (code, out, _) = run(&["test", "--config", fx.config().to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  data.airlock.test_wrong"), "{out}");
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    let (_, out, _) = run(&["test", "--json", "--config", fx.config().to_str().unwrap()], &[]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cases"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn audit_verify_detects_a_changed_byte() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    for n in 0..5 {
        al.act(BOT, &s, "ticket.create", json!({"n": n})).await;
    }
    al.act(BOT, &s, "db.drop", json!({"name": "orders"})).await;
    al.post("/v1/kill", ADMIN, json!({"scope": "all", "reason": "drill"})).await;
    al.stop();

    let config = fx.config();
    let (code, out, err) = run(&["audit", "verify", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    // 6 actions × 2 events, the session, the kill switch and the first policy activation.
    assert!(out.starts_with("ok: 15 events in 2 streams"), "{out}");

    // Flip one byte of one event's payload: `orders` → `orderz`.
    let conn = rusqlite::Connection::open(fx.journal()).unwrap();
    let (pos, seq): (i64, i64) = conn
        .query_row("SELECT pos, seq FROM events WHERE payload LIKE '%orders%' ORDER BY pos LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    conn.execute("UPDATE events SET payload = replace(payload, 'orders', 'orderz') WHERE pos = ?1", [pos]).unwrap();
    drop(conn);
    let (code, out, _) = run(&["audit", "verify", "--json", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["report"]["first_problem"]["seq"], seq);
    assert_eq!(v["report"]["first_problem"]["stream"], s.as_str());
    assert!(v["report"]["first_problem"]["problem"].as_str().unwrap().contains("altered"), "{v}");
}

#[tokio::test]
async fn approvals_and_kill_from_the_command_line() {
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let s = al.session(BOT).await;
    let r = al.act(BOT, &s, "nodepool.scale", json!({"pool": "web", "count": 9})).await;
    let approval = r.body["approval"]["id"].as_str().unwrap().to_string();
    let server = al.url.clone();
    let alice = [("AIRLOCK_TOKEN", ALICE)];

    let (code, out, err) = run(&["approvals", "list", "--server", &server], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&approval) && out.contains("nodepool.scale"), "{out}");
    let (_, out, _) = run(&["approvals", "show", &approval, "--server", &server], &alice);
    assert!(out.contains("[SC1] scaling needs an SRE"), "{out}");
    assert!(out.contains("\"count\": 9"), "{out}");

    let (code, _, err) =
        run(&["approvals", "approve", &approval, "--server", &server, "-m", "ok"], &[("AIRLOCK_TOKEN", VIEWER)]);
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("[rule role]"), "{err}");
    let (code, out, err) = run(&["approvals", "approve", &approval, "--server", &server, "-m", "ok"], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is approved"), "{out}");
    let (_, out, _) = run(&["approvals", "list", "--json", "--status", "approved", "--server", &server], &alice);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["approvals"][0]["id"], approval.as_str());

    // Step-up from the command line: without a code it says what to send; with one it counts.
    let fw = al.act(BOT, &s, "firewall.open", json!({"port": 22})).await;
    let fw_approval = fw.body["approval"]["id"].as_str().unwrap().to_string();
    let carol = [("AIRLOCK_TOKEN", CAROL)];
    let (code, _, err) = run(&["approvals", "approve", &fw_approval, "--server", &server, "-m", "ok"], &carol);
    assert_eq!(code, 1);
    assert!(err.contains("[rule mfa]") && err.contains("totp"), "{err}");
    let totp = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let (code, out, err) =
        run(&["approvals", "approve", &fw_approval, "--server", &server, "-m", "ok", "--totp", &totp], &carol);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is approved"), "{out}");
    // A deny ends an approval at once, and the agent sees it denied.
    let other = al.act(BOT, &s, "nodepool.scale", json!({"pool": "db", "count": 2})).await;
    let other_approval = other.body["approval"]["id"].as_str().unwrap().to_string();
    let (code, out, err) =
        run(&["approvals", "deny", &other_approval, "--server", &server, "-m", "not during the freeze"], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is denied"), "{out}");
    let seen = al.get(&format!("/v1/actions/{}", other.body["id"].as_str().unwrap()), BOT).await;
    assert_eq!(seen.body["status"], "denied", "{}", seen.body);

    // The session as a human reads it: its actions with decisions, then its timeline.
    let (code, out, err) = run(&["sessions", "show", &s, "--server", &server], &alice);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nodepool.scale") && out.contains("firewall.open") && out.contains("SC1"), "{out}");
    assert!(out.contains("timeline") && out.contains("not during the freeze"), "{out}");

    let admin = [("AIRLOCK_TOKEN", ADMIN)];
    let (code, out, err) =
        run(&["kill", "engage", "--scope", "all", "--reason", "game day", "--server", &server, "--json"], &admin);
    assert_eq!(code, 0, "{err}");
    let ks: Value = serde_json::from_str(&out).unwrap();
    let denied = al.act(BOT, &s, "ticket.create", json!({})).await;
    assert!(denied.body["decision"]["reasons"][0]["msg"].as_str().unwrap().contains("game day"));
    let (_, out, _) = run(&["kill", "list", "--server", &server], &admin);
    assert!(out.contains("game day"), "{out}");
    let (code, _, _) = run(&["kill", "release", ks["id"].as_str().unwrap(), "--server", &server], &admin);
    assert_eq!(code, 0);
    assert_eq!(al.act(BOT, &s, "ticket.create", json!({})).await.status, reqwest::StatusCode::OK);

    let (code, _, err) = run(&["approvals", "list", "--server", &server], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("AIRLOCK_TOKEN"), "{err}");
}

#[test]
fn token_new_makes_a_usable_config_value() {
    let (code, out, _) = run(&["token", "new", "--json"], &[]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let token = v["token"].as_str().unwrap();
    assert_eq!(v["config_value"].as_str().unwrap(), hash(token));
    let (_, out2, _) = run(&["token", "new", "--json"], &[]);
    assert_ne!(out, out2);
}

/// The README's quickstart command, run as a newcomer would (on a copy, at a free port).
#[test]
fn quickstart_tour_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("examples/quickstart");
    let dst = dir.path().join("quickstart");
    std::fs::create_dir_all(dst.join("policies")).unwrap();
    for f in ["airlock.toml", "run.sh", "policies/airlock.rego", "policies/airlock_test.rego", "policies/data.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let out = std::process::Command::new("bash")
        .arg(dst.join("run.sh"))
        .arg("--tour-only")
        .env("AIRLOCK_BIN", airlock_bin())
        .env("AIRLOCK_LISTEN", "127.0.0.1:0")
        .env_remove("AIRLOCK_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "HTTP 403  status=denied  effect=deny",
        "reason [FW001]",
        "HTTP 202  status=pending_approval",
        "the agent's long-poll returned: status=approved",
        "reason [airlock.kill_switch]",
        "every hash chain intact",
        "Tour done.",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}\n{stderr}");
    }
}

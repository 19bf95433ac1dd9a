//! `airlock plans` at a terminal: an agent proposes and amends a plan from a file, humans approve
//! or deny its versions, and the API agrees with what the command printed (docs/plans.md, "From
//! the command line").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// Plans need two SREs.
const PLAN_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN1", "msg": "plans need two SREs", "groups": ["sre"], "quorum": 2} if {
    input.kind == "plan.propose"
}
"#;

fn first_version() -> Value {
    json!({
        "goal": "back up and migrate orders",
        "budget_usd": 100,
        "steps": [
            {"id": "backup", "tool": "db.backup"},
            {"id": "migrate", "tool": "db.migrate",
             "arguments": {"type": "object", "properties": {"version": {"maximum": 41}}}},
            {"id": "notify", "tool": "chat.post"}
        ]
    })
}

/// Adds `vacuum`, changes `migrate`'s schema and the goal, drops `notify`, keeps `backup`.
fn second_version() -> Value {
    json!({
        "goal": "back up, migrate and vacuum orders",
        "budget_usd": 100,
        "steps": [
            {"id": "backup", "tool": "db.backup"},
            {"id": "migrate", "tool": "db.migrate",
             "arguments": {"type": "object", "properties": {"version": {"maximum": 42}}}},
            {"id": "vacuum", "tool": "db.vacuum", "description": "reclaim space"}
        ]
    })
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `airlock <args> --server <url>` with `token` in AIRLOCK_TOKEN.
fn cli(al: &Airlock, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", al.url.as_str()]);
    run(&all, &[("AIRLOCK_TOKEN", token)])
}

/// Like [`cli`], with `stdin` on standard input.
fn cli_stdin(al: &Airlock, token: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = airlock_cmd();
    cmd.args(args).args(["--server", al.url.as_str()]).env("AIRLOCK_TOKEN", token);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn plan_view(al: &Airlock, session: &str, plan: &str) -> Value {
    let r = al.get(&format!("/v1/sessions/{session}/plans/{plan}"), ALICE).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

/// Proposes the first version with the CLI (`--json`) and returns the plan id.
fn propose(al: &Airlock, session: &str, dir: &Path) -> String {
    let file = write(dir, "plan.json", &first_version().to_string());
    let (code, out, err) = cli(al, BOT, &["plans", "propose", session, "--file", file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "pending", "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_plan_proposed_from_a_file_is_in_force_once_two_humans_approve_it_from_the_command_line() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "plan.json", &serde_json::to_string_pretty(&first_version()).unwrap());

    let (code, out, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let listed = al.get(&format!("/v1/sessions/{session}/plans"), ALICE).await;
    let plan = listed.body["plans"][0]["id"].as_str().unwrap().to_string();
    let approval = listed.body["plans"][0]["versions"][0]["approval_id"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("plan {plan} version 1 waits for approval {approval}")), "{out}");
    assert!(out.contains(&format!("airlock plans approve {session} {plan} -m")), "{out}");

    // An agent can't vote, and is told whose token it takes.
    let (code, _, err) = cli(&al, BOT, &["plans", "approve", &session, &plan, "-m", "mine"]);
    assert_eq!(code, 1);
    assert!(err.contains("[rule human_only]") && err.contains("agents can't vote"), "{err}");

    // One SRE is not a quorum of two: the command says what is still missing.
    let (code, out, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "-m", "plan reads well"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("still needs 1 more approval from `sre` (PLAN1)"), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["status"], "pending", "{view}");
    assert!(view["in_force"].is_null(), "{view}");

    let (code, out, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "-m", "agreed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is in force (approved by alice, bob)")), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(view["in_force"], 1, "{view}");
    assert_eq!(view["versions"][0]["approved_by"], json!(["alice", "bob"]));

    // Nothing waits any more.
    let (code, _, err) = cli(&al, CAROL, &["plans", "approve", &session, &plan, "-m", "late"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("plan {plan} has no version waiting for approval; version 1 is in force")), "{err}");
    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "7", "-m", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("plan {plan} has no version 7")), "{err}");
}

#[tokio::test]
async fn an_amendment_from_the_command_line_prints_its_difference_and_is_in_force_once_approved() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = propose(&al, &session, dir.path());
    for (human, why) in [(ALICE, "ok"), (BOB, "ok too")] {
        let (code, _, err) = cli(&al, human, &["plans", "approve", &session, &plan, "-m", why]);
        assert_eq!(code, 0, "{err}");
    }

    let file = write(dir.path(), "plan-v2.json", &serde_json::to_string_pretty(&second_version()).unwrap());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("plan {plan} version 2 waits for approval apr_")), "{out}");
    assert!(out.contains("version 1 stays in force until then"), "{out}");
    for line in [
        "~ goal: `back up and migrate orders` → `back up, migrate and vacuum orders`",
        "+ step vacuum db.vacuum (reclaim space)",
        "- step notify chat.post",
        "~ step migrate db.migrate: arguments {",
        "= unchanged: backup",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    assert!(!out.contains("budget"), "the budget did not change:\n{out}");

    // `plans show` prints the pending amendment the same way.
    let (code, shown, err) = cli(&al, ALICE, &["plans", "show", &session, &plan]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("pending version 2 changes:"), "{shown}");
    for line in ["+ step vacuum db.vacuum (reclaim space)", "- step notify chat.post", "= unchanged: backup"] {
        assert!(shown.contains(line), "missing `{line}` in:\n{shown}");
    }

    // A second amendment while one waits: the command says who must act first.
    let (code, _, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains(&format!("airlock plans approve|deny {session} {plan}")), "{err}");

    // `--json` prints the vote's answer as the API gave it.
    let (code, out, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "-m", "vacuum is fine", "--json"]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["tool"], "airlock__propose_plan", "{answer}");
    assert_eq!(answer["approval"]["status"], "pending", "{answer}");
    assert_eq!(answer["approval"]["votes"][0]["human"], "alice", "{answer}");

    let (code, out, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "-m", "agreed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 2 is in force")), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["in_force"], 2, "{view}");
    let steps: Vec<&str> = view["steps"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(steps, ["backup", "migrate", "vacuum"], "{view}");
    // An older version can't be voted on.
    let (code, _, err) = cli(&al, CAROL, &["plans", "deny", &session, &plan, "--version", "1", "-m", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("version 1 of plan {plan} is superseded, not waiting for approval")), "{err}");
}

#[tokio::test]
async fn a_denied_amendment_leaves_the_version_in_force_and_a_denied_plan_has_none() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let dir = tempfile::tempdir().unwrap();

    // A first version denied: nothing is in force.
    let session = al.session(BOT).await;
    let plan = propose(&al, &session, dir.path());
    let (code, out, err) = cli(&al, ALICE, &["plans", "deny", &session, &plan, "-m", "not during the freeze"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is denied; the plan has no version in force")), "{out}");
    assert_eq!(plan_view(&al, &session, &plan).await["status"], "denied");
    let (code, _, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "-m", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no version waiting for approval; its newest version, 1, is denied"), "{err}");

    // An amendment (read from standard input) denied: the version before stays in force.
    let session = al.session(BOT).await;
    let plan = propose(&al, &session, dir.path());
    for human in [ALICE, BOB] {
        let (code, _, err) = cli(&al, human, &["plans", "approve", &session, &plan, "-m", "ok"]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) =
        cli_stdin(&al, BOT, &["plans", "amend", &session, &plan, "--file", "-"], &second_version().to_string());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ step vacuum db.vacuum"), "{out}");
    let (code, out, err) = cli(&al, BOB, &["plans", "deny", &session, &plan, "-m", "vacuum locks the table"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 2 is denied; version 1 stays in force")), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["in_force"], 1, "{view}");
    assert_eq!(view["versions"][1]["status"], "denied", "{view}");
}

#[tokio::test]
async fn a_file_that_is_not_a_plan_is_refused_with_its_place_before_any_request() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();

    let broken =
        write(dir.path(), "broken.json", "{\n  \"goal\": \"g\",\n  \"steps\": [\n    {\"tool\": \"a\",}\n  ]\n}\n");
    let (code, out, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("broken.json` is not valid JSON: line 4, column"), "{err}");
    assert!(!err.contains(" at line "), "the place is said once: {err}");

    let misspelt =
        write(dir.path(), "misspelt.json", "{\"goal\": \"g\",\n \"steps\": [{\"tool\": \"a\", \"argumnets\": {}}]}");
    let (code, _, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", misspelt.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("misspelt.json` is not a plan: line 2, column") && err.contains("`argumnets`"), "{err}");

    let (code, _, err) = cli_stdin(&al, BOT, &["plans", "propose", &session, "--file", "-"], "[1, 2]");
    assert_eq!(code, 1);
    assert!(err.contains("standard input is not a plan") && !err.contains("PlanDraft"), "{err}");

    let (code, _, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", "/nonexistent/plan.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read `/nonexistent/plan.json`"), "{err}");

    // Nothing reached the server.
    let listed = al.get(&format!("/v1/sessions/{session}/plans"), ALICE).await;
    assert_eq!(listed.body["plans"], json!([]), "{}", listed.body);

    // A human's token can't propose; the command says whose can.
    let good = write(dir.path(), "plan.json", &first_version().to_string());
    let (code, _, err) = cli(&al, ALICE, &["plans", "propose", &session, "--file", good.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("[rule agent_only]") && err.contains("with an agent's token"), "{err}");
}

#[tokio::test]
async fn a_plan_policy_allows_outright_has_nothing_to_vote_on() {
    // The usual test policy says nothing about plans, and the bot is autonomous.
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "plan.json", &first_version().to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version 1 is in force: policy allowed it without an approval"), "{out}");
    let listed = al.get(&format!("/v1/sessions/{session}/plans"), ALICE).await;
    let plan = listed.body["plans"][0]["id"].as_str().unwrap().to_string();

    // Proposing again is a conflict; the command names the amendment to use instead.
    let (code, _, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("airlock plans amend {session} {plan} --file")), "{err}");

    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "-m", "ok"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("plan {plan} has no version waiting for approval; version 1 is in force")), "{err}");
    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "1", "-m", "ok"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no approval to vote on: policy allowed it without one"), "{err}");

    // An amendment allowed at once still shows what it changed.
    let v2 = write(dir.path(), "plan-v2.json", &second_version().to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", v2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version 2 is in force: policy allowed it without an approval"), "{out}");
    assert!(out.contains("+ step vacuum db.vacuum") && out.contains("- step notify chat.post"), "{out}");
}

/// Security approves plans with a TOTP code; plans over $1000 are refused outright.
const MFA_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN2", "msg": "plans need security, with step-up", "groups": ["security"], "mfa": true} if {
    input.kind == "plan.propose"
}

deny contains {"rule": "PLAN3", "msg": "plans over $1000 are not taken"} if {
    input.kind == "plan.propose"
    input.plan.budget_usd > 1000
}
"#;

#[tokio::test]
async fn a_plan_vote_takes_a_totp_code_and_a_refused_plan_says_why() {
    let fx = Fixture::new(MFA_POLICY);
    let al = fx.start();
    let dir = tempfile::tempdir().unwrap();

    let session = al.session(BOT).await;
    let mut costly = first_version();
    costly["budget_usd"] = json!(5000);
    let file = write(dir.path(), "costly.json", &costly.to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("version 1 was refused") && out.contains("[PLAN3] plans over $1000 are not taken"), "{out}");

    let session = al.session(BOT).await;
    let plan = propose(&al, &session, dir.path());
    // Without a code, the vote is refused and the command says which option to add.
    let (code, _, err) = cli(&al, CAROL, &["plans", "approve", &session, &plan, "-m", "ok"]);
    assert_eq!(code, 1);
    assert!(err.contains("[rule mfa]") && err.contains("--totp CODE"), "{err}");
    let totp = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let (code, out, err) = cli(&al, CAROL, &["plans", "approve", &session, &plan, "-m", "ok", "--totp", &totp]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is in force (approved by carol)")), "{out}");
    assert_eq!(plan_view(&al, &session, &plan).await["in_force"], 1);
}

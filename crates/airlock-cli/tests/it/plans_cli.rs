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
    assert!(out.contains(&format!("airlock plans approve {session} {plan} --version 1 -m")), "{out}");

    // A vote names the version the human read: without `--version` nothing is sent.
    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "-m", "plan reads well"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--version <N>"), "{err}");
    let (code, _, err) = cli(&al, ALICE, &["plans", "deny", &session, &plan, "-m", "no"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--version <N>"), "{err}");
    assert_eq!(plan_view(&al, &session, &plan).await["versions"][0]["status"], "pending");

    // An agent can't vote, and is told whose token it takes.
    let (code, _, err) = cli(&al, BOT, &["plans", "approve", &session, &plan, "--version", "1", "-m", "mine"]);
    assert_eq!(code, 1);
    assert!(err.contains("[rule human_only]") && err.contains("agents can't vote"), "{err}");

    // One SRE is not a quorum of two: the command says what is still missing.
    let (code, out, err) =
        cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "1", "-m", "plan reads well"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("still needs 1 more approval from `sre` (PLAN1)"), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["status"], "pending", "{view}");
    assert!(view["in_force"].is_null(), "{view}");

    let (code, out, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "--version", "1", "-m", "agreed"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is in force (approved by alice, bob)")), "{out}");
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(view["in_force"], 1, "{view}");
    assert_eq!(view["versions"][0]["approved_by"], json!(["alice", "bob"]));

    // Nothing waits any more.
    let (code, _, err) = cli(&al, CAROL, &["plans", "approve", &session, &plan, "--version", "1", "-m", "late"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("version 1 of plan {plan} is approved, not waiting for approval")), "{err}");
    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "7", "-m", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("plan {plan} has no version 7; it has versions 1 to 1")), "{err}");
}

#[tokio::test]
async fn an_amendment_from_the_command_line_prints_its_difference_and_is_in_force_once_approved() {
    let fx = Fixture::new(PLAN_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = propose(&al, &session, dir.path());
    for (human, why) in [(ALICE, "ok"), (BOB, "ok too")] {
        let (code, _, err) = cli(&al, human, &["plans", "approve", &session, &plan, "--version", "1", "-m", why]);
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
    assert!(out.contains(&format!("a human approves it with: airlock plans approve {session} {plan} --version 2 -m")));

    // `plans show` prints the pending amendment the same way.
    let (code, shown, err) = cli(&al, ALICE, &["plans", "show", &session, &plan]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("pending version 2 changes:"), "{shown}");
    for line in ["+ step vacuum db.vacuum (reclaim space)", "- step notify chat.post", "= unchanged: backup"] {
        assert!(shown.contains(line), "missing `{line}` in:\n{shown}");
    }
    assert!(
        shown.contains(&format!("vote with: airlock plans approve|deny {session} {plan} --version 2 -m")),
        "{shown}"
    );

    // A second amendment while one waits: the command says who must act first.
    let (code, _, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("409") && err.contains(&format!("airlock plans approve|deny {session} {plan} --version 2 -m")),
        "{err}"
    );

    // `--json` prints the vote's answer as the API gave it.
    let (code, out, err) =
        cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "2", "-m", "vacuum is fine", "--json"]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["tool"], "airlock__propose_plan", "{answer}");
    assert_eq!(answer["approval"]["status"], "pending", "{answer}");
    assert_eq!(answer["approval"]["votes"][0]["human"], "alice", "{answer}");

    let (code, out, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "--version", "2", "-m", "agreed"]);
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
    let (code, out, err) =
        cli(&al, ALICE, &["plans", "deny", &session, &plan, "--version", "1", "-m", "not during the freeze"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is denied; the plan has no version in force")), "{out}");
    assert_eq!(plan_view(&al, &session, &plan).await["status"], "denied");
    let (code, _, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "--version", "1", "-m", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("version 1 of plan {plan} is denied, not waiting for approval")), "{err}");

    // An amendment (read from standard input) denied: the version before stays in force.
    let session = al.session(BOT).await;
    let plan = propose(&al, &session, dir.path());
    for human in [ALICE, BOB] {
        let (code, _, err) = cli(&al, human, &["plans", "approve", &session, &plan, "--version", "1", "-m", "ok"]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) =
        cli_stdin(&al, BOT, &["plans", "amend", &session, &plan, "--file", "-"], &second_version().to_string());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ step vacuum db.vacuum"), "{out}");
    let (code, out, err) =
        cli(&al, BOB, &["plans", "deny", &session, &plan, "--version", "2", "-m", "vacuum locks the table"]);
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

    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "2", "-m", "ok"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("plan {plan} has no version 2; it has versions 1 to 1")), "{err}");
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
    let (code, _, err) = cli(&al, CAROL, &["plans", "approve", &session, &plan, "--version", "1", "-m", "ok"]);
    assert_eq!(code, 1);
    assert!(err.contains("[rule mfa]") && err.contains("--totp CODE"), "{err}");
    let totp = airlock_server::mfa::code_at(CAROL_TOTP, chrono::Utc::now()).unwrap();
    let (code, out, err) =
        cli(&al, CAROL, &["plans", "approve", &session, &plan, "--version", "1", "-m", "ok", "--totp", &totp]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 1 is in force (approved by carol)")), "{out}");
    assert_eq!(plan_view(&al, &session, &plan).await["in_force"], 1);
}

/// Plans need one SRE: an approval puts a version in force at once.
const QUORUM_ONE_POLICY: &str = r#"package airlock

import rego.v1

require_approval contains {"rule": "PLAN4", "msg": "plans need an SRE", "groups": ["sre"]} if {
    input.kind == "plan.propose"
}
"#;

#[tokio::test]
async fn a_vote_never_lands_on_a_version_proposed_after_the_human_read_the_plan() {
    let fx = Fixture::new(QUORUM_ONE_POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = propose(&al, &session, dir.path());
    let (code, _, err) = cli(&al, ALICE, &["plans", "approve", &session, &plan, "--version", "1", "-m", "ok"]);
    assert_eq!(code, 0, "{err}");

    // Version 2 waits; a human reads it and denies it.
    let v2 = write(dir.path(), "plan-v2.json", &second_version().to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", v2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, shown, err) = cli(&al, BOB, &["plans", "show", &session, &plan]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("pending version 2 changes:") && shown.contains("--version 2 -m"), "{shown}");
    let (code, out, err) = cli(&al, ALICE, &["plans", "deny", &session, &plan, "--version", "2", "-m", "no vacuum"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("plan {plan} version 2 is denied; version 1 stays in force")), "{out}");

    // The agent at once proposes a version 3 of its choosing...
    let mut v3 = second_version();
    v3["goal"] = json!("drop orders");
    v3["steps"] = json!([{"id": "drop", "tool": "db.drop"}]);
    let v3 = write(dir.path(), "plan-v3.json", &v3.to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", v3.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("plan {plan} version 3 waits for approval")), "{out}");

    // ...and a vote for the version the human read does not land on it.
    let (code, out, err) = cli(&al, BOB, &["plans", "approve", &session, &plan, "--version", "2", "-m", "looked fine"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!("version 2 of plan {plan} is denied, not waiting for approval; version 3 is")),
        "{err}"
    );
    let view = plan_view(&al, &session, &plan).await;
    assert_eq!(view["pending"], 3, "{view}");
    assert_eq!(view["in_force"], 1, "{view}");
    assert_eq!(view["versions"][2]["status"], "pending", "{view}");
    let approval = view["versions"][2]["approval_id"].as_str().unwrap();
    let apr = al.get(&format!("/v1/approvals/{approval}"), ALICE).await;
    assert_eq!(apr.status, StatusCode::OK, "{}", apr.body);
    assert_eq!(apr.body["votes"], json!([]), "{}", apr.body);
}

#[tokio::test]
async fn an_amendment_that_only_changes_who_runs_a_step_says_so() {
    // The usual test policy lets the bot's plans through: each amendment is in force at once.
    let fx = Fixture::new(POLICY);
    let al = fx.start();
    let session = al.session(BOT).await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = write(dir.path(), "plan.json", &first_version().to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "propose", &session, "--file", v1.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let listed = al.get(&format!("/v1/sessions/{session}/plans"), ALICE).await;
    let plan = listed.body["plans"][0]["id"].as_str().unwrap().to_string();

    // Only `migrate`'s assignee changes.
    let mut v2 = first_version();
    v2["steps"][1]["assignee"] = json!("exec-*");
    let file = write(dir.path(), "plan-v2.json", &v2.to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("~ step migrate db.migrate: assignee none → `exec-*`\n"), "{out}");
    assert!(out.contains("= unchanged: backup, notify"), "{out}");

    // Then only its lease and attempts, and a step is added for another agent.
    let mut v3 = v2.clone();
    v3["steps"][1]["lease_seconds"] = json!(60);
    v3["steps"][1]["max_attempts"] = json!(2);
    v3["steps"].as_array_mut().unwrap().push(json!(
        {"id": "deploy", "tool": "pki.deploy", "description": "roll out", "assignee": "deployer", "lease_seconds": 120}
    ));
    let file = write(dir.path(), "plan-v3.json", &v3.to_string());
    let (code, out, err) = cli(&al, BOT, &["plans", "amend", &session, &plan, "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("~ step migrate db.migrate: lease_seconds none → 60, max_attempts none → 2\n"), "{out}");
    assert!(out.contains("+ step deploy pki.deploy (roll out) assignee deployer lease_seconds 120\n"), "{out}");

    // `plans show` names each step's assignee.
    let (code, shown, err) = cli(&al, ALICE, &["plans", "show", &session, &plan]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("ASSIGNEE"), "{shown}");
    let row = |id: &str| {
        let first = |l: &str| l.split_whitespace().find(|w| *w != "│").map(str::to_string);
        shown.lines().find(|l| first(l).as_deref() == Some(id)).unwrap_or_else(|| panic!("no {id} in {shown}"))
    };
    assert!(row("migrate").contains("exec-*") && row("deploy").contains("deployer"), "{shown}");
    assert!(!row("backup").contains("exec-*"), "{shown}");
}

//! Loading, evaluating and testing real policy directories.

use std::path::Path;
use std::time::Duration;

use airlock_core::PolicyFailure;
use airlock_policy::{Options, Policy, TestOutcome};
use serde_json::json;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const POLICY: &str = r#"package airlock

deny contains {"rule": "TF100", "msg": sprintf("%v is forbidden", [input.action.tool])} if {
    input.action.tool == "db__drop"
}

require_approval contains {"rule": "SCALE", "msg": "scaling needs a human", "quorum": 2, "groups": ["sre"]} if {
    input.action.name == "scale"
}

cost_usd := 0.25 if input.action.name == "scale"
"#;

#[test]
fn evaluates_the_host_contract() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", POLICY);
    let policy = Policy::load(dir.path(), &Options::default()).unwrap();
    assert!(policy.revision().starts_with("sha256:"));

    let eval = policy.evaluate(&json!({"action": {"tool": "db__drop", "name": "drop"}}));
    let out = eval.output.unwrap();
    assert_eq!(out.deny, vec![json!({"rule": "TF100", "msg": "db__drop is forbidden"})]);
    assert!(out.require_approval.is_empty());
    assert_eq!(out.cost_usd, None);

    let out = policy.evaluate(&json!({"action": {"tool": "infra__scale", "name": "scale"}})).output.unwrap();
    assert!(out.deny.is_empty());
    assert_eq!(out.require_approval.len(), 1);
    assert_eq!(out.cost_usd, Some(json!(0.25)));
}

#[test]
fn revision_follows_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", POLICY);
    let a = Policy::load(dir.path(), &Options::default()).unwrap();
    let b = Policy::load(dir.path(), &Options::default()).unwrap();
    assert_eq!(a.revision(), b.revision());
    write(dir.path(), "data.json", r#"{"limits": {"max": 3}}"#);
    let c = Policy::load(dir.path(), &Options::default()).unwrap();
    assert_ne!(a.revision(), c.revision());
}

#[test]
fn syntax_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "broken.rego", "package airlock\n\ndeny contains x if {\n  x := \n");
    let err = Policy::load(dir.path(), &Options::default()).unwrap_err().to_string();
    assert!(err.contains("broken.rego"), "{err}");
    assert!(err.contains(":4:") || err.contains(":3:"), "{err}");
}

#[test]
fn unknown_functions_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", "package airlock\ndeny contains x if { x := no_such_fn(1) }\n");
    let err = Policy::load(dir.path(), &Options::default()).unwrap_err().to_string();
    assert!(err.contains("no_such_fn"), "{err}");
}

#[test]
fn runaway_policy_times_out_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.rego",
        "package airlock\ndeny contains \"slow\" if {\n  input.slow\n  count([x | some x in numbers.range(1, 20000); some y in numbers.range(1, 20000); x == y]) > 0\n}\n",
    );
    let policy = Policy::load(dir.path(), &Options { timeout: Duration::from_millis(50), coverage: false }).unwrap();
    let eval = policy.evaluate(&json!({"slow": true}));
    let err = eval.output.unwrap_err();
    assert!(matches!(&err, PolicyFailure::Evaluation { rule, .. } if rule == "data.airlock.deny"), "{err:?}");
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(eval.eval_us < 5_000_000, "took {} us", eval.eval_us);
}

#[test]
fn runs_policy_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.rego", POLICY);
    write(
        dir.path(),
        "main_test.rego",
        r#"package airlock

test_drop_denied if {
    count(deny) == 1 with input as {"action": {"tool": "db__drop"}}
}

test_wrong_expectation if {
    count(deny) == 0 with input as {"action": {"tool": "db__drop"}}
}
"#,
    );
    let report = Policy::load(dir.path(), &Options::default()).unwrap().run_tests();
    assert_eq!(report.cases.len(), 2);
    assert_eq!(report.cases[0].outcome, TestOutcome::Pass);
    assert_eq!(report.cases[0].name, "data.airlock.test_drop_denied");
    assert_eq!(report.cases[1].outcome, TestOutcome::Fail);
    assert_eq!(report.passed(), 1);
    assert_eq!(report.failed(), 1);
}

#[test]
fn redact_is_evaluated_beside_the_decision_and_its_failure_is_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.rego",
        r#"package airlock

import rego.v1

deny contains "no drops" if input.action.tool == "db__drop"

redact contains "arguments.password"
redact contains "arguments.db.conn_string" if input.action.tool == "db__connect"

# Two values for one key: a conflict, which is an evaluation error, for one tool only.
secret_field := "token" if input.action.tool == "broken"
secret_field := "password" if input.action.tool == "broken"
redact contains sprintf("arguments.%s", [secret_field]) if input.action.tool == "broken"
"#,
    );
    let policy = Policy::load(dir.path(), &Options::default()).unwrap();
    let out = policy.evaluate(&json!({"action": {"tool": "db__connect"}})).output.unwrap();
    assert_eq!(out.redact, Ok(Some(json!(["arguments.db.conn_string", "arguments.password"]))));
    let out = policy.evaluate(&json!({"action": {"tool": "db__drop"}})).output.unwrap();
    assert_eq!(out.deny, vec![json!("no drops")]);
    assert_eq!(out.redact, Ok(Some(json!(["arguments.password"]))));
    // The redact rule fails; the decision rules still evaluated.
    let out = policy.evaluate(&json!({"action": {"tool": "broken"}})).output.unwrap();
    assert!(out.deny.is_empty());
    let err = out.redact.unwrap_err();
    assert!(matches!(&err, PolicyFailure::Evaluation { rule, .. } if rule == "data.airlock.redact"), "{err:?}");
    assert!(err.to_string().starts_with("`data.airlock.redact`: "), "{err}");
}

//! The fuzz targets in the normal test suite: the committed corpus (`fuzz/corpus/<target>/`,
//! seeds and every input a fuzzing run kept or found) replayed, and generated inputs, through the
//! same functions `scripts/fuzz.sh` fuzzes. A panic or a broken property fails the test and
//! names the input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use airlock_fuzz::Target;
use proptest::prelude::*;
use serde_json::{Value, json};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus for `{target}` at {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.path(), std::fs::read(e.path()).expect("a corpus file reads")))
        .collect();
    inputs.sort();
    inputs
}

/// Runs `target` on one input; what went wrong, if anything.
fn run(target: Target, data: &[u8]) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(|| target(data))) {
        Ok(Ok(())) => None,
        Ok(Err(finding)) => Some(finding.0),
        Err(panic) => Some(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default()
        )),
    }
}

fn replay(name: &str, target: Target) {
    let inputs = corpus(name);
    assert!(inputs.len() >= 3, "the `{name}` corpus has {} inputs; seed it", inputs.len());
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|(path, data)| run(target, data).map(|why| format!("{}: {why}", path.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} `{name}` inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn the_config_corpus_parses_or_names_a_problem() {
    replay("config", airlock_fuzz::config);
}

#[test]
fn the_http_corpus_is_answered_without_an_internal_error() {
    replay("http", airlock_fuzz::http);
}

#[test]
fn the_policy_input_corpus_is_decided_and_never_fails_open() {
    replay("policy_input", airlock_fuzz::policy_input);
}

#[test]
fn the_mcp_corpus_is_answered_without_an_internal_error() {
    replay("mcp", airlock_fuzz::mcp);
}

#[test]
fn the_journal_corpus_verifies_without_a_panic_and_edits_are_caught() {
    replay("journal", airlock_fuzz::journal);
}

/// A decision-contract entry as an agent could shape it through its arguments.
fn entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        (
            proptest::option::of(any::<String>()),
            proptest::option::of(prop_oneof![
                Just(json!("low")),
                Just(json!("CRITICAL")),
                Just(json!("bogus")),
                Just(json!(3))
            ]),
            proptest::option::of(prop_oneof![any::<i64>().prop_map(Value::from), Just(json!("two")), Just(json!(1.5))]),
            proptest::option::of(prop_oneof![
                any::<u64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                Just(json!(1e300)),
                Just(json!("soon"))
            ]),
            proptest::option::of(prop_oneof![Just(json!("warn")), Just(json!("WARN")), Just(json!(true))]),
            proptest::option::of(prop_oneof![Just(json!(["sre"])), Just(json!("sre")), Just(json!([1, null]))]),
        )
            .prop_map(|(rule, risk, quorum, ttl, enforcement, groups)| {
                let mut e = serde_json::Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        e.insert(k.into(), v);
                    }
                };
                put("rule", rule.map(Value::String));
                put("risk", risk);
                put("quorum", quorum);
                put("ttl_seconds", ttl);
                put("enforcement", enforcement);
                put("groups", groups);
                Value::Object(e)
            }),
    ]
}

fn arguments() -> impl Strategy<Value = Value> {
    let set = || proptest::option::of(prop::collection::vec(entry(), 0..3));
    (
        set(),
        set(),
        set(),
        proptest::option::of(prop::collection::vec(
            prop_oneof![
                Just(json!("arguments.secret")),
                Just(json!("*")),
                Just(json!("")),
                any::<String>().prop_map(Value::String)
            ],
            0..3,
        )),
        proptest::option::of(prop_oneof![
            Just(json!(-1)),
            Just(json!(1e308)),
            Just(json!("free")),
            (0.0..1e6f64).prop_map(Value::from)
        ]),
    )
        .prop_map(|(deny, approve, warn, redact, cost)| {
            let mut args = serde_json::Map::new();
            for (k, v) in [
                ("deny", deny.map(Value::from)),
                ("approve", approve.map(Value::from)),
                ("warn", warn.map(Value::from)),
                ("redact", redact.map(Value::from)),
                ("cost_usd", cost),
            ] {
                if let Some(v) = v {
                    args.insert(k.into(), v);
                }
            }
            Value::Object(args)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the agent's arguments make the policy say, the call is decided and an enforced
    /// deny entry denies.
    #[test]
    fn generated_policy_output_is_decided_and_never_fails_open(args in arguments()) {
        let data = serde_json::to_vec(&args).expect("arguments serialise");
        prop_assert_eq!(run(airlock_fuzz::policy_input, &data), None, "arguments: {}", args);
    }

    /// Generated configuration text parses or names a problem.
    #[test]
    fn generated_config_text_parses_or_names_a_problem(text in "(\\[[a-z_.]{1,12}\\]\n)?([a-z_]{1,16} = (\"[a-z:_ ]{0,12}\"|[0-9]{1,20}|-?[0-9.e]{1,8}|true|\\[\\])\n){0,6}") {
        prop_assert_eq!(run(airlock_fuzz::config, text.as_bytes()), None, "text: {}", text);
    }

    /// Any edit of the journal's events is caught by `audit verify`.
    #[test]
    fn generated_journal_edits_are_caught(edits in prop::collection::vec(any::<u8>(), 3..40)) {
        let mut data = vec![1u8];
        data.extend(edits);
        prop_assert_eq!(run(airlock_fuzz::journal, &data), None);
    }
}

/// The libFuzzer harness has a target for each function here, and each has a corpus: a target
/// added on one side only would never be fuzzed or never be replayed.
#[test]
fn every_target_has_a_harness_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in airlock_fuzz::TARGETS {
        let harness = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&harness).unwrap_or_else(|e| panic!("{}: {e}", harness.display()));
        assert!(
            text.contains(&format!("airlock_fuzz::{name}(")),
            "{} does not call airlock_fuzz::{name}",
            harness.display()
        );
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] `{name}`");
        assert!(root.join("corpus").join(name).is_dir(), "fuzz/corpus/{name} is missing");
    }
    let harnesses = std::fs::read_dir(root.join("fuzz_targets")).expect("fuzz/fuzz_targets").count();
    assert_eq!(harnesses, airlock_fuzz::TARGETS.len(), "fuzz/fuzz_targets has a target airlock_fuzz::TARGETS lacks");
}

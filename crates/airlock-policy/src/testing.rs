//! A runner for policy unit tests: `test_*` rules in `*_test.rego` files, as `opa test` runs them.

use std::time::Instant;

use regorus::Value;

use crate::Policy;
use crate::bundle::one_line;

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    /// The rule evaluated to `true`.
    Pass,
    /// The rule was undefined or not `true`.
    Fail,
    /// Evaluation failed.
    Error(String),
}

/// One test rule and its outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestCase {
    /// The file that declares it, relative to the policy directory.
    pub file: String,
    /// The rule path, such as `data.airlock.test_denies_gpu`.
    pub name: String,
    /// How it ended.
    pub outcome: TestOutcome,
    /// Evaluation time in microseconds.
    pub duration_us: u64,
    /// What differed, for a failing golden fixture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Line coverage of one policy file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileCoverage {
    /// The file, relative to the policy directory.
    pub file: String,
    /// Lines evaluation reached.
    pub covered: Vec<u32>,
    /// Lines it did not reach.
    pub not_covered: Vec<u32>,
}

/// All tests of a policy directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// The revision tested.
    pub revision: String,
    /// Every test, in file and declaration order, then golden fixtures.
    pub cases: Vec<TestCase>,
    /// Line coverage, when the policy was loaded with `coverage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Vec<FileCoverage>>,
}

impl TestReport {
    /// Number of passing tests.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.outcome == TestOutcome::Pass).count()
    }

    /// Number of tests that failed or errored.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

impl Policy {
    /// Runs every `test_*` rule declared in the `*_test.rego` files of the policy.
    pub fn run_tests(&self) -> TestReport {
        let mut cases = Vec::new();
        // One engine for every test, so coverage accumulates across them.
        let mut shared = self.engine();
        for path in self.files() {
            let is_test = path.file_name().is_some_and(|n| n.to_string_lossy().ends_with("_test.rego"));
            if !is_test {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let rel = path.strip_prefix(self.dir()).unwrap_or(path).to_string_lossy().replace('\\', "/");
            let Some(package) = package_of(&text) else {
                continue;
            };
            for rule in test_rules(&text) {
                let name = format!("data.{package}.{rule}");
                let engine = &mut shared;
                engine.set_input(Value::new_object());
                let started = Instant::now();
                let outcome = match engine.eval_rule(name.clone()) {
                    Ok(Value::Bool(true)) => TestOutcome::Pass,
                    Ok(_) => TestOutcome::Fail,
                    Err(e) => TestOutcome::Error(one_line(&e.to_string())),
                };
                let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                cases.push(TestCase { file: rel.clone(), name, outcome, duration_us, detail: None });
            }
        }
        for dir in self.fixtures() {
            cases.push(self.run_fixture(dir, &mut shared));
        }
        let coverage = shared.get_coverage_report().ok().filter(|r| !r.files.is_empty()).map(|r| {
            r.files
                .into_iter()
                .map(|f| FileCoverage {
                    file: f.path,
                    covered: f.covered.into_iter().collect(),
                    not_covered: f.not_covered.into_iter().collect(),
                })
                .collect()
        });
        TestReport { revision: self.revision().to_string(), cases, coverage }
    }

    /// A golden fixture: `input.json` evaluated as the policy input must give the `effect` (and,
    /// when listed, exactly the `rules`) of `expected.json`.
    fn run_fixture(&self, dir: &std::path::Path, engine: &mut regorus::Engine) -> TestCase {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = format!("fixtures/{name}");
        let started = Instant::now();
        let read = |name: &'static str| -> Result<serde_json::Value, FixtureError> {
            let path = || format!("{file}/{name}");
            let text = std::fs::read_to_string(dir.join(name))
                .map_err(|source| FixtureError::Read { path: path(), source })?;
            serde_json::from_str(&text).map_err(|source| FixtureError::Json { path: path(), source })
        };
        let (outcome, detail) = match (read("input.json"), read("expected.json")) {
            (Err(e), _) | (_, Err(e)) => (TestOutcome::Error(e.to_string()), None),
            (Ok(input), Ok(expected)) => {
                let eval = self.evaluate_on(engine, &input);
                let decision = airlock_core::combine(
                    eval.output,
                    &airlock_core::ApprovalDefaults::default(),
                    self.revision(),
                    eval.eval_us,
                );
                let mut rules: Vec<String> = decision.reasons.iter().map(|r| r.rule.clone()).collect();
                rules.sort();
                rules.dedup();
                let want_effect = expected.get("effect").and_then(|v| v.as_str()).unwrap_or_default();
                let mut want_rules: Option<Vec<String>> = expected
                    .get("rules")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect());
                if let Some(w) = &mut want_rules {
                    w.sort();
                    w.dedup();
                }
                let effect_ok = decision.effect.as_str() == want_effect;
                let rules_ok = want_rules.as_ref().is_none_or(|w| *w == rules);
                if effect_ok && rules_ok {
                    (TestOutcome::Pass, None)
                } else {
                    (
                        TestOutcome::Fail,
                        Some(format!(
                            "expected {want_effect} {}, got {} {:?}",
                            want_rules.map(|w| format!("{w:?}")).unwrap_or_default(),
                            decision.effect.as_str(),
                            rules
                        )),
                    )
                }
            }
        };
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        TestCase { file, name: format!("fixture {name}"), outcome, duration_us, detail }
    }
}

/// Why a golden fixture's `input.json` or `expected.json` can't be used; the fixture is then an
/// error, not a failure.
#[derive(Debug, thiserror::Error)]
enum FixtureError {
    /// The file can't be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as `fixtures/<name>/<file>`.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not valid JSON: {source}")]
    Json {
        /// The file, as `fixtures/<name>/<file>`.
        path: String,
        /// Where the JSON went wrong.
        source: serde_json::Error,
    },
}

/// The package a Rego file declares, as a dotted path.
fn package_of(text: &str) -> Option<String> {
    text.lines().map(str::trim).find_map(|line| {
        let rest = line.strip_prefix("package ")?;
        Some(rest.split('#').next().unwrap_or(rest).trim().to_string())
    })
}

/// Names of `test_*` rules declared at the start of a line, each once, in order.
fn test_rules(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test_") else {
            continue;
        };
        let ident: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = format!("test_{ident}");
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_packages_and_test_rules() {
        let text = "package airlock.tests # comment\n\ntest_a if { true }\ntest_b if {\n}\ntest_a if { false }\n  test_indented := 1\n";
        assert_eq!(package_of(text).as_deref(), Some("airlock.tests"));
        assert_eq!(test_rules(text), vec!["test_a".to_string(), "test_b".to_string()]);
    }
}

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
}

/// All tests of a policy directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// The revision tested.
    pub revision: String,
    /// Every test, in file and declaration order.
    pub cases: Vec<TestCase>,
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
                let mut engine = self.engine();
                engine.set_input(Value::new_object());
                let started = Instant::now();
                let outcome = match engine.eval_rule(name.clone()) {
                    Ok(Value::Bool(true)) => TestOutcome::Pass,
                    Ok(_) => TestOutcome::Fail,
                    Err(e) => TestOutcome::Error(one_line(&e.to_string())),
                };
                let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                cases.push(TestCase { file: rel.clone(), name, outcome, duration_us });
            }
        }
        TestReport { revision: self.revision().to_string(), cases }
    }
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

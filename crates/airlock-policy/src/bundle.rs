//! Loading and evaluating a policy directory.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_core::{PolicyFailure, PolicyOutput};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use sha2::{Digest, Sha256};

use crate::Error;

/// The host's entry points in package `airlock`.
pub(crate) const RULE_DENY: &str = "data.airlock.deny";
pub(crate) const RULE_REQUIRE_APPROVAL: &str = "data.airlock.require_approval";
pub(crate) const RULE_COST: &str = "data.airlock.cost_usd";
pub(crate) const RULE_WARN: &str = "data.airlock.warn";
pub(crate) const RULE_REDACT: &str = "data.airlock.redact";
pub(crate) const RULE_ALLOW_DRIFT: &str = "data.airlock.allow_drift";

/// The host's entry points, in the order of [`Policy`]'s `declared` flags.
const HOST_RULES: [&str; 6] = [RULE_DENY, RULE_REQUIRE_APPROVAL, RULE_COST, RULE_WARN, RULE_REDACT, RULE_ALLOW_DRIFT];

/// How a policy is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Wall-clock limit of one evaluation; past it the evaluation fails (and the action is
    /// denied).
    pub timeout: Duration,
    /// Record which lines evaluation reaches (for `airlock test --coverage`).
    pub coverage: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: Duration::from_millis(100), coverage: false }
    }
}

/// A loaded, compiled policy directory. Cheap to share: evaluation clones a prepared engine.
#[derive(Clone)]
pub struct Policy {
    dir: PathBuf,
    revision: String,
    files: Vec<PathBuf>,
    engine: Engine,
    /// Which of the host rules the policy declares; a rule that is not declared is empty.
    declared: [bool; 6],
    /// `(relative path, text)` of every file, for the journal's revision history.
    sources: Vec<(String, String)>,
    /// Golden fixtures found in `fixtures/`.
    fixtures: Vec<PathBuf>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("dir", &self.dir).field("revision", &self.revision).finish()
    }
}

/// One evaluation of the host contract.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The raw rule values, or why evaluation failed.
    pub output: Result<PolicyOutput, PolicyFailure>,
    /// Time spent evaluating, in microseconds.
    pub eval_us: u64,
}

impl Policy {
    /// Loads every `.rego` file under `dir` (recursively, in path order) and `data.json` files,
    /// compiles them, and checks that the host's entry points evaluate.
    pub fn load(dir: &Path, options: &Options) -> Result<Policy, Error> {
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort();
        let mut sources = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            let rel = path.strip_prefix(dir).unwrap_or(path).to_string_lossy().replace('\\', "/");
            sources.push((rel, text));
        }
        let mut policy = Policy::from_sources(dir, sources, options)?;
        policy.files = files;
        policy.fixtures = collect_fixtures(&dir.join("fixtures"));
        Ok(policy)
    }

    /// Builds a policy from `(relative path, text)` pairs, as recorded in the journal (`dir` is
    /// only used in messages).
    pub fn from_sources(dir: &Path, mut sources: Vec<(String, String)>, options: &Options) -> Result<Policy, Error> {
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        if !sources.iter().any(|(p, _)| p.ends_with(".rego")) {
            return Err(Error::Empty { dir: dir.to_path_buf() });
        }
        let mut hasher = Sha256::new();
        let mut engine = Engine::new();
        let check_interval = NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN);
        engine.set_execution_timer_config(ExecutionTimerConfig { limit: options.timeout, check_interval });
        for (rel_name, text) in &sources {
            let path = dir.join(rel_name);
            hasher.update(rel_name.as_bytes());
            hasher.update([0]);
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
            if rel_name.ends_with(".rego") {
                engine
                    .add_policy(rel_name.clone(), text.clone())
                    .map_err(|e| Error::Compile { path: path.clone(), message: indent(&e.to_string()) })?;
            } else {
                let value = Value::from_json_str(text)
                    .map_err(|e| Error::Data { path: path.clone(), message: e.to_string() })?;
                engine.add_data(value).map_err(|e| Error::Data { path: path.clone(), message: e.to_string() })?;
            }
        }
        let revision = format!("sha256:{}", hex::encode(hasher.finalize()));

        // Probing the template itself (not a clone) leaves it prepared, so that every evaluation
        // clones a prepared engine instead of analysing the policy again.
        let mut declared = [false; 6];
        engine.set_input(Value::new_object());
        for (i, rule) in HOST_RULES.iter().enumerate() {
            match engine.eval_rule((*rule).to_string()) {
                Ok(_) => set(&mut declared, i),
                Err(e) if is_missing_rule(&e.to_string()) => {}
                Err(e) => {
                    // A rule that fails on an empty input may be fine on real input (for example
                    // a division by an input field). Unknown functions and the like fail here.
                    let msg = e.to_string();
                    if msg.contains("could not find function") || msg.contains("-->") && !msg.contains("time limit") {
                        return Err(Error::Evaluate { message: indent(&msg) });
                    }
                    set(&mut declared, i);
                }
            }
        }
        // A directory without `deny`, `require_approval` or `warn` in package `airlock` would allow
        // everything, usually because the package is misnamed: refuse it instead.
        if !(declared[0] || declared[1] || declared[3]) {
            return Err(Error::Evaluate {
                message: "it declares none of `deny`, `require_approval` or `warn` in package `airlock`, so it would \
                          allow everything; check the package name (an allow-all policy can say \
                          `deny contains \"never\" if false`)"
                    .into(),
            });
        }
        // After preparation: preparing the engine resets the interpreter's coverage switch.
        if options.coverage {
            engine.set_enable_coverage(true);
            engine.clear_coverage_data();
        }
        let files = sources.iter().map(|(p, _)| dir.join(p)).collect();
        Ok(Policy { dir: dir.to_path_buf(), revision, files, engine, declared, sources, fixtures: Vec::new() })
    }

    /// The content hash that names this revision, `sha256:<hex>`.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files it was built from, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// A prepared engine to run ad-hoc queries or tests on.
    pub(crate) fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// `(relative path, text)` of every file.
    pub fn sources(&self) -> &[(String, String)] {
        &self.sources
    }

    /// Golden fixture directories (`fixtures/<name>/` with `input.json` and `expected.json`).
    pub fn fixtures(&self) -> &[PathBuf] {
        &self.fixtures
    }

    /// Evaluates the host contract on `input`. Never panics; failures are in `output`.
    pub fn evaluate(&self, input: &serde_json::Value) -> Evaluation {
        let mut engine = self.engine.clone();
        self.evaluate_on(&mut engine, input)
    }

    /// Evaluates on a given (prepared) engine, so that callers can accumulate coverage.
    pub(crate) fn evaluate_on(&self, engine: &mut Engine, input: &serde_json::Value) -> Evaluation {
        let started = Instant::now();
        engine.set_input(Value::from(input.clone()));
        let output = self.evaluate_inner(engine);
        Evaluation { output, eval_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX) }
    }

    fn evaluate_inner(&self, engine: &mut Engine) -> Result<PolicyOutput, PolicyFailure> {
        let mut out = PolicyOutput::default();
        let declared = |i: usize| self.declared.get(i).copied().unwrap_or(false);
        for (i, rule) in HOST_RULES.iter().enumerate().take(4) {
            if !declared(i) {
                continue;
            }
            let json = eval_json(engine, rule)?;
            match i {
                0 => out.deny = as_list(rule, json)?,
                1 => out.require_approval = as_list(rule, json)?,
                2 => out.cost_usd = json,
                _ => out.warn = as_list(rule, json)?,
            }
        }
        // Only calls of a session with a plan in force read it (docs/plans.md).
        if declared(5) {
            out.allow_drift = as_list(RULE_ALLOW_DRIFT, eval_json(engine, RULE_ALLOW_DRIFT)?)?;
        }
        // Evaluated last and on its own: its failure is kept in the output (and redacts
        // everything) instead of failing the decision.
        if declared(4) {
            out.redact = eval_json(engine, RULE_REDACT);
        }
        Ok(out)
    }
}

fn eval_json(engine: &mut Engine, rule: &str) -> Result<Option<serde_json::Value>, PolicyFailure> {
    let value = engine
        .eval_rule(rule.to_string())
        .map_err(|e| PolicyFailure::Evaluation { rule: rule.to_string(), message: one_line(&e.to_string()) })?;
    to_json(&value).map_err(|e| PolicyFailure::Conversion { rule: rule.to_string(), message: e.to_string() })
}

fn set(flags: &mut [bool; 6], i: usize) {
    if let Some(f) = flags.get_mut(i) {
        *f = true;
    }
}

fn is_missing_rule(msg: &str) -> bool {
    msg.contains("not a valid rule path")
}

/// `None` for undefined.
fn to_json(value: &Value) -> Result<Option<serde_json::Value>, serde_json::Error> {
    if *value == Value::Undefined {
        return Ok(None);
    }
    serde_json::to_value(value).map(Some)
}

fn as_list(rule: &str, value: Option<serde_json::Value>) -> Result<Vec<serde_json::Value>, PolicyFailure> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => Ok(items),
        Some(serde_json::Value::Bool(false)) => Ok(Vec::new()),
        Some(other) => Err(PolicyFailure::NotASet { rule: rule.to_string(), value: other }),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(|source| Error::Io { path: path.clone(), source })?;
        if file_type.is_dir() {
            // Golden fixtures are documents, not policy data.
            if name != "fixtures" {
                collect_files(&path, out)?;
            }
        } else if has_ext(&path, "rego") || name == "data.json" {
            out.push(path);
        }
    }
    Ok(())
}

fn collect_fixtures(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("input.json").exists()).collect();
    out.sort();
    out
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn indent(msg: &str) -> String {
    let trimmed = msg.trim_end();
    if trimmed.starts_with('\n') { trimmed.to_string() } else { format!(" {trimmed}") }
}

pub(crate) fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

//! Policy lifecycle: reload, rollback, a candidate in shadow mode, a canary, promote.
//!
//! A reload compiles the directory and runs its own tests before anything changes; if either
//! fails, the active revision stays and the reasons come back. Every activated revision is kept
//! in the journal with its files, so a rollback restores the previous one without touching the
//! files. A candidate runs in shadow beside the active policy: evaluated after each live
//! decision (never before it, never changing it), with disagreements journaled and counted per
//! rule. A candidate can also decide for a canary: a share of sessions, chosen by a hash of the
//! session id so a session never switches policy half-way, is decided by the candidate instead
//! of the active policy (its revision is on each of those decisions); the rest stay on the
//! active policy and keep feeding the shadow comparison.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use airlock_core::pipeline::{self, PolicyFacts};
use airlock_core::{Action, EventKind};
use airlock_policy::{Options, Policy};
use airlock_store::{Commit, PolicyRecord, Projection, SYSTEM_STREAM};

use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Engine, Error, Result, lock};

/// Revisions kept for rollback.
pub const HISTORY: usize = 20;

/// What a reload, rollback or promote did.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    /// The revision active before.
    pub previous: String,
    /// The revision active now.
    pub active: String,
    /// Whether anything changed.
    pub changed: bool,
}

/// One disagreement of the candidate, for `GET /v1/policy/shadow`.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    /// The action.
    pub action_id: String,
    /// Its tool.
    pub tool: String,
    /// What the active policy decided: effect and rules.
    pub active: Value,
    /// What the candidate would have decided.
    pub candidate: Value,
}

/// Shadow statistics of the current candidate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowReport {
    /// Candidate revision, if one is loaded.
    pub candidate: Option<String>,
    /// Directory it was loaded from.
    pub dir: Option<PathBuf>,
    /// Share of sessions (0 – 100) the candidate decides for; 0 is shadow only.
    pub canary_percent: u8,
    /// Live decisions it was evaluated on.
    pub evaluated: u64,
    /// How many it would have decided differently.
    pub disagreements: u64,
    /// `active effect -> candidate effect` counts.
    pub flips: BTreeMap<String, u64>,
    /// Per rule: how often it matched only under the candidate (`added`) or only under the
    /// active policy (`removed`).
    pub rules: BTreeMap<String, BTreeMap<String, u64>>,
    /// The latest disagreements (up to 20).
    pub recent: Vec<Disagreement>,
}

/// The candidate and its statistics.
#[derive(Default)]
pub struct Shadow {
    candidate: Option<Arc<Policy>>,
    report: ShadowReport,
}

/// Shared shadow state.
pub type SharedShadow = Arc<Mutex<Shadow>>;

fn options(engine: &Engine) -> Options {
    Options { timeout: engine.config().policy.timeout, coverage: false }
}

fn rules_of(reasons: &[airlock_core::Reason]) -> Vec<String> {
    let mut r: Vec<String> = reasons.iter().map(|r| r.rule.clone()).collect();
    r.sort();
    r.dedup();
    r
}

impl Engine {
    fn shadow_state(&self) -> &SharedShadow {
        self.shadow()
    }

    /// Records the active policy in the journal's revision history when it is new there.
    pub async fn record_policy(&self, by: &str) -> Result<()> {
        let policy = self.policy();
        let history = self.store().policy_history(1).await?;
        if history.first().is_some_and(|r| r.revision == policy.revision()) {
            return Ok(());
        }
        self.commit_activation(&policy, by, "start", None).await
    }

    async fn commit_activation(&self, policy: &Policy, by: &str, how: &str, previous: Option<&str>) -> Result<()> {
        let now = self.now();
        let record = PolicyRecord {
            revision: policy.revision().to_string(),
            sources: policy.sources().to_vec(),
            activated_at: now,
            activated_by: format!("{how} by {by}"),
        };
        let mut commit = Commit::default();
        commit
            .event(
                SYSTEM_STREAM,
                EventKind::PolicyActivated,
                now,
                json!({"revision": record.revision, "previous": previous, "how": how, "by": by,
                       "files": policy.sources().iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()}),
            )
            .project(Projection::PolicyRevision(record));
        self.commit(commit).await?;
        Ok(())
    }

    async fn activate(&self, policy: Policy, by: &str, how: &str) -> Result<PolicyChange> {
        let previous = self.policy().revision().to_string();
        let active = policy.revision().to_string();
        if previous == active {
            return Ok(PolicyChange { previous, active, changed: false });
        }
        self.commit_activation(&policy, by, how, Some(&previous)).await?;
        self.swap_policy(policy);
        tracing::info!(%previous, %active, how, by, "policy activated");
        Ok(PolicyChange { previous, active, changed: true })
    }

    /// Reloads `[policy] dir`. A policy that does not compile, or whose own tests fail, is
    /// refused and the active revision stays.
    pub async fn reload_policy(&self, by: &str) -> Result<PolicyChange> {
        let dir = self.config().policy.dir.clone();
        let opts = options(self);
        let loaded = tokio::task::spawn_blocking(move || Policy::load(&dir, &opts))
            .await
            .map_err(|e| Error::Invalid(format!("reload failed: {e}")))?;
        let policy =
            loaded.map_err(|e| Error::Invalid(format!("the new policy does not load, the active one stays: {e}")))?;
        check_tests(&policy)?;
        self.activate(policy, by, "reload").await
    }

    /// Restores the revision that was active before the current one, from the journal.
    pub async fn rollback_policy(&self, by: &str) -> Result<PolicyChange> {
        let active = self.policy().revision().to_string();
        let history = self.store().policy_history(HISTORY).await?;
        let Some(previous) = history.into_iter().find(|r| r.revision != active) else {
            return Err(Error::Conflict("there is no earlier policy revision to roll back to".into()));
        };
        let dir = self.config().policy.dir.clone();
        let policy = Policy::from_sources(&dir, previous.sources, &options(self))
            .map_err(|e| Error::Invalid(format!("the earlier revision does not load: {e}")))?;
        self.activate(policy, by, "rollback").await
    }

    /// Loads a candidate from `dir` to run in shadow mode, deciding for `canary_percent` of
    /// sessions (0: none). The load is journaled with the candidate's files before it takes
    /// effect, so every decision a canary makes can be traced to the rules that made it.
    pub async fn set_candidate(&self, dir: PathBuf, canary_percent: u8, by: &str) -> Result<String> {
        check_percent(canary_percent)?;
        let opts = options(self);
        let d = dir.clone();
        let policy = tokio::task::spawn_blocking(move || Policy::load(&d, &opts))
            .await
            .map_err(|e| Error::Invalid(format!("loading the candidate failed: {e}")))?
            .map_err(|e| Error::Invalid(format!("the candidate does not load: {e}")))?;
        check_tests(&policy)?;
        let revision = policy.revision().to_string();
        let sources: Vec<Value> =
            policy.sources().iter().map(|(path, text)| json!({"path": path, "text": text})).collect();
        self.journal_candidate(json!({"revision": revision, "action": "loaded", "canary_percent": canary_percent,
                                      "by": by, "dir": dir, "sources": sources}))
            .await?;
        let mut shadow = lock(self.shadow_state());
        shadow.candidate = Some(Arc::new(policy));
        shadow.report =
            ShadowReport { candidate: Some(revision.clone()), dir: Some(dir), canary_percent, ..Default::default() };
        drop(shadow);
        tracing::info!(candidate = %revision, canary_percent, by, "policy candidate loaded");
        Ok(revision)
    }

    /// Changes the share of sessions the candidate decides for (0 – 100; 0 returns them all to
    /// the active policy). Sessions keep their bucket, so raising the share only adds sessions.
    /// Journaled before it takes effect.
    pub async fn set_canary(&self, percent: u8, by: &str) -> Result<String> {
        check_percent(percent)?;
        let revision = lock(self.shadow_state()).report.candidate.clone();
        let Some(revision) = revision else {
            return Err(Error::Conflict(
                "no candidate is loaded; load one with POST /v1/policy/candidate first".into(),
            ));
        };
        self.journal_candidate(json!({"revision": revision, "action": "canary", "canary_percent": percent, "by": by}))
            .await?;
        let mut shadow = lock(self.shadow_state());
        if shadow.report.candidate.as_deref() != Some(revision.as_str()) {
            return Err(Error::Conflict("the candidate changed meanwhile; check GET /v1/policy and retry".into()));
        }
        shadow.report.canary_percent = percent;
        drop(shadow);
        tracing::info!(candidate = %revision, canary_percent = percent, by, "policy canary changed");
        Ok(revision)
    }

    async fn journal_candidate(&self, data: Value) -> Result<()> {
        let mut commit = Commit::default();
        commit.event(SYSTEM_STREAM, EventKind::PolicyCandidate, self.now(), data);
        self.commit(commit).await?;
        Ok(())
    }

    /// The policy that decides for `session_id`: the candidate when the session falls in the
    /// canary's share, else the active policy. The flag says which.
    pub(crate) fn policy_for(&self, session_id: &str) -> (Arc<Policy>, bool) {
        let s = lock(self.shadow_state());
        if s.report.canary_percent > 0
            && let Some(candidate) = &s.candidate
            && canary_bucket(session_id) < s.report.canary_percent
        {
            return (candidate.clone(), true);
        }
        (self.policy(), false)
    }

    /// Stops shadow evaluation.
    pub fn clear_candidate(&self) {
        *lock(self.shadow_state()) = Shadow::default();
    }

    /// Makes the candidate the active policy.
    pub async fn promote_candidate(&self, by: &str) -> Result<PolicyChange> {
        let candidate = lock(self.shadow_state()).candidate.clone();
        let Some(candidate) = candidate else {
            return Err(Error::Conflict("no candidate is loaded; load one with POST /v1/policy/candidate".into()));
        };
        let change = self.activate((*candidate).clone(), by, "promote").await?;
        self.clear_candidate();
        Ok(change)
    }

    /// Shadow statistics.
    pub fn shadow_report(&self) -> ShadowReport {
        lock(self.shadow_state()).report.clone()
    }

    /// Decides a live action again with the candidate (if any), after the fact: the same
    /// pipeline steps as the live decision (`airlock_core::pipeline::conclude`: tier floor and
    /// budgets included), on the same recorded input and facts.
    pub(crate) fn shadow_evaluate(&self, action: &Action, input: Value, facts: PolicyFacts) {
        let candidate = lock(self.shadow_state()).candidate.clone();
        let Some(candidate) = candidate else { return };
        let engine = self.clone();
        let action = action.clone();
        tokio::spawn(async move {
            let (answer, _) = crate::engine::evaluate(candidate.clone(), input).await;
            let d = pipeline::conclude(answer, &facts);
            let (old_rules, new_rules) = (rules_of(&action.decision.reasons), rules_of(&d.reasons));
            let same = d.effect == action.decision.effect && old_rules == new_rules;
            let disagreement = {
                let mut s = lock(engine.shadow_state());
                if s.report.candidate.as_deref() != Some(candidate.revision()) {
                    return;
                }
                s.report.evaluated += 1;
                if same {
                    return;
                }
                s.report.disagreements += 1;
                *s.report.flips.entry(format!("{} -> {}", action.decision.effect, d.effect)).or_default() += 1;
                for r in new_rules.iter().filter(|r| !old_rules.contains(r)) {
                    *s.report.rules.entry(r.clone()).or_default().entry("added".into()).or_default() += 1;
                }
                for r in old_rules.iter().filter(|r| !new_rules.contains(r)) {
                    *s.report.rules.entry(r.clone()).or_default().entry("removed".into()).or_default() += 1;
                }
                let item = Disagreement {
                    action_id: action.id.clone(),
                    tool: action.tool.clone(),
                    active: json!({"effect": action.decision.effect, "rules": old_rules, "revision": action.decision.policy_revision}),
                    candidate: json!({"effect": d.effect, "rules": new_rules, "revision": candidate.revision()}),
                };
                s.report.recent.insert(0, item.clone());
                s.report.recent.truncate(20);
                item
            };
            let mut commit = Commit::default();
            commit.event(
                &action.session_id,
                EventKind::ShadowDisagreement,
                engine.now(),
                json!({"action_id": disagreement.action_id, "active": disagreement.active, "candidate": disagreement.candidate}),
            );
            if let Err(e) = engine.commit(commit).await {
                tracing::warn!(error = %e, "recording a shadow disagreement failed");
            }
        });
    }
}

fn check_percent(percent: u8) -> Result<()> {
    if percent > 100 {
        return Err(Error::Invalid(format!("canary_percent must be 0 to 100, not {percent}")));
    }
    Ok(())
}

/// A session's canary bucket, 0 – 99, from a hash of its id: stable for the session's life.
pub fn canary_bucket(session_id: &str) -> u8 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(session_id.as_bytes());
    (u16::from_be_bytes([hash[0], hash[1]]) % 100) as u8
}

fn check_tests(policy: &Policy) -> Result<()> {
    let report = policy.run_tests();
    if report.failed() == 0 {
        return Ok(());
    }
    let failing: Vec<String> = report
        .cases
        .iter()
        .filter(|c| c.outcome != airlock_policy::TestOutcome::Pass)
        .map(|c| format!("{} ({})", c.name, c.file))
        .collect();
    Err(Error::Invalid(format!("the new policy's own tests fail, the active one stays: {}", failing.join(", "))))
}

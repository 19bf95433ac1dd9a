//! Policy lifecycle: reload, rollback, a candidate in shadow mode, a canary, promote.
//!
//! A reload compiles the directory and runs its own tests before anything changes; if either
//! fails, the active revision stays and the reasons come back. Every activated revision is kept
//! in the journal with its files, so a rollback restores the previous one without touching the
//! files. A candidate runs in shadow beside the active policy: evaluated after each live
//! decision (never before it, never changing it), with disagreements journaled and counted per
//! rule. A candidate can also decide for a canary: a share of sessions, chosen by a keyed hash
//! of the session id so a session never switches policy half-way, is decided by the candidate
//! instead of the active policy (its revision is on each of those decisions); the rest stay on
//! the active policy and keep feeding the shadow comparison. The key is a secret of the
//! installation ([`CanaryKey`]): with a public hash, an agent could tell from a session's id
//! alone whether the looser policy would decide for it, and open sessions until one did.

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

/// Which revision decides after a start (see [`Engine::restore_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPolicy {
    /// The files in `[policy] dir`.
    Directory,
    /// The revision that was active when airlock stopped, from the journal.
    Restored {
        /// Its `sha256:…` revision.
        revision: String,
    },
}

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

    /// At start, with the `[policy] dir` revision loaded: decides which revision is active.
    ///
    /// A rollback or a promote survives a restart: when the directory still holds what airlock
    /// last read from it (at a start or a reload), the revision that was active when airlock
    /// stopped stays active, with a warning that the directory holds another one. When the
    /// directory changed since (new files deployed while airlock was stopped), the directory is
    /// activated, replacing it, with a warning too. A first start, or an active revision that
    /// no longer loads, activates the directory.
    pub async fn restore_policy(&self) -> Result<StartPolicy> {
        let from_dir = self.policy();
        let directory = from_dir.revision().to_string();
        let Some(last) = self.store().policy_history(1).await?.into_iter().next() else {
            self.commit_activation(&from_dir, "airlock", "start", None).await?;
            return Ok(StartPolicy::Directory);
        };
        if last.revision == directory {
            return Ok(StartPolicy::Directory);
        }
        let last_read = self.last_directory_revision().await?;
        if last_read.as_deref() != Some(directory.as_str()) {
            tracing::warn!(
                %directory,
                replaced = %last.revision,
                replaced_by = %last.activated_by,
                "the policy directory changed since airlock last read it, so it is activated; the revision that was active is kept in the history (`airlock policy rollback` restores it)"
            );
            self.commit_activation(&from_dir, "airlock", "start", Some(&last.revision)).await?;
            return Ok(StartPolicy::Directory);
        }
        match Policy::from_sources(&self.config().policy.dir, last.sources.clone(), &options(self)) {
            Ok(policy) => {
                tracing::warn!(
                    active = %last.revision,
                    activated_by = %last.activated_by,
                    %directory,
                    "the active policy revision stays active across the restart; the policy directory holds another one (`airlock policy reload` activates it)"
                );
                self.swap_policy(policy);
                Ok(StartPolicy::Restored { revision: last.revision })
            }
            Err(e) => {
                tracing::error!(
                    active = %last.revision,
                    error = %e,
                    "the revision that was active no longer loads; activating the policy directory instead"
                );
                self.commit_activation(&from_dir, "airlock", "start", Some(&last.revision)).await?;
                Ok(StartPolicy::Directory)
            }
        }
    }

    /// The revision airlock last read from `[policy] dir` (at a start or a reload).
    async fn last_directory_revision(&self) -> Result<Option<String>> {
        let events = self.store().events(SYSTEM_STREAM).await?;
        Ok(events
            .iter()
            .rev()
            .filter(|e| e.kind == EventKind::PolicyActivated.as_str())
            .find(|e| matches!(e.payload["how"].as_str(), Some("start" | "reload")))
            .and_then(|e| e.payload["revision"].as_str().map(str::to_string)))
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
            && self.canary_key().bucket(session_id) < s.report.canary_percent
        {
            return (candidate.clone(), true);
        }
        (self.policy(), false)
    }

    /// Stops shadow evaluation.
    pub fn clear_candidate(&self) {
        *lock(self.shadow_state()) = Shadow::default();
    }

    /// Discards the candidate (`DELETE /v1/policy/candidate`): shadow and canary stop, here and,
    /// through the journal, on every replica.
    pub async fn discard_candidate(&self, by: &str) -> Result<()> {
        let revision = self.shadow_report().candidate;
        self.clear_candidate();
        if revision.is_some() {
            self.journal_candidate(json!({"revision": revision, "action": "discarded", "canary_percent": 0, "by": by}))
                .await?;
        }
        Ok(())
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

    /// Makes the revision another replica activated (a reload, a rollback, a promote) the
    /// active one here too: the journal's latest activation, loaded from its recorded files.
    pub(crate) async fn follow_policy(&self) -> Result<()> {
        let Some(last) = self.store().policy_history(1).await?.into_iter().next() else { return Ok(()) };
        if last.revision == self.policy().revision() {
            return Ok(());
        }
        let policy = Policy::from_sources(&self.config().policy.dir, last.sources, &options(self))
            .map_err(|e| Error::Invalid(format!("the revision another replica activated does not load here: {e}")))?;
        self.swap_policy(policy);
        tracing::info!(active = %last.revision, activated_by = %last.activated_by, "policy activated by another replica");
        Ok(())
    }

    /// Takes the candidate and canary share another replica set, from the journal: the last
    /// candidate loaded (unless promoted since) with its last canary share.
    pub(crate) async fn follow_candidate(&self) -> Result<()> {
        // Revision, directory and files of the candidate loaded last.
        type Loaded = (String, PathBuf, Vec<(String, String)>);
        let mut loaded: Option<Loaded> = None;
        let mut percent = 0u8;
        let mut discarded = false;
        for e in self.store().events(SYSTEM_STREAM).await? {
            if e.kind == EventKind::PolicyActivated.as_str() && e.payload["how"] == "promote" {
                loaded = None;
                percent = 0;
            } else if e.kind == EventKind::PolicyCandidate.as_str() {
                let p = &e.payload;
                let share = p["canary_percent"].as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(0);
                match p["action"].as_str() {
                    Some("discarded") => {
                        loaded = None;
                        percent = 0;
                        discarded = true;
                    }
                    Some("loaded") => {
                        discarded = false;
                        let sources = p["sources"]
                            .as_array()
                            .map(|files| {
                                files
                                    .iter()
                                    .filter_map(|f| {
                                        Some((f["path"].as_str()?.to_string(), f["text"].as_str()?.to_string()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        let dir = PathBuf::from(p["dir"].as_str().unwrap_or_default());
                        loaded = Some((p["revision"].as_str().unwrap_or_default().to_string(), dir, sources));
                        percent = share;
                    }
                    Some("canary") => percent = share,
                    _ => {}
                }
            }
        }
        let here = self.shadow_report();
        match loaded {
            None if here.candidate.is_some()
                && (discarded || self.policy().revision() == here.candidate.as_deref().unwrap_or_default()) =>
            {
                self.clear_candidate();
                if discarded {
                    tracing::info!("policy candidate discarded by another replica");
                }
            }
            None => {}
            Some((revision, dir, sources)) => {
                if here.candidate.as_deref() == Some(revision.as_str()) {
                    if here.canary_percent != percent {
                        lock(self.shadow_state()).report.canary_percent = percent;
                        tracing::info!(candidate = %revision, canary_percent = percent, "policy canary changed by another replica");
                    }
                    return Ok(());
                }
                let policy = Policy::from_sources(&dir, sources, &options(self)).map_err(|e| {
                    Error::Invalid(format!("the candidate another replica loaded does not load here: {e}"))
                })?;
                let mut shadow = lock(self.shadow_state());
                shadow.candidate = Some(Arc::new(policy));
                shadow.report = ShadowReport {
                    candidate: Some(revision.clone()),
                    dir: Some(dir),
                    canary_percent: percent,
                    ..Default::default()
                };
                drop(shadow);
                tracing::info!(candidate = %revision, canary_percent = percent, "policy candidate loaded by another replica");
            }
        }
        Ok(())
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

/// File in `data_dir` holding the canary key when `[policy] canary_key` is not set.
pub const CANARY_KEY_FILE: &str = "canary.key";

/// Why the canary key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CanaryKeyError {
    /// The key file could not be read or written.
    #[error("cannot use the canary key file `{path}`: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes in base64 or hex.
    #[error("`{path}` does not hold a canary key (32 bytes in base64 or hex)")]
    Invalid {
        /// The key file.
        path: PathBuf,
    },
    /// The system had no randomness for a new key.
    #[error("no randomness for a new canary key: {0}")]
    Random(String),
}

/// The secret key of canary bucketing. A session's bucket is an HMAC-SHA256 of its id under this
/// key, so nobody without the key can tell which sessions a canary decides for. Its `Debug` does
/// not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct CanaryKey(Vec<u8>);

impl std::fmt::Debug for CanaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CanaryKey(..)")
    }
}

impl CanaryKey {
    /// A key of these bytes (`[policy] canary_key`).
    pub fn from_bytes(key: &[u8]) -> CanaryKey {
        CanaryKey(key.to_vec())
    }

    /// A random key for this process only: buckets change at the next start. The engine starts
    /// with one; `serve` replaces it with the installation's key before deciding anything.
    pub fn ephemeral() -> CanaryKey {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness: the ids' generator is the next best source, and still unknown
            // to agents.
            let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
            key[..16].copy_from_slice(a.as_bytes());
            key[16..].copy_from_slice(b.as_bytes());
        }
        CanaryKey(key.to_vec())
    }

    /// The configured key (`[policy] canary_key`), else the key file in `data_dir`, created with
    /// a random key (readable by its owner only) on first start. The same installation keeps its
    /// key, so a session keeps its bucket across restarts.
    pub fn load_or_create(config: &crate::config::Config) -> Result<CanaryKey, CanaryKeyError> {
        use base64::Engine as _;
        if let Some(key) = &config.policy.canary_key {
            return Ok(key.clone());
        }
        let dir = &config.server.data_dir;
        let path = dir.join(CANARY_KEY_FILE);
        let io = |source| CanaryKeyError::Io { path: path.clone(), source };
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let key = crate::audit::decode_key(&text).map_err(|_| CanaryKeyError::Invalid { path: path.clone() })?;
            return Ok(CanaryKey(key.to_vec()));
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| CanaryKeyError::Random(e.to_string()))?;
        crate::audit::write_private(&path, &base64::engine::general_purpose::STANDARD.encode(key)).map_err(io)?;
        tracing::info!(path = %path.display(), "created the canary key");
        Ok(CanaryKey(key.to_vec()))
    }

    /// A session's canary bucket, 0 – 99: the first 8 bytes of HMAC-SHA256(key, session id) as a
    /// number, modulo 100. Stable for the session's life.
    pub fn bucket(&self, session_id: &str) -> u8 {
        use hmac::Mac as _;
        // HMAC takes keys of any length. Were it to fail, the last bucket keeps the session out
        // of any canary short of 100 %.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) else { return 99 };
        mac.update(session_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        (u64::from_be_bytes(first) % 100) as u8
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &std::path::Path, extra: &str) -> crate::config::Config {
        let text = format!("[server]\ndata_dir = \"{}\"\n[policy]\ndir = \".\"\n{extra}", data_dir.display());
        let env = std::collections::BTreeMap::from([("CANARY".to_string(), "a-shared-key-for-replicas".to_string())]);
        crate::config::Config::parse(&text, &std::env::temp_dir().join("airlock.toml"), &env).unwrap()
    }

    /// The bucket function airlock used before: public, so anyone could compute it.
    fn public_bucket(session_id: &str) -> u8 {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(session_id.as_bytes());
        (u16::from_be_bytes([hash[0], hash[1]]) % 100) as u8
    }

    fn sessions() -> Vec<String> {
        (0..2000).map(|i| format!("ses_{i:032x}")).collect()
    }

    #[test]
    fn canary_buckets_are_keyed_and_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = CanaryKey::load_or_create(&config(dir.path(), "")).unwrap();
        // A restart reads the same key back.
        let again = CanaryKey::load_or_create(&config(dir.path(), "")).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(CANARY_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ids = sessions();
        assert!(ids.iter().all(|id| first.bucket(id) == again.bucket(id)));
        assert!(ids.iter().all(|id| first.bucket(id) < 100));
        // Not the public hash: knowing a session id no longer tells its bucket. (Equal by chance
        // for about 1 in 100.)
        let same_as_public = ids.iter().filter(|id| first.bucket(id) == public_bucket(id)).count();
        assert!(same_as_public < ids.len() / 20, "{same_as_public} of {} buckets are the public hash", ids.len());
        // Another installation buckets differently.
        let other_dir = tempfile::tempdir().unwrap();
        let other = CanaryKey::load_or_create(&config(other_dir.path(), "")).unwrap();
        let same_as_other = ids.iter().filter(|id| first.bucket(id) == other.bucket(id)).count();
        assert!(same_as_other < ids.len() / 20, "{same_as_other} equal buckets across installations");
        // Buckets spread: a 10 % canary takes about a tenth of sessions.
        let in_ten = ids.iter().filter(|id| first.bucket(id) < 10).count();
        assert!((100..300).contains(&in_ten), "{in_ten} of {} in a 10 % canary", ids.len());
    }

    #[test]
    fn a_configured_canary_key_is_shared_and_checked() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let configured = "canary_key = \"env:CANARY\"\n";
        let ka = CanaryKey::load_or_create(&config(a.path(), configured)).unwrap();
        let kb = CanaryKey::load_or_create(&config(b.path(), configured)).unwrap();
        assert_eq!(ka, kb, "replicas with the same configured key bucket alike");
        assert!(!a.path().join(CANARY_KEY_FILE).exists(), "no key file when one is configured");
        assert_eq!(format!("{ka:?}"), "CanaryKey(..)");
        let env = std::collections::BTreeMap::from([("SHORT".to_string(), "short".to_string())]);
        let text = "[policy]\ndir = \".\"\ncanary_key = \"env:SHORT\"\n";
        let err = crate::config::Config::parse(text, &std::env::temp_dir().join("airlock.toml"), &env).unwrap_err();
        assert_eq!(err.problems[0].0, "policy.canary_key");
        // A broken key file stops the start rather than falling back to a key nobody keeps.
        std::fs::write(b.path().join(CANARY_KEY_FILE), "not a key").unwrap();
        let broken = CanaryKey::load_or_create(&config(b.path(), "")).unwrap_err();
        assert!(broken.to_string().contains("does not hold a canary key"), "{broken}");
    }
}

//! The decision pipeline with its IO: intake, guards, policy, tier floor, approval, result
//! recording, each step journaled before anyone hears of it.
//!
//! [`Engine`] is a cheap-to-clone handle. Actions of one session are serialised by a per-session
//! lock (so sequence numbers, joins and counters are exact); different sessions proceed in
//! parallel and share journal transactions through the store's group commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use airlock_core::decision::{ApprovalDefaults, RULE_APPROVAL_UNUSED, apply_tier_floor};
use airlock_core::guard::{self, GuardContext};
use airlock_core::limits::{self, Admission, Breaker, GuardLimits, TokenBucket, Transition};
use airlock_core::{
    Action, ActionResult, ActionStatus, Approval, ApprovalStatus, Decision, Effect, EventKind, KillScope, KillSwitch,
    Reason, Risk, Role, Session, SessionStatus, Verdict, Vote, action_digest, combine,
};
use airlock_policy::Policy;
use airlock_store::{Commit, Projection, SYSTEM_STREAM, SessionFilter, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, ToolInfo, allowlist_covers};
use crate::config::{AgentConfig, Config, HumanConfig};
use crate::telemetry as tm;

/// Who closes a session ([`Engine::close_session`]).
#[derive(Debug, Clone, Copy)]
pub enum SessionCloser<'a> {
    /// The session's own agent, when its task is done.
    Agent(&'a AgentConfig),
    /// An admin.
    Human(&'a HumanConfig),
}

/// Why the engine refused a request. Policy denials are not errors: they are decisions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing with that id (or not visible to the caller).
    #[error("{what} `{id}` not found")]
    NotFound {
        /// Kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The caller may not do this; `rule` names the rule that refused it.
    #[error("{msg}")]
    Forbidden {
        /// Stable rule name (`role`, `group`, `vote_once`, …).
        rule: &'static str,
        /// What happened and what to do.
        msg: String,
    },
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The journal failed; nothing was decided.
    #[error("journal unavailable: {0}")]
    Store(#[from] airlock_store::Error),
}

/// Result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An agent's request to run a tool.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// Full tool name.
    pub tool: String,
    /// Arguments.
    pub arguments: Value,
    /// Why.
    pub justification: String,
    /// Client-chosen key that makes retries return the first outcome.
    pub idempotency_key: Option<String>,
    /// Annotations reported by the tool's server, if it has one.
    pub reported_annotations: Option<Value>,
    /// W3C `traceparent` sent by the agent.
    pub traceparent: Option<String>,
    /// The MCP session the call came in on.
    pub mcp_session: Option<String>,
}

/// The outcome of an agent-executed action, as its agent reports it.
#[derive(Debug, Clone)]
pub struct ResultReport {
    /// Whether the call succeeded.
    pub ok: bool,
    /// What it returned.
    pub output: Value,
    /// Error text when it failed.
    pub error: Option<String>,
    /// What the call cost in US dollars, if the agent knows.
    pub cost_usd: Option<f64>,
}

/// How a submission was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new action was decided.
    New,
    /// The call joined an identical action that was still waiting.
    Joined,
    /// The `Idempotency-Key` was seen before; this is the first action.
    Replayed,
}

/// An action with its approval, as returned to callers.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// The action.
    #[serde(flatten)]
    pub action: Action,
    /// Its approval, if one was required.
    pub approval: Option<Approval>,
}

/// The answer to a submission.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The action (new, joined or replayed).
    pub view: ActionView,
    /// How it was answered.
    pub outcome: Outcome,
}

/// The answer to [`Engine::claim_execution`].
#[derive(Debug, Clone)]
pub enum Claim {
    /// The caller now runs it.
    Run(Box<Action>),
    /// Someone else is running it.
    Running(Box<Action>),
    /// It already finished (or was cancelled).
    Finished(Box<Action>),
    /// It is not approved (pending, denied, …).
    NotRunnable(Box<Action>),
}

/// A human's vote request.
#[derive(Debug, Clone)]
pub struct VoteRequest {
    /// Approve or deny.
    pub verdict: Verdict,
    /// Why; required.
    pub comment: String,
    /// TOTP code, when the approval needs MFA.
    pub totp: Option<String>,
}

struct SessionCell {
    session: Session,
    /// digest → id of the action that is still waiting.
    waiting: HashMap<String, String>,
    /// Digests and times of recent new actions, for loop detection.
    recent: std::collections::VecDeque<(String, DateTime<Utc>)>,
}

/// An upstream call in flight, cancellable by a kill switch.
struct InFlight {
    agent: String,
    upstream: Option<String>,
    tool: String,
    cancel: CancellationToken,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Arc<Config>,
    catalog: Catalog,
    policy: RwLock<Arc<Policy>>,
    defaults: ApprovalDefaults,
    kill_switches: RwLock<Arc<Vec<KillSwitch>>>,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<SessionCell>>>>>,
    watchers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Last TOTP time step used per human, so that each code is used once.
    totp_steps: Mutex<HashMap<String, u64>>,
    /// Wakes anyone watching for new or resolved approvals (the web UI).
    approvals_changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the webhook delivery task.
    outbox_wake: Arc<Notify>,
    /// Rate-limit buckets per agent.
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Spend per agent for one UTC day.
    spend: Mutex<HashMap<String, (chrono::NaiveDate, f64)>>,
    /// Circuit breakers per tool.
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Upstream calls in flight.
    inflight: Mutex<HashMap<String, InFlight>>,
    /// OpenTelemetry spans.
    tracing: crate::otel::Tracing,
    /// The candidate policy in shadow mode.
    shadow: crate::lifecycle::SharedShadow,
}

/// Handle to the decision pipeline.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Engine {
    /// Builds the engine and restores kill switches from the journal.
    pub async fn start(config: Arc<Config>, policy: Policy, store: Arc<dyn Store>) -> Result<Engine> {
        let tracing_setup = crate::otel::Tracing::from_config(&config.telemetry).unwrap_or_else(|e| {
            tracing::error!(error = %e, "tracing is off: the OTLP exporter did not start");
            crate::otel::Tracing::disabled()
        });
        let kill_switches = store.kill_switches(true).await?;
        let breakers: HashMap<String, Breaker> =
            store.breakers().await?.into_iter().map(|b| (b.tool.clone(), b)).collect();
        metrics::gauge!(tm::APPROVALS_PENDING)
            .set(store.approvals(Some(ApprovalStatus::Pending), 100_000).await?.len() as f64);
        for b in breakers.values() {
            metrics::gauge!(tm::BREAKER_STATE, "tool" => b.tool.clone()).set(breaker_gauge(b));
        }
        let (approvals_changed, _) = tokio::sync::watch::channel(0);
        // Each TOTP code is accepted once, also across restarts: remember the newest step used
        // by each human from the recorded votes.
        let mut totp_steps: HashMap<String, u64> = HashMap::new();
        for approval in store.approvals(None, 1000).await? {
            for v in approval.votes {
                if let Some(step) = v.totp_step {
                    let e = totp_steps.entry(v.human).or_insert(step);
                    *e = (*e).max(step);
                }
            }
        }
        // Upstream calls that were out when airlock stopped have an unknown outcome. They are
        // marked so and never retried automatically (DESIGN.md: at most once).
        for mut action in store.actions_in_status(ActionStatus::Executing).await? {
            if action.upstream.is_none() {
                continue;
            }
            let now = Utc::now();
            action.status = ActionStatus::Unknown;
            action.updated_at = now;
            action.result = Some(ActionResult {
                ok: false,
                output: Value::Null,
                error: Some("airlock stopped while the call was in flight; its outcome is unknown".into()),
                reported_by: "airlock".into(),
                duration_ms: None,
                cost_usd: None,
                at: now,
            });
            let mut commit = Commit::default();
            commit
                .event(
                    &action.session_id,
                    EventKind::ActionCompleted,
                    now,
                    json!({"action_id": action.id, "status": action.status, "result": action.result}),
                )
                .project(Projection::Action(Box::new(action)));
            store.commit(commit).await?;
        }
        let inner = Inner {
            catalog: Catalog::new(&config),
            defaults: ApprovalDefaults { ttl_seconds: config.approvals.default_ttl_seconds },
            store,
            config,
            policy: RwLock::new(Arc::new(policy)),
            kill_switches: RwLock::new(Arc::new(kill_switches)),
            sessions: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            totp_steps: Mutex::new(totp_steps),
            approvals_changed,
            outbox_wake: Arc::new(Notify::new()),
            buckets: Mutex::new(HashMap::new()),
            spend: Mutex::new(HashMap::new()),
            breakers: Mutex::new(breakers),
            inflight: Mutex::new(HashMap::new()),
            tracing: tracing_setup,
            shadow: Default::default(),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    pub(crate) fn shadow(&self) -> &crate::lifecycle::SharedShadow {
        &self.inner.shadow
    }

    /// Replaces the active policy.
    pub(crate) fn swap_policy(&self, policy: Policy) {
        match self.inner.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(e) => *e.into_inner() = Arc::new(policy),
        }
    }

    /// OpenTelemetry spans.
    pub fn tracing(&self) -> &crate::otel::Tracing {
        &self.inner.tracing
    }

    /// The journal.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The active policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.read().map(|p| p.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The tool catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Notified when notifications were added to the outbox.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.inner.outbox_wake.clone()
    }

    /// Commits and wakes the delivery task when the commit queued notifications.
    async fn commit(&self, commit: Commit) -> Result<()> {
        let queued = !commit.outbox.is_empty();
        self.inner.store.commit(commit).await?;
        if queued {
            self.inner.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Subscribe to "approvals changed" ticks.
    pub fn approvals_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.approvals_changed.subscribe()
    }

    fn kill_switch_list(&self) -> Arc<Vec<KillSwitch>> {
        self.inner.kill_switches.read().map(|k| k.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    fn set_kill_switches(&self, list: Vec<KillSwitch>) {
        match self.inner.kill_switches.write() {
            Ok(mut k) => *k = Arc::new(list),
            Err(e) => *e.into_inner() = Arc::new(list),
        }
    }

    fn bump_approvals(&self) {
        self.inner.approvals_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn notify(&self, action_id: &str) {
        let notify = self.inner.watchers.lock().ok().and_then(|mut w| w.remove(action_id));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    fn watcher(&self, action_id: &str) -> Arc<Notify> {
        match self.inner.watchers.lock() {
            Ok(mut w) => w.entry(action_id.to_string()).or_insert_with(|| Arc::new(Notify::new())).clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    fn cell(&self, session_id: &str) -> Arc<tokio::sync::Mutex<Option<SessionCell>>> {
        let mut sessions = match self.inner.sessions.lock() {
            Ok(s) => s,
            Err(e) => e.into_inner(),
        };
        if sessions.len() > 10_000 {
            // Drop cached sessions nobody is using; they reload from the journal on demand.
            sessions.retain(|_, c| Arc::strong_count(c) > 1);
        }
        sessions.entry(session_id.to_string()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))).clone()
    }

    async fn load_cell(&self, slot: &mut Option<SessionCell>, session_id: &str) -> Result<()> {
        if slot.is_some() {
            return Ok(());
        }
        let session = self
            .inner
            .store
            .session(session_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "session", id: session_id.to_string() })?;
        let waiting =
            self.inner.store.waiting_actions(session_id).await?.into_iter().map(|a| (a.digest, a.id)).collect();
        let window = self.limits_of(&session.agent_id).loop_window_seconds;
        let since = Utc::now() - chrono::Duration::seconds(i64::try_from(window).unwrap_or(i64::MAX / 2_000));
        let recent = self
            .inner
            .store
            .session_actions(session_id)
            .await?
            .into_iter()
            .filter(|a| a.created_at >= since)
            .map(|a| (a.digest, a.created_at))
            .collect();
        *slot = Some(SessionCell { session, waiting, recent });
        Ok(())
    }

    fn limits_of(&self, agent_id: &str) -> GuardLimits {
        self.inner
            .config
            .agents
            .iter()
            .find(|a| a.agent.id == agent_id)
            .map(|a| a.limits.clone())
            .unwrap_or_else(|| self.inner.config.guards.clone())
    }

    /// Takes a rate-limit token for the agent; seeds the bucket from the journal after a restart.
    async fn take_token(&self, agent: &AgentConfig, now: DateTime<Utc>) -> Result<Result<(), Duration>> {
        let per_minute = agent.limits.actions_per_minute;
        if per_minute == 0 {
            return Ok(Ok(()));
        }
        let known = self.inner.buckets.lock().map(|b| b.contains_key(&agent.agent.id)).unwrap_or(false);
        if !known {
            let used =
                self.inner.store.agent_actions_since(&agent.agent.id, now - chrono::Duration::seconds(60)).await?;
            if let Ok(mut b) = self.inner.buckets.lock() {
                b.entry(agent.agent.id.clone()).or_insert_with(|| TokenBucket::new(per_minute, used, now));
            }
        }
        let mut buckets = match self.inner.buckets.lock() {
            Ok(b) => b,
            Err(e) => e.into_inner(),
        };
        let bucket = buckets.entry(agent.agent.id.clone()).or_insert_with(|| TokenBucket::new(per_minute, 0, now));
        Ok(bucket.take(per_minute, now))
    }

    /// What the agent spent today (UTC), from memory or, after a restart or at midnight, the journal.
    async fn spent_today(&self, agent_id: &str, now: DateTime<Utc>) -> Result<f64> {
        let today = now.date_naive();
        let cached = self.inner.spend.lock().ok().and_then(|m| m.get(agent_id).copied());
        if let Some((day, amount)) = cached
            && day == today
        {
            return Ok(amount);
        }
        let midnight = today.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
        let amount = self.inner.store.agent_spend_since(agent_id, midnight).await?;
        if let Ok(mut m) = self.inner.spend.lock() {
            m.insert(agent_id.to_string(), (today, amount));
        }
        Ok(amount)
    }

    fn add_spend(&self, agent_id: &str, amount: f64, now: DateTime<Utc>) {
        if amount <= 0.0 {
            return;
        }
        metrics::gauge!(tm::SPEND_USD, "agent" => agent_id.to_string()).increment(amount);
        if let Ok(mut m) = self.inner.spend.lock()
            && let Some((day, total)) = m.get_mut(agent_id)
            && *day == now.date_naive()
        {
            *total += amount;
        }
    }

    /// Adds the counted part of a cost reported with `action`'s result to the session and the
    /// agent's day (the caller commits the session); returns it.
    async fn count_reported_cost(&self, session: &mut Session, action: &Action, now: DateTime<Utc>) -> Result<f64> {
        let reported = action.result.as_ref().and_then(|r| r.cost_usd);
        let counted = limits::reported_cost_counted(action.decision.cost_usd, reported);
        if counted > 0.0 {
            session.spent_usd += counted;
            // Load the day's spend first, so that the cache holds it before the addition.
            self.spent_today(&action.agent_id, now).await?;
            self.add_spend(&action.agent_id, counted, now);
        }
        Ok(counted)
    }

    /// Pauses `session` (the caller commits): every further action is denied until a human
    /// resumes it; the agent's owner and on-call hear of it.
    fn pause(&self, session: &mut Session, rule: &str, reason: String, commit: &mut Commit, now: DateTime<Utc>) {
        if session.status != SessionStatus::Active {
            return;
        }
        session.status = SessionStatus::Paused;
        metrics::counter!(tm::SESSIONS_PAUSED, "rule" => rule.to_string()).increment(1);
        session.status_reason = Some(format!("[{rule}] {reason}"));
        session.updated_at = now;
        commit.event(
            &session.id,
            EventKind::SessionStatusChanged,
            now,
            json!({"status": "paused", "rule": rule, "reason": reason, "by": "airlock"}),
        );
        crate::notify::enqueue_session(&self.inner.config, commit, "session.paused", session, rule, &reason, now);
        tracing::warn!(session = %session.id, agent = %session.agent_id, rule, %reason, "session paused");
    }

    /// Lets a call to `tool` through its breaker or not; journals a move to half-open.
    fn breaker_admit(
        &self,
        tool: &str,
        limits: &GuardLimits,
        now: DateTime<Utc>,
        commit: &mut Commit,
    ) -> Option<Reason> {
        if !limits.breaker_enabled() {
            return None;
        }
        let mut breakers = match self.inner.breakers.lock() {
            Ok(b) => b,
            Err(e) => e.into_inner(),
        };
        let breaker = breakers.get_mut(tool)?;
        let (admission, transition) = breaker.admit(now, limits.breaker_cooldown_seconds);
        if let Some(t) = transition {
            Self::journal_breaker(breaker, t, commit, now);
        }
        match admission {
            Admission::Pass | Admission::Probe => None,
            Admission::Reject { reason } => Some(reason),
        }
    }

    /// Records a call's outcome in its tool's breaker; journals state changes.
    fn breaker_record(
        &self,
        action: &Action,
        ok: bool,
        error: Option<&str>,
        limits: &GuardLimits,
        now: DateTime<Utc>,
        commit: &mut Commit,
    ) {
        let (tool, agent) = (action.tool.as_str(), action.agent_id.as_str());
        if !limits.breaker_enabled() {
            return;
        }
        let mut breakers = match self.inner.breakers.lock() {
            Ok(b) => b,
            Err(e) => e.into_inner(),
        };
        let breaker = breakers.entry(tool.to_string()).or_insert_with(|| Breaker::new(tool));
        let before = breaker.clone();
        let transition = breaker.record(ok, error, now, limits);
        if let Some(t) = transition {
            Self::journal_breaker(breaker, t, commit, now);
            if t == Transition::Opened {
                crate::notify::enqueue_breaker(&self.inner.config, commit, breaker, agent, now);
                tracing::warn!(tool, failures = breaker.consecutive_failures, "circuit breaker opened");
            }
        } else if *breaker != before {
            commit.project(Projection::Breaker(breaker.clone()));
        }
    }

    fn journal_breaker(breaker: &Breaker, t: Transition, commit: &mut Commit, now: DateTime<Utc>) {
        metrics::gauge!(tm::BREAKER_STATE, "tool" => breaker.tool.clone()).set(breaker_gauge(breaker));
        let state = match t {
            Transition::Opened => "open",
            Transition::HalfOpened => "half_open",
            Transition::Closed => "closed",
        };
        commit
            .event(
                SYSTEM_STREAM,
                EventKind::BreakerChanged,
                now,
                json!({"tool": breaker.tool, "state": state, "consecutive_failures": breaker.consecutive_failures, "last_error": breaker.last_error, "tripped_by": breaker.tripped_by}),
            )
            .project(Projection::Breaker(breaker.clone()));
    }

    /// Metrics and the `approval.wait` span of an approval that stopped pending.
    fn approval_closed(
        &self,
        approval: &Approval,
        parent: Option<&airlock_core::TraceRef>,
        status: ApprovalStatus,
        now: DateTime<Utc>,
    ) {
        metrics::gauge!(tm::APPROVALS_PENDING).decrement(1.0);
        let waited = (now - approval.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(tm::APPROVAL_WAIT_SECONDS, "status" => status.as_str()).record(waited);
        if self.inner.tracing.enabled() {
            let approvers: Vec<String> = approval.votes.iter().map(|v| v.human.clone()).collect();
            self.inner.tracing.record(
                "approval.wait".into(),
                parent,
                approval.created_at.into(),
                now.into(),
                vec![
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_ID, approval.id.clone()),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_VERDICT, status.as_str()),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_WAIT, waited),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVERS, approvers.join(",")),
                ],
            );
        }
    }

    /// Circuit breakers, by tool.
    pub fn breakers(&self) -> Vec<Breaker> {
        let mut list: Vec<Breaker> = match self.inner.breakers.lock() {
            Ok(b) => b.values().cloned().collect(),
            Err(e) => e.into_inner().values().cloned().collect(),
        };
        list.sort_by(|a, b| a.tool.cmp(&b.tool));
        list
    }

    /// Counts an outcome in the session (failure streaks) and the tool's breaker; pauses the
    /// session when its failure streak reaches the limit.
    fn count_outcome(
        &self,
        session: &mut Session,
        action: &Action,
        ok: bool,
        error: Option<&str>,
        commit: &mut Commit,
        now: DateTime<Utc>,
    ) {
        let outcome = if ok { "succeeded" } else { "failed" };
        metrics::counter!(tm::ACTIONS, "tool" => action.tool.clone(), "outcome" => outcome).increment(1);
        let limits = self.limits_of(&action.agent_id);
        if ok {
            session.consecutive_failures = 0;
        } else {
            session.failures += 1;
            session.consecutive_failures = session.consecutive_failures.saturating_add(1);
            if limits.max_consecutive_failures > 0 && session.consecutive_failures >= limits.max_consecutive_failures {
                let reason = format!(
                    "{} actions failed in a row (last: `{}`: {})",
                    session.consecutive_failures,
                    action.tool,
                    error.unwrap_or("failed")
                );
                self.pause(session, limits::RULE_FAILURES, reason, commit, now);
            }
        }
        self.breaker_record(action, ok, error, &limits, now, commit);
    }

    /// Resumes a paused session (humans with `approve` or `admin`).
    pub async fn resume_session(&self, human: &HumanConfig, session_id: &str, comment: &str) -> Result<Session> {
        let h = &human.human;
        if !(h.has_role(Role::Approve) || h.has_role(Role::Admin)) {
            return Err(Error::Forbidden {
                rule: "role",
                msg: format!("`{}` needs the `approve` or `admin` role to resume sessions", h.id),
            });
        }
        if comment.trim().is_empty() {
            return Err(Error::Forbidden {
                rule: "comment_required",
                msg: "resuming a session needs a comment that says why".into(),
            });
        }
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if state.session.status != SessionStatus::Paused {
            return Err(Error::Conflict(format!(
                "session {session_id} is `{}`, not paused",
                status_name(state.session.status)
            )));
        }
        let now = Utc::now();
        let mut session = state.session.clone();
        let was = session.status_reason.take();
        session.status = SessionStatus::Active;
        session.consecutive_failures = 0;
        session.consecutive_denials = 0;
        session.updated_at = now;
        let mut commit = Commit::default();
        commit
            .event(
                session_id,
                EventKind::SessionStatusChanged,
                now,
                json!({"status": "active", "by": h.id, "comment": comment.trim(), "was": was}),
            )
            .project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session.clone();
        state.recent.clear();
        Ok(session)
    }

    /// Closes a session: no new actions, and what still waits in it (pending approvals, approved
    /// actions that have not run) is cancelled, all in one journal commit. The session's own
    /// agent or an admin may close it; closing a closed session returns it unchanged.
    pub async fn close_session(&self, by: SessionCloser<'_>, session_id: &str, reason: &str) -> Result<Session> {
        let by_id = match by {
            SessionCloser::Agent(a) => a.agent.id.clone(),
            SessionCloser::Human(h) => {
                if !h.human.has_role(Role::Admin) {
                    return Err(Error::Forbidden {
                        rule: "role",
                        msg: format!("`{}` needs the `admin` role to close another's session", h.human.id),
                    });
                }
                h.human.id.clone()
            }
        };
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if let SessionCloser::Agent(a) = by
            && state.session.agent_id != a.agent.id
        {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        }
        if state.session.status == SessionStatus::Closed {
            return Ok(state.session.clone());
        }
        let now = Utc::now();
        let reason = match reason.trim() {
            "" => format!("closed by {by_id}"),
            r => r.to_string(),
        };
        let mut commit = Commit::default();
        let why = Reason::new(guard::RULE_SESSION_STATE, format!("session closed: {reason}"));
        let mut cancelled = Vec::new();
        let mut approvals_closed = false;
        for mut action in self.inner.store.waiting_actions(session_id).await? {
            let mut approval = match &action.approval_id {
                Some(id) if action.status == ActionStatus::PendingApproval => self.inner.store.approval(id).await?,
                _ => None,
            };
            action.status = ActionStatus::Cancelled;
            action.updated_at = now;
            commit.event(
                session_id,
                EventKind::ActionCancelled,
                now,
                json!({"action_id": action.id, "approval_id": approval.as_ref().map(|a| a.id.clone()), "reason": why}),
            );
            if let Some(approval) = approval.as_mut().filter(|a| a.status == ApprovalStatus::Pending) {
                self.approval_closed(approval, action.trace.as_ref(), ApprovalStatus::Cancelled, now);
                approval.status = ApprovalStatus::Cancelled;
                approval.resolved_at = Some(now);
                crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", approval, &action, now);
                commit.project(Projection::Approval(approval.clone()));
                approvals_closed = true;
            }
            commit.project(Projection::Action(Box::new(action.clone())));
            cancelled.push(action.id);
        }
        let mut session = state.session.clone();
        session.status = SessionStatus::Closed;
        session.status_reason = Some(reason.clone());
        session.updated_at = now;
        commit
            .event(
                session_id,
                EventKind::SessionStatusChanged,
                now,
                json!({"status": "closed", "by": by_id, "reason": reason, "cancelled": cancelled}),
            )
            .project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session.clone();
        state.waiting.clear();
        drop(guard);
        for id in &cancelled {
            self.notify(id);
        }
        if approvals_closed {
            self.bump_approvals();
        }
        Ok(session)
    }

    /// Registers an upstream call in flight so a kill switch can cancel it.
    pub fn track_inflight(&self, action: &Action, cancel: CancellationToken) {
        if let Ok(mut m) = self.inner.inflight.lock() {
            m.insert(
                action.id.clone(),
                InFlight {
                    agent: action.agent_id.clone(),
                    upstream: action.upstream.clone(),
                    tool: action.tool.clone(),
                    cancel,
                },
            );
        }
    }

    /// Forgets a finished upstream call.
    pub fn untrack_inflight(&self, action_id: &str) {
        if let Ok(mut m) = self.inner.inflight.lock() {
            m.remove(action_id);
        }
    }

    /// Opens a session for `agent`.
    pub async fn open_session(
        &self,
        agent: &AgentConfig,
        task: String,
        labels: std::collections::BTreeMap<String, String>,
        on_behalf_of: Option<String>,
    ) -> Result<Session> {
        if let Some(h) = &on_behalf_of
            && !self.inner.config.humans.iter().any(|c| &c.human.id == h)
        {
            return Err(Error::Invalid(format!("`on_behalf_of` names `{h}`, who is not a configured human")));
        }
        let now = Utc::now();
        let session = Session {
            id: new_id("ses"),
            agent_id: agent.agent.id.clone(),
            task,
            labels,
            on_behalf_of,
            status: SessionStatus::Active,
            status_reason: None,
            actions: 0,
            failures: 0,
            denials: 0,
            consecutive_failures: 0,
            consecutive_denials: 0,
            spent_usd: 0.0,
            created_at: now,
            updated_at: now,
            trace: None,
        };
        let mut session = session;
        session.trace = self.inner.tracing.session_root(&session);
        let mut commit = Commit::default();
        commit
            .event(&session.id, EventKind::SessionOpened, now, to_value(&session))
            .project(Projection::Session(session.clone()));
        self.inner.store.commit(commit).await?;
        let cell = self.cell(&session.id);
        *cell.lock().await =
            Some(SessionCell { session: session.clone(), waiting: HashMap::new(), recent: Default::default() });
        Ok(session)
    }

    /// A session, if `viewer` may see it (its agent, or any human).
    pub async fn session(&self, id: &str, agent_viewer: Option<&str>) -> Result<Session> {
        let session = self.inner.store.session(id).await?;
        match session {
            Some(s) if agent_viewer.is_none_or(|a| a == s.agent_id) => Ok(s),
            _ => Err(Error::NotFound { what: "session", id: id.to_string() }),
        }
    }

    /// Sessions visible to the caller.
    pub async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        Ok(self.inner.store.sessions(filter).await?)
    }

    /// An action with its approval.
    pub async fn action_view(&self, id: &str, agent_viewer: Option<&str>) -> Result<ActionView> {
        let action = self.inner.store.action(id).await?;
        let action = match action {
            Some(a) if agent_viewer.is_none_or(|v| v == a.agent_id) => a,
            _ => return Err(Error::NotFound { what: "action", id: id.to_string() }),
        };
        self.view(action).await
    }

    async fn view(&self, action: Action) -> Result<ActionView> {
        let approval = match &action.approval_id {
            Some(id) => self.inner.store.approval(id).await?,
            None => None,
        };
        Ok(ActionView { action, approval })
    }

    /// Builds the policy input document (versioned in `docs/policy.md`).
    pub fn policy_input(agent: &AgentConfig, session: &Session, action: &Action, now: DateTime<Utc>) -> Value {
        json!({
            "agent": {
                "id": agent.agent.id,
                "owner": agent.agent.owner,
                "oncall": agent.agent.oncall,
                "tier": agent.agent.tier.as_str(),
                "labels": agent.agent.labels,
            },
            "session": {
                "id": session.id,
                "task": session.task,
                "labels": session.labels,
                "on_behalf_of": session.on_behalf_of,
                "actions": session.actions,
                "failures": session.failures,
                "denials": session.denials,
                "spent_usd": session.spent_usd,
            },
            "action": {
                "tool": action.tool,
                "upstream": action.upstream,
                "name": action.name,
                "arguments": action.arguments,
                "annotations": action.annotations,
                "justification": action.justification,
                "digest": action.digest,
            },
            "now": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }

    /// Runs the pipeline for one requested call.
    pub async fn submit(&self, agent: &AgentConfig, session_id: &str, request: ActionRequest) -> Result<Submission> {
        let started = std::time::Instant::now();
        if request.tool.is_empty() || request.tool.len() > 256 {
            return Err(Error::Invalid("`tool` must be 1 to 256 characters".into()));
        }
        if let Some(key) = &request.idempotency_key
            && (key.is_empty() || key.len() > 255)
        {
            return Err(Error::Invalid("`Idempotency-Key` must be 1 to 255 characters".into()));
        }
        let digest = action_digest(&request.tool, &request.arguments);
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if state.session.agent_id != agent.agent.id {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        }

        // Intake 1: a retry with the same Idempotency-Key returns the first outcome.
        if let Some(key) = &request.idempotency_key
            && let Some(first) = self.inner.store.action_by_idempotency_key(&agent.agent.id, key).await?
        {
            if first.digest != digest || first.session_id != session_id {
                return Err(Error::Conflict(format!(
                    "`Idempotency-Key` `{key}` was first used for action {} with a different call; use a new key for a new call",
                    first.id
                )));
            }
            return Ok(Submission { view: self.view(first).await?, outcome: Outcome::Replayed });
        }

        let now = Utc::now();
        // Intake 2: an identical call still waiting in this session joins it.
        if let Some(existing_id) = state.waiting.get(&digest).cloned() {
            match self.inner.store.action(&existing_id).await? {
                Some(existing) if existing.status.is_waiting() => {
                    let mut commit = Commit::default();
                    commit.event(
                        session_id,
                        EventKind::ActionJoined,
                        now,
                        json!({"action_id": existing.id, "digest": digest, "status": existing.status}),
                    );
                    // A retry with this call's key must find the action it joined, not run anew.
                    if let Some(key) = &request.idempotency_key {
                        commit.project(Projection::IdempotencyKey {
                            agent_id: agent.agent.id.clone(),
                            key: key.clone(),
                            action_id: existing.id.clone(),
                        });
                    }
                    self.inner.store.commit(commit).await?;
                    return Ok(Submission { view: self.view(existing).await?, outcome: Outcome::Joined });
                }
                _ => {
                    state.waiting.remove(&digest);
                }
            }
        }

        let info: ToolInfo = self.inner.catalog.resolve(&request.tool, request.reported_annotations.as_ref());
        // A session in the canary's share is decided by the candidate.
        let (policy, canary) = self.policy_for(session_id);
        let mut action = Action {
            id: new_id("act"),
            session_id: session_id.to_string(),
            seq: state.session.actions + 1,
            agent_id: agent.agent.id.clone(),
            tool: request.tool.clone(),
            upstream: info.upstream.clone(),
            name: info.name.clone(),
            arguments: request.arguments,
            annotations: info.annotations.clone(),
            justification: request.justification,
            digest: digest.clone(),
            status: ActionStatus::Denied,
            decision: airlock_core::decision::policy_failure(String::new(), policy.revision(), 0),
            approval_id: None,
            result: None,
            idempotency_key: request.idempotency_key,
            created_at: now,
            updated_at: now,
            trace: None,
        };
        let tracing_on = self.inner.tracing.enabled();
        let t0 = std::time::SystemTime::now() - started.elapsed();
        let mut span = if tracing_on {
            let parent = request
                .traceparent
                .as_deref()
                .and_then(crate::otel::parse_traceparent)
                .or_else(|| state.session.trace.clone());
            let attrs = self.inner.tracing.action_attributes(&action, request.mcp_session.as_deref());
            self.inner.tracing.start(
                format!("execute_tool {}", action.tool),
                opentelemetry::trace::SpanKind::Internal,
                parent.as_ref(),
                t0,
                attrs,
            )
        } else {
            crate::otel::OpenSpan::none()
        };
        action.trace = span.reference();

        // Guards, then policy, then the tier floor.
        let kills = self.kill_switch_list();
        let guard_ctx = GuardContext {
            agent: &agent.agent,
            session: &state.session,
            tool: &action.tool,
            upstream: action.upstream.as_deref(),
            read_only: info.read_only,
            tool_allowed: allowlist_covers(agent.tools.as_deref(), &action.tool),
            kill_switches: &kills,
        };
        let limits = &agent.limits;
        let guard_deny = |reason: Reason, retry_after_ms: Option<u64>| Decision {
            effect: Effect::Deny,
            reasons: vec![reason],
            risk: Risk::High,
            approval: None,
            cost_usd: None,
            policy_revision: policy.revision().to_string(),
            decided_by: "guard".into(),
            eval_us: 0,
            retry_after_ms,
            warnings: Vec::new(),
            // Policy did not run, so what it would redact is unknown: export no content.
            redact: vec![airlock_core::redact::REDACT_ALL.to_string()],
        };
        let mut commit = Commit::default();
        let mut session = state.session.clone();
        let mut pause: Option<(&'static str, String)> = None;
        // The exact policy input, journaled with the decision so it can be replayed.
        let mut recorded_input: Option<Value> = None;
        let mut policy_span: Option<(std::time::SystemTime, std::time::SystemTime)> = None;
        let window = chrono::Duration::seconds(i64::try_from(limits.loop_window_seconds).unwrap_or(i64::MAX / 2_000));
        while state.recent.front().is_some_and(|(_, at)| *at < now - window) {
            state.recent.pop_front();
        }
        let repeats = state.recent.iter().filter(|(d, _)| *d == digest).count() as u32 + 1;
        let decision = if let Some(reason) = guard::check(&guard_ctx) {
            guard_deny(reason, None)
        } else if let Err(wait) = self.take_token(agent, now).await? {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            guard_deny(limits::rate_limited(&agent.agent.id, limits.actions_per_minute, wait), Some(ms))
        } else if limits.loop_repeats >= 2 && repeats >= limits.loop_repeats {
            let reason = format!(
                "the same call to `{}` was made {repeats} times within {}s; the agent looks stuck",
                action.tool, limits.loop_window_seconds
            );
            pause = Some((limits::RULE_LOOP, reason.clone()));
            guard_deny(
                Reason::new(limits::RULE_LOOP, format!("{reason}; the session is paused until a human resumes it")),
                None,
            )
        } else if let Some(reason) = self.breaker_admit(&action.tool, limits, now, &mut commit) {
            guard_deny(reason, None)
        } else {
            let input = Engine::policy_input(agent, &state.session, &action, now);
            let p0 = std::time::SystemTime::now();
            let eval = policy.evaluate(&input);
            policy_span = Some((p0, std::time::SystemTime::now()));
            recorded_input = Some(input);
            let mut d = combine(eval.output, &self.inner.defaults, policy.revision(), eval.eval_us);
            if d.cost_usd.is_none() {
                d.cost_usd = info.cost_usd;
            }
            let d = apply_tier_floor(d, agent.agent.tier, info.read_only, &self.inner.defaults);
            let spent_today =
                if limits.budget_usd_per_day > 0.0 { self.spent_today(&agent.agent.id, now).await? } else { 0.0 };
            limits::apply_budget(d, limits, spent_today, state.session.spent_usd, self.inner.defaults.ttl_seconds)
        };
        state.recent.push_back((digest.clone(), now));

        session.actions += 1;
        session.updated_at = now;
        if decision.effect == Effect::Deny {
            session.consecutive_denials = session.consecutive_denials.saturating_add(1);
            if pause.is_none()
                && limits.max_consecutive_denials > 0
                && session.consecutive_denials >= limits.max_consecutive_denials
            {
                let last = decision.reasons.first().map(|r| format!("[{}] {}", r.rule, r.msg)).unwrap_or_default();
                pause = Some((
                    limits::RULE_DENIALS,
                    format!("{} actions were denied in a row (last: {last})", session.consecutive_denials),
                ));
            }
        } else {
            session.consecutive_denials = 0;
        }
        let mut approval = None;
        action.status = match decision.effect {
            Effect::Deny => {
                session.denials += 1;
                ActionStatus::Denied
            }
            Effect::Allow => {
                let cost = decision.cost_usd.unwrap_or(0.0);
                session.spent_usd += cost;
                if limits.budget_usd_per_day > 0.0 {
                    self.spent_today(&agent.agent.id, now).await?;
                }
                self.add_spend(&agent.agent.id, cost, now);
                ActionStatus::Executing
            }
            Effect::RequireApproval => {
                let requirements = decision.approval.clone().unwrap_or(airlock_core::ApprovalRequirements {
                    quorum: 1,
                    groups: Vec::new(),
                    mfa: false,
                    ttl_seconds: self.inner.defaults.ttl_seconds,
                });
                let ttl =
                    chrono::Duration::seconds(i64::try_from(requirements.ttl_seconds).unwrap_or(i64::MAX / 2_000));
                let a = Approval {
                    id: new_id("apr"),
                    action_id: action.id.clone(),
                    session_id: session_id.to_string(),
                    agent_id: agent.agent.id.clone(),
                    digest: digest.clone(),
                    requirements,
                    status: ApprovalStatus::Pending,
                    votes: Vec::new(),
                    created_at: now,
                    expires_at: now + ttl,
                    resolved_at: None,
                };
                action.approval_id = Some(a.id.clone());
                approval = Some(a);
                ActionStatus::PendingApproval
            }
        };
        action.decision = decision;

        commit.event(
            session_id,
            EventKind::ActionRequested,
            now,
            json!({
                "action_id": action.id,
                "seq": action.seq,
                "agent_id": action.agent_id,
                "tool": action.tool,
                "upstream": action.upstream,
                "name": action.name,
                "arguments": action.arguments,
                "annotations": action.annotations,
                "justification": action.justification,
                "digest": action.digest,
                "idempotency_key": action.idempotency_key,
            }),
        );
        commit.event(
            session_id,
            EventKind::ActionDecided,
            now,
            json!({"action_id": action.id, "status": action.status, "decision": action.decision, "input": recorded_input}),
        );
        if let Some(a) = &approval {
            commit.event(session_id, EventKind::ApprovalRequested, now, to_value(a));
            commit.project(Projection::Approval(a.clone()));
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.requested", a, &action, now);
        }
        if let Some((rule, reason)) = pause {
            self.pause(&mut session, rule, reason, &mut commit, now);
        }
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        let j0 = std::time::SystemTime::now();
        match self.commit(commit).await {
            Ok(()) => {}
            Err(Error::Store(airlock_store::Error::Conflict(_))) if action.idempotency_key.is_some() => {
                return Err(Error::Conflict("the `Idempotency-Key` was used concurrently; retry the request".into()));
            }
            Err(e) => return Err(e),
        }
        state.session = session;
        if action.status.is_waiting() {
            state.waiting.insert(digest, action.id.clone());
        }
        if tracing_on {
            let t = &self.inner.tracing;
            let parent = action.trace.clone();
            if let Some((p0, p1)) = policy_span {
                t.record(
                    "policy.evaluate".into(),
                    parent.as_ref(),
                    p0,
                    p1,
                    vec![
                        opentelemetry::KeyValue::new(
                            crate::otel::attr::POLICY_REVISION,
                            action.decision.policy_revision.clone(),
                        ),
                        opentelemetry::KeyValue::new(crate::otel::attr::EFFECT, action.decision.effect.as_str()),
                        opentelemetry::KeyValue::new(
                            crate::otel::attr::POLICY_DURATION_US,
                            action.decision.eval_us as i64,
                        ),
                    ],
                );
            }
            t.record("journal.append".into(), parent.as_ref(), j0, std::time::SystemTime::now(), vec![]);
            let rules: Vec<String> = action.decision.reasons.iter().map(|r| r.rule.clone()).collect();
            span.set(t.arguments_attribute(&action).into_iter().collect());
            span.set(vec![
                opentelemetry::KeyValue::new(crate::otel::attr::EFFECT, action.decision.effect.as_str()),
                opentelemetry::KeyValue::new(crate::otel::attr::RULES, rules.join(",")),
                opentelemetry::KeyValue::new(
                    crate::otel::attr::POLICY_REVISION,
                    action.decision.policy_revision.clone(),
                ),
                opentelemetry::KeyValue::new(crate::otel::attr::ACTION_STATUS, action.status.as_str()),
            ]);
            if action.status == ActionStatus::Denied {
                span.error(
                    action.decision.reasons.first().map(|r| format!("[{}] {}", r.rule, r.msg)).unwrap_or_default(),
                );
            }
        }
        span.end_at(std::time::SystemTime::now());
        if let Some(input) = &recorded_input
            && !canary
        {
            self.shadow_evaluate(&action, input);
        }
        drop(guard);
        if approval.is_some() {
            metrics::gauge!(tm::APPROVALS_PENDING).increment(1.0);
            self.bump_approvals();
        }
        let rule = action.decision.reasons.first().map(|r| r.rule.clone()).unwrap_or_else(|| "none".into());
        metrics::counter!(tm::DECISIONS, "effect" => action.decision.effect.as_str(), "rule" => rule).increment(1);
        metrics::histogram!(tm::DECISION_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(tm::POLICY_SECONDS).record(action.decision.eval_us as f64 / 1e6);
        if action.status == ActionStatus::Denied {
            metrics::counter!(tm::ACTIONS, "tool" => action.tool.clone(), "outcome" => "denied").increment(1);
        }
        Ok(Submission { view: ActionView { action, approval }, outcome: Outcome::New })
    }

    /// Waits until the action's status differs from `from` or `timeout` passes, then returns it.
    pub async fn wait_for_change(&self, id: &str, agent_viewer: Option<&str>, timeout: Duration) -> Result<ActionView> {
        let deadline = tokio::time::Instant::now() + timeout;
        let first = self.action_view(id, agent_viewer).await?;
        let from = first.action.status;
        if timeout.is_zero() || from.is_final() {
            return Ok(first);
        }
        loop {
            let watcher = self.watcher(id);
            let notified = watcher.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let current = self.action_view(id, agent_viewer).await?;
            if current.action.status != from {
                return Ok(current);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.action_view(id, agent_viewer).await;
            }
        }
    }

    /// Records the result an agent reports for an action it executed.
    pub async fn report_result(
        &self,
        agent: &AgentConfig,
        action_id: &str,
        report: ResultReport,
    ) -> Result<ActionView> {
        let ResultReport { ok, output, error, cost_usd } = report;
        if let Some(cost) = cost_usd
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(Error::Invalid(format!("`cost_usd` must be a non-negative number of US dollars, got {cost}")));
        }
        let found = self.inner.store.action(action_id).await?;
        let Some(action) = found.filter(|a| a.agent_id == agent.agent.id) else {
            return Err(Error::NotFound { what: "action", id: action_id.to_string() });
        };
        let cell = self.cell(&action.session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, &action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        // Re-read under the session lock: the status may have moved.
        let mut action = self
            .inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })?;
        if !matches!(action.status, ActionStatus::Executing | ActionStatus::Approved) {
            return Err(Error::Conflict(format!(
                "action {} is `{}`; a result can only be reported for an `executing` or `approved` action, once",
                action.id, action.status
            )));
        }
        if action.upstream.is_some() {
            return Err(Error::Conflict(format!(
                "action {} is executed by airlock against upstream `{}`; agents don't report its result",
                action.id,
                action.upstream.as_deref().unwrap_or_default()
            )));
        }
        let now = Utc::now();
        action.status = if ok { ActionStatus::Succeeded } else { ActionStatus::Failed };
        action.result =
            Some(ActionResult { ok, output, error, reported_by: "agent".into(), duration_ms: None, cost_usd, at: now });
        action.updated_at = now;
        let mut session = state.session.clone();
        session.updated_at = now;
        let counted = self.count_reported_cost(&mut session, &action, now).await?;
        let mut commit = Commit::default();
        commit.event(&action.session_id, EventKind::ActionCompleted, now, completed_payload(&action, counted));
        let error = action.result.as_ref().and_then(|r| r.error.clone());
        self.count_outcome(&mut session, &action, ok, error.as_deref(), &mut commit, now);
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        state.waiting.retain(|_, id| id != &action.id);
        drop(guard);
        self.notify(&action.id);
        self.view(action).await
    }

    /// Takes an approved upstream action for execution: `approved → executing`, journaled before
    /// the call leaves airlock. Exactly one caller gets [`Claim::Run`]; the others learn that it
    /// is already running or finished.
    pub async fn claim_execution(&self, action_id: &str) -> Result<Claim> {
        let action = self
            .inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })?;
        let cell = self.cell(&action.session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, &action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        let mut action = self
            .inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })?;
        match action.status {
            ActionStatus::Approved => {}
            ActionStatus::Executing => return Ok(Claim::Running(Box::new(action))),
            s if s.is_final() => return Ok(Claim::Finished(Box::new(action))),
            _ => return Ok(Claim::NotRunnable(Box::new(action))),
        }
        // A kill switch engaged after the approval still stops the call.
        let kills = self.kill_switch_list();
        if let Some(ks) = kills
            .iter()
            .find(|k| guard::kill_switch_covers(k, &action.agent_id, action.upstream.as_deref(), &action.tool))
        {
            self.cancel_approved_locked(state, &mut action, ks).await?;
            drop(guard);
            self.notify(&action.id);
            return Ok(Claim::Finished(Box::new(action)));
        }
        let now = Utc::now();
        action.status = ActionStatus::Executing;
        action.updated_at = now;
        let mut commit = Commit::default();
        commit
            .event(&action.session_id, EventKind::ActionExecuting, now, json!({"action_id": action.id}))
            .project(Projection::Action(Box::new(action.clone())));
        self.inner.store.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        drop(guard);
        self.notify(&action.id);
        Ok(Claim::Run(Box::new(action)))
    }

    /// Records the outcome of an upstream call airlock made: `executing → succeeded | failed`.
    pub async fn record_execution(&self, action_id: &str, result: ActionResult) -> Result<Action> {
        let action = self
            .inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })?;
        let cell = self.cell(&action.session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, &action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        let mut action = self
            .inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })?;
        if action.status != ActionStatus::Executing {
            return Err(Error::Conflict(format!("action {} is `{}`, not `executing`", action.id, action.status)));
        }
        let now = Utc::now();
        action.status = if result.ok { ActionStatus::Succeeded } else { ActionStatus::Failed };
        action.updated_at = now;
        let ok = result.ok;
        let error = result.error.clone();
        action.result = Some(result);
        let mut session = state.session.clone();
        session.updated_at = now;
        let counted = self.count_reported_cost(&mut session, &action, now).await?;
        let mut commit = Commit::default();
        commit.event(&action.session_id, EventKind::ActionCompleted, now, completed_payload(&action, counted));
        self.count_outcome(&mut session, &action, ok, error.as_deref(), &mut commit, now);
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        drop(guard);
        self.notify(&action.id);
        Ok(action)
    }

    /// An approval with its action.
    pub async fn approval(&self, id: &str) -> Result<(Approval, Action)> {
        let approval = self
            .inner
            .store
            .approval(id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "approval", id: id.to_string() })?;
        let action = self
            .inner
            .store
            .action(&approval.action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: approval.action_id.clone() })?;
        Ok((approval, action))
    }

    /// Approvals, newest first.
    pub async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        Ok(self.inner.store.approvals(status, limit).await?)
    }

    /// Casts a human's vote. Refusals are journaled and returned as [`Error::Forbidden`] naming
    /// the rule.
    pub async fn vote(&self, human: &HumanConfig, approval_id: &str, vote: VoteRequest) -> Result<ActionView> {
        let (approval, _) = self.approval(approval_id).await?;
        let cell = self.cell(&approval.session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, &approval.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: approval.session_id.clone() });
        };
        let (mut approval, mut action) = self.approval(approval_id).await?;
        let now = Utc::now();

        if approval.status == ApprovalStatus::Pending && approval.expires_at <= now {
            self.expire_locked(state, &mut approval, &mut action, now).await?;
        }
        if approval.status != ApprovalStatus::Pending {
            return Err(Error::Conflict(format!(
                "approval {} is already `{}`; votes are only taken while it is pending",
                approval.id, approval.status
            )));
        }
        let mfa_step = match self.check_vote(human, &approval, &state.session, &vote, now) {
            Ok(step) => step,
            Err((rule, msg)) => {
                let mut commit = Commit::default();
                commit.event(
                &approval.session_id,
                EventKind::VoteRefused,
                now,
                json!({"approval_id": approval.id, "human": human.human.id, "verdict": vote.verdict, "rule": rule, "reason": msg}),
            );
                self.inner.store.commit(commit).await?;
                return Err(Error::Forbidden { rule, msg });
            }
        };

        let record = Vote {
            human: human.human.id.clone(),
            verdict: vote.verdict,
            comment: vote.comment.trim().to_string(),
            mfa: approval.requirements.mfa,
            totp_step: mfa_step,
            at: now,
        };
        approval.votes.push(record.clone());
        let mut commit = Commit::default();
        commit.event(
            &approval.session_id,
            EventKind::VoteCast,
            now,
            json!({"approval_id": approval.id, "action_id": action.id, "vote": record}),
        );
        let resolved = match vote.verdict {
            Verdict::Deny => Some((ApprovalStatus::Denied, ActionStatus::Denied)),
            Verdict::Approve if approval.approvals() >= approval.requirements.quorum => {
                Some((ApprovalStatus::Approved, ActionStatus::Approved))
            }
            Verdict::Approve => None,
        };
        if let Some((approval_status, action_status)) = resolved {
            self.approval_closed(&approval, action.trace.as_ref(), approval_status, now);
            approval.status = approval_status;
            approval.resolved_at = Some(now);
            action.status = action_status;
            action.updated_at = now;
            commit.event(
                &approval.session_id,
                EventKind::ApprovalResolved,
                now,
                json!({"approval_id": approval.id, "action_id": action.id, "status": approval.status, "action_status": action.status}),
            );
            commit.project(Projection::Action(Box::new(action.clone())));
            let mut session = state.session.clone();
            session.updated_at = now;
            if action_status == ActionStatus::Denied {
                session.denials += 1;
            } else {
                // The cost counts once the action is approved.
                let cost = action.decision.cost_usd.unwrap_or(0.0);
                session.spent_usd += cost;
                if cost > 0.0 {
                    self.spent_today(&action.agent_id, now).await?;
                    self.add_spend(&action.agent_id, cost, now);
                }
            }
            commit.project(Projection::Session(session.clone()));
            state.session = session;
        }
        commit.project(Projection::Approval(approval.clone()));
        if resolved.is_some() {
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", &approval, &action, now);
        }
        self.commit(commit).await?;
        if !action.status.is_waiting() {
            state.waiting.retain(|_, id| id != &action.id);
        }
        drop(guard);
        self.notify(&action.id);
        self.bump_approvals();
        Ok(ActionView { action, approval: Some(approval) })
    }

    fn check_vote(
        &self,
        human: &HumanConfig,
        approval: &Approval,
        session: &Session,
        vote: &VoteRequest,
        now: DateTime<Utc>,
    ) -> std::result::Result<Option<u64>, (&'static str, String)> {
        let h = &human.human;
        if !h.has_role(Role::Approve) {
            return Err(("role", format!("`{}` does not have the `approve` role", h.id)));
        }
        if vote.comment.trim().is_empty() {
            return Err(("comment_required", "a vote needs a comment that says why".into()));
        }
        if approval.votes.iter().any(|v| v.human == h.id) {
            return Err(("vote_once", format!("`{}` has already voted on approval {}", h.id, approval.id)));
        }
        if !approval.requirements.groups.is_empty()
            && !h.groups.iter().any(|g| approval.requirements.groups.contains(g))
        {
            return Err((
                "group",
                format!(
                    "approval {} needs approvers from {}; `{}` is in none of them",
                    approval.id,
                    approval.requirements.groups.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
                    h.id
                ),
            ));
        }
        if session.on_behalf_of.as_deref() == Some(h.id.as_str()) && !self.inner.config.approvals.allow_requester {
            return Err((
                "maker_checker",
                format!("`{}` requested this session's work and can't approve its actions; ask another approver", h.id),
            ));
        }
        if approval.requirements.mfa {
            let Some(secret) = &human.totp_secret else {
                return Err((
                    "mfa",
                    format!("approval {} needs MFA and `{}` has no TOTP secret configured", approval.id, h.id),
                ));
            };
            let Some(code) = vote.totp.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
                return Err(("mfa", format!("approval {} needs MFA: send a current TOTP code as `totp`", approval.id)));
            };
            let step =
                crate::mfa::verify(secret, code, now).map_err(|msg| ("mfa", format!("TOTP code refused: {msg}")))?;
            // Check and consume the code in one step: votes in different sessions run
            // concurrently, and one code must not pass twice. A code consumed by a vote whose
            // commit then fails stays used; the approver waits for the next one.
            let mut steps = match self.inner.totp_steps.lock() {
                Ok(s) => s,
                Err(e) => e.into_inner(),
            };
            if steps.get(&h.id).is_some_and(|&last| step <= last) {
                return Err(("mfa", "TOTP code refused: this code was already used; wait for the next one".into()));
            }
            steps.insert(h.id.clone(), step);
            return Ok(Some(step));
        }
        Ok(None)
    }

    async fn expire_locked(
        &self,
        state: &mut SessionCell,
        approval: &mut Approval,
        action: &mut Action,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.approval_closed(approval, action.trace.as_ref(), ApprovalStatus::Expired, now);
        approval.status = ApprovalStatus::Expired;
        approval.resolved_at = Some(now);
        action.status = ActionStatus::Expired;
        action.updated_at = now;
        let mut commit = Commit::default();
        commit
            .event(
                &approval.session_id,
                EventKind::ApprovalExpired,
                now,
                json!({"approval_id": approval.id, "action_id": action.id, "expires_at": approval.expires_at, "votes": approval.votes.len()}),
            )
            .project(Projection::Approval(approval.clone()))
            .project(Projection::Action(Box::new(action.clone())));
        crate::notify::enqueue(&self.inner.config, &mut commit, "approval.expired", approval, action, now);
        self.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        self.notify(&action.id);
        self.bump_approvals();
        Ok(())
    }

    /// Expires every pending approval past its time, and every approved action not run within
    /// `[approvals] execute_within_seconds`. Returns how many expired.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = Utc::now();
        let mut n = self.expire_unused(now).await?;
        let due = self.inner.store.approvals_due(now).await?;
        for approval in due {
            let cell = self.cell(&approval.session_id);
            let mut guard = cell.lock().await;
            self.load_cell(&mut guard, &approval.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let (mut approval, mut action) = self.approval(&approval.id).await?;
            if approval.status == ApprovalStatus::Pending && approval.expires_at <= now {
                self.expire_locked(state, &mut approval, &mut action, now).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// An approval is consent to run an action soon, not whenever: approved actions that were not
    /// run (claimed by the gateway, or reported by the agent) in time expire.
    async fn expire_unused(&self, now: DateTime<Utc>) -> Result<usize> {
        let window = chrono::Duration::seconds(self.inner.config.approvals.execute_within_seconds as i64);
        let approved = self.inner.store.actions_in_status(ActionStatus::Approved).await?;
        let mut n = 0;
        for action in approved.into_iter().filter(|a| a.updated_at + window <= now) {
            let cell = self.cell(&action.session_id);
            let mut guard = cell.lock().await;
            self.load_cell(&mut guard, &action.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let Some(mut action) = self.inner.store.action(&action.id).await? else { continue };
            if action.status != ActionStatus::Approved || action.updated_at + window > now {
                continue;
            }
            let approved_at = action.updated_at;
            action.status = ActionStatus::Expired;
            action.updated_at = now;
            let reason = Reason::new(
                RULE_APPROVAL_UNUSED,
                format!(
                    "approved at {} but not run within {} s ([approvals] execute_within_seconds); ask again",
                    approved_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    window.num_seconds()
                ),
            );
            let mut commit = Commit::default();
            commit
                .event(
                    &action.session_id,
                    EventKind::ActionExpired,
                    now,
                    json!({"action_id": action.id, "approved_at": approved_at, "reason": reason}),
                )
                .project(Projection::Action(Box::new(action.clone())));
            self.commit(commit).await?;
            state.waiting.retain(|_, id| id != &action.id);
            drop(guard);
            self.notify(&action.id);
            n += 1;
        }
        Ok(n)
    }

    /// Engages a kill switch; pending approvals it covers are cancelled.
    pub async fn engage_kill(
        &self,
        by: &str,
        scope: KillScope,
        target: Option<String>,
        reason: String,
    ) -> Result<KillSwitch> {
        let target = target.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        match (scope, &target) {
            (KillScope::All, Some(_)) => return Err(Error::Invalid("scope `all` takes no `target`".into())),
            (KillScope::Agent | KillScope::Upstream | KillScope::Tool, None) => {
                return Err(Error::Invalid(format!("scope `{}` needs a `target`", scope.as_str())));
            }
            _ => {}
        }
        if reason.trim().is_empty() {
            return Err(Error::Invalid("a kill switch needs a `reason`; it is quoted in every denial".into()));
        }
        let now = Utc::now();
        let ks = KillSwitch {
            id: new_id("kill"),
            scope,
            target,
            reason: reason.trim().to_string(),
            engaged_by: by.to_string(),
            engaged_at: now,
            released_by: None,
            released_at: None,
        };
        let mut commit = Commit::default();
        commit
            .event(SYSTEM_STREAM, EventKind::KillEngaged, now, to_value(&ks))
            .project(Projection::KillSwitch(ks.clone()));
        self.inner.store.commit(commit).await?;
        let mut list = (*self.kill_switch_list()).clone();
        list.insert(0, ks.clone());
        self.set_kill_switches(list);
        // Calls already out are cancelled (the upstream hears `notifications/cancelled`).
        if let Ok(inflight) = self.inner.inflight.lock() {
            for f in inflight.values() {
                if guard::kill_switch_covers(&ks, &f.agent, f.upstream.as_deref(), &f.tool) {
                    f.cancel.cancel();
                }
            }
        }
        self.cancel_covered(&ks).await?;
        self.cancel_covered_approved(&ks).await?;
        Ok(ks)
    }

    /// Approved actions that have not run yet are cancelled by a kill switch that covers them:
    /// an approval given before the switch must not let the action through after it.
    async fn cancel_covered_approved(&self, ks: &KillSwitch) -> Result<()> {
        let approved = self.inner.store.actions_in_status(ActionStatus::Approved).await?;
        for action in approved {
            if !guard::kill_switch_covers(ks, &action.agent_id, action.upstream.as_deref(), &action.tool) {
                continue;
            }
            let cell = self.cell(&action.session_id);
            let mut guard = cell.lock().await;
            self.load_cell(&mut guard, &action.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let Some(mut action) = self.inner.store.action(&action.id).await? else { continue };
            if action.status != ActionStatus::Approved {
                continue;
            }
            self.cancel_approved_locked(state, &mut action, ks).await?;
            drop(guard);
            self.notify(&action.id);
        }
        Ok(())
    }

    /// `approved → cancelled` by a kill switch, journaled; the caller holds the session's lock
    /// and notifies the action's watchers after releasing it.
    async fn cancel_approved_locked(
        &self,
        state: &mut SessionCell,
        action: &mut Action,
        ks: &KillSwitch,
    ) -> Result<()> {
        let now = Utc::now();
        action.status = ActionStatus::Cancelled;
        action.updated_at = now;
        let reason = Reason::new(guard::RULE_KILL_SWITCH, format!("kill switch {} engaged: {}", ks.id, ks.reason));
        let mut commit = Commit::default();
        commit
            .event(
                &action.session_id,
                EventKind::ActionCancelled,
                now,
                json!({"action_id": action.id, "reason": reason}),
            )
            .project(Projection::Action(Box::new(action.clone())));
        self.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        Ok(())
    }

    async fn cancel_covered(&self, ks: &KillSwitch) -> Result<()> {
        let pending = self.inner.store.approvals(Some(ApprovalStatus::Pending), 100_000).await?;
        for p in pending {
            let Ok((_, action)) = self.approval(&p.id).await else { continue };
            if !guard::kill_switch_covers(ks, &action.agent_id, action.upstream.as_deref(), &action.tool) {
                continue;
            }
            let cell = self.cell(&p.session_id);
            let mut guard = cell.lock().await;
            self.load_cell(&mut guard, &p.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let (mut approval, mut action) = self.approval(&p.id).await?;
            if approval.status != ApprovalStatus::Pending {
                continue;
            }
            let now = Utc::now();
            self.approval_closed(&approval, action.trace.as_ref(), ApprovalStatus::Cancelled, now);
            approval.status = ApprovalStatus::Cancelled;
            approval.resolved_at = Some(now);
            action.status = ActionStatus::Cancelled;
            action.updated_at = now;
            let reason = Reason::new(guard::RULE_KILL_SWITCH, format!("kill switch {} engaged: {}", ks.id, ks.reason));
            let mut commit = Commit::default();
            commit
                .event(
                    &p.session_id,
                    EventKind::ActionCancelled,
                    now,
                    json!({"action_id": action.id, "approval_id": approval.id, "reason": reason}),
                )
                .project(Projection::Approval(approval.clone()))
                .project(Projection::Action(Box::new(action.clone())));
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", &approval, &action, now);
            self.commit(commit).await?;
            state.waiting.retain(|_, id| id != &action.id);
            self.notify(&action.id);
        }
        self.bump_approvals();
        Ok(())
    }

    /// Releases a kill switch.
    pub async fn release_kill(&self, by: &str, id: &str) -> Result<KillSwitch> {
        let list = self.kill_switch_list();
        let Some(mut ks) = list.iter().find(|k| k.id == id).cloned() else {
            return Err(Error::NotFound { what: "engaged kill switch", id: id.to_string() });
        };
        let now = Utc::now();
        ks.released_by = Some(by.to_string());
        ks.released_at = Some(now);
        let mut commit = Commit::default();
        commit
            .event(SYSTEM_STREAM, EventKind::KillReleased, now, json!({"id": ks.id, "released_by": by}))
            .project(Projection::KillSwitch(ks.clone()));
        self.inner.store.commit(commit).await?;
        self.set_kill_switches(list.iter().filter(|k| k.id != id).cloned().collect());
        Ok(ks)
    }

    /// Kill switches: engaged ones, or all including released.
    pub async fn kill_switches(&self, include_released: bool) -> Result<Vec<KillSwitch>> {
        if include_released {
            Ok(self.inner.store.kill_switches(false).await?)
        } else {
            Ok((*self.kill_switch_list()).clone())
        }
    }

    /// Runs background duties (approval expiry) until `shutdown` resolves.
    pub async fn run_background(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.expire_due().await {
                        tracing::warn!(error = %e, "expiring approvals failed; will retry");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// The `action.completed` event: the result, and the part of a reported cost that was counted.
fn completed_payload(action: &Action, counted_usd: f64) -> Value {
    let mut payload = json!({"action_id": action.id, "status": action.status, "result": action.result});
    if action.result.as_ref().is_some_and(|r| r.cost_usd.is_some())
        && let Value::Object(map) = &mut payload
    {
        map.insert("cost_counted_usd".into(), json!(counted_usd));
    }
    payload
}

fn status_name(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Active => "active",
        SessionStatus::Paused => "paused",
        SessionStatus::Closed => "closed",
    }
}

fn breaker_gauge(b: &Breaker) -> f64 {
    match b.state {
        limits::BreakerState::Closed => 0.0,
        limits::BreakerState::HalfOpen => 1.0,
        limits::BreakerState::Open => 2.0,
    }
}

//! The decision pipeline's IO: locking, the journal, calling Rego, waking waiters.
//!
//! What is decided lives in `airlock_core::pipeline` (guards, tier floor, budgets, the policy
//! input document) and `airlock_core::vote` (who may vote, when the votes resolve an approval);
//! this module gathers what those pure functions need, calls them, and journals what they
//! decided before anyone hears of it.
//!
//! [`Engine`] is a cheap-to-clone handle. Actions of one session are serialised by a per-session
//! lock (so sequence numbers, joins and counters are exact); different sessions proceed in
//! parallel and share journal transactions through the store's group commit. Time comes from
//! the engine's [`Clock`], so tests move it instead of waiting.
//!
//! - `submit.rs`: one requested call through the pipeline;
//! - `outcome.rs`: claiming an approved action for execution, and recording results;
//! - `approvals.rs`: votes and expiry;
//! - `sessions.rs`: opening, pausing, resuming and closing sessions;
//! - `kill.rs`: kill switches and what they cancel;
//! - `send.rs`: the moment an upstream call is sent (the last kill-switch check), and its end;
//! - `guards.rs`: the guard state the engine owns (rate-limit buckets, spend, breakers);
//! - `plans.rs`: plans in a session, their approval, and holding calls to the plan in force.

mod approvals;
mod clock;
mod evaluator;
mod forwarded;
mod guards;
mod kill;
mod outcome;
mod plans;
mod reads;
mod recovery;
mod replicas;
mod send;
mod sessions;
mod storage;
mod submit;

pub use clock::{Clock, ManualClock, SystemClock};
pub(crate) use evaluator::evaluate;
use guards::export_breakers;
pub use plans::{LeaseRef, LeaseView, PlanProposal, PlanView, StepView, VersionView};
pub use reads::Read;
pub use send::{CallEnd, Gate, Sending};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use airlock_core::decision::{ApprovalDefaults, RULE_APPROVAL_UNUSED};
use airlock_core::guard;
use airlock_core::limits::{self, Breaker, GuardLimits, TokenBucket, Transition};
use airlock_core::pipeline::{self, GuardState, Intake, Pause, PolicyFacts, Screening};
use airlock_core::vote::{MfaGuard, Refusal};
use airlock_core::{
    Action, ActionResult, ActionStatus, Approval, ApprovalStatus, EventKind, KillScope, KillSwitch, Reason, Reporter,
    Session, SessionStatus, Verdict, Vote, action_digest,
};
use airlock_policy::Policy;
use airlock_store::{Commit, Projection, SYSTEM_STREAM, SessionFilter, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, ToolInfo};
use crate::config::{AgentConfig, Config, HumanConfig};
use crate::input_schema::{InputSchemas, ListedTools};
use crate::telemetry as tm;
use airlock_core::guard::InputCheck;

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
    /// Too many requests of this kind; retry after `retry_after_ms`.
    #[error("{msg}")]
    RateLimited {
        /// What was limited and how.
        msg: String,
        /// When a retry can succeed.
        retry_after_ms: u64,
    },
    /// Free disk space under `data_dir` is below `[server] min_free_disk_mb`: nothing new is
    /// started, so that what is running can still be recorded.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl From<airlock_core::vote::Refusal> for Error {
    fn from(r: airlock_core::vote::Refusal) -> Error {
        Error::Forbidden { rule: r.rule, msg: r.msg }
    }
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
    /// The virtual server (`/mcp/{server}`) the call came through, if any.
    pub server: Option<String>,
    /// The lease of a plan step handed to this agent, under which the call runs.
    pub plan_lease: Option<LeaseRef>,
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
    /// The session's plans, folded from its journal stream on first use.
    plans: Option<plans::PlanBook>,
}

/// A session's state, locked ([`Engine::lock_session`]).
struct SessionGuard {
    cell: tokio::sync::OwnedMutexGuard<Option<SessionCell>>,
    /// The lock shared with the other replicas, if any.
    _shared: Option<airlock_store::Held>,
}

impl std::ops::Deref for SessionGuard {
    type Target = Option<SessionCell>;
    fn deref(&self) -> &Option<SessionCell> {
        &self.cell
    }
}

impl std::ops::DerefMut for SessionGuard {
    fn deref_mut(&mut self) -> &mut Option<SessionCell> {
        &mut self.cell
    }
}

struct Inner {
    store: Arc<dyn Store>,
    /// This process's id among the replicas sharing the journal, and the lock it holds as long
    /// as it runs (`None` on a journal of its own).
    replica: Option<(String, Mutex<airlock_store::Held>)>,
    config: Arc<Config>,
    catalog: Catalog,
    policy: RwLock<Arc<Policy>>,
    defaults: ApprovalDefaults,
    kill_switches: RwLock<Arc<Vec<KillSwitch>>>,
    /// Bumped whenever the kill switches above are replaced, so that a list read from the
    /// journal before a change made here is not published after it.
    kill_generation: std::sync::atomic::AtomicU64,
    /// When the kill switches were last known to be those of the journal (see `replicas.rs`).
    kills_checked: Mutex<std::time::Instant>,
    /// Whether [`Engine::follow_replicas`] runs (and keeps `kills_checked` fresh).
    following: std::sync::atomic::AtomicBool,
    /// Sessions with a plan in force that can get stuck, for the stuck-plan sweep, each with
    /// the earliest time it can be stuck; filled as plans are folded, and from the open
    /// sessions when this process starts leading or resyncs with the other replicas.
    planned: Mutex<HashMap<String, DateTime<Utc>>>,
    /// When the stuck-plan sweep last looked at every open session.
    planned_seeded: Mutex<Option<std::time::Instant>>,
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<SessionCell>>>>>,
    /// Each plan's hand-off lock in this process (`plans/handoffs.rs`).
    plan_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    watchers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Last TOTP time step used per human, so that each code is used once.
    totp_steps: Mutex<HashMap<String, u64>>,
    /// Failed TOTP codes and locks per human.
    mfa_guards: Mutex<HashMap<String, MfaGuard>>,
    /// Wakes anyone watching for new or resolved approvals (the web UI).
    approvals_changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the webhook delivery task.
    outbox_wake: Arc<Notify>,
    /// Counts committed events for the checkpointer.
    checkpoints: crate::audit::CheckpointTrigger,
    /// Rate-limit buckets per agent.
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Session-creation buckets per agent.
    session_buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Rate-limited calls per agent left out of the journal since its last sampled one, and
    /// when that one was recorded.
    rate_samples: Mutex<HashMap<String, (DateTime<Utc>, u64)>>,
    /// Spend per agent for one UTC day.
    spend: Mutex<HashMap<String, (chrono::NaiveDate, f64)>>,
    /// Circuit breakers per tool.
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Upstream calls in flight. Also the lock under which kill switches are published and
    /// checked at the moment of sending (see `send.rs`).
    inflight: Mutex<HashMap<String, send::InFlight>>,
    /// OpenTelemetry spans.
    tracing: crate::otel::Tracing,
    /// What metric labels may say.
    labels: tm::Labels,
    /// The candidate policy in shadow mode.
    shadow: crate::lifecycle::SharedShadow,
    /// The key of canary bucketing.
    canary_key: RwLock<Arc<crate::lifecycle::CanaryKey>>,
    /// Where the engine's time comes from.
    clock: Arc<dyn Clock>,
    /// The tools the upstreams list, for their input schemas.
    listed_tools: std::sync::OnceLock<Arc<dyn ListedTools>>,
    /// The compiled input schemas of those tools.
    input_schemas: InputSchemas,
    /// Agents last seen with an access token, by id, for what is looked up by id later (guard
    /// limits, budgets on approval): templates make agents no `[[agents]]` entry lists.
    token_agents: Mutex<HashMap<String, Arc<AgentConfig>>>,
}

/// How many agents seen with access tokens are remembered at most.
const TOKEN_AGENTS_CAP: usize = 10_000;

pub(crate) use airlock_core::sync::lock;

/// Reads a shared value behind an `RwLock` (see [`airlock_core::sync`] for poisoning).
fn read<T: Clone>(lock: &RwLock<T>) -> T {
    airlock_core::sync::read(lock).clone()
}

/// Replaces a shared value behind an `RwLock` (see [`airlock_core::sync`] for poisoning).
fn replace<T>(lock: &RwLock<T>, value: T) {
    *airlock_core::sync::write(lock) = value;
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
    /// Builds the engine on the system clock and restores its state from the journal.
    pub async fn start(config: Arc<Config>, policy: Policy, store: Arc<dyn Store>) -> Result<Engine> {
        Engine::start_with_clock(config, policy, store, Arc::new(SystemClock)).await
    }

    /// Builds the engine on `clock` and restores kill switches, breakers and used TOTP steps
    /// from the journal; upstream calls that were in flight when airlock stopped become
    /// `unknown`.
    pub async fn start_with_clock(
        config: Arc<Config>,
        policy: Policy,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        let tracing_setup = crate::otel::Tracing::from_config(&config.telemetry).unwrap_or_else(|e| {
            tracing::error!(error = %e, "tracing is off: the OTLP exporter did not start");
            crate::otel::Tracing::disabled()
        });
        let kill_switches = store.kill_switches(true).await?;
        let breakers: HashMap<String, Breaker> =
            store.breakers().await?.into_iter().map(|b| (b.tool.clone(), b)).collect();
        metrics::gauge!(tm::APPROVALS_PENDING)
            .set(store.approvals(Some(ApprovalStatus::Pending), 100_000).await?.len() as f64);
        let labels = tm::Labels::new(&config);
        export_breakers(&labels, &breakers);
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
        let mfa_guards: HashMap<String, MfaGuard> =
            store.mfa_guards().await?.into_iter().map(|g| (g.human.clone(), g)).collect();
        // With other replicas on the journal, this one holds a lock of its own while it runs: a
        // call `executing` on a replica whose lock can be taken was left by a replica that is gone.
        let replica = if store.shared() {
            let id = format!("rep_{}", uuid::Uuid::now_v7().simple());
            let held = store.lock(airlock_store::LockScope::Replica(&id)).await?;
            held.map(|held| (id, Mutex::new(held)))
        } else {
            None
        };
        recovery::mark_lost_calls(&store, clock.as_ref()).await?;
        let inner = Inner {
            replica,
            catalog: Catalog::new(&config),
            defaults: ApprovalDefaults { ttl_seconds: config.approvals.default_ttl_seconds },
            store,
            config,
            policy: RwLock::new(Arc::new(policy)),
            kill_switches: RwLock::new(Arc::new(kill_switches)),
            kill_generation: Default::default(),
            kills_checked: Mutex::new(std::time::Instant::now()),
            following: Default::default(),
            planned: Default::default(),
            planned_seeded: Default::default(),
            sessions: Mutex::new(HashMap::new()),
            plan_locks: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            totp_steps: Mutex::new(totp_steps),
            mfa_guards: Mutex::new(mfa_guards),
            approvals_changed,
            outbox_wake: Arc::new(Notify::new()),
            checkpoints: Default::default(),
            buckets: Mutex::new(HashMap::new()),
            session_buckets: Mutex::new(HashMap::new()),
            token_agents: Mutex::new(HashMap::new()),
            rate_samples: Mutex::new(HashMap::new()),
            spend: Mutex::new(HashMap::new()),
            breakers: Mutex::new(breakers),
            inflight: Mutex::new(HashMap::new()),
            tracing: tracing_setup,
            labels,
            shadow: Default::default(),
            canary_key: RwLock::new(Arc::new(crate::lifecycle::CanaryKey::ephemeral())),
            clock,
            listed_tools: std::sync::OnceLock::new(),
            input_schemas: InputSchemas::default(),
        };
        Ok(Engine { inner: Arc::new(inner) })
    }

    /// The engine's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    pub(crate) fn shadow(&self) -> &crate::lifecycle::SharedShadow {
        &self.inner.shadow
    }

    /// Uses `key` for canary bucketing from now on. The engine starts with a key of its own
    /// process; `serve` gives it the installation's, so buckets stay the same across restarts.
    pub fn set_canary_key(&self, key: crate::lifecycle::CanaryKey) {
        replace(&self.inner.canary_key, Arc::new(key));
    }

    /// The key of canary bucketing.
    pub(crate) fn canary_key(&self) -> Arc<crate::lifecycle::CanaryKey> {
        read(&self.inner.canary_key)
    }

    /// Replaces the active policy.
    pub(crate) fn swap_policy(&self, policy: Policy) {
        replace(&self.inner.policy, Arc::new(policy));
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
        read(&self.inner.policy)
    }

    /// The tool catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Lets the tools the upstreams list keep their names in metric labels (see
    /// [`tm::Labels`]), and exports the breakers again under those names.
    /// Their tool lists are also where calls' input schemas come from.
    pub fn attach_upstreams(&self, upstreams: airlock_mcp::Upstreams) {
        self.inner.labels.attach_upstreams(upstreams.clone());
        export_breakers(&self.inner.labels, &lock(&self.inner.breakers));
        self.attach_listed_tools(Arc::new(upstreams));
    }

    /// Takes the input schemas of upstream tools from `tools` (the upstreams, or a fixed list in
    /// tests), and compiles them. Only the first source attached counts.
    pub fn attach_listed_tools(&self, tools: Arc<dyn ListedTools>) {
        let _ = self.inner.listed_tools.set(tools);
        self.refresh_input_schemas();
    }

    /// Compiles the input schemas of the tools listed now that are new or changed (`serve` calls
    /// it whenever an upstream's tool list changes).
    pub fn refresh_input_schemas(&self) {
        if let Some(tools) = self.inner.listed_tools.get() {
            let checked: Vec<_> = tools.tools().into_iter().filter(|(upstream, _)| self.validates(upstream)).collect();
            self.inner.input_schemas.refresh(&checked);
        }
    }

    /// Whether calls to `upstream`'s tools are checked against their input schemas.
    fn validates(&self, upstream: &str) -> bool {
        self.inner.config.upstreams.iter().any(|u| u.name == upstream && u.validate_input)
    }

    /// The compiled input schemas.
    pub fn input_schemas(&self) -> &InputSchemas {
        &self.inner.input_schemas
    }

    /// What checking `arguments` against the input schema of `tool` finds: nothing to check for
    /// an agent-executed tool, an upstream with `validate_input = false`, or a tool its upstream
    /// does not list now.
    pub fn check_input(&self, tool: &ToolInfo, arguments: &Value) -> InputCheck {
        let Some(upstream) = tool.upstream.as_deref() else { return InputCheck::Unchecked };
        if !self.validates(upstream) {
            return InputCheck::Unchecked;
        }
        let Some(listed) = self.inner.listed_tools.get().and_then(|t| t.tool(upstream, &tool.name)) else {
            return InputCheck::Unchecked;
        };
        self.inner.input_schemas.check(upstream, &listed, arguments)
    }

    /// Notified when notifications were added to the outbox.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        self.inner.outbox_wake.clone()
    }

    /// Counts committed events and wakes the checkpointer when a checkpoint is due.
    pub fn checkpoint_trigger(&self) -> &crate::audit::CheckpointTrigger {
        &self.inner.checkpoints
    }

    /// Commits, wakes the delivery task when the commit queued notifications, and counts its
    /// events for the checkpointer. Every commit of the running engine goes through here, so the
    /// count misses no event (only the recovery in [`Engine::start_with_clock`] commits before
    /// there is an engine to count; the interval covers those).
    pub(crate) async fn commit(&self, commit: Commit) -> Result<()> {
        let queued = !commit.outbox.is_empty();
        let events = commit.events.len();
        self.inner.store.commit(commit).await?;
        if queued {
            self.inner.outbox_wake.notify_one();
        }
        self.inner.checkpoints.committed(events);
        Ok(())
    }

    /// Subscribe to "approvals changed" ticks.
    pub fn approvals_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.approvals_changed.subscribe()
    }

    fn kill_switch_list(&self) -> Arc<Vec<KillSwitch>> {
        read(&self.inner.kill_switches)
    }

    fn set_kill_switches(&self, list: Vec<KillSwitch>) {
        self.inner.kill_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        replace(&self.inner.kill_switches, Arc::new(list));
    }

    fn bump_approvals(&self) {
        self.inner.approvals_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn notify(&self, action_id: &str) {
        let notify = lock(&self.inner.watchers).remove(action_id);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// The action as stored, or `NotFound`.
    pub(super) async fn stored_action(&self, action_id: &str) -> Result<Action> {
        self.inner
            .store
            .action(action_id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "action", id: action_id.to_string() })
    }

    fn watcher(&self, action_id: &str) -> Arc<Notify> {
        lock(&self.inner.watchers).entry(action_id.to_string()).or_insert_with(|| Arc::new(Notify::new())).clone()
    }

    fn cell(&self, session_id: &str) -> Arc<tokio::sync::Mutex<Option<SessionCell>>> {
        let mut sessions = lock(&self.inner.sessions);
        if sessions.len() > 10_000 {
            // Drop cached sessions nobody is using; they reload from the journal on demand.
            sessions.retain(|_, c| Arc::strong_count(c) > 1);
        }
        sessions.entry(session_id.to_string()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))).clone()
    }

    /// Takes the session's lock: this process's, then, when other replicas write the journal
    /// too, the one they share in the database, under which the session is read again (another
    /// replica may have changed it since this one last did). What is decided under it cannot
    /// change under the decision until the guard is dropped.
    async fn lock_session(&self, session_id: &str) -> Result<SessionGuard> {
        let mut cell = self.cell(session_id).lock_owned().await;
        let shared = self.inner.store.lock(airlock_store::LockScope::Session(session_id)).await?;
        if shared.is_some() {
            *cell = None;
        }
        self.load_cell(&mut cell, session_id).await?;
        Ok(SessionGuard { cell, _shared: shared })
    }

    /// Takes the lock under which `agent_id`'s daily budget is checked and spent, when other
    /// replicas may spend it too (this process's calls are serialised by it as well).
    pub(super) async fn lock_budget(&self, agent_id: &str) -> Result<Option<airlock_store::Held>> {
        let has_budget = self.limits_of(agent_id).budget_usd_per_day > 0.0;
        if !has_budget || !self.inner.store.shared() {
            return Ok(None);
        }
        Ok(self.inner.store.lock(airlock_store::LockScope::AgentBudget(agent_id)).await?)
    }

    /// Takes this replica's lock again if the connection holding it was lost (the database went
    /// away and came back): until then the other replicas take this one for gone.
    async fn keep_replica_lock(&self) {
        let Some((id, held)) = &self.inner.replica else { return };
        match self.inner.store.try_lock(airlock_store::LockScope::Replica(id)).await {
            Ok(Some(again)) => {
                tracing::warn!(replica = %id, "this replica's lock was lost with its connection; taken again");
                *lock(held) = again;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check this replica's lock; will retry"),
        }
    }

    /// This process's id among replicas sharing the journal.
    pub(super) fn replica_id(&self) -> Option<String> {
        self.inner.replica.as_ref().map(|(id, _)| id.clone())
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
        // Calls before a human resumed the session do not count again (loop detection starts
        // afresh on resume, as it does in a cell kept in memory).
        let window_start = self.now() - pipeline::loop_window(&self.limits_of(&session.agent_id));
        let since = session.resumed_at.map_or(window_start, |resumed| resumed.max(window_start));
        let recent = self
            .inner
            .store
            .session_actions(session_id)
            .await?
            .into_iter()
            .filter(|a| a.created_at >= since)
            .map(|a| (a.digest, a.created_at))
            .collect();
        *slot = Some(SessionCell { session, waiting, recent, plans: None });
        Ok(())
    }

    fn limits_of(&self, agent_id: &str) -> GuardLimits {
        self.agent(agent_id).map(|a| a.limits.clone()).unwrap_or_else(|| self.inner.config.guards.clone())
    }

    /// The agent `agent_id`: its `[[agents]]` entry, or as an access token last made it.
    pub fn agent(&self, agent_id: &str) -> Option<Arc<AgentConfig>> {
        if let Some(listed) = self.inner.config.agents.iter().find(|a| a.agent.id == agent_id) {
            return Some(Arc::new(listed.clone()));
        }
        lock(&self.inner.token_agents).get(agent_id).cloned()
    }

    /// Remembers an agent as an access token made it, for later lookups by id.
    pub fn remember_agent(&self, agent: Arc<AgentConfig>) {
        if agent.identity.is_none() {
            return;
        }
        let mut known = lock(&self.inner.token_agents);
        if known.len() >= TOKEN_AGENTS_CAP && !known.contains_key(&agent.agent.id) {
            // Beyond the cap, forget one: a forgotten agent's next request remembers it again.
            if let Some(any) = known.keys().next().cloned() {
                known.remove(&any);
            }
        }
        known.insert(agent.agent.id.clone(), agent);
    }

    /// Whether this process does the periodic work (expiry sweeps, webhook deliveries,
    /// checkpoints): always, unless other replicas share the journal and one of them does.
    pub fn is_leader(&self) -> bool {
        self.inner.store.leader().is_none_or(|leader| *leader.borrow())
    }

    /// Runs background duties (approval expiry) until `shutdown` resolves; with replicas, only
    /// while this one leads.
    pub async fn run_background(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading = false;
        let mut sweeps: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    sweeps += 1;
                    if sweeps % 20 == 10 {
                        self.keep_replica_lock().await;
                    }
                    if !self.is_leader() {
                        leading = false;
                        continue;
                    }
                    if !leading {
                        // Plans approved while another replica led: look at every open session.
                        self.reseed_plans();
                        leading = true;
                    }
                    if let Err(e) = self.expire_due().await {
                        tracing::warn!(error = %e, "expiring approvals failed; will retry");
                    }
                    if let Err(e) = self.check_plans().await {
                        tracing::warn!(error = %e, "checking plans for progress failed; will retry");
                    }
                    // Calls left in flight by a replica that died: every 10 s, on a shared journal.
                    if self.inner.store.shared() && sweeps.is_multiple_of(20) {
                        match recovery::mark_lost_calls(&self.inner.store, self.inner.clock.as_ref()).await {
                            Ok(0) => {}
                            Ok(n) => tracing::warn!(calls = n, "calls in flight on a replica that is gone are now unknown"),
                            Err(e) => tracing::warn!(error = %e, "looking for calls of replicas that are gone failed; will retry"),
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

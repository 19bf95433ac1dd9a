//! The journal: append-only events with a hash chain, and the projections built from them.
//!
//! Everything airlock knows lives here: sessions, actions, approvals and kill switches are
//! *projections* written in the same transaction as the events that changed them, so the journal
//! and the state never disagree. The [`Store`] trait is what the server talks to; [`SqliteStore`]
//! is the embedded default (WAL, one writer thread with group commit, readers on their own
//! connections), [`PostgresStore`] keeps the journal in a PostgreSQL database that several
//! replicas share (one writer task per process, commits serialised in the database), and
//! [`MemoryStore`] keeps the same journal in memory for tests. [`JournalReader`] reads either
//! of the durable ones without writing, beside a running server. This crate
//! knows nothing of HTTP or MCP, and it never decides anything: it records what it is given
//! (where a query needs a domain rule, such as which actions are waiting or what counts as
//! spend, it takes it from `airlock-core`).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chain;
mod encoding;
mod memory;
mod postgres;
mod reader;
mod spend;
mod sqlite;

/// Metric names recorded by the journal.
pub mod metrics_names {
    /// Commits per transaction.
    pub const BATCH_SIZE: &str = "airlock_journal_batch_size";
    /// Transaction time including fsync, seconds.
    pub const COMMIT_SECONDS: &str = "airlock_journal_commit_duration_seconds";
}

pub use chain::{GENESIS_HASH, VerifyProblem, VerifyReport, event_hash, merkle_root};
pub use memory::MemoryStore;
pub use postgres::{CopyReport, Migrated, PostgresOptions, PostgresReader, PostgresStore, SCHEMA_VERSION};
pub use reader::JournalReader;
pub use sqlite::{SqliteOptions, SqliteStore, WriterStats};

use airlock_core::limits::Breaker;
use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, EventKind, KillSwitch, Session, SessionStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL failed or could not be reached.
    #[error("database error: {}", postgres::message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The database holds a journal schema newer than this binary knows.
    #[error(
        "the database's journal schema is version {found}, newer than this airlock knows ({known}): \
         run the airlock release that migrated it (or a newer one), or restore a backup"
    )]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest this binary knows.
        known: i32,
    },
    /// A uniqueness rule was violated (for example a reused idempotency key in a race).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored document could not be read back.
    #[error("stored record `{id}` is unreadable: {message}")]
    Corrupt {
        /// Which record.
        id: String,
        /// What was wrong.
        message: String,
    },
    /// The data directory could not be prepared.
    #[error("cannot open the journal at `{path}`: {message}")]
    Open {
        /// Path of the database.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Another process holds the journal's writer lock.
    #[error(
        "the journal at `{path}` is in use by another airlock process{holder}; stop that one first, \
         or give this one its own `[server] data_dir` (`airlock audit verify` can read a journal in use)"
    )]
    InUse {
        /// Path of the database.
        path: String,
        /// ` (pid N)` when the lock file names it.
        holder: String,
    },
    /// The journal could not write (disk full, I/O error, locked database).
    #[error("the journal could not write: {0}")]
    Unavailable(String),
    /// The writer has stopped (shutdown or a fatal error).
    #[error("the journal writer has stopped")]
    Closed,
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The stream: a session id, or [`SYSTEM_STREAM`] for events outside sessions.
    pub stream: String,
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// Details.
    pub payload: Value,
}

/// Stream of events that belong to no session (kill switches, configuration).
pub const SYSTEM_STREAM: &str = "_system";

/// A projection row to write (insert or replace) with the events.
#[derive(Debug, Clone)]
pub enum Projection {
    /// A session.
    Session(Session),
    /// An action.
    Action(Box<Action>),
    /// An approval.
    Approval(Approval),
    /// A kill switch.
    KillSwitch(KillSwitch),
    /// A tool's circuit breaker.
    Breaker(Breaker),
    /// A human's failed TOTP codes and lock.
    MfaGuard(airlock_core::vote::MfaGuard),
    /// A policy revision with its files, marked active at `activated_at`.
    PolicyRevision(PolicyRecord),
    /// An `Idempotency-Key` sent with a call that joined an existing action: a retry with the
    /// key returns that action. (The key of the call that opened an action is on the action.)
    IdempotencyKey {
        /// The agent; keys are per agent.
        agent_id: String,
        /// The key.
        key: String,
        /// The action the call joined.
        action_id: String,
    },
}

/// A policy revision kept in the journal, so it can be restored without its files.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PolicyRecord {
    /// `sha256:…` content hash.
    pub revision: String,
    /// `(relative path, text)` of every file.
    pub sources: Vec<(String, String)>,
    /// When it last became active.
    pub activated_at: DateTime<Utc>,
    /// Who or what activated it (`start`, `reload by root`, …).
    pub activated_by: String,
}

/// One atomic unit: its events are appended and its projections written in one transaction, or
/// none of it happens.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Events to append, in order.
    pub events: Vec<NewEvent>,
    /// Projections to write.
    pub projections: Vec<Projection>,
    /// Notifications to deliver later (the durable outbox).
    pub outbox: Vec<NewNotification>,
    /// Delivery bookkeeping for earlier notifications (not journaled).
    pub deliveries: Vec<DeliveryUpdate>,
    /// A signed checkpoint note to store: `(size, note, time)`.
    pub checkpoint: Option<(u64, String, DateTime<Utc>)>,
}

/// A notification to deliver to one endpoint, written with the events that caused it.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Index of the `[[notify]]` endpoint.
    pub endpoint: String,
    /// Event name (`approval.requested`, …).
    pub event: String,
    /// JSON body to send.
    pub body: Value,
    /// When it was created.
    pub at: DateTime<Utc>,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// Outbox id (also the delivery id sent to the receiver).
    pub id: i64,
    /// Endpoint name.
    pub endpoint: String,
    /// Event name.
    pub event: String,
    /// Body text exactly as it will be sent (and signed).
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    /// Delivered; never sent again.
    Delivered {
        /// Outbox id.
        id: i64,
        /// When.
        at: DateTime<Utc>,
    },
    /// Failed; try again at `next_at`, or give up when `next_at` is `None`.
    Failed {
        /// Outbox id.
        id: i64,
        /// Why.
        error: String,
        /// Next attempt.
        next_at: Option<DateTime<Utc>>,
    },
    /// Every notification not yet delivered and not given up is due at `at`, whatever its
    /// backoff said (airlock started again). Attempts and last errors stay as they are.
    RetryAll {
        /// When they are due.
        at: DateTime<Utc>,
    },
}

impl Commit {
    /// Adds an event.
    pub fn event(&mut self, stream: &str, kind: EventKind, at: DateTime<Utc>, payload: Value) -> &mut Self {
        self.events.push(NewEvent { stream: stream.to_string(), kind, at, payload });
        self
    }

    /// Adds a projection.
    pub fn project(&mut self, projection: Projection) -> &mut Self {
        self.projections.push(projection);
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// Global position in the journal.
    pub pos: i64,
    /// Stream (session id or `_system`).
    pub stream: String,
    /// 1-based position in the stream.
    pub seq: u64,
    /// Kind name.
    pub kind: String,
    /// When it happened.
    pub at: String,
    /// Details.
    pub payload: Value,
    /// Hash of the previous event of the stream.
    pub prev_hash: String,
    /// Hash of this event.
    pub hash: String,
}

/// A stored checkpoint note.
#[derive(Debug, Clone, Serialize)]
pub struct StoredCheckpoint {
    /// Events it covers.
    pub size: u64,
    /// The signed note text.
    pub note: String,
    /// When it was made.
    pub created_at: String,
}

/// What another replica changed in a shared journal ([`Store::changes`]): a hint to read the
/// state again, never the state itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An action (its status, its result) changed.
    Action(String),
    /// An approval was requested, voted on or resolved.
    Approvals,
    /// A kill switch was engaged or released.
    KillSwitches,
    /// Another policy revision was activated.
    Policy,
    /// A policy candidate was loaded or its canary share changed.
    Candidate,
    /// Notifications were added to the outbox.
    Outbox,
    /// Changes may have been missed (the listening connection was lost and is back): read
    /// everything again.
    Resync,
}

impl Change {
    /// What `commit` changes, for other replicas to hear of.
    pub fn of(commit: &Commit) -> Vec<Change> {
        let mut changes = Vec::new();
        for p in &commit.projections {
            let change = match p {
                Projection::Action(a) => Change::Action(a.id.clone()),
                Projection::Approval(_) => Change::Approvals,
                Projection::KillSwitch(_) => Change::KillSwitches,
                Projection::PolicyRevision(_) => Change::Policy,
                _ => continue,
            };
            if !changes.contains(&change) {
                changes.push(change);
            }
        }
        if commit.events.iter().any(|e| e.kind == EventKind::PolicyCandidate) && !changes.contains(&Change::Candidate) {
            changes.push(Change::Candidate);
        }
        if !commit.outbox.is_empty() && !changes.contains(&Change::Outbox) {
            changes.push(Change::Outbox);
        }
        changes
    }
}

/// What a lock in the database is taken for ([`Store::lock`]).
#[derive(Debug, Clone, Copy)]
pub enum LockScope<'a> {
    /// One session: what its actions, votes and results change is decided under it.
    Session(&'a str),
    /// One agent's daily budget: checked and spent under it.
    AgentBudget(&'a str),
    /// One human's TOTP codes: each is used once, and failures are counted, under it.
    Human(&'a str),
    /// One replica: it holds its own lock for as long as it runs, so that a lock another can
    /// take means that replica is gone.
    Replica(&'a str),
    /// One plan's hand-offs: claims of its steps, and the calls made under their leases, are
    /// decided under it (always taken last, after any session's lock).
    Plan(&'a str),
}

/// A lock held in the database until it is dropped.
pub type Held = Box<dyn std::any::Any + Send + Sync>;

/// Filter for listing sessions.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only sessions of this agent.
    pub agent_id: Option<String>,
    /// Only sessions in this state.
    pub status: Option<SessionStatus>,
    /// At most this many, newest first; `0` means 100.
    pub limit: usize,
}

/// The most rows a listing returns when its caller gives `0` as the limit.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The limit of a listing ([`Store::sessions`], [`Store::approvals`]): `limit`, or 100 for `0`.
pub(crate) fn list_limit(limit: usize) -> usize {
    if limit == 0 { DEFAULT_LIST_LIMIT } else { limit }
}

/// The journal and its projections. Implementations must make a [`Commit`] durable before
/// `commit` returns ([`MemoryStore`], which keeps nothing past the process, makes it visible to
/// every later read).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends the events and writes the projections atomically and durably.
    async fn commit(&self, commit: Commit) -> Result<()>;
    /// A session by id.
    async fn session(&self, id: &str) -> Result<Option<Session>>;
    /// Sessions, newest first.
    async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>>;
    /// An action by id.
    async fn action(&self, id: &str) -> Result<Option<Action>>;
    /// A session's actions in order.
    async fn session_actions(&self, session_id: &str) -> Result<Vec<Action>>;
    /// A session's actions that are still waiting (pending approval, or approved and not run).
    async fn waiting_actions(&self, session_id: &str) -> Result<Vec<Action>>;
    /// Actions in one state, oldest first (for recovery after a restart).
    async fn actions_in_status(&self, status: ActionStatus) -> Result<Vec<Action>>;
    /// The action an agent submitted with an `Idempotency-Key`.
    async fn action_by_idempotency_key(&self, agent_id: &str, key: &str) -> Result<Option<Action>>;
    /// An approval by id.
    async fn approval(&self, id: &str) -> Result<Option<Approval>>;
    /// Approvals, newest first, optionally in one state; at most `limit` (`0` means 100).
    async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>>;
    /// Pending approvals whose expiry is at or before `now`, soonest expiry first.
    async fn approvals_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>>;
    /// Kill switches, newest first.
    async fn kill_switches(&self, active_only: bool) -> Result<Vec<KillSwitch>>;
    /// A stream's events in order.
    async fn events(&self, stream: &str) -> Result<Vec<StoredEvent>>;
    /// Walks every hash chain.
    async fn verify(&self) -> Result<VerifyReport>;
    /// Policy revisions, most recently activated first; at most `limit` (and at least one).
    async fn policy_history(&self, limit: usize) -> Result<Vec<PolicyRecord>>;
    /// Every circuit breaker's last state.
    async fn breakers(&self) -> Result<Vec<Breaker>>;
    /// Every human's failed TOTP codes and lock, by human.
    async fn mfa_guards(&self) -> Result<Vec<airlock_core::vote::MfaGuard>>;
    /// How many actions `agent_id` requested since `since`.
    async fn agent_actions_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<u32>;
    /// What `agent_id`'s allowed or approved actions since `since` cost: each action's decided
    /// cost, or the cost reported with its result when the decision had none (counted as
    /// [`airlock_core::limits::reported_cost_counted`] says: only a finite, positive one).
    async fn agent_spend_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<f64>;
    /// What `agent_id`'s calls held for approval since `since` (in `session_id` only, when
    /// given) would cost: each one's decided price, reserved against budgets until the approval
    /// resolves.
    async fn reserved_since(&self, agent_id: &str, session_id: Option<&str>, since: DateTime<Utc>) -> Result<f64>;
    /// The number of events and the RFC 6962 Merkle root over their hashes, in journal order.
    async fn tree_head(&self) -> Result<(u64, [u8; 32])>;
    /// Stores a signed checkpoint note.
    async fn save_checkpoint(&self, size: u64, note: String, at: DateTime<Utc>) -> Result<()>;
    /// Undelivered notifications due at or before `now`, oldest first; at most `limit` (and at
    /// least one).
    async fn notifications_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>>;
    /// Which backend this is: `sqlite`, `postgres` or `memory` (for `/healthz`).
    fn backend(&self) -> &'static str;
    /// Whether the journal answers a query now (for `/healthz`).
    async fn ping(&self) -> Result<()>;
    /// Whether other processes may write this journal at the same time (replicas on one
    /// PostgreSQL database): state cached in the process must then be read again under
    /// [`Store::lock`], and [`Store::changes`] says what the others changed.
    fn shared(&self) -> bool {
        false
    }
    /// Takes a lock shared by every process writing the journal, held until the returned value
    /// is dropped; `None` when no other process can write it (the caller's own locks suffice).
    async fn lock(&self, _scope: LockScope<'_>) -> Result<Option<Held>> {
        Ok(None)
    }
    /// Takes the lock of `scope` if nobody holds it; `None` when somebody does or no other
    /// process can write the journal.
    async fn try_lock(&self, _scope: LockScope<'_>) -> Result<Option<Held>> {
        Ok(None)
    }
    /// What other processes changed, as they commit; `None` when no other process can write.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
    /// Whether this process is the one that does the periodic work (expiry sweeps, webhook
    /// deliveries, checkpoints), now and as it changes; `None` when it is the only process.
    fn leader(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
    /// Whether [`Store::changes`] can have missed nothing since its last [`Change::Resync`]
    /// (its connection is up); always true when there are no other processes.
    fn following(&self) -> bool {
        true
    }
}

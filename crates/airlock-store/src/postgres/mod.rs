//! The PostgreSQL backend, for when one machine is not enough.
//!
//! Nothing lives in the process: every replica reads and writes the same database, and a
//! replica that restarts (or a new one) starts from what is there. Commits go through one writer
//! task per process, which takes every commit waiting (up to a batch limit) and applies them in
//! one transaction, each inside its own savepoint, as the SQLite writer does. What makes the
//! journal one total order across replicas is the row of `journal_head`: each transaction locks
//! it (`SELECT … FOR UPDATE`) before it assigns positions, reads the chain heads of the streams
//! it extends from the table itself, and moves the row on before it commits. Commits from all
//! replicas therefore follow one another, positions have no gaps and become visible in order,
//! and every chain continues from its real head, whoever wrote it.
//!
//! - [`options`]: the connection settings taken from configuration.
//! - [`schema`]: the versioned migrations, applied at start.
//! - [`writer`]: the writer task, group commit and how one commit becomes statements.
//! - [`read`]: the queries behind the [`Store`](crate::Store) trait.
//! - [`copy`]: `airlock migrate --from-sqlite`, an embedded journal copied with every hash.
//! - [`locks`]: per-session and per-budget locks shared by the replicas.
//! - [`listen`]: what the other replicas changed (`LISTEN/NOTIFY`).
//! - [`leader`]: which replica does the periodic work.

mod copy;
mod leader;
mod listen;
mod locks;
mod options;
mod read;
mod schema;
mod writer;

use std::sync::{Arc, Mutex};

use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;

use crate::chain::{MerkleFrontier, VerifyReport};
use crate::encoding::Prepared;
use crate::{Commit, Error, Notification, PolicyRecord, Result, SessionFilter, StoredCheckpoint, StoredEvent};

pub use copy::CopyReport;
pub use options::PostgresOptions;
pub use schema::{Migrated, SCHEMA_VERSION};

/// The journal in a PostgreSQL database.
pub struct PostgresStore {
    reader: PostgresReader,
    sender: mpsc::UnboundedSender<writer::Job>,
    stats: Arc<Mutex<crate::WriterStats>>,
    /// The Merkle tree over the events up to a position (see [`crate::SqliteStore`]'s).
    tree: Arc<tokio::sync::Mutex<(i64, MerkleFrontier)>>,
    /// Connections that hold the replicas' shared locks ([`crate::Store::lock`]), apart from
    /// the readers' so that callers waiting for a lock never starve the one holding it.
    locks: Pool,
    /// What the other replicas change.
    listener: listen::Listener,
    /// Whether this replica does the periodic work.
    leadership: leader::Leadership,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("database", &self.reader.describe).finish_non_exhaustive()
    }
}

/// A connection pool on a journal database whose schema this binary knows, for reading only:
/// what `airlock audit` and `airlock replay` use beside running servers. No writer, no
/// migrations.
#[derive(Clone)]
pub struct PostgresReader {
    pool: Pool,
    describe: String,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader").field("database", &self.describe).finish_non_exhaustive()
    }
}

/// The pool for `options`. Connections are made when first needed; one that the server closed
/// (a restart, a failover, `pg_terminate_backend`) is noticed when it is handed out again and
/// replaced, so the store recovers by itself once the database answers.
fn pool(options: &PostgresOptions) -> Result<Pool> {
    let mut config = options.config().clone();
    config.connect_timeout(options.connect_timeout);
    config.application_name("airlock");
    let manager =
        Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(options.max_connections.max(2))
        .runtime(Runtime::Tokio1)
        // A request waits at most this long for a connection, then fails (503) rather than hang.
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| Error::Open { path: options.describe(), message: e.to_string() })
}

/// What a PostgreSQL error says, the server's message included: `tokio-postgres` shows only
/// its kind ("db error") and keeps the rest as the error's source.
pub(crate) fn message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What failing to get a pooled connection means.
pub(crate) fn pool_message(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => message(e),
        deadpool_postgres::PoolError::Timeout(_) => "no connection within the connect timeout".into(),
        other => other.to_string(),
    }
}

/// The error for a database that cannot be reached when opening it.
fn open_error(options: &PostgresOptions, e: &deadpool_postgres::PoolError) -> Error {
    Error::Open { path: options.describe(), message: pool_message(e) }
}

impl PostgresStore {
    /// Connects to the database `options` names, brings its schema up to date (refusing one
    /// newer than this binary knows) and starts the writer task.
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore> {
        let pool = pool(&options)?;
        {
            let mut client = pool.get().await.map_err(|e| open_error(&options, &e))?;
            schema::migrate(&mut client).await?;
        }
        let stats = Arc::new(Mutex::new(crate::WriterStats::default()));
        let sender = writer::Writer::start(pool.clone(), options.max_batch, stats.clone());
        Ok(PostgresStore {
            reader: PostgresReader { pool, describe: options.describe() },
            sender,
            stats,
            tree: Arc::new(tokio::sync::Mutex::new((0, MerkleFrontier::default()))),
            locks: self::pool(&options)?,
            listener: listen::Listener::start(&options).await,
            leadership: leader::Leadership::start(&options),
        })
    }

    /// Applies the migrations this binary has and the database lacks, and says which versions
    /// it went from and to (`airlock migrate`).
    pub async fn migrate(options: &PostgresOptions) -> Result<Migrated> {
        let pool = pool(options)?;
        let mut client = pool.get().await.map_err(|e| open_error(options, &e))?;
        schema::migrate(&mut client).await
    }

    /// Copies the SQLite journal at `sqlite` into the (migrated, empty) database of `options`:
    /// every event with its position and hashes, every projection, the outbox and the
    /// checkpoints, in one transaction. Refuses a database that already holds events.
    pub async fn copy_from_sqlite(sqlite: &std::path::Path, options: &PostgresOptions) -> Result<CopyReport> {
        let pool = pool(options)?;
        let mut client = pool.get().await.map_err(|e| open_error(options, &e))?;
        schema::migrate(&mut client).await?;
        copy::from_sqlite(sqlite, &mut client).await
    }

    /// Where the journal is, without the password.
    pub fn describe(&self) -> &str {
        &self.reader.describe
    }

    /// Writer counters.
    pub fn stats(&self) -> crate::WriterStats {
        *airlock_core::sync::lock(&self.stats)
    }

    /// Every checkpoint note saved, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        self.reader.checkpoints().await
    }
}

impl PostgresReader {
    /// Connects to the database `options` names for reading. Its schema must be the one this
    /// binary writes: an older one is to be migrated first, a newer one needs a newer binary.
    pub async fn open(options: &PostgresOptions) -> Result<PostgresReader> {
        let pool = pool(options)?;
        {
            let client = pool.get().await.map_err(|e| open_error(options, &e))?;
            schema::check_current(&client, &options.describe()).await?;
        }
        Ok(PostgresReader { pool, describe: options.describe() })
    }

    /// Where the journal is, without the password.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// A connection from the pool; failing to get one means the database is not answering.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Error::Unavailable(format!("no connection to the database: {}", pool_message(&e))))
    }

    /// Walks every hash chain.
    pub async fn verify(&self) -> Result<VerifyReport> {
        read::verify(&*self.client().await?).await
    }

    /// Every checkpoint note, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        read::checkpoints(&*self.client().await?).await
    }

    /// Every event hash, in journal order.
    pub async fn event_hashes(&self) -> Result<Vec<String>> {
        Ok(read::event_hashes_after(&*self.client().await?, 0).await?.into_iter().map(|(_, hash)| hash).collect())
    }

    /// Events from `since` on, in journal order.
    pub async fn events_since(&self, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
        read::events_since(&*self.client().await?, since).await
    }
}

#[async_trait::async_trait]
impl crate::Store for PostgresStore {
    async fn commit(&self, commit: Commit) -> Result<()> {
        let prepared = Prepared::of(&commit)?;
        self.submit(commit, prepared).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        read::session(&*self.reader.client().await?, id).await
    }

    async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        read::sessions(&*self.reader.client().await?, &filter).await
    }

    async fn action(&self, id: &str) -> Result<Option<Action>> {
        read::action(&*self.reader.client().await?, id).await
    }

    async fn session_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        read::session_actions(&*self.reader.client().await?, session_id).await
    }

    async fn waiting_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        read::waiting_actions(&*self.reader.client().await?, session_id).await
    }

    async fn actions_in_status(&self, status: ActionStatus) -> Result<Vec<Action>> {
        read::actions_in_status(&*self.reader.client().await?, status).await
    }

    async fn action_by_idempotency_key(&self, agent_id: &str, key: &str) -> Result<Option<Action>> {
        read::action_by_idempotency_key(&*self.reader.client().await?, agent_id, key).await
    }

    async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        read::approval(&*self.reader.client().await?, id).await
    }

    async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        read::approvals(&*self.reader.client().await?, status, limit).await
    }

    async fn approvals_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>> {
        read::approvals_due(&*self.reader.client().await?, &now).await
    }

    async fn kill_switches(&self, active_only: bool) -> Result<Vec<KillSwitch>> {
        read::kill_switches(&*self.reader.client().await?, active_only).await
    }

    async fn events(&self, stream: &str) -> Result<Vec<StoredEvent>> {
        read::events(&*self.reader.client().await?, stream).await
    }

    async fn verify(&self) -> Result<VerifyReport> {
        self.reader.verify().await
    }

    async fn policy_history(&self, limit: usize) -> Result<Vec<PolicyRecord>> {
        read::policy_history(&*self.reader.client().await?, limit).await
    }

    async fn breakers(&self) -> Result<Vec<airlock_core::limits::Breaker>> {
        read::breakers(&*self.reader.client().await?).await
    }

    async fn mfa_guards(&self) -> Result<Vec<airlock_core::vote::MfaGuard>> {
        read::mfa_guards(&*self.reader.client().await?).await
    }

    async fn agent_actions_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<u32> {
        read::agent_actions_since(&*self.reader.client().await?, agent_id, &since).await
    }

    async fn agent_spend_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        read::agent_spend_since(&*self.reader.client().await?, agent_id, &since).await
    }

    async fn reserved_since(&self, agent_id: &str, session_id: Option<&str>, since: DateTime<Utc>) -> Result<f64> {
        read::reserved_since(&*self.reader.client().await?, agent_id, session_id, &since).await
    }

    async fn tree_head(&self) -> Result<(u64, [u8; 32])> {
        // Positions are assigned under the `journal_head` lock and become visible in order, so
        // a query sees every event up to some position and none after it: the tree so far plus
        // the events after its last position is the tree over all of them.
        let client = self.reader.client().await?;
        let mut tree = self.tree.lock().await;
        let (last, frontier) = &mut *tree;
        for (pos, hash) in read::event_hashes_after(&client, *last).await? {
            frontier.push(&hash);
            *last = pos;
        }
        Ok((frontier.size(), frontier.root()))
    }

    async fn save_checkpoint(&self, size: u64, note: String, at: DateTime<Utc>) -> Result<()> {
        let commit = Commit { checkpoint: Some((size, note, at)), ..Default::default() };
        self.submit(commit, Prepared::default()).await
    }

    async fn notifications_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        read::notifications_due(&*self.reader.client().await?, &now, limit).await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        self.reader.client().await?.simple_query("SELECT 1").await?;
        if !self.listener.live() {
            return Err(Error::Unavailable(
                "not listening for the other replicas' changes (the connection was lost); reconnecting".into(),
            ));
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn lock(&self, scope: crate::LockScope<'_>) -> Result<Option<crate::Held>> {
        Ok(Some(locks::take(&self.locks, scope).await?))
    }

    async fn try_lock(&self, scope: crate::LockScope<'_>) -> Result<Option<crate::Held>> {
        locks::try_take(&self.locks, scope).await
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Change>> {
        Some(self.listener.subscribe())
    }

    fn leader(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.leadership.watch())
    }

    fn following(&self) -> bool {
        self.listener.live()
    }
}

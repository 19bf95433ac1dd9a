//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection. Commits arrive on a channel; the writer
//! takes every commit waiting (up to a batch limit), applies each inside its own savepoint, and
//! makes the whole batch durable with one `COMMIT` (WAL, `synchronous=FULL`: one fsync for the
//! batch). Each caller then hears whether *its* commit landed. Readers use separate connections
//! from a small pool on the blocking thread pool.
//!
//! - [`schema`]: the tables.
//! - [`writer`]: the writer thread, group commit and the one-writer-per-journal lock.
//! - [`write`]: how one commit becomes rows (events with their chain, projections, outbox).
//! - [`read`]: the queries behind the [`Store`](crate::Store) trait.
//! - [`wal`]: WAL checkpoints in the background.
//! - [`audit`]: read-only access to a journal file, beside a live server.

mod audit;
mod read;
mod schema;
mod wal;
mod write;
mod writer;

pub(crate) use writer::lock_writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use airlock_core::sync::lock;
use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::chain::{MerkleFrontier, VerifyReport};
use crate::encoding::Prepared;
use crate::{Commit, Error, Notification, PolicyRecord, Result, SessionFilter, StoredEvent};

/// How the SQLite backend runs.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most commits made durable by one transaction.
    pub max_batch: usize,
    /// WAL checkpoints on a background thread (the default) rather than SQLite's automatic
    /// ones inside commits. Off only to measure the difference.
    pub background_checkpoints: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { max_batch: 1024, background_checkpoints: true }
    }
}

/// Observed by the writer, read by metrics and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Commits made durable.
    pub commits: u64,
}

/// The embedded journal.
pub struct SqliteStore {
    path: PathBuf,
    sender: mpsc::UnboundedSender<writer::Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    stats: Arc<Mutex<WriterStats>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The Merkle tree over the events up to a position, so that each tree head reads and
    /// hashes only the events added since the last one.
    tree: Arc<Mutex<(i64, MerkleFrontier)>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// The error for a journal file that cannot be opened or prepared.
fn open_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Open { path: path.display().to_string(), message: e.to_string() }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| open_error(path, e))?;
        }
        let lock = writer::lock_writer(path)?;
        let conn = open_connection(path)?;
        conn.execute_batch(schema::SCHEMA)?;
        if options.background_checkpoints {
            // WAL checkpoints run on their own thread, not inside the writer's commits.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let heads = writer::load_heads(&conn)?;
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let checkpointer =
            if options.background_checkpoints { Some(wal::Checkpointer::start(path, stats.clone())?) } else { None };
        let (sender, handle) =
            writer::Writer::start(path, conn, heads, lock, options.max_batch, stats.clone(), checkpointer)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            sender,
            readers: Arc::new(Mutex::new(Vec::new())),
            stats,
            writer: Mutex::new(Some(handle)),
            tree: Arc::new(Mutex::new((0, MerkleFrontier::default()))),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writer counters.
    pub fn stats(&self) -> WriterStats {
        *lock(&self.stats)
    }

    /// Runs `f` on a reader connection from the pool, on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&readers).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path)?;
                    conn.pragma_update(None, "query_only", true)?;
                    conn
                }
            };
            let result = f(&conn);
            let mut pool = lock(&readers);
            if pool.len() < 16 {
                pool.push(conn);
            }
            drop(pool);
            result
        })
        .await
        .map_err(|_| Error::Closed)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it has finished what it holds.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.sender, closed));
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

#[async_trait::async_trait]
impl crate::Store for SqliteStore {
    async fn commit(&self, commit: Commit) -> Result<()> {
        let prepared = Prepared::of(&commit)?;
        self.submit(commit, prepared).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        self.read(move |c| read::session(c, &id)).await
    }

    async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        self.read(move |c| read::sessions(c, &filter)).await
    }

    async fn action(&self, id: &str) -> Result<Option<Action>> {
        let id = id.to_string();
        self.read(move |c| read::action(c, &id)).await
    }

    async fn session_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let id = session_id.to_string();
        self.read(move |c| read::session_actions(c, &id)).await
    }

    async fn waiting_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let id = session_id.to_string();
        self.read(move |c| read::waiting_actions(c, &id)).await
    }

    async fn actions_in_status(&self, status: ActionStatus) -> Result<Vec<Action>> {
        self.read(move |c| read::actions_in_status(c, status)).await
    }

    async fn action_by_idempotency_key(&self, agent_id: &str, key: &str) -> Result<Option<Action>> {
        let (agent, key) = (agent_id.to_string(), key.to_string());
        self.read(move |c| read::action_by_idempotency_key(c, &agent, &key)).await
    }

    async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let id = id.to_string();
        self.read(move |c| read::approval(c, &id)).await
    }

    async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        self.read(move |c| read::approvals(c, status, limit)).await
    }

    async fn approvals_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>> {
        self.read(move |c| read::approvals_due(c, &now)).await
    }

    async fn kill_switches(&self, active_only: bool) -> Result<Vec<KillSwitch>> {
        self.read(move |c| read::kill_switches(c, active_only)).await
    }

    async fn events(&self, stream: &str) -> Result<Vec<StoredEvent>> {
        let stream = stream.to_string();
        self.read(move |c| read::events(c, &stream)).await
    }

    async fn verify(&self) -> Result<VerifyReport> {
        self.read(read::verify).await
    }

    async fn policy_history(&self, limit: usize) -> Result<Vec<PolicyRecord>> {
        self.read(move |c| read::policy_history(c, limit)).await
    }

    async fn breakers(&self) -> Result<Vec<airlock_core::limits::Breaker>> {
        self.read(read::breakers).await
    }

    async fn mfa_guards(&self) -> Result<Vec<airlock_core::vote::MfaGuard>> {
        self.read(read::mfa_guards).await
    }

    async fn agent_actions_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<u32> {
        let agent = agent_id.to_string();
        self.read(move |c| read::agent_actions_since(c, &agent, &since)).await
    }

    async fn agent_spend_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        let agent = agent_id.to_string();
        self.read(move |c| read::agent_spend_since(c, &agent, &since)).await
    }

    async fn reserved_since(&self, agent_id: &str, session_id: Option<&str>, since: DateTime<Utc>) -> Result<f64> {
        let (agent, session) = (agent_id.to_string(), session_id.map(str::to_string));
        self.read(move |c| read::reserved_since(c, &agent, session.as_deref(), &since)).await
    }

    async fn tree_head(&self) -> Result<(u64, [u8; 32])> {
        // Events are only ever appended, in `pos` order, and a reader sees whole transactions:
        // the tree so far plus the events after its last position is the tree over all of them.
        let tree = self.tree.clone();
        self.read(move |c| {
            // A panic half-way through an update would poison the lock: start the tree over.
            let mut tree = tree.lock().unwrap_or_else(|poisoned| {
                let mut tree = poisoned.into_inner();
                *tree = (0, MerkleFrontier::default());
                tree
            });
            let (last, frontier) = &mut *tree;
            for (pos, hash) in read::event_hashes_after(c, *last)? {
                frontier.push(&hash);
                *last = pos;
            }
            Ok((frontier.size(), frontier.root()))
        })
        .await
    }

    async fn save_checkpoint(&self, size: u64, note: String, at: DateTime<Utc>) -> Result<()> {
        // Checkpoints are written through the writer like everything else.
        let commit = Commit { checkpoint: Some((size, note, at)), ..Default::default() };
        self.submit(commit, Prepared::default()).await
    }

    async fn notifications_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        self.read(move |c| read::notifications_due(c, &now, limit)).await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        if self.sender.is_closed() {
            return Err(Error::Closed);
        }
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM meta", [], |_| Ok(()))?)).await
    }
}

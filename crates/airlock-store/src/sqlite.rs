//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection. Commits arrive on a channel; the writer
//! takes every commit waiting (up to a batch limit), applies each inside its own savepoint, and
//! makes the whole batch durable with one `COMMIT` (WAL, `synchronous=FULL`: one fsync for the
//! batch). Each caller then hears whether *its* commit landed. Readers use separate connections
//! from a small pool on the blocking thread pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_core::{Action, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::chain::{GENESIS_HASH, VerifyProblem, VerifyReport, event_hash};
use crate::{Commit, DeliveryUpdate, Error, Notification, Projection, Result, SessionFilter, StoredEvent};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    pos        INTEGER PRIMARY KEY,
    stream     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    UNIQUE (stream, seq)
);
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_agent ON sessions (agent_id, created_at);
CREATE TABLE IF NOT EXISTS actions (
    id              TEXT PRIMARY KEY,
    session_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    agent_id        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    idempotency_key TEXT,
    created_at      TEXT    NOT NULL,
    body            TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_session ON actions (session_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS actions_idempotency ON actions (agent_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS approvals (
    id         TEXT PRIMARY KEY,
    action_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
CREATE TABLE IF NOT EXISTS kill_switches (
    id         TEXT PRIMARY KEY,
    active     INTEGER NOT NULL,
    engaged_at TEXT    NOT NULL,
    body       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    endpoint     TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    next_at      TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at) WHERE delivered_at IS NULL AND next_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoints (
    id         INTEGER PRIMARY KEY,
    size       INTEGER NOT NULL,
    note       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_revisions (
    revision     TEXT PRIMARY KEY,
    activated_at TEXT NOT NULL,
    body         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS breakers (
    tool TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_agent ON actions (agent_id, created_at);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    agent_id  TEXT NOT NULL,
    key       TEXT NOT NULL,
    action_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX IF NOT EXISTS actions_open ON actions (status, created_at)
    WHERE status IN ('pending_approval', 'approved', 'executing');
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"#;

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

struct Job {
    commit: Commit,
    /// Serialised on the caller's thread, so the single writer only hashes and inserts.
    prepared: Prepared,
    reply: oneshot::Sender<Result<()>>,
}

/// A commit's JSON, made before it reaches the writer: canonical event payloads and projection
/// documents, in the commit's order.
#[derive(Default)]
struct Prepared {
    payloads: Vec<String>,
    documents: Vec<String>,
}

impl Prepared {
    fn of(commit: &Commit) -> Result<Prepared> {
        let payloads = commit.events.iter().map(|e| airlock_core::canonical_json(&e.payload)).collect();
        let documents = commit.projections.iter().map(projection_json).collect::<Result<Vec<_>>>()?;
        Ok(Prepared { payloads, documents })
    }
}

/// The stored JSON document of a projection (empty for rows without one).
fn projection_json(p: &Projection) -> Result<String> {
    match p {
        Projection::Session(s) => to_json(s),
        Projection::Action(a) => to_json(a.as_ref()),
        Projection::Approval(a) => to_json(a),
        Projection::KillSwitch(k) => to_json(k),
        Projection::Breaker(b) => to_json(b),
        Projection::PolicyRevision(r) => to_json(r),
        Projection::IdempotencyKey { .. } => Ok(String::new()),
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
    sender: mpsc::UnboundedSender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    stats: Arc<Mutex<WriterStats>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

/// Formats a time the way the journal stores it (RFC 3339, microseconds, `Z`).
pub(crate) fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        }
        let lock = lock_writer(path)?;
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        if options.background_checkpoints {
            // WAL checkpoints run on their own thread, not inside the writer's commits.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let heads = load_heads(&conn)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let writer_stats = stats.clone();
        let max_batch = options.max_batch.max(1);
        let checkpointer =
            if options.background_checkpoints { Some(Checkpointer::start(path, stats.clone())?) } else { None };
        let handle = std::thread::Builder::new()
            .name("airlock-journal".into())
            .spawn(move || {
                Writer { conn, heads, stats: writer_stats, max_batch, checkpointer, _lock: lock }.run(receiver)
            })
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            sender,
            readers: Arc::new(Mutex::new(Vec::new())),
            stats,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writer counters.
    pub fn stats(&self) -> WriterStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.lock().ok().and_then(|mut pool| pool.pop()) {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path)?;
                    conn.pragma_update(None, "query_only", true)?;
                    conn
                }
            };
            let result = f(&conn);
            if let Ok(mut pool) = readers.lock()
                && pool.len() < 16
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| Error::Closed)?
    }

    /// Walks every hash chain of the journal at `path` without starting a writer (for
    /// `airlock audit verify`, which may run beside a live server).
    pub fn verify_file(path: &Path) -> Result<VerifyReport> {
        if !path.exists() {
            return Err(Error::Open { path: path.display().to_string(), message: "no journal here".into() });
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        verify(&conn)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it has finished what it holds.
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.sender, closed));
        if let Ok(mut guard) = self.writer.lock()
            && let Some(handle) = guard.take()
        {
            let _ = handle.join();
        }
    }
}

struct Writer {
    conn: Connection,
    heads: HashMap<String, (u64, String)>,
    stats: Arc<Mutex<WriterStats>>,
    max_batch: usize,
    /// Stopped (after a last checkpoint) when the writer ends.
    checkpointer: Option<Checkpointer>,
    /// Held until the writer thread ends: one writer per journal.
    _lock: std::fs::File,
}

/// Copies the WAL back into the database file in the background. With SQLite's automatic
/// checkpoints, the commit that crosses the threshold does the copy and its fsync, so every
/// hundredth-or-so decision waited for it; here it never holds up a commit. It runs about as
/// often as SQLite's would (every [`Self::EVERY`] transactions, or 2 s after the last one), and
/// PASSIVE checkpoints never block the writer or readers.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
    /// Transactions between checkpoints (a decision writes about a dozen pages; SQLite's default
    /// is a checkpoint per 1000 pages).
    const EVERY: u64 = 80;
    /// A checkpoint also runs once anything has waited this many intervals (2 s).
    const PATIENCE: u32 = 20;

    fn start(path: &Path, stats: Arc<Mutex<WriterStats>>) -> Result<Checkpointer> {
        let conn = open_connection(path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let batches = move || stats.lock().map(|s| s.batches).unwrap_or(0);
        let handle = std::thread::Builder::new()
            .name("airlock-checkpoint".into())
            .spawn(move || {
                let (mut done, mut waited) = (batches(), 0u32);
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(Self::INTERVAL),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    let now = batches();
                    waited = if now == done { 0 } else { waited + 1 };
                    if last || now >= done + Self::EVERY || waited >= Self::PATIENCE {
                        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                        }
                        (done, waited) = (now, 0);
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        Ok(Checkpointer { stop, handle })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}

/// Takes the exclusive writer lock `<journal>.lock` (an advisory `flock`, released by the kernel
/// when the process exits, also on a crash). The writer keeps the hash-chain heads in memory, so
/// a second writer on the same file would fork the chains: refuse it instead.
fn lock_writer(path: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let open_err = |e: std::io::Error| Error::Open { path: lock_path.display().to_string(), message: e.to_string() };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().parse::<u32>().map(|pid| format!(" (pid {pid})")).unwrap_or_default();
            return Err(Error::InUse { path: path.display().to_string(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_err(e)),
    }
    file.set_len(0).map_err(open_err)?;
    file.rewind().map_err(open_err)?;
    write!(file, "{}", std::process::id()).map_err(open_err)?;
    Ok(file)
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
    }

    /// Puts back the chain heads recorded in `undo` (newest first), after a rollback.
    fn undo(&mut self, undo: Vec<(String, Option<(u64, String)>)>) {
        for (stream, old) in undo.into_iter().rev() {
            match old {
                Some(h) => {
                    self.heads.insert(stream, h);
                }
                None => {
                    self.heads.remove(&stream);
                }
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        // Undo logs of the heads each commit moved; cloning the whole map instead cost time in
        // proportion to the number of streams (sessions) in the journal.
        let mut batch_undo: Vec<(String, Option<(u64, String)>)> = Vec::new();
        let mut outcomes: Vec<Result<()>> = Vec::with_capacity(batch.len());
        let begin = self.conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = begin {
            let msg = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(Error::Unavailable(format!("cannot begin a transaction: {msg}"))));
            }
            return;
        }
        for job in &batch {
            let mut undo = Vec::new();
            let result = self
                .conn
                .execute_batch("SAVEPOINT job")
                .map_err(Error::from)
                .and_then(|_| apply(&self.conn, &mut self.heads, &mut undo, &job.commit, &job.prepared));
            match result {
                Ok(()) => {
                    let released = self.conn.execute_batch("RELEASE job").map_err(Error::from);
                    batch_undo.extend(undo);
                    outcomes.push(released);
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    self.undo(undo);
                    outcomes.push(Err(e));
                }
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.undo(batch_undo);
            let msg = e.to_string();
            tracing::error!(error = %msg, "journal commit failed");
            for job in batch {
                let _ = job.reply.send(Err(Error::Unavailable(format!("journal commit failed: {msg}"))));
            }
            return;
        }
        if let Ok(mut stats) = self.stats.lock() {
            stats.batches += 1;
            stats.commits += batch.len() as u64;
        }
        metrics::histogram!(crate::metrics_names::BATCH_SIZE).record(batch.len() as f64);
        metrics::histogram!(crate::metrics_names::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::trace!(size = batch.len(), elapsed_us = started.elapsed().as_micros() as u64, "journal batch");
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

fn load_heads(conn: &Connection) -> Result<HashMap<String, (u64, String)>> {
    let mut stmt = conn.prepare(
        "SELECT e.stream, e.seq, e.hash FROM events e
         JOIN (SELECT stream, MAX(seq) AS seq FROM events GROUP BY stream) h
           ON h.stream = e.stream AND h.seq = e.seq",
    )?;
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?))))?;
    let mut heads = HashMap::new();
    for row in rows {
        let (stream, head) = row?;
        heads.insert(stream, head);
    }
    Ok(heads)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt { id: "new record".into(), message: e.to_string() })
}

fn map_unique(e: rusqlite::Error, what: &str) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::Conflict(format!("{what}: {e}"))
        }
        _ => Error::Database(e),
    }
}

fn apply(
    conn: &Connection,
    heads: &mut HashMap<String, (u64, String)>,
    undo: &mut Vec<(String, Option<(u64, String)>)>,
    commit: &Commit,
    prepared: &Prepared,
) -> Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (stream, seq, kind, at, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, event) in commit.events.iter().enumerate() {
        let (prev_seq, prev_hash) = heads.get(&event.stream).cloned().unwrap_or((0, GENESIS_HASH.to_string()));
        let seq = prev_seq + 1;
        let at = fmt_time(&event.at);
        let payload = match prepared.payloads.get(i) {
            Some(p) => p.clone(),
            None => airlock_core::canonical_json(&event.payload),
        };
        let kind = event.kind.as_str();
        let hash = event_hash(&prev_hash, &event.stream, seq, kind, &at, &payload);
        insert
            .execute(params![event.stream, seq as i64, kind, at, payload, prev_hash, hash])
            .map_err(|e| map_unique(e, "event"))?;
        let old = heads.insert(event.stream.clone(), (seq, hash));
        undo.push((event.stream.clone(), old));
    }
    if let Some((size, note, at)) = &commit.checkpoint {
        conn.prepare_cached("INSERT INTO checkpoints (size, note, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![*size as i64, note, fmt_time(at)])?;
    }
    for n in &commit.outbox {
        conn.prepare_cached(
            "INSERT INTO outbox (endpoint, event, body, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![
            n.endpoint,
            n.event,
            serde_json::to_string(&n.body).unwrap_or_default(),
            fmt_time(&n.at)
        ])?;
    }
    for d in &commit.deliveries {
        match d {
            DeliveryUpdate::Delivered { id, at } => {
                conn.prepare_cached(
                    "UPDATE outbox SET delivered_at = ?2, next_at = NULL, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                )?
                .execute(params![id, fmt_time(at)])?;
            }
            DeliveryUpdate::Failed { id, error, next_at } => {
                conn.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, error, next_at.as_ref().map(fmt_time)])?;
            }
        }
    }
    for (i, projection) in commit.projections.iter().enumerate() {
        // Serialised by the caller (`Prepared`), so the single writer does not do it again.
        let fallback;
        let doc: &str = match prepared.documents.get(i) {
            Some(d) => d,
            None => {
                fallback = projection_json(projection)?;
                &fallback
            }
        };
        match projection {
            Projection::Session(s) => {
                conn.prepare_cached(
                    "INSERT INTO sessions (id, agent_id, status, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                )?
                .execute(params![
                    s.id,
                    s.agent_id,
                    status_name(&s.status),
                    fmt_time(&s.created_at),
                    doc
                ])?;
            }
            Projection::Action(a) => {
                conn.prepare_cached(
                    "INSERT INTO actions (id, session_id, seq, agent_id, status, digest, idempotency_key, created_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                )?
                .execute(params![
                    a.id,
                    a.session_id,
                    a.seq as i64,
                    a.agent_id,
                    a.status.as_str(),
                    a.digest,
                    a.idempotency_key,
                    fmt_time(&a.created_at),
                    doc
                ])
                .map_err(|e| map_unique(e, "idempotency key already used"))?;
            }
            Projection::Approval(p) => {
                conn.prepare_cached(
                    "INSERT INTO approvals (id, action_id, session_id, status, expires_at, created_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at, body = excluded.body",
                )?
                .execute(params![
                    p.id,
                    p.action_id,
                    p.session_id,
                    p.status.as_str(),
                    fmt_time(&p.expires_at),
                    fmt_time(&p.created_at),
                    doc
                ])?;
            }
            Projection::PolicyRevision(r) => {
                conn.prepare_cached(
                    "INSERT INTO policy_revisions (revision, activated_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (revision) DO UPDATE SET activated_at = excluded.activated_at, body = excluded.body",
                )?
                .execute(params![r.revision, fmt_time(&r.activated_at), doc])?;
            }
            Projection::IdempotencyKey { agent_id, key, action_id } => {
                conn.prepare_cached("INSERT INTO idempotency_keys (agent_id, key, action_id) VALUES (?1, ?2, ?3)")?
                    .execute(params![agent_id, key, action_id])
                    .map_err(|e| map_unique(e, "idempotency key already used"))?;
            }
            Projection::Breaker(b) => {
                conn.prepare_cached(
                    "INSERT INTO breakers (tool, body) VALUES (?1, ?2) ON CONFLICT (tool) DO UPDATE SET body = excluded.body",
                )?
                .execute(params![b.tool, doc])?;
            }
            Projection::KillSwitch(k) => {
                conn.prepare_cached(
                    "INSERT INTO kill_switches (id, active, engaged_at, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET active = excluded.active, body = excluded.body",
                )?
                .execute(params![k.id, k.is_active(), fmt_time(&k.engaged_at), doc])?;
            }
        }
    }
    Ok(())
}

fn status_name<T: serde::Serialize>(status: &T) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn parse<T: DeserializeOwned>(id: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::Corrupt { id: id.to_string(), message: e.to_string() })
}

fn query_docs<T: DeserializeOwned>(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row?;
        out.push(parse(&id, &body)?);
    }
    Ok(out)
}

fn query_doc<T: DeserializeOwned>(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Option<T>> {
    let row = conn
        .prepare_cached(sql)?
        .query_row(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()?;
    row.map(|(id, body)| parse(&id, &body)).transpose()
}

/// Event hashes in journal order, the first `limit` of them when given.
pub(crate) fn event_hashes(conn: &Connection, limit: Option<u64>) -> Result<Vec<String>> {
    let limit = limit.map(|l| l as i64).unwrap_or(-1);
    let mut stmt = conn.prepare_cached("SELECT hash FROM events ORDER BY pos LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
    rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
}

/// A stored checkpoint note.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCheckpoint {
    /// Events it covers.
    pub size: u64,
    /// The signed note text.
    pub note: String,
    /// When it was made.
    pub created_at: String,
}

impl SqliteStore {
    /// Reads the journal at `path` read-only: every checkpoint note, and the Merkle root over the
    /// first `size` events for each distinct size asked.
    pub fn read_checkpoints(path: &Path) -> Result<Vec<StoredCheckpoint>> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        let mut stmt = conn.prepare("SELECT size, note, created_at FROM checkpoints ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredCheckpoint { size: r.get::<_, i64>(0)? as u64, note: r.get(1)?, created_at: r.get(2)? })
        })?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Event hashes of the journal at `path`, in journal order (read-only).
    pub fn read_event_hashes(path: &Path) -> Result<Vec<String>> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        event_hashes(&conn, None)
    }

    /// Events of the journal at `path` from `since` on, in journal order (read-only).
    pub fn read_events_since(path: &Path, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::Open { path: path.display().to_string(), message: e.to_string() })?;
        let mut stmt = conn.prepare(
            "SELECT pos, stream, seq, kind, at, payload, prev_hash, hash FROM events WHERE at >= ?1 ORDER BY pos",
        )?;
        let rows = stmt.query_map([fmt_time(since)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (pos, stream, seq, kind, at, payload, prev_hash, hash) = row?;
            let payload = parse(&format!("event {pos}"), &payload)?;
            out.push(StoredEvent { pos, stream, seq: seq as u64, kind, at, payload, prev_hash, hash });
        }
        Ok(out)
    }
}

fn verify(conn: &Connection) -> Result<VerifyReport> {
    let mut stmt =
        conn.prepare("SELECT pos, stream, seq, kind, at, payload, prev_hash, hash FROM events ORDER BY stream, seq")?;
    let mut rows = stmt.query([])?;
    let mut report = VerifyReport { events: 0, streams: 0, first_problem: None };
    let mut current: Option<(String, u64, String, i64)> = None; // stream, seq, hash, pos
    while let Some(row) = rows.next()? {
        let pos: i64 = row.get(0)?;
        let stream: String = row.get(1)?;
        let seq = row.get::<_, i64>(2)? as u64;
        let kind: String = row.get(3)?;
        let at: String = row.get(4)?;
        let payload: String = row.get(5)?;
        let prev_hash: String = row.get(6)?;
        let hash: String = row.get(7)?;
        report.events += 1;
        let (expected_seq, expected_prev, last_pos) = match &current {
            Some((s, n, h, p)) if *s == stream => (n + 1, h.clone(), Some(*p)),
            _ => {
                report.streams += 1;
                (1, GENESIS_HASH.to_string(), None)
            }
        };
        let problem = if seq != expected_seq {
            Some(format!(
                "expected event {expected_seq} but found {seq}: events {expected_seq}..{} were removed",
                seq.saturating_sub(1)
            ))
        } else if prev_hash != expected_prev {
            Some(
                "its link to the previous event does not match: an event was removed, replaced or reordered"
                    .to_string(),
            )
        } else if last_pos.is_some_and(|p| p > pos) {
            Some("it was stored before the event that precedes it: events were reordered".to_string())
        } else if event_hash(&prev_hash, &stream, seq, &kind, &at, &payload) != hash {
            Some(format!("its content does not match its hash: the `{kind}` event was altered"))
        } else {
            None
        };
        if let Some(problem) = problem {
            report.first_problem = Some(VerifyProblem { stream, seq: expected_seq.min(seq), pos: Some(pos), problem });
            return Ok(report);
        }
        current = Some((stream, seq, hash, pos));
    }
    Ok(report)
}

#[async_trait::async_trait]
impl crate::Store for SqliteStore {
    async fn commit(&self, commit: Commit) -> Result<()> {
        let prepared = Prepared::of(&commit)?;
        let (reply, receive) = oneshot::channel();
        self.sender.send(Job { commit, prepared, reply }).map_err(|_| Error::Closed)?;
        receive.await.map_err(|_| Error::Closed)?
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let id = id.to_string();
        self.read(move |c| query_doc(c, "SELECT id, body FROM sessions WHERE id = ?1", &[&id])).await
    }

    async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        self.read(move |c| {
            let limit = if filter.limit == 0 { 100 } else { filter.limit } as i64;
            let agent = filter.agent_id.clone();
            let status = filter.status.as_ref().map(status_name);
            query_docs(
                c,
                "SELECT id, body FROM sessions
                 WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
                &[&agent, &status, &limit],
            )
        })
        .await
    }

    async fn action(&self, id: &str) -> Result<Option<Action>> {
        let id = id.to_string();
        self.read(move |c| query_doc(c, "SELECT id, body FROM actions WHERE id = ?1", &[&id])).await
    }

    async fn session_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let id = session_id.to_string();
        self.read(move |c| query_docs(c, "SELECT id, body FROM actions WHERE session_id = ?1 ORDER BY seq", &[&id]))
            .await
    }

    async fn waiting_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let id = session_id.to_string();
        self.read(move |c| {
            query_docs(
                c,
                "SELECT id, body FROM actions WHERE session_id = ?1 AND status IN ('pending_approval', 'approved') ORDER BY seq",
                &[&id],
            )
        })
        .await
    }

    async fn actions_in_status(&self, status: airlock_core::ActionStatus) -> Result<Vec<Action>> {
        let status = status.as_str().to_string();
        self.read(move |c| {
            query_docs(c, "SELECT id, body FROM actions WHERE status = ?1 ORDER BY created_at, id", &[&status])
        })
        .await
    }

    async fn action_by_idempotency_key(&self, agent_id: &str, key: &str) -> Result<Option<Action>> {
        let (agent, key) = (agent_id.to_string(), key.to_string());
        self.read(move |c| {
            // The key of the call that opened the action, or of a call that joined it.
            query_doc(
                c,
                "SELECT id, body FROM actions WHERE agent_id = ?1 AND idempotency_key = ?2
                 UNION ALL
                 SELECT a.id, a.body FROM idempotency_keys k JOIN actions a ON a.id = k.action_id
                 WHERE k.agent_id = ?1 AND k.key = ?2
                 LIMIT 1",
                &[&agent, &key],
            )
        })
        .await
    }

    async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        let id = id.to_string();
        self.read(move |c| query_doc(c, "SELECT id, body FROM approvals WHERE id = ?1", &[&id])).await
    }

    async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        let status = status.map(|s| s.as_str().to_string());
        let limit = if limit == 0 { 100 } else { limit } as i64;
        self.read(move |c| {
            query_docs(
                c,
                "SELECT id, body FROM approvals WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2",
                &[&status, &limit],
            )
        })
        .await
    }

    async fn approvals_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>> {
        let now = fmt_time(&now);
        self.read(move |c| {
            query_docs(
                c,
                "SELECT id, body FROM approvals WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at",
                &[&now],
            )
        })
        .await
    }

    async fn kill_switches(&self, active_only: bool) -> Result<Vec<KillSwitch>> {
        self.read(move |c| {
            query_docs(
                c,
                "SELECT id, body FROM kill_switches WHERE (?1 = 0 OR active = 1) ORDER BY engaged_at DESC, id DESC",
                &[&active_only],
            )
        })
        .await
    }

    async fn events(&self, stream: &str) -> Result<Vec<StoredEvent>> {
        let stream = stream.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT pos, stream, seq, kind, at, payload, prev_hash, hash FROM events WHERE stream = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([&stream], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (pos, stream, seq, kind, at, payload, prev_hash, hash) = row?;
                let payload = parse(&format!("event {pos}"), &payload)?;
                out.push(StoredEvent { pos, stream, seq: seq as u64, kind, at, payload, prev_hash, hash });
            }
            Ok(out)
        })
        .await
    }

    async fn tree_head(&self) -> Result<(u64, [u8; 32])> {
        self.read(|c| {
            let hashes = event_hashes(c, None)?;
            Ok((hashes.len() as u64, crate::chain::merkle_root(&hashes)))
        })
        .await
    }

    async fn save_checkpoint(&self, size: u64, note: String, at: DateTime<Utc>) -> Result<()> {
        // Checkpoints are written through the writer like everything else.
        let (reply, receive) = oneshot::channel();
        let commit = Commit { checkpoint: Some((size, note, at)), ..Default::default() };
        self.sender.send(Job { commit, prepared: Prepared::default(), reply }).map_err(|_| Error::Closed)?;
        receive.await.map_err(|_| Error::Closed)?
    }

    async fn policy_history(&self, limit: usize) -> Result<Vec<crate::PolicyRecord>> {
        let limit = limit.max(1) as i64;
        self.read(move |c| {
            query_docs(c, "SELECT revision, body FROM policy_revisions ORDER BY activated_at DESC LIMIT ?1", &[&limit])
        })
        .await
    }

    async fn breakers(&self) -> Result<Vec<airlock_core::limits::Breaker>> {
        self.read(|c| query_docs(c, "SELECT tool, body FROM breakers ORDER BY tool", &[])).await
    }

    async fn agent_actions_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<u32> {
        let (agent, since) = (agent_id.to_string(), fmt_time(&since));
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM actions WHERE agent_id = ?1 AND created_at >= ?2")?
                .query_row(params![agent, since], |r| r.get(0))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn agent_spend_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        let (agent, since) = (agent_id.to_string(), fmt_time(&since));
        self.read(move |c| {
            let n: Option<f64> = c
                .prepare_cached(
                    // The decision's cost, else a cost reported with the result: the rule of
                    // `airlock_core::limits::reported_cost_counted`.
                    "SELECT SUM(COALESCE(json_extract(body, '$.decision.cost_usd'), json_extract(body, '$.result.cost_usd'), 0)) FROM actions
                     WHERE agent_id = ?1 AND created_at >= ?2
                       AND status IN ('approved', 'executing', 'succeeded', 'failed', 'unknown')",
                )?
                .query_row(params![agent, since], |r| r.get(0))?;
            Ok(n.unwrap_or(0.0))
        })
        .await
    }

    async fn notifications_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        let now = fmt_time(&now);
        let limit = limit.max(1) as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, endpoint, event, body, attempts, last_error FROM outbox
                 WHERE delivered_at IS NULL AND next_at IS NOT NULL AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit], |r| {
                Ok(Notification {
                    id: r.get(0)?,
                    endpoint: r.get(1)?,
                    event: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                    last_error: r.get(5)?,
                })
            })?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
        })
        .await
    }

    async fn verify(&self) -> Result<VerifyReport> {
        self.read(verify).await
    }
}

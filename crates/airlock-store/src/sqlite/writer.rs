//! The single writer: a thread that owns the only write connection, takes every commit waiting
//! (up to a batch limit), applies each inside its own savepoint and makes the batch durable with
//! one `COMMIT`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::wal::Checkpointer;
use super::write::apply;
use super::{SqliteStore, WriterStats, open_error};
use crate::chain::Heads;
use crate::encoding::Prepared;
use crate::{Commit, Error, Result};

/// Chain heads a commit moved, with what they were before (`None`: the stream was new), in
/// the order they moved.
pub(super) type HeadsUndo = Vec<(String, Option<(u64, String)>)>;

/// One commit on its way to the writer.
pub(super) struct Job {
    commit: Commit,
    /// Serialised on the caller's thread, so the single writer only hashes and inserts.
    prepared: Prepared,
    reply: oneshot::Sender<Result<()>>,
}

impl SqliteStore {
    /// Hands a commit to the writer and waits until it is durable (or refused).
    pub(super) async fn submit(&self, commit: Commit, prepared: Prepared) -> Result<()> {
        let (reply, receive) = oneshot::channel();
        self.sender.send(Job { commit, prepared, reply }).map_err(|_| Error::Closed)?;
        receive.await.map_err(|_| Error::Closed)?
    }
}

pub(super) struct Writer {
    conn: Connection,
    heads: Heads,
    stats: Arc<Mutex<WriterStats>>,
    max_batch: usize,
    /// Stopped (after a last checkpoint) when the writer ends.
    checkpointer: Option<Checkpointer>,
    /// Held until the writer thread ends: one writer per journal.
    _lock: std::fs::File,
}

impl Writer {
    /// Starts the writer thread on `conn` (schema in place, chains ending at `heads`), holding
    /// `lock` until it ends. The thread ends when every sender of the returned channel is gone.
    pub(super) fn start(
        path: &Path,
        conn: Connection,
        heads: Heads,
        lock: std::fs::File,
        max_batch: usize,
        stats: Arc<Mutex<WriterStats>>,
        checkpointer: Option<Checkpointer>,
    ) -> Result<(mpsc::UnboundedSender<Job>, std::thread::JoinHandle<()>)> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer { conn, heads, stats, max_batch: max_batch.max(1), checkpointer, _lock: lock };
        let handle = std::thread::Builder::new()
            .name("airlock-journal".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| open_error(path, e))?;
        Ok((sender, handle))
    }

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
    fn undo(&mut self, undo: HeadsUndo) {
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
        let mut batch_undo: HeadsUndo = Vec::new();
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
        {
            let mut stats = airlock_core::sync::lock(&self.stats);
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

/// Where each stream's chain ends, read from the journal.
pub(super) fn load_heads(conn: &Connection) -> Result<Heads> {
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

/// Takes the exclusive writer lock `<journal>.lock` (an advisory `flock`, released by the kernel
/// when the process exits, also on a crash). The writer keeps the hash-chain heads in memory, so
/// a second writer on the same file would fork the chains: refuse it instead.
pub(crate) fn lock_writer(path: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let open_err = |e: std::io::Error| open_error(&lock_path, e);
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

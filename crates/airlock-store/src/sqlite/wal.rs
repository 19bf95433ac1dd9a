//! WAL checkpoints on their own thread, so that no commit waits for one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{WriterStats, open_connection, open_error};
use crate::Result;

/// Copies the WAL back into the database file in the background. With SQLite's automatic
/// checkpoints, the commit that crosses the threshold does the copy and its fsync, so every
/// hundredth-or-so decision waited for it; here it never holds up a commit. It runs about as
/// often as SQLite's would (every [`Self::EVERY`] transactions, or 2 s after the last one), and
/// PASSIVE checkpoints never block the writer or readers.
pub(super) struct Checkpointer {
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

    pub(super) fn start(path: &Path, stats: Arc<Mutex<WriterStats>>) -> Result<Checkpointer> {
        let conn = open_connection(path)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let batches = move || airlock_core::sync::lock(&stats).batches;
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
            .map_err(|e| open_error(path, e))?;
        Ok(Checkpointer { stop, handle })
    }

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}

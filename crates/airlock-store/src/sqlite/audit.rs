//! Read-only access to a journal file without starting a writer, for `airlock audit`, which may
//! run beside a live server.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::{SqliteStore, open_error, read};
use crate::chain::VerifyReport;
use crate::{Error, Result, StoredCheckpoint, StoredEvent};

fn open_read_only(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| open_error(path, e))
}

impl SqliteStore {
    /// Walks every hash chain of the journal at `path` without starting a writer (for
    /// `airlock audit verify`, which may run beside a live server).
    pub fn verify_file(path: &Path) -> Result<VerifyReport> {
        if !path.exists() {
            return Err(open_error(path, "no journal here"));
        }
        read::verify(&open_read_only(path)?)
    }

    /// Every checkpoint note of the journal at `path`, oldest first (read-only).
    pub fn read_checkpoints(path: &Path) -> Result<Vec<StoredCheckpoint>> {
        let conn = open_read_only(path)?;
        let mut stmt = conn.prepare("SELECT size, note, created_at FROM checkpoints ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredCheckpoint { size: r.get::<_, i64>(0)? as u64, note: r.get(1)?, created_at: r.get(2)? })
        })?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Event hashes of the journal at `path`, in journal order (read-only).
    pub fn read_event_hashes(path: &Path) -> Result<Vec<String>> {
        read::event_hashes(&open_read_only(path)?, None)
    }

    /// Events of the journal at `path` from `since` on, in journal order (read-only).
    pub fn read_events_since(path: &Path, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
        read::events_since(&open_read_only(path)?, since)
    }
}

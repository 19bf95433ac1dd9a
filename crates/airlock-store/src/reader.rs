//! A journal opened to be read, not written: what `airlock audit` and `airlock replay` use. It
//! starts no writer and takes no writer lock, so it works beside a running server.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::chain::VerifyReport;
use crate::{PostgresOptions, PostgresReader, Result, SqliteStore, StoredCheckpoint, StoredEvent};

/// A journal, read-only.
#[derive(Debug, Clone)]
pub enum JournalReader {
    /// The SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresReader),
}

impl JournalReader {
    /// Opens the PostgreSQL journal `options` names for reading.
    pub async fn postgres(options: &PostgresOptions) -> Result<JournalReader> {
        Ok(JournalReader::Postgres(PostgresReader::open(options).await?))
    }

    /// Where the journal is: a file path, or `postgres://user@host:port/database`.
    pub fn describe(&self) -> String {
        match self {
            JournalReader::Sqlite(path) => path.display().to_string(),
            JournalReader::Postgres(pg) => pg.describe().to_string(),
        }
    }

    /// Walks every hash chain.
    pub async fn verify(&self) -> Result<VerifyReport> {
        match self {
            JournalReader::Sqlite(path) => blocking(path, SqliteStore::verify_file).await,
            JournalReader::Postgres(pg) => pg.verify().await,
        }
    }

    /// Every checkpoint note, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        match self {
            JournalReader::Sqlite(path) => blocking(path, SqliteStore::read_checkpoints).await,
            JournalReader::Postgres(pg) => pg.checkpoints().await,
        }
    }

    /// Every event hash, in journal order.
    pub async fn event_hashes(&self) -> Result<Vec<String>> {
        match self {
            JournalReader::Sqlite(path) => blocking(path, SqliteStore::read_event_hashes).await,
            JournalReader::Postgres(pg) => pg.event_hashes().await,
        }
    }

    /// Events from `since` on, in journal order.
    pub async fn events_since(&self, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
        match self {
            JournalReader::Sqlite(path) => {
                let since = *since;
                blocking(path, move |p| SqliteStore::read_events_since(p, &since)).await
            }
            JournalReader::Postgres(pg) => pg.events_since(since).await,
        }
    }
}

/// Runs a read of the SQLite file at `path` on the blocking thread pool.
async fn blocking<T: Send + 'static>(
    path: &std::path::Path,
    read: impl FnOnce(&std::path::Path) -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read(&path)).await.map_err(|_| crate::Error::Closed)?
}

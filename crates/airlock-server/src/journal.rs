//! Which journal the configuration names (`[storage]`), opened for the server — writing, its
//! schema migrated — or read-only for `airlock audit` and `airlock replay`, beside a server.

use std::sync::Arc;

use airlock_store::{JournalReader, PostgresStore, SqliteOptions, SqliteStore, Store};
use anyhow::Context;

use crate::config::{Config, StorageConfig};

/// File name of the embedded journal inside `data_dir`.
pub const JOURNAL_FILE: &str = "journal.db";

/// Where the journal of `config` is: the SQLite file's path or the database's URL without its
/// password.
pub fn describe(config: &Config) -> String {
    match &config.storage {
        StorageConfig::Sqlite => config.server.data_dir.join(JOURNAL_FILE).display().to_string(),
        StorageConfig::Postgres(options) => options.describe(),
    }
}

/// Opens the journal for writing: the SQLite file (with its writer lock), or the PostgreSQL
/// database with its schema brought up to date.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.storage {
        StorageConfig::Sqlite => Arc::new(
            SqliteStore::open(&config.server.data_dir.join(JOURNAL_FILE), SqliteOptions::default())
                .context("cannot open the journal")?,
        ),
        StorageConfig::Postgres(options) => {
            Arc::new(PostgresStore::open(options.as_ref().clone()).await.context("cannot open the journal")?)
        }
    })
}

/// Opens the journal for reading only.
pub async fn reader(config: &Config) -> anyhow::Result<JournalReader> {
    Ok(match &config.storage {
        StorageConfig::Sqlite => JournalReader::Sqlite(config.server.data_dir.join(JOURNAL_FILE)),
        StorageConfig::Postgres(options) => {
            JournalReader::postgres(options).await.context("cannot read the journal")?
        }
    })
}

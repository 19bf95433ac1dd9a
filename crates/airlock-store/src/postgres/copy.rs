//! `airlock migrate --from-sqlite`: an embedded journal copied into PostgreSQL as it is.
//!
//! Every row of every table goes over unchanged — events with their positions, times, payload
//! text and hashes, so that every chain, every signed checkpoint and every anchor made from the
//! SQLite journal verifies against the copy. The copy is one transaction: it lands whole, after
//! the copy's chains and Merkle root were checked against the source's, or not at all.

use std::path::Path;
use std::sync::{Arc, Mutex};

use deadpool_postgres::ClientWrapper as Client;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::read;
use crate::chain::merkle_root;
use crate::{Error, Result};

/// What was copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// Rows copied, by table.
    pub rows: Vec<(String, u64)>,
    /// Events in the copy.
    pub events: u64,
    /// Streams (hash chains) in the copy.
    pub streams: u64,
    /// The RFC 6962 Merkle root over the event hashes, the same in both journals (hex).
    pub root: String,
}

/// The type of a column, as SQLite holds it and PostgreSQL takes it.
#[derive(Clone, Copy)]
enum Column {
    Text,
    NullText,
    Int8,
    Int4,
    /// An SQLite integer 0/1 that is a PostgreSQL boolean.
    Bool,
}

/// Every table, its columns as both schemas name them. Events first.
const TABLES: &[(&str, &[(&str, Column)])] = {
    use Column::*;
    &[
        (
            "events",
            &[
                ("pos", Int8),
                ("stream", Text),
                ("seq", Int8),
                ("kind", Text),
                ("at", Text),
                ("payload", Text),
                ("prev_hash", Text),
                ("hash", Text),
            ],
        ),
        ("sessions", &[("id", Text), ("agent_id", Text), ("status", Text), ("created_at", Text), ("body", Text)]),
        (
            "actions",
            &[
                ("id", Text),
                ("session_id", Text),
                ("seq", Int8),
                ("agent_id", Text),
                ("status", Text),
                ("digest", Text),
                ("idempotency_key", NullText),
                ("created_at", Text),
                ("body", Text),
            ],
        ),
        (
            "approvals",
            &[
                ("id", Text),
                ("action_id", Text),
                ("session_id", Text),
                ("status", Text),
                ("expires_at", Text),
                ("created_at", Text),
                ("body", Text),
            ],
        ),
        ("kill_switches", &[("id", Text), ("active", Bool), ("engaged_at", Text), ("body", Text)]),
        (
            "outbox",
            &[
                ("id", Int8),
                ("endpoint", Text),
                ("event", Text),
                ("body", Text),
                ("created_at", Text),
                ("next_at", NullText),
                ("attempts", Int4),
                ("last_error", NullText),
                ("delivered_at", NullText),
            ],
        ),
        ("checkpoints", &[("id", Int8), ("size", Int8), ("note", Text), ("created_at", Text)]),
        ("policy_revisions", &[("revision", Text), ("activated_at", Text), ("body", Text)]),
        ("breakers", &[("tool", Text), ("body", Text)]),
        ("mfa_guards", &[("human", Text), ("body", Text)]),
        ("idempotency_keys", &[("agent_id", Text), ("key", Text), ("action_id", Text)]),
    ]
};

/// Rows read from SQLite at a time.
const CHUNK: i64 = 2000;

type Param = Box<dyn ToSql + Sync + Send>;

fn sqlite_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Open { path: path.display().to_string(), message: e.to_string() }
}

/// Copies the SQLite journal at `path` into the empty, migrated database `client` is on.
pub(super) async fn from_sqlite(path: &Path, client: &mut Client) -> Result<CopyReport> {
    if !path.is_file() {
        return Err(sqlite_error(path, "no journal here"));
    }
    // Held until the copy is done: no server may add to the journal while it is read.
    let _lock = crate::sqlite::lock_writer(path)?;
    let source = crate::SqliteStore::verify_file(path)?;
    if let Some(p) = &source.first_problem {
        return Err(sqlite_error(
            path,
            format!(
                "its hash chains do not verify (stream `{}` event {}: {}), so it is not copied; \
                 `airlock audit verify` on it says more",
                p.stream, p.seq, p.problem
            ),
        ));
    }
    let hashes = crate::SqliteStore::read_event_hashes(path)?;
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| sqlite_error(path, e))?;
    let conn = Arc::new(Mutex::new(conn));

    client.batch_execute("BEGIN").await?;
    let copied = copy_tables(path, &conn, client, &hashes).await;
    match copied {
        Ok(report) => {
            client.batch_execute("COMMIT").await?;
            Ok(report)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn copy_tables(
    path: &Path,
    conn: &Arc<Mutex<Connection>>,
    client: &Client,
    hashes: &[String],
) -> Result<CopyReport> {
    client.query_one("SELECT pos FROM journal_head WHERE id = 1 FOR UPDATE", &[]).await?;
    let mut nonempty = Vec::new();
    for (table, _) in TABLES {
        if client.query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[]).await?.is_some() {
            nonempty.push(*table);
        }
    }
    if !nonempty.is_empty() {
        return Err(Error::Conflict(format!(
            "the database already holds a journal ({} not empty); copy into an empty database",
            nonempty.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for (table, columns) in TABLES {
        rows.push((table.to_string(), copy_table(path, conn, client, table, columns).await?));
    }
    client
        .batch_execute(
            "UPDATE journal_head SET pos = (SELECT coalesce(max(pos), 0) FROM events) WHERE id = 1;
             SELECT setval(pg_get_serial_sequence('outbox', 'id'), coalesce(max(id), 0) + 1, false) FROM outbox;
             SELECT setval(pg_get_serial_sequence('checkpoints', 'id'), coalesce(max(id), 0) + 1, false) FROM checkpoints;",
        )
        .await?;
    // The copy must be the same journal: the same chains and the same tree over its events.
    let report = read::verify(client).await?;
    let copied: Vec<String> = read::event_hashes_after(client, 0).await?.into_iter().map(|(_, h)| h).collect();
    let root = merkle_root(hashes);
    if let Some(p) = &report.first_problem {
        return Err(Error::Corrupt { id: format!("copied stream `{}`", p.stream), message: p.problem.clone() });
    }
    if merkle_root(&copied) != root || copied.len() != hashes.len() {
        return Err(Error::Corrupt {
            id: "copied journal".into(),
            message: "its events differ from the SQLite journal's".into(),
        });
    }
    Ok(CopyReport { rows, events: report.events, streams: report.streams, root: hex::encode(root) })
}

/// Copies one table in chunks of rows, in SQLite's row order; the number of rows.
async fn copy_table(
    path: &Path,
    conn: &Arc<Mutex<Connection>>,
    client: &Client,
    table: &'static str,
    columns: &'static [(&'static str, Column)],
) -> Result<u64> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let types: Vec<Type> = columns
        .iter()
        .map(|(_, c)| match c {
            Column::Text | Column::NullText => Type::TEXT,
            Column::Int8 => Type::INT8,
            Column::Int4 => Type::INT4,
            Column::Bool => Type::BOOL,
        })
        .collect();
    let sink = client.copy_in(&format!("COPY {table} ({}) FROM STDIN BINARY", names.join(", "))).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    let mut writer = std::pin::pin!(writer);
    let (mut after, mut count) = (i64::MIN, 0u64);
    loop {
        let (last, chunk) = read_chunk(path, conn.clone(), table, columns, after).await?;
        if chunk.is_empty() {
            break;
        }
        for row in &chunk {
            let refs: Vec<&(dyn ToSql + Sync)> = row.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await?;
            count += 1;
        }
        after = last;
    }
    writer.finish().await?;
    Ok(count)
}

/// Up to [`CHUNK`] rows of `table` after SQLite row id `after`, and the last row id read.
async fn read_chunk(
    path: &Path,
    conn: Arc<Mutex<Connection>>,
    table: &'static str,
    columns: &'static [(&'static str, Column)],
    after: i64,
) -> Result<(i64, Vec<Vec<Param>>)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = airlock_core::sync::lock(&conn);
        let exists: bool = conn
            .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })
            .map_err(|e| sqlite_error(&path, e))?;
        if !exists {
            // A journal from before the table existed: nothing to copy.
            return Ok((after, Vec::new()));
        }
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        let sql = format!("SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2", names.join(", "));
        let mut stmt = conn.prepare(&sql).map_err(|e| sqlite_error(&path, e))?;
        let mut rows = stmt.query(rusqlite::params![after, CHUNK]).map_err(|e| sqlite_error(&path, e))?;
        let (mut last, mut out) = (after, Vec::new());
        while let Some(r) = rows.next().map_err(|e| sqlite_error(&path, e))? {
            last = r.get(0)?;
            let mut row: Vec<Param> = Vec::with_capacity(columns.len());
            for (i, (_, column)) in columns.iter().enumerate() {
                let i = i + 1;
                row.push(match column {
                    Column::Text => Box::new(r.get::<_, String>(i)?),
                    Column::NullText => Box::new(r.get::<_, Option<String>>(i)?),
                    Column::Int8 => Box::new(r.get::<_, i64>(i)?),
                    Column::Int4 => Box::new(i32::try_from(r.get::<_, i64>(i)?).unwrap_or(i32::MAX)),
                    Column::Bool => Box::new(r.get::<_, i64>(i)? != 0),
                });
            }
            out.push(row);
        }
        Ok((last, out))
    })
    .await
    .map_err(|_| Error::Closed)?
}

//! One writing process per database, until replicas coordinate: a session-level advisory lock
//! held on a connection of its own for as long as the store lives.
//!
//! The journal itself stays whole with any number of writers (commits serialise on
//! `journal_head`), but the server keeps per-session order, waiters and periodic work in the
//! process, so two servers on one database would each think they were alone. A second is
//! refused at start, as a second server on one SQLite file is. A process whose lock
//! connection is lost (a database restart) writes nothing until it holds the lock again, which
//! it retries every second; reads go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::PostgresOptions;
use crate::{Error, Result};

/// `airl` in ASCII: the first half of the lock's key; the second is the hash of the schema
/// the journal is in, so that journals in different schemas of one database have a lock each.
const REPLICA_LOCK: i32 = 0x61_69_72_6c;

/// The lock, held while this lives.
pub(super) struct ReplicaLock {
    held: Arc<AtomicBool>,
    keeper: JoinHandle<()>,
}

impl Drop for ReplicaLock {
    fn drop(&mut self) {
        // Ending the task closes its connection, which releases the lock.
        self.keeper.abort();
    }
}

type Connection = (tokio_postgres::Client, JoinHandle<()>);

async fn connect(options: &PostgresOptions) -> std::result::Result<Connection, tokio_postgres::Error> {
    let mut config = options.config().clone();
    config.connect_timeout(options.connect_timeout);
    config.application_name("airlock (replica lock)");
    // A peer that vanished without closing is noticed within a minute or so.
    config.keepalives_idle(Duration::from_secs(30));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

async fn try_lock(client: &tokio_postgres::Client) -> std::result::Result<bool, tokio_postgres::Error> {
    client.query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", &[&REPLICA_LOCK]).await?.try_get(0)
}

impl ReplicaLock {
    /// Takes the lock, or says that another process holds it. A process that has just stopped
    /// may hold it for a moment longer (until the server sees its connection close), so it is
    /// tried for up to the connect timeout.
    pub(super) async fn acquire(options: &PostgresOptions) -> Result<ReplicaLock> {
        let open = |e: tokio_postgres::Error| Error::Open { path: options.describe(), message: super::message(&e) };
        let connection = connect(options).await.map_err(open)?;
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        while !try_lock(&connection.0).await.map_err(open)? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::ReplicaRunning { database: options.describe() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let held = Arc::new(AtomicBool::new(true));
        let keeper = tokio::spawn(keep(options.clone(), connection, held.clone()));
        Ok(ReplicaLock { held, keeper })
    }

    /// Whether this process holds the lock now.
    pub(super) fn flag(&self) -> Arc<AtomicBool> {
        self.held.clone()
    }
}

/// Waits for the lock's connection to end, then takes the lock again as soon as it can.
async fn keep(options: PostgresOptions, mut connection: Connection, held: Arc<AtomicBool>) {
    loop {
        let _ = (&mut connection.1).await;
        held.store(false, Ordering::SeqCst);
        tracing::error!(
            database = %options.describe(),
            "lost the connection that holds the journal's writer lock; nothing is written until it is back"
        );
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Ok(again) = connect(&options).await else { continue };
            match try_lock(&again.0).await {
                Ok(true) => {
                    connection = again;
                    held.store(true, Ordering::SeqCst);
                    tracing::info!(database = %options.describe(), "the journal's writer lock is held again");
                    break;
                }
                Ok(false) => tracing::error!(
                    database = %options.describe(),
                    "another airlock process took the journal's writer lock; this one writes nothing"
                ),
                Err(_) => {}
            }
        }
    }
}

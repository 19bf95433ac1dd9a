//! Which replica does the periodic work (expiry sweeps, webhook deliveries, checkpoints): the
//! one holding a session-level advisory lock on a connection of its own.
//!
//! Every replica tries to take the lock once a second. The one that has it keeps it for as long
//! as its connection lives; when that process dies (or loses the database), PostgreSQL closes
//! its session and releases the lock, and the next replica to try takes it. A replica whose
//! lock connection ends stops being the leader at once, before it knows whether another took
//! over.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::PostgresOptions;

/// `airl` in ASCII: the first half of the lock's key; the second is the hash of the schema
/// the journal is in, so that journals in different schemas of one database have a lock each.
const LEADER_LOCK: i32 = 0x61_69_72_6c;

/// How often a replica that is not the leader tries to become it.
const RETRY: Duration = Duration::from_secs(1);

/// The leader election of this process, running while this lives.
pub(super) struct Leadership {
    leader: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Ending the task closes its connection, which releases the lock.
        self.keeper.abort();
    }
}

type Connection = (tokio_postgres::Client, JoinHandle<()>);

pub(super) async fn connect(
    options: &PostgresOptions,
    name: &str,
) -> std::result::Result<Connection, tokio_postgres::Error> {
    let mut config = options.config().clone();
    config.connect_timeout(options.connect_timeout);
    config.application_name(name);
    // A peer that vanished without closing is noticed within a minute or so.
    config.keepalives_idle(Duration::from_secs(30));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

async fn try_lock(client: &tokio_postgres::Client) -> std::result::Result<bool, tokio_postgres::Error> {
    client.query_one("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", &[&LEADER_LOCK]).await?.try_get(0)
}

impl Leadership {
    /// Starts trying to become the leader.
    pub(super) fn start(options: &PostgresOptions) -> Leadership {
        let (tell, leader) = watch::channel(false);
        let keeper = tokio::spawn(keep(options.clone(), tell));
        Leadership { leader, keeper }
    }

    /// Whether this process is the leader, now and as it changes.
    pub(super) fn watch(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }
}

/// Takes the lock as soon as it can, holds it while its connection lives, and starts over when
/// that connection ends.
async fn keep(options: PostgresOptions, tell: watch::Sender<bool>) {
    loop {
        let Ok(mut connection) = connect(&options, "airlock (leader election)").await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let held = loop {
            match try_lock(&connection.0).await {
                Ok(true) => break true,
                Ok(false) => tokio::time::sleep(RETRY).await,
                // The connection failed: connect again.
                Err(_) => break false,
            }
        };
        if !held {
            drop(connection);
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tell.send_replace(true);
        tracing::info!(database = %options.describe(), "this replica is now the leader: it runs the periodic work");
        let _ = (&mut connection.1).await;
        tell.send_replace(false);
        tracing::error!(
            database = %options.describe(),
            "lost the connection that holds the leader lock; another replica takes over the periodic work"
        );
        tokio::time::sleep(RETRY).await;
    }
}

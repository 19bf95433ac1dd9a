//! What other replicas changed: `LISTEN` on a connection of its own.
//!
//! Every transaction of the writer ends with `pg_notify('airlock_…', …)` for what it changed (an
//! action, the approvals, the kill switches, the policy, the outbox), delivered by PostgreSQL to
//! every listening replica when, and only if, the transaction commits. A notification is a
//! wake-up hint, never the state itself: whoever is woken reads the state from the tables.
//! Notifications sent while the connection was down are lost, so after every (re)connection
//! the listener sends [`Change::Resync`]: read everything again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::PostgresOptions;
use crate::Change;

/// The channel every replica of a journal listens on: `airlock_` and the hash of the schema the
/// journal is in, so that journals in different schemas of one database do not hear each other.
pub(super) const CHANNEL: &str = "'airlock_' || (hashtext(current_schema()) & 2147483647)::text";

/// The listener, running while this lives.
pub(super) struct Listener {
    changes: broadcast::Sender<Change>,
    live: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Starts listening, and waits (up to the connect timeout) until it does.
    pub(super) async fn start(options: &PostgresOptions) -> Listener {
        let (changes, _) = broadcast::channel(4096);
        let live = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(listen(options.clone(), changes.clone(), live.clone()));
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        while !live.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Listener { changes, live, task }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Whether the listening connection is up (no notification can have been missed since the
    /// last [`Change::Resync`]).
    pub(super) fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

/// The topic of a notification, as the writer sends it.
pub(super) fn parse(payload: &str) -> Option<Change> {
    Some(match payload {
        "k" => Change::KillSwitches,
        "p" => Change::Policy,
        "c" => Change::Candidate,
        "ap" => Change::Approvals,
        "o" => Change::Outbox,
        other => Change::Action(other.strip_prefix("a:")?.to_string()),
    })
}

/// What the writer sends for `change`.
pub(super) fn topic(change: &Change) -> String {
    match change {
        Change::KillSwitches => "k".into(),
        Change::Policy => "p".into(),
        Change::Candidate => "c".into(),
        Change::Approvals => "ap".into(),
        Change::Outbox => "o".into(),
        Change::Action(id) => format!("a:{id}"),
        Change::Resync => "r".into(),
    }
}

async fn listen(options: PostgresOptions, changes: broadcast::Sender<Change>, live: Arc<AtomicBool>) {
    let mut lost = false;
    loop {
        let mut config = options.config().clone();
        config.connect_timeout(options.connect_timeout);
        config.application_name("airlock (listener)");
        config.keepalives_idle(Duration::from_secs(30));
        let (client, mut connection) = match config.connect(tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The connection's messages (notifications among them) are read here, which also
        // drives the client's queries.
        let (forward, mut messages) = futures::channel::mpsc::unbounded();
        let driver = tokio::spawn(async move {
            let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = stream.next().await {
                match message {
                    Ok(m) => {
                        if forward.unbounded_send(m).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let listening = async {
            let channel: String = client.query_one(&format!("SELECT {CHANNEL}"), &[]).await?.try_get(0)?;
            client.batch_execute(&format!("LISTEN {channel}")).await
        };
        if listening.await.is_err() {
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        live.store(true, Ordering::SeqCst);
        if lost {
            tracing::info!(database = %options.describe(), "listening for other replicas' changes again");
        }
        // Whatever was sent while nobody listened is read again from the tables.
        let _ = changes.send(Change::Resync);
        while let Some(message) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message
                && let Some(change) = parse(n.payload())
            {
                let _ = changes.send(change);
            }
        }
        live.store(false, Ordering::SeqCst);
        lost = true;
        drop(client);
        driver.abort();
        tracing::error!(
            database = %options.describe(),
            "lost the connection that listens for other replicas' changes; reconnecting"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

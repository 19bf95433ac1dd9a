//! Locks shared by every replica: session-level advisory locks, each on a pooled connection
//! held for as long as the lock is.
//!
//! A replica decides an action of a session (or a vote, a result, a cancellation) under that
//! session's lock, checks a human's TOTP code under the human's, and checks and spends an
//! agent's daily budget under the agent's, so that what
//! it read before deciding cannot change until its commit has landed. A process that dies holds
//! nothing: PostgreSQL releases the locks of a session whose connection closed.

use deadpool_postgres::{Object, Pool};

use crate::{Error, Held, LockScope, Result};

/// `airs` and `aira` in ASCII: the first half of the lock keys of sessions and of agents'
/// budgets (the leader lock uses `airl`); the second half is the hash of the id.
const SESSION: i32 = 0x61_69_72_73;
const AGENT_BUDGET: i32 = 0x61_69_72_61;
/// `airh`: a human's TOTP codes.
const HUMAN: i32 = 0x61_69_72_68;
/// `airr`: a replica, held by itself while it runs.
const REPLICA: i32 = 0x61_69_72_72;
/// `airp`: a plan's hand-offs.
const PLAN: i32 = 0x61_69_72_70;

fn key(scope: LockScope<'_>) -> (i32, &str) {
    match scope {
        LockScope::Session(id) => (SESSION, id),
        LockScope::AgentBudget(id) => (AGENT_BUDGET, id),
        LockScope::Human(id) => (HUMAN, id),
        LockScope::Replica(id) => (REPLICA, id),
        LockScope::Plan(id) => (PLAN, id),
    }
}

/// A held lock: released (and its connection returned to the pool) when dropped.
struct Lock {
    client: Option<Object>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        match tokio::runtime::Handle::try_current() {
            // The unlock waits behind the lock request on the same connection, if that one is
            // still waiting (the caller gave up): either way the connection holds nothing when
            // it goes back to the pool, or it is closed, which releases everything it held.
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.simple_query("SELECT pg_advisory_unlock_all()").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

/// Takes the lock of `scope`, waiting for the replica (or task) that holds it.
pub(super) async fn take(pool: &Pool, scope: LockScope<'_>) -> Result<Held> {
    let (space, id) = key(scope);
    let client = pool
        .get()
        .await
        .map_err(|e| Error::Unavailable(format!("no connection to the database: {}", super::pool_message(&e))))?;
    // Held from here on, so that a caller that gives up while waiting still releases it.
    let lock = Lock { client: Some(client) };
    if let Some(client) = &lock.client {
        client
            .execute("SELECT pg_advisory_lock($1, hashtext($2))", &[&space, &id])
            .await
            .map_err(|e| Error::Unavailable(format!("cannot take the lock of `{id}`: {}", super::message(&e))))?;
    }
    Ok(Box::new(lock))
}

/// Takes the lock of `scope` if no one holds it; `None` when someone does.
pub(super) async fn try_take(pool: &Pool, scope: LockScope<'_>) -> Result<Option<Held>> {
    let (space, id) = key(scope);
    let client = pool
        .get()
        .await
        .map_err(|e| Error::Unavailable(format!("no connection to the database: {}", super::pool_message(&e))))?;
    let lock = Lock { client: Some(client) };
    let Some(client) = &lock.client else { return Ok(None) };
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&space, &id])
        .await
        .map_err(|e| Error::Unavailable(format!("cannot try the lock of `{id}`: {}", super::message(&e))))?;
    let taken: bool = row.get(0);
    // Not taken: dropping `lock` unlocks nothing that matters and returns the connection.
    Ok(taken.then(|| Box::new(lock) as Held))
}

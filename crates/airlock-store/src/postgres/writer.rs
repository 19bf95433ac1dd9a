//! The writer task: takes every commit waiting (up to a batch limit) and makes them durable in
//! one transaction, each inside its own savepoint, so that one refused commit (a reused
//! idempotency key) leaves the others of its batch alone.
//!
//! A transaction first locks the one row of `journal_head`, which holds the last position
//! given out: this is what serialises commits across replicas into one journal order. It then
//! reads the chain heads of the streams the batch extends from `events` (another replica may
//! have moved them since), and sends each commit's statements pipelined, in one round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deadpool_postgres::{ClientWrapper as Client, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use crate::chain::{EventRecord, Heads};
use crate::encoding::{Prepared, fmt_time, projection_json, status_name};
use crate::{Commit, DeliveryUpdate, Error, Projection, Result, WriterStats};

/// One commit on its way to the writer.
pub(super) struct Job {
    commit: Commit,
    prepared: Prepared,
    reply: oneshot::Sender<Result<()>>,
}

impl PostgresStore {
    /// Hands a commit to the writer and waits until it is durable (or refused).
    pub(super) async fn submit(&self, commit: Commit, prepared: Prepared) -> Result<()> {
        let (reply, receive) = oneshot::channel();
        self.sender.send(Job { commit, prepared, reply }).map_err(|_| Error::Closed)?;
        receive.await.map_err(|_| Error::Closed)?
    }
}

pub(super) struct Writer {
    pool: Pool,
    max_batch: usize,
    stats: Arc<Mutex<WriterStats>>,
}

/// A parameter of a statement, owned until the statement has run.
type Param = Box<dyn ToSql + Sync + Send>;

/// The statements of one commit, in order.
#[derive(Default)]
struct Statements(Vec<(&'static str, Vec<Param>)>);

impl Statements {
    fn push(&mut self, sql: &'static str, params: Vec<Param>) {
        self.0.push((sql, params));
    }
}

/// Boxes statement parameters.
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$(Box::new($p) as Param),*] };
}

fn map_unique(e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        Error::Conflict(format!("idempotency key already used: {}", super::message(&e)))
    } else {
        Error::Postgres(e)
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

impl Writer {
    /// Starts the writer task; it ends when every sender of the returned channel is gone.
    pub(super) fn start(pool: Pool, max_batch: usize, stats: Arc<Mutex<WriterStats>>) -> mpsc::UnboundedSender<Job> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer { pool, max_batch: max_batch.max(1), stats };
        tokio::spawn(writer.run(receiver));
        sender
    }

    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.write_batch(batch).await;
        }
    }

    async fn write_batch(&self, batch: Vec<Job>) {
        let started = Instant::now();
        match self.transaction(&batch).await {
            Ok(outcomes) => {
                {
                    let mut stats = airlock_core::sync::lock(&self.stats);
                    stats.batches += 1;
                    stats.commits += batch.len() as u64;
                }
                metrics::histogram!(crate::metrics_names::BATCH_SIZE).record(batch.len() as f64);
                metrics::histogram!(crate::metrics_names::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "journal commit failed");
                for job in batch {
                    let _ = job.reply.send(Err(Error::Unavailable(msg.clone())));
                }
            }
        }
    }

    /// Writes the batch in one transaction; the outcome of each commit, or why the whole batch
    /// failed (nothing of it was written then).
    async fn transaction(&self, batch: &[Job]) -> Result<Vec<Result<()>>> {
        let client =
            self.pool.get().await.map_err(|e| unavailable("no connection to the database", super::pool_message(&e)))?;
        client
            .batch_execute("BEGIN; SET LOCAL synchronous_commit TO on")
            .await
            .map_err(|e| unavailable("cannot begin a transaction", super::message(&e)))?;
        let result = self.in_transaction(&client, batch).await;
        // Committed when any commit of the batch landed; rolled back otherwise, and whatever
        // state the connection is in, it holds no open transaction afterwards (or is closed and
        // will not be handed out again).
        let landed = result.as_ref().is_ok_and(|outcomes| outcomes.iter().any(Result::is_ok));
        if landed {
            if let Err(e) = client.batch_execute("COMMIT").await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(unavailable("journal commit failed", super::message(&e)));
            }
        } else {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }

    async fn in_transaction(&self, client: &Client, batch: &[Job]) -> Result<Vec<Result<()>>> {
        let head = client.query_one("SELECT pos FROM journal_head WHERE id = 1 FOR UPDATE", &[]).await?;
        let start: i64 = head.try_get(0)?;
        let mut pos = start;
        let mut heads = load_heads(client, batch).await?;
        // Only when a batch holds several commits does each need a savepoint of its own; alone,
        // its failure is the transaction's, which is then rolled back.
        let savepoints = batch.len() > 1;
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            let mut moved: Vec<(String, Option<(u64, String)>)> = Vec::new();
            let before = pos;
            let statements = statements(&job.commit, &job.prepared, &mut heads, &mut moved, &mut pos)?;
            match run(client, statements, savepoints).await {
                Ok(()) => outcomes.push(Ok(())),
                Err(e) if !savepoints => return Ok(vec![Err(e)]),
                Err(e) if client.is_closed() => return Err(e),
                Err(e) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job").await?;
                    pos = before;
                    for (stream, old) in moved.into_iter().rev() {
                        match old {
                            Some(h) => heads.insert(stream, h),
                            None => heads.remove(&stream),
                        };
                    }
                    outcomes.push(Err(e));
                }
            }
        }
        if pos != start {
            client.execute("UPDATE journal_head SET pos = $1 WHERE id = 1", &[&pos]).await?;
        }
        // The other replicas hear of what landed when (and only if) this transaction commits.
        let mut topics: Vec<String> = Vec::new();
        for (job, outcome) in batch.iter().zip(&outcomes) {
            if outcome.is_ok() {
                for change in crate::Change::of(&job.commit) {
                    let topic = super::listen::topic(&change);
                    if !topics.contains(&topic) {
                        topics.push(topic);
                    }
                }
            }
        }
        if !topics.is_empty() {
            let notify = format!("SELECT pg_notify({}, t) FROM unnest($1::text[]) AS t", super::listen::CHANNEL);
            let statement = client.prepare_cached(&notify).await?;
            client.execute(&statement, &[&topics]).await?;
        }
        Ok(outcomes)
    }
}

/// Runs `statements` (inside a savepoint when asked) pipelined, in one round trip, and returns
/// the first error.
async fn run(client: &Client, statements: Statements, savepoint: bool) -> Result<()> {
    // Prepared first (from the connection's cache after the first time), so that everything
    // below goes out in order without waiting for an answer in between.
    let mut prepared = Vec::with_capacity(statements.0.len());
    for (sql, params) in statements.0 {
        prepared.push((client.prepare_cached(sql).await?, params));
    }
    let executes = prepared.iter().map(|(stmt, params)| {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        async move { client.execute(stmt, &params).await.map(|_| ()) }
    });
    let around = |sql: &'static str| async move { if savepoint { client.batch_execute(sql).await } else { Ok(()) } };
    // Futures send their request when first polled, and `join!` polls them in order.
    let (begin, executed, end) =
        futures::join!(around("SAVEPOINT job"), futures::future::join_all(executes), around("RELEASE SAVEPOINT job"));
    begin?;
    for result in executed {
        result.map_err(map_unique)?;
    }
    end?;
    Ok(())
}

/// Where the chains of the streams `batch` extends end, read inside the transaction.
async fn load_heads(client: &Client, batch: &[Job]) -> Result<Heads> {
    let mut streams: Vec<&str> = batch.iter().flat_map(|j| j.commit.events.iter().map(|e| e.stream.as_str())).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut heads = HashMap::new();
    if streams.is_empty() {
        return Ok(heads);
    }
    let stmt = client
        .prepare_cached(
            "SELECT s.stream, e.seq, e.hash FROM unnest($1::text[]) AS s(stream)
             CROSS JOIN LATERAL (SELECT seq, hash FROM events WHERE events.stream = s.stream
                                 ORDER BY seq DESC LIMIT 1) e",
        )
        .await?;
    for row in client.query(&stmt, &[&streams]).await? {
        let seq = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or_default();
        heads.insert(row.try_get(0)?, (seq, row.try_get(2)?));
    }
    Ok(heads)
}

/// The statements that write `commit`, its events chained to `heads` at positions after
/// `pos`; `heads` and `pos` move on, and `moved` records the heads as they were.
fn statements(
    commit: &Commit,
    prepared: &Prepared,
    heads: &mut Heads,
    moved: &mut Vec<(String, Option<(u64, String)>)>,
    pos: &mut i64,
) -> Result<Statements> {
    let mut out = Statements::default();
    for (i, event) in commit.events.iter().enumerate() {
        let payload = match prepared.payloads.get(i) {
            Some(p) => p.clone(),
            None => airlock_core::canonical_json(&event.payload),
        };
        *pos += 1;
        let e = EventRecord::chained(heads.get(&event.stream), event, payload, *pos);
        let old = heads.insert(e.stream.clone(), (e.seq, e.hash.clone()));
        moved.push((e.stream.clone(), old));
        let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
        out.push(
            "INSERT INTO events (pos, stream, seq, kind, at, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params![e.pos, e.stream, seq, e.kind, e.at, e.payload, e.prev_hash, e.hash],
        );
    }
    if let Some((size, note, at)) = &commit.checkpoint {
        let size = i64::try_from(*size).unwrap_or(i64::MAX);
        out.push(
            "INSERT INTO checkpoints (size, note, created_at) VALUES ($1, $2, $3)",
            params![size, note.clone(), fmt_time(at)],
        );
    }
    for n in &commit.outbox {
        out.push(
            "INSERT INTO outbox (endpoint, event, body, created_at, next_at) VALUES ($1, $2, $3, $4, $4)",
            params![
                n.endpoint.clone(),
                n.event.clone(),
                serde_json::to_string(&n.body).unwrap_or_default(),
                fmt_time(&n.at)
            ],
        );
    }
    for d in &commit.deliveries {
        match d {
            DeliveryUpdate::Delivered { id, at } => out.push(
                "UPDATE outbox SET delivered_at = $2, next_at = NULL, attempts = attempts + 1, last_error = NULL
                 WHERE id = $1",
                params![*id, fmt_time(at)],
            ),
            DeliveryUpdate::Failed { id, error, next_at } => out.push(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_at = $3 WHERE id = $1",
                params![*id, error.clone(), next_at.as_ref().map(fmt_time)],
            ),
            DeliveryUpdate::RetryAll { at } => out.push(
                "UPDATE outbox SET next_at = $1 WHERE delivered_at IS NULL AND next_at IS NOT NULL AND next_at > $1",
                params![fmt_time(at)],
            ),
        }
    }
    for (i, projection) in commit.projections.iter().enumerate() {
        let doc = match prepared.documents.get(i) {
            Some(d) => d.clone(),
            None => projection_json(projection)?,
        };
        project(&mut out, projection, doc);
    }
    Ok(out)
}

/// The upsert of one projection row, its JSON document `doc`.
fn project(out: &mut Statements, projection: &Projection, doc: String) {
    match projection {
        Projection::Session(s) => out.push(
            "INSERT INTO sessions (id, agent_id, status, created_at, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
            params![s.id.clone(), s.agent_id.clone(), status_name(&s.status), fmt_time(&s.created_at), doc],
        ),
        Projection::Action(a) => out.push(
            "INSERT INTO actions (id, session_id, seq, agent_id, status, digest, idempotency_key, created_at, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
            params![
                a.id.clone(),
                a.session_id.clone(),
                i64::try_from(a.seq).unwrap_or(i64::MAX),
                a.agent_id.clone(),
                a.status.as_str(),
                a.digest.clone(),
                a.idempotency_key.clone(),
                fmt_time(&a.created_at),
                doc
            ],
        ),
        Projection::Approval(p) => out.push(
            "INSERT INTO approvals (id, action_id, session_id, status, expires_at, created_at, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at,
                                            body = excluded.body",
            params![
                p.id.clone(),
                p.action_id.clone(),
                p.session_id.clone(),
                p.status.as_str(),
                fmt_time(&p.expires_at),
                fmt_time(&p.created_at),
                doc
            ],
        ),
        Projection::PolicyRevision(r) => out.push(
            "INSERT INTO policy_revisions (revision, activated_at, body) VALUES ($1, $2, $3)
             ON CONFLICT (revision) DO UPDATE SET activated_at = excluded.activated_at, body = excluded.body",
            params![r.revision.clone(), fmt_time(&r.activated_at), doc],
        ),
        Projection::IdempotencyKey { agent_id, key, action_id } => out.push(
            "INSERT INTO idempotency_keys (agent_id, key, action_id) VALUES ($1, $2, $3)",
            params![agent_id.clone(), key.clone(), action_id.clone()],
        ),
        Projection::Breaker(b) => out.push(
            "INSERT INTO breakers (tool, body) VALUES ($1, $2) ON CONFLICT (tool) DO UPDATE SET body = excluded.body",
            params![b.tool.clone(), doc],
        ),
        Projection::MfaGuard(g) => out.push(
            "INSERT INTO mfa_guards (human, body) VALUES ($1, $2) ON CONFLICT (human) DO UPDATE SET body = excluded.body",
            params![g.human.clone(), doc],
        ),
        Projection::KillSwitch(k) => out.push(
            "INSERT INTO kill_switches (id, active, engaged_at, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET active = excluded.active, body = excluded.body",
            params![k.id.clone(), k.is_active(), fmt_time(&k.engaged_at), doc],
        ),
    }
}

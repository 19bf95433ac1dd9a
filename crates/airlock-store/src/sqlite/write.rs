//! How one commit becomes rows: its events, chained to the head of their stream, and its
//! projections, outbox entries, delivery updates and checkpoint note.

use rusqlite::{Connection, params};

use super::writer::HeadsUndo;
use crate::chain::{EventRecord, Heads};
use crate::encoding::{Prepared, fmt_time, projection_json, status_name};
use crate::{Commit, DeliveryUpdate, Error, Projection, Result};

fn map_unique(e: rusqlite::Error, what: &str) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::Conflict(format!("{what}: {e}"))
        }
        _ => Error::Database(e),
    }
}

/// Writes `commit` on `conn` (inside the caller's savepoint), moving the chain heads it extends
/// and recording in `undo` what they were.
pub(super) fn apply(
    conn: &Connection,
    heads: &mut Heads,
    undo: &mut HeadsUndo,
    commit: &Commit,
    prepared: &Prepared,
) -> Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (stream, seq, kind, at, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (i, event) in commit.events.iter().enumerate() {
        let payload = match prepared.payloads.get(i) {
            Some(p) => p.clone(),
            None => airlock_core::canonical_json(&event.payload),
        };
        // The position is SQLite's row id, assigned by the insert.
        let e = EventRecord::chained(heads.get(&event.stream), event, payload, 0);
        insert
            .execute(params![e.stream, e.seq as i64, e.kind, e.at, e.payload, e.prev_hash, e.hash])
            .map_err(|err| map_unique(err, "event"))?;
        let old = heads.insert(e.stream.clone(), (e.seq, e.hash));
        undo.push((e.stream, old));
    }
    if let Some((size, note, at)) = &commit.checkpoint {
        conn.prepare_cached("INSERT INTO checkpoints (size, note, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![*size as i64, note, fmt_time(at)])?;
    }
    for n in &commit.outbox {
        conn.prepare_cached(
            "INSERT INTO outbox (endpoint, event, body, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![
            n.endpoint,
            n.event,
            serde_json::to_string(&n.body).unwrap_or_default(),
            fmt_time(&n.at)
        ])?;
    }
    for d in &commit.deliveries {
        match d {
            DeliveryUpdate::Delivered { id, at } => {
                conn.prepare_cached(
                    "UPDATE outbox SET delivered_at = ?2, next_at = NULL, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                )?
                .execute(params![id, fmt_time(at)])?;
            }
            DeliveryUpdate::Failed { id, error, next_at } => {
                conn.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id, error, next_at.as_ref().map(fmt_time)])?;
            }
            DeliveryUpdate::RetryAll { at } => {
                conn.prepare_cached(
                    "UPDATE outbox SET next_at = ?1 WHERE delivered_at IS NULL AND next_at IS NOT NULL AND next_at > ?1",
                )?
                .execute(params![fmt_time(at)])?;
            }
        }
    }
    for (i, projection) in commit.projections.iter().enumerate() {
        // Serialised by the caller (`Prepared`), so the single writer does not do it again.
        let fallback;
        let doc: &str = match prepared.documents.get(i) {
            Some(d) => d,
            None => {
                fallback = projection_json(projection)?;
                &fallback
            }
        };
        match projection {
            Projection::Session(s) => {
                conn.prepare_cached(
                    "INSERT INTO sessions (id, agent_id, status, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                )?
                .execute(params![
                    s.id,
                    s.agent_id,
                    status_name(&s.status),
                    fmt_time(&s.created_at),
                    doc
                ])?;
            }
            Projection::Action(a) => {
                conn.prepare_cached(
                    "INSERT INTO actions (id, session_id, seq, agent_id, status, digest, idempotency_key, created_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, body = excluded.body",
                )?
                .execute(params![
                    a.id,
                    a.session_id,
                    a.seq as i64,
                    a.agent_id,
                    a.status.as_str(),
                    a.digest,
                    a.idempotency_key,
                    fmt_time(&a.created_at),
                    doc
                ])
                .map_err(|e| map_unique(e, "idempotency key already used"))?;
            }
            Projection::Approval(p) => {
                conn.prepare_cached(
                    "INSERT INTO approvals (id, action_id, session_id, status, expires_at, created_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at, body = excluded.body",
                )?
                .execute(params![
                    p.id,
                    p.action_id,
                    p.session_id,
                    p.status.as_str(),
                    fmt_time(&p.expires_at),
                    fmt_time(&p.created_at),
                    doc
                ])?;
            }
            Projection::PolicyRevision(r) => {
                conn.prepare_cached(
                    "INSERT INTO policy_revisions (revision, activated_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (revision) DO UPDATE SET activated_at = excluded.activated_at, body = excluded.body",
                )?
                .execute(params![r.revision, fmt_time(&r.activated_at), doc])?;
            }
            Projection::IdempotencyKey { agent_id, key, action_id } => {
                conn.prepare_cached("INSERT INTO idempotency_keys (agent_id, key, action_id) VALUES (?1, ?2, ?3)")?
                    .execute(params![agent_id, key, action_id])
                    .map_err(|e| map_unique(e, "idempotency key already used"))?;
            }
            Projection::Breaker(b) => {
                conn.prepare_cached(
                    "INSERT INTO breakers (tool, body) VALUES (?1, ?2) ON CONFLICT (tool) DO UPDATE SET body = excluded.body",
                )?
                .execute(params![b.tool, doc])?;
            }
            Projection::MfaGuard(g) => {
                conn.prepare_cached(
                    "INSERT INTO mfa_guards (human, body) VALUES (?1, ?2) ON CONFLICT (human) DO UPDATE SET body = excluded.body",
                )?
                .execute(params![g.human, doc])?;
            }
            Projection::KillSwitch(k) => {
                conn.prepare_cached(
                    "INSERT INTO kill_switches (id, active, engaged_at, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET active = excluded.active, body = excluded.body",
                )?
                .execute(params![k.id, k.is_active(), fmt_time(&k.engaged_at), doc])?;
            }
        }
    }
    Ok(())
}

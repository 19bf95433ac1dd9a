//! The queries behind the [`Store`](crate::Store) trait, each on a reader connection.

use airlock_core::limits::Breaker;
use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;

use crate::chain::{ChainWalk, EventRecord, VerifyReport};
use crate::encoding::{fmt_time, parse, status_name};
use crate::{Error, Notification, PolicyRecord, Result, SessionFilter, StoredEvent, list_limit, spend};

pub(super) fn session(c: &Connection, id: &str) -> Result<Option<Session>> {
    query_doc(c, "SELECT id, body FROM sessions WHERE id = ?1", &[&id])
}

pub(super) fn sessions(c: &Connection, filter: &SessionFilter) -> Result<Vec<Session>> {
    let limit = list_limit(filter.limit) as i64;
    let agent = filter.agent_id.clone();
    let status = filter.status.as_ref().map(status_name);
    query_docs(
        c,
        "SELECT id, body FROM sessions
         WHERE (?1 IS NULL OR agent_id = ?1) AND (?2 IS NULL OR status = ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3",
        &[&agent, &status, &limit],
    )
}

pub(super) fn action(c: &Connection, id: &str) -> Result<Option<Action>> {
    query_doc(c, "SELECT id, body FROM actions WHERE id = ?1", &[&id])
}

pub(super) fn session_actions(c: &Connection, session_id: &str) -> Result<Vec<Action>> {
    query_docs(c, "SELECT id, body FROM actions WHERE session_id = ?1 ORDER BY seq", &[&session_id])
}

pub(super) fn waiting_actions(c: &Connection, session_id: &str) -> Result<Vec<Action>> {
    // Which statuses are waiting is the domain's rule; the query only binds them.
    let waiting = ActionStatus::WAITING.map(ActionStatus::as_str);
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&session_id];
    args.extend(waiting.iter().map(|s| s as &dyn rusqlite::ToSql));
    let sql = format!(
        "SELECT id, body FROM actions WHERE session_id = ?1 AND status IN ({}) ORDER BY seq",
        placeholders(2, waiting.len())
    );
    query_docs(c, &sql, &args)
}

pub(super) fn actions_in_status(c: &Connection, status: ActionStatus) -> Result<Vec<Action>> {
    query_docs(c, "SELECT id, body FROM actions WHERE status = ?1 ORDER BY created_at, id", &[&status.as_str()])
}

pub(super) fn action_by_idempotency_key(c: &Connection, agent: &str, key: &str) -> Result<Option<Action>> {
    // The key of the call that opened the action, or of a call that joined it.
    query_doc(
        c,
        "SELECT id, body FROM actions WHERE agent_id = ?1 AND idempotency_key = ?2
         UNION ALL
         SELECT a.id, a.body FROM idempotency_keys k JOIN actions a ON a.id = k.action_id
         WHERE k.agent_id = ?1 AND k.key = ?2
         LIMIT 1",
        &[&agent, &key],
    )
}

pub(super) fn approval(c: &Connection, id: &str) -> Result<Option<Approval>> {
    query_doc(c, "SELECT id, body FROM approvals WHERE id = ?1", &[&id])
}

pub(super) fn approvals(c: &Connection, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
    let status = status.map(|s| s.as_str().to_string());
    let limit = list_limit(limit) as i64;
    query_docs(
        c,
        "SELECT id, body FROM approvals WHERE (?1 IS NULL OR status = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2",
        &[&status, &limit],
    )
}

pub(super) fn approvals_due(c: &Connection, now: &DateTime<Utc>) -> Result<Vec<Approval>> {
    query_docs(
        c,
        "SELECT id, body FROM approvals WHERE status = ?1 AND expires_at <= ?2 ORDER BY expires_at",
        &[&ApprovalStatus::Pending.as_str(), &fmt_time(now)],
    )
}

pub(super) fn kill_switches(c: &Connection, active_only: bool) -> Result<Vec<KillSwitch>> {
    query_docs(
        c,
        "SELECT id, body FROM kill_switches WHERE (?1 = 0 OR active = 1) ORDER BY engaged_at DESC, id DESC",
        &[&active_only],
    )
}

/// Columns of an event, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str = "pos, stream, seq, kind, at, payload, prev_hash, hash";

/// An event read with [`EVENT_COLUMNS`].
fn event_from_row(r: &rusqlite::Row<'_>) -> Result<EventRecord> {
    Ok(EventRecord {
        pos: r.get(0)?,
        stream: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        kind: r.get(3)?,
        at: r.get(4)?,
        payload: r.get(5)?,
        prev_hash: r.get(6)?,
        hash: r.get(7)?,
    })
}

pub(super) fn events(c: &Connection, stream: &str) -> Result<Vec<StoredEvent>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 ORDER BY seq"))?;
    let mut rows = stmt.query([stream])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(event_from_row(row)?.to_stored()?);
    }
    Ok(out)
}

/// Events from `since` on, in journal order.
pub(super) fn events_since(c: &Connection, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
    let mut stmt = c.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE at >= ?1 ORDER BY pos"))?;
    let mut rows = stmt.query([fmt_time(since)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(event_from_row(row)?.to_stored()?);
    }
    Ok(out)
}

/// Event hashes in journal order, the first `limit` of them when given.
pub(super) fn event_hashes(conn: &Connection, limit: Option<u64>) -> Result<Vec<String>> {
    let limit = limit.map(|l| l as i64).unwrap_or(-1);
    let mut stmt = conn.prepare_cached("SELECT hash FROM events ORDER BY pos LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| r.get::<_, String>(0))?;
    rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
}

/// `(pos, hash)` of every event after position `after`, in journal order.
pub(super) fn event_hashes_after(conn: &Connection, after: i64) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached("SELECT pos, hash FROM events WHERE pos > ?1 ORDER BY pos")?;
    let rows = stmt.query_map([after], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
}

/// Walks every hash chain, stream by stream.
pub(super) fn verify(conn: &Connection) -> Result<VerifyReport> {
    let mut stmt = conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY stream, seq"))?;
    let mut rows = stmt.query([])?;
    let mut walk = ChainWalk::new();
    while let Some(row) = rows.next()? {
        if !walk.check(&event_from_row(row)?) {
            break;
        }
    }
    Ok(walk.report())
}

pub(super) fn policy_history(c: &Connection, limit: usize) -> Result<Vec<PolicyRecord>> {
    let limit = limit.max(1) as i64;
    query_docs(c, "SELECT revision, body FROM policy_revisions ORDER BY activated_at DESC LIMIT ?1", &[&limit])
}

pub(super) fn mfa_guards(c: &Connection) -> Result<Vec<airlock_core::vote::MfaGuard>> {
    query_docs(c, "SELECT human, body FROM mfa_guards ORDER BY human", &[])
}

pub(super) fn breakers(c: &Connection) -> Result<Vec<Breaker>> {
    query_docs(c, "SELECT tool, body FROM breakers ORDER BY tool", &[])
}

pub(super) fn agent_actions_since(c: &Connection, agent: &str, since: &DateTime<Utc>) -> Result<u32> {
    let n: i64 = c
        .prepare_cached("SELECT COUNT(*) FROM actions WHERE agent_id = ?1 AND created_at >= ?2")?
        .query_row(params![agent, fmt_time(since)], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn reserved_since(c: &Connection, agent: &str, session: Option<&str>, since: &DateTime<Utc>) -> Result<f64> {
    let held = ActionStatus::PendingApproval.as_str();
    let since = fmt_time(since);
    let sql = "SELECT json_extract(body, '$.decision.cost_usd') FROM actions
               WHERE agent_id = ?1 AND created_at >= ?2 AND status = ?3 AND (?4 IS NULL OR session_id = ?4)";
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(params![agent, since, held, session])?;
    let mut total = 0.0;
    while let Some(row) = rows.next()? {
        total += airlock_core::pipeline::counted_price(row.get(0)?);
    }
    Ok(total)
}

pub(super) fn agent_spend_since(c: &Connection, agent: &str, since: &DateTime<Utc>) -> Result<f64> {
    // The store only selects the actions and reads their two costs; how they add up is
    // `spend::action_cost`, shared with every backend.
    let counted = spend::COUNTED.map(ActionStatus::as_str);
    let since = fmt_time(since);
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&agent, &since];
    args.extend(counted.iter().map(|s| s as &dyn rusqlite::ToSql));
    let sql = format!(
        "SELECT json_extract(body, '$.decision.cost_usd'), json_extract(body, '$.result.cost_usd') FROM actions
         WHERE agent_id = ?1 AND created_at >= ?2 AND status IN ({})",
        placeholders(3, counted.len())
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(args.as_slice())?;
    let mut total = 0.0;
    while let Some(row) = rows.next()? {
        total += spend::action_cost(row.get(0)?, row.get(1)?);
    }
    Ok(total)
}

pub(super) fn notifications_due(c: &Connection, now: &DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
    let limit = limit.max(1) as i64;
    let mut stmt = c.prepare_cached(
        "SELECT id, endpoint, event, body, attempts, last_error FROM outbox
         WHERE delivered_at IS NULL AND next_at IS NOT NULL AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![fmt_time(now), limit], |r| {
        Ok(Notification {
            id: r.get(0)?,
            endpoint: r.get(1)?,
            event: r.get(2)?,
            body: r.get(3)?,
            attempts: r.get::<_, i64>(4)? as u32,
            last_error: r.get(5)?,
        })
    })?;
    rows.collect::<std::result::Result<Vec<_>, _>>().map_err(Error::from)
}

/// `?first, ?first+1, …`: `n` numbered parameters for an `IN (…)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

fn query_docs<T: DeserializeOwned>(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row?;
        out.push(parse(&id, &body)?);
    }
    Ok(out)
}

fn query_doc<T: DeserializeOwned>(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Option<T>> {
    let row = conn
        .prepare_cached(sql)?
        .query_row(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()?;
    row.map(|(id, body)| parse(&id, &body)).transpose()
}

//! The queries behind the [`Store`](crate::Store) trait, each on a pooled connection. They
//! return what the SQLite backend's return, in the same order.

use airlock_core::limits::Breaker;
use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper as Client;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::chain::{ChainWalk, EventRecord, VerifyReport};
use crate::encoding::{fmt_time, parse, status_name};
use crate::{
    Error, Notification, PolicyRecord, Result, SessionFilter, StoredCheckpoint, StoredEvent, list_limit, spend,
};

/// Rows of `sql`, on a statement prepared once per connection.
async fn rows(c: &Client, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, args).await?)
}

/// The documents of `(id, body)` rows.
async fn query_docs<T: DeserializeOwned>(c: &Client, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<T>> {
    rows(c, sql, args).await?.iter().map(|r| parse(r.try_get::<_, &str>(0)?, r.try_get::<_, &str>(1)?)).collect()
}

async fn query_doc<T: DeserializeOwned>(c: &Client, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Option<T>> {
    Ok(query_docs(c, sql, args).await?.into_iter().next())
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn session(c: &Client, id: &str) -> Result<Option<Session>> {
    query_doc(c, "SELECT id, body FROM sessions WHERE id = $1", &[&id]).await
}

pub(super) async fn sessions(c: &Client, filter: &SessionFilter) -> Result<Vec<Session>> {
    let limit = as_i64(list_limit(filter.limit));
    let status = filter.status.as_ref().map(status_name);
    query_docs(
        c,
        "SELECT id, body FROM sessions
         WHERE ($1::text IS NULL OR agent_id = $1) AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC, id DESC LIMIT $3",
        &[&filter.agent_id, &status, &limit],
    )
    .await
}

pub(super) async fn action(c: &Client, id: &str) -> Result<Option<Action>> {
    query_doc(c, "SELECT id, body FROM actions WHERE id = $1", &[&id]).await
}

pub(super) async fn session_actions(c: &Client, session_id: &str) -> Result<Vec<Action>> {
    query_docs(c, "SELECT id, body FROM actions WHERE session_id = $1 ORDER BY seq", &[&session_id]).await
}

pub(super) async fn waiting_actions(c: &Client, session_id: &str) -> Result<Vec<Action>> {
    // Which statuses are waiting is the domain's rule; the query only binds them.
    let waiting: Vec<&str> = ActionStatus::WAITING.iter().map(|s| s.as_str()).collect();
    query_docs(
        c,
        "SELECT id, body FROM actions WHERE session_id = $1 AND status = ANY($2) ORDER BY seq",
        &[&session_id, &waiting],
    )
    .await
}

pub(super) async fn actions_in_status(c: &Client, status: ActionStatus) -> Result<Vec<Action>> {
    query_docs(c, "SELECT id, body FROM actions WHERE status = $1 ORDER BY created_at, id", &[&status.as_str()]).await
}

pub(super) async fn action_by_idempotency_key(c: &Client, agent: &str, key: &str) -> Result<Option<Action>> {
    // The key of the call that opened the action, or of a call that joined it.
    query_doc(
        c,
        "(SELECT id, body FROM actions WHERE agent_id = $1 AND idempotency_key = $2)
         UNION ALL
         (SELECT a.id, a.body FROM idempotency_keys k JOIN actions a ON a.id = k.action_id
          WHERE k.agent_id = $1 AND k.key = $2)
         LIMIT 1",
        &[&agent, &key],
    )
    .await
}

pub(super) async fn approval(c: &Client, id: &str) -> Result<Option<Approval>> {
    query_doc(c, "SELECT id, body FROM approvals WHERE id = $1", &[&id]).await
}

pub(super) async fn approvals(c: &Client, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
    let status = status.map(|s| s.as_str());
    let limit = as_i64(list_limit(limit));
    query_docs(
        c,
        "SELECT id, body FROM approvals WHERE ($1::text IS NULL OR status = $1)
         ORDER BY created_at DESC, id DESC LIMIT $2",
        &[&status, &limit],
    )
    .await
}

pub(super) async fn approvals_due(c: &Client, now: &DateTime<Utc>) -> Result<Vec<Approval>> {
    query_docs(
        c,
        "SELECT id, body FROM approvals WHERE status = $1 AND expires_at <= $2 ORDER BY expires_at, id",
        &[&ApprovalStatus::Pending.as_str(), &fmt_time(now)],
    )
    .await
}

pub(super) async fn kill_switches(c: &Client, active_only: bool) -> Result<Vec<KillSwitch>> {
    query_docs(
        c,
        "SELECT id, body FROM kill_switches WHERE (NOT $1 OR active) ORDER BY engaged_at DESC, id DESC",
        &[&active_only],
    )
    .await
}

/// Columns of an event, in the order [`event_from_row`] reads them.
const EVENT_COLUMNS: &str = "pos, stream, seq, kind, at, payload, prev_hash, hash";

/// An event read with [`EVENT_COLUMNS`].
fn event_from_row(r: &Row) -> Result<EventRecord> {
    Ok(EventRecord {
        pos: r.try_get(0)?,
        stream: r.try_get(1)?,
        seq: u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or_default(),
        kind: r.try_get(3)?,
        at: r.try_get(4)?,
        payload: r.try_get(5)?,
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

pub(super) async fn events(c: &Client, stream: &str) -> Result<Vec<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 ORDER BY seq");
    rows(c, &sql, &[&stream]).await?.iter().map(|r| event_from_row(r)?.to_stored()).collect()
}

/// Events from `since` on, in journal order.
pub(super) async fn events_since(c: &Client, since: &DateTime<Utc>) -> Result<Vec<StoredEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE at >= $1 ORDER BY pos");
    rows(c, &sql, &[&fmt_time(since)]).await?.iter().map(|r| event_from_row(r)?.to_stored()).collect()
}

/// `(pos, hash)` of every event after position `after`, in journal order.
pub(super) async fn event_hashes_after(c: &Client, after: i64) -> Result<Vec<(i64, String)>> {
    let rows = rows(c, "SELECT pos, hash FROM events WHERE pos > $1 ORDER BY pos", &[&after]).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Walks every hash chain, stream by stream, streaming the rows rather than holding them all.
pub(super) async fn verify(c: &Client) -> Result<VerifyReport> {
    let stmt = c.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY stream, seq")).await?;
    let none: [&(dyn ToSql + Sync); 0] = [];
    let rows = c.query_raw(&stmt, none).await?;
    let mut rows = std::pin::pin!(rows);
    let mut walk = ChainWalk::new();
    while let Some(row) = rows.next().await {
        if !walk.check(&event_from_row(&row?)?) {
            break;
        }
    }
    Ok(walk.report())
}

/// Every checkpoint note, oldest first.
pub(super) async fn checkpoints(c: &Client) -> Result<Vec<StoredCheckpoint>> {
    let stmt = c.prepare_cached("SELECT size, note, created_at FROM checkpoints ORDER BY id").await?;
    let none: [&(dyn ToSql + Sync); 0] = [];
    c.query_raw(&stmt, none)
        .await?
        .map_err(Error::from)
        .and_then(|r| async move {
            Ok(StoredCheckpoint {
                size: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or_default(),
                note: r.try_get(1)?,
                created_at: r.try_get(2)?,
            })
        })
        .try_collect()
        .await
}

pub(super) async fn policy_history(c: &Client, limit: usize) -> Result<Vec<PolicyRecord>> {
    let limit = as_i64(limit.max(1));
    query_docs(c, "SELECT revision, body FROM policy_revisions ORDER BY activated_at DESC LIMIT $1", &[&limit]).await
}

pub(super) async fn mfa_guards(c: &Client) -> Result<Vec<airlock_core::vote::MfaGuard>> {
    query_docs(c, "SELECT human, body FROM mfa_guards ORDER BY human", &[]).await
}

pub(super) async fn breakers(c: &Client) -> Result<Vec<Breaker>> {
    query_docs(c, "SELECT tool, body FROM breakers ORDER BY tool", &[]).await
}

pub(super) async fn agent_actions_since(c: &Client, agent: &str, since: &DateTime<Utc>) -> Result<u32> {
    let sql = "SELECT count(*) FROM actions WHERE agent_id = $1 AND created_at >= $2";
    let n: i64 =
        rows(c, sql, &[&agent, &fmt_time(since)]).await?.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// A cost read out of a stored document: absent or `null` is none; anything but a number means
/// the document is damaged (as the other backends say).
fn cost(id: &str, value: Option<Value>, pointer: &str) -> Result<Option<f64>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::Corrupt { id: id.to_string(), message: format!("`{pointer}` is not a number") }),
    }
}

pub(super) async fn reserved_since(
    c: &Client,
    agent: &str,
    session: Option<&str>,
    since: &DateTime<Utc>,
) -> Result<f64> {
    let held = ActionStatus::PendingApproval.as_str();
    let sql = "SELECT id, body::jsonb #> '{decision,cost_usd}' FROM actions
               WHERE agent_id = $1 AND created_at >= $2 AND status = $3 AND ($4::text IS NULL OR session_id = $4)";
    let mut total = 0.0;
    for r in rows(c, sql, &[&agent, &fmt_time(since), &held, &session]).await? {
        let id: &str = r.try_get(0)?;
        total += airlock_core::pipeline::counted_price(cost(id, r.try_get(1)?, "/decision/cost_usd")?);
    }
    Ok(total)
}

pub(super) async fn agent_spend_since(c: &Client, agent: &str, since: &DateTime<Utc>) -> Result<f64> {
    // The store only selects the actions and reads their two costs; how they add up is
    // `spend::action_cost`, shared with every backend.
    let counted: Vec<&str> = spend::COUNTED.iter().map(|s| s.as_str()).collect();
    let sql = "SELECT id, body::jsonb #> '{decision,cost_usd}', body::jsonb #> '{result,cost_usd}' FROM actions
               WHERE agent_id = $1 AND created_at >= $2 AND status = ANY($3)";
    let mut total = 0.0;
    for r in rows(c, sql, &[&agent, &fmt_time(since), &counted]).await? {
        let id: &str = r.try_get(0)?;
        let decided = cost(id, r.try_get(1)?, "/decision/cost_usd")?;
        total += spend::action_cost(decided, cost(id, r.try_get(2)?, "/result/cost_usd")?);
    }
    Ok(total)
}

pub(super) async fn notifications_due(c: &Client, now: &DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
    let limit = as_i64(limit.max(1));
    let sql = "SELECT id, endpoint, event, body, attempts, last_error FROM outbox
               WHERE delivered_at IS NULL AND next_at IS NOT NULL AND next_at <= $1 ORDER BY next_at, id LIMIT $2";
    rows(c, sql, &[&fmt_time(now), &limit])
        .await?
        .iter()
        .map(|r| {
            Ok(Notification {
                id: r.try_get(0)?,
                endpoint: r.try_get(1)?,
                event: r.try_get(2)?,
                body: r.try_get(3)?,
                attempts: u32::try_from(r.try_get::<_, i32>(4)?).unwrap_or_default(),
                last_error: r.try_get(5)?,
            })
        })
        .collect()
}

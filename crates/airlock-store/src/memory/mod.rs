//! An in-memory journal for tests.
//!
//! [`MemoryStore`] keeps what the SQLite backend keeps — events chained per stream, the
//! projections as the same JSON documents, idempotency keys, the outbox, checkpoint notes — in
//! one mutex instead of a file, and answers every query of the [`Store`] trait with the same
//! rows in the same order (ties in the order rows were first written, as SQLite's row ids give
//! them) and the same errors. A commit is atomic: one that is refused (a reused idempotency key)
//! changes nothing. Nothing is written to disk, no thread is started, and everything is gone
//! when the store is dropped.
//!
//! - [`write`]: how a commit is checked and applied.

mod write;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use airlock_core::limits::Breaker;
use airlock_core::{Action, ActionStatus, Approval, ApprovalStatus, KillSwitch, Session};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::chain::{ChainWalk, EventRecord, Heads, VerifyReport, merkle_root};
use crate::encoding::{Prepared, fmt_time, parse, status_name};
use crate::{
    Commit, Error, Notification, PolicyRecord, Result, SessionFilter, Store, StoredCheckpoint, StoredEvent, list_limit,
    spend,
};

/// A journal in memory, with the semantics of the SQLite backend (see the [module](self) docs).
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty journal.
    pub fn new() -> MemoryStore {
        MemoryStore { state: Mutex::new(State::default()) }
    }

    /// Every checkpoint note saved, oldest first (what [`crate::SqliteStore::read_checkpoints`]
    /// reads from a file).
    pub fn checkpoints(&self) -> Vec<StoredCheckpoint> {
        self.state().checkpoints.clone()
    }

    /// The state. A panic while it was held cannot leave it half-changed (a commit is checked
    /// before anything is applied, and applying cannot fail), so a poisoned lock is still good.
    fn state(&self) -> MutexGuard<'_, State> {
        airlock_core::sync::lock(&self.state)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("events", &self.state().events.len()).finish_non_exhaustive()
    }
}

/// Rows by id, in the order they were first written.
#[derive(Debug)]
struct Table<R> {
    rows: Vec<(String, R)>,
    index: HashMap<String, usize>,
}

impl<R> Default for Table<R> {
    fn default() -> Self {
        Table { rows: Vec::new(), index: HashMap::new() }
    }
}

impl<R> Table<R> {
    fn get(&self, id: &str) -> Option<&R> {
        self.index.get(id).and_then(|&i| self.rows.get(i)).map(|(_, row)| row)
    }

    fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Inserts the row `insert` makes, or changes the existing one with `update`.
    fn upsert(&mut self, id: &str, insert: impl FnOnce() -> R, update: impl FnOnce(&mut R)) {
        match self.index.get(id).and_then(|&i| self.rows.get_mut(i)) {
            Some((_, row)) => update(row),
            None => {
                self.index.insert(id.to_string(), self.rows.len());
                self.rows.push((id.to_string(), insert()));
            }
        }
    }

    /// Rows for which `keep` holds, in the order they were first written.
    fn select(&self, keep: impl Fn(&R) -> bool) -> Vec<(&str, &R)> {
        self.rows.iter().filter(|(_, row)| keep(row)).map(|(id, row)| (id.as_str(), row)).collect()
    }
}

/// A row's stored document.
trait Document {
    fn body(&self) -> &str;
}

/// Parses the documents of `rows`, in order.
fn documents<'a, T: serde::de::DeserializeOwned, R: Document + 'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a R)>,
) -> Result<Vec<T>> {
    rows.into_iter().map(|(id, row)| parse(id, row.body())).collect()
}

/// The document of the row `id` of `table`, if there is one.
fn document<T: serde::de::DeserializeOwned, R: Document>(table: &Table<R>, id: &str) -> Result<Option<T>> {
    table.get(id).map(|row| parse(id, row.body())).transpose()
}

#[derive(Debug)]
struct SessionRow {
    agent_id: String,
    status: String,
    created_at: String,
    body: String,
}

#[derive(Debug)]
struct ActionRow {
    session_id: String,
    seq: u64,
    agent_id: String,
    status: String,
    created_at: String,
    body: String,
}

#[derive(Debug)]
struct ApprovalRow {
    status: String,
    expires_at: String,
    created_at: String,
    body: String,
}

#[derive(Debug)]
struct KillSwitchRow {
    active: bool,
    engaged_at: String,
    body: String,
}

#[derive(Debug)]
struct PolicyRow {
    activated_at: String,
    body: String,
}

#[derive(Debug)]
/// A row that is only its document (breakers, MFA guards).
struct BreakerRow {
    body: String,
}

/// A notification in the outbox.
#[derive(Debug)]
struct OutboxRow {
    id: i64,
    endpoint: String,
    event: String,
    body: String,
    next_at: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    delivered_at: Option<String>,
}

macro_rules! document_rows {
    ($($row:ty),*) => {
        $(impl Document for $row {
            fn body(&self) -> &str {
                &self.body
            }
        })*
    };
}
document_rows!(SessionRow, ActionRow, ApprovalRow, KillSwitchRow, PolicyRow, BreakerRow);

/// Everything the journal holds.
#[derive(Debug, Default)]
struct State {
    /// Every event, in journal order (`pos` is the index plus one).
    events: Vec<EventRecord>,
    /// Each stream's events (indexes into `events`), in `seq` order; streams in name order.
    streams: BTreeMap<String, Vec<usize>>,
    heads: Heads,
    sessions: Table<SessionRow>,
    actions: Table<ActionRow>,
    /// `(agent, key) → action` for the keys actions were opened with: one action per key.
    opening_keys: HashMap<(String, String), String>,
    /// `(agent, key) → action` for keys of calls that joined an action.
    joining_keys: HashMap<(String, String), String>,
    approvals: Table<ApprovalRow>,
    kill_switches: Table<KillSwitchRow>,
    policy_revisions: Table<PolicyRow>,
    breakers: Table<BreakerRow>,
    mfa_guards: Table<BreakerRow>,
    outbox: Vec<OutboxRow>,
    checkpoints: Vec<StoredCheckpoint>,
}

/// The cost at `pointer` in an action document: absent or `null` is none, anything but a
/// number is a corrupt record.
fn cost_at(id: &str, doc: &Value, pointer: &str) -> Result<Option<f64>> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::Corrupt { id: id.to_string(), message: format!("`{pointer}` is not a number") }),
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn commit(&self, commit: Commit) -> Result<()> {
        let prepared = Prepared::of(&commit)?;
        let mut state = self.state();
        // A refused commit changes nothing: check it whole before applying any of it.
        state.check(&commit)?;
        state.apply(commit, prepared);
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        document(&self.state().sessions, id)
    }

    async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        let status = filter.status.as_ref().map(status_name);
        let state = self.state();
        let mut rows = state.sessions.select(|s| {
            filter.agent_id.as_ref().is_none_or(|a| *a == s.agent_id)
                && status.as_ref().is_none_or(|st| *st == s.status)
        });
        rows.sort_by(|(a_id, a), (b_id, b)| b.created_at.cmp(&a.created_at).then_with(|| b_id.cmp(a_id)));
        documents(rows.into_iter().take(list_limit(filter.limit)))
    }

    async fn action(&self, id: &str) -> Result<Option<Action>> {
        document(&self.state().actions, id)
    }

    async fn session_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let state = self.state();
        let mut rows = state.actions.select(|a| a.session_id == session_id);
        rows.sort_by_key(|(_, a)| a.seq);
        documents(rows)
    }

    async fn waiting_actions(&self, session_id: &str) -> Result<Vec<Action>> {
        let waiting = ActionStatus::WAITING.map(ActionStatus::as_str);
        let state = self.state();
        let mut rows = state.actions.select(|a| a.session_id == session_id && waiting.contains(&a.status.as_str()));
        rows.sort_by_key(|(_, a)| a.seq);
        documents(rows)
    }

    async fn actions_in_status(&self, status: ActionStatus) -> Result<Vec<Action>> {
        let state = self.state();
        let mut rows = state.actions.select(|a| a.status == status.as_str());
        rows.sort_by(|(a_id, a), (b_id, b)| a.created_at.cmp(&b.created_at).then_with(|| a_id.cmp(b_id)));
        documents(rows)
    }

    async fn action_by_idempotency_key(&self, agent_id: &str, key: &str) -> Result<Option<Action>> {
        let state = self.state();
        // The key of the call that opened the action, or of a call that joined it.
        let key = (agent_id.to_string(), key.to_string());
        let opened = state.opening_keys.get(&key).filter(|id| state.actions.contains(id));
        let joined = state.joining_keys.get(&key).filter(|id| state.actions.contains(id));
        match opened.or(joined) {
            Some(id) => document(&state.actions, id),
            None => Ok(None),
        }
    }

    async fn approval(&self, id: &str) -> Result<Option<Approval>> {
        document(&self.state().approvals, id)
    }

    async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        let state = self.state();
        let mut rows = state.approvals.select(|a| status.is_none_or(|s| a.status == s.as_str()));
        rows.sort_by(|(a_id, a), (b_id, b)| b.created_at.cmp(&a.created_at).then_with(|| b_id.cmp(a_id)));
        documents(rows.into_iter().take(list_limit(limit)))
    }

    async fn approvals_due(&self, now: DateTime<Utc>) -> Result<Vec<Approval>> {
        let now = fmt_time(&now);
        let state = self.state();
        let mut rows = state
            .approvals
            .select(|a| a.status == ApprovalStatus::Pending.as_str() && a.expires_at.as_str() <= now.as_str());
        rows.sort_by(|(_, a), (_, b)| a.expires_at.cmp(&b.expires_at));
        documents(rows)
    }

    async fn kill_switches(&self, active_only: bool) -> Result<Vec<KillSwitch>> {
        let state = self.state();
        let mut rows = state.kill_switches.select(|k| !active_only || k.active);
        rows.sort_by(|(a_id, a), (b_id, b)| b.engaged_at.cmp(&a.engaged_at).then_with(|| b_id.cmp(a_id)));
        documents(rows)
    }

    async fn events(&self, stream: &str) -> Result<Vec<StoredEvent>> {
        let state = self.state();
        let Some(indexes) = state.streams.get(stream) else { return Ok(Vec::new()) };
        indexes.iter().filter_map(|&i| state.events.get(i)).map(EventRecord::to_stored).collect()
    }

    async fn verify(&self) -> Result<VerifyReport> {
        let state = self.state();
        let mut walk = ChainWalk::new();
        let in_stream_order = state.streams.values().flatten().filter_map(|&i| state.events.get(i));
        for event in in_stream_order {
            if !walk.check(event) {
                break;
            }
        }
        Ok(walk.report())
    }

    async fn policy_history(&self, limit: usize) -> Result<Vec<PolicyRecord>> {
        let state = self.state();
        let mut rows = state.policy_revisions.select(|_| true);
        rows.sort_by(|(_, a), (_, b)| b.activated_at.cmp(&a.activated_at));
        documents(rows.into_iter().take(limit.max(1)))
    }

    async fn breakers(&self) -> Result<Vec<Breaker>> {
        let state = self.state();
        let mut rows = state.breakers.select(|_| true);
        rows.sort_by_key(|(tool, _)| *tool);
        documents(rows)
    }

    async fn mfa_guards(&self) -> Result<Vec<airlock_core::vote::MfaGuard>> {
        let state = self.state();
        let mut rows = state.mfa_guards.select(|_| true);
        rows.sort_by_key(|(human, _)| *human);
        documents(rows)
    }

    async fn agent_actions_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<u32> {
        let since = fmt_time(&since);
        let n = self.state().actions.select(|a| a.agent_id == agent_id && a.created_at >= since).len();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn reserved_since(&self, agent_id: &str, session_id: Option<&str>, since: DateTime<Utc>) -> Result<f64> {
        let since = fmt_time(&since);
        let held = ActionStatus::PendingApproval.as_str();
        let state = self.state();
        let rows = state.actions.select(|a| {
            a.agent_id == agent_id
                && a.created_at >= since
                && a.status.as_str() == held
                && session_id.is_none_or(|s| a.session_id == s)
        });
        let mut total = 0.0;
        for (id, row) in rows {
            let doc: Value = parse(id, &row.body)?;
            total += airlock_core::pipeline::counted_price(cost_at(id, &doc, "/decision/cost_usd")?);
        }
        Ok(total)
    }

    async fn agent_spend_since(&self, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        let since = fmt_time(&since);
        let counted = spend::COUNTED.map(ActionStatus::as_str);
        let state = self.state();
        let rows = state
            .actions
            .select(|a| a.agent_id == agent_id && a.created_at >= since && counted.contains(&a.status.as_str()));
        let mut total = 0.0;
        for (id, row) in rows {
            let doc: Value = parse(id, &row.body)?;
            total +=
                spend::action_cost(cost_at(id, &doc, "/decision/cost_usd")?, cost_at(id, &doc, "/result/cost_usd")?);
        }
        Ok(total)
    }

    async fn tree_head(&self) -> Result<(u64, [u8; 32])> {
        let state = self.state();
        let hashes: Vec<String> = state.events.iter().map(|e| e.hash.clone()).collect();
        Ok((hashes.len() as u64, merkle_root(&hashes)))
    }

    async fn save_checkpoint(&self, size: u64, note: String, at: DateTime<Utc>) -> Result<()> {
        self.commit(Commit { checkpoint: Some((size, note, at)), ..Default::default() }).await
    }

    async fn notifications_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        let now = fmt_time(&now);
        let state = self.state();
        let mut due: Vec<&OutboxRow> = state
            .outbox
            .iter()
            .filter(|n| n.delivered_at.is_none() && n.next_at.as_ref().is_some_and(|at| *at <= now))
            .collect();
        due.sort_by(|a, b| a.next_at.cmp(&b.next_at).then_with(|| a.id.cmp(&b.id)));
        Ok(due
            .into_iter()
            .take(limit.max(1))
            .map(|n| Notification {
                id: n.id,
                endpoint: n.endpoint.clone(),
                event: n.event.clone(),
                body: n.body.clone(),
                attempts: n.attempts,
                last_error: n.last_error.clone(),
            })
            .collect())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

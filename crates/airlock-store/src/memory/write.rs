//! How a commit changes the in-memory journal: first checked whole against the uniqueness rules
//! the SQLite schema enforces, then applied in the order the SQLite writer applies it (events,
//! checkpoint note, outbox, deliveries, projections), which cannot fail.

use std::collections::HashSet;

use super::{ActionRow, ApprovalRow, BreakerRow, KillSwitchRow, OutboxRow, PolicyRow, SessionRow, State};
use crate::chain::EventRecord;
use crate::encoding::{Prepared, fmt_time, status_name};
use crate::{Commit, DeliveryUpdate, Error, Projection, Result, StoredCheckpoint};

/// The error for an idempotency key that is already taken (SQLite refuses the same commit with
/// a constraint violation, reported as the same variant).
fn key_used(agent_id: &str, key: &str) -> Error {
    Error::Conflict(format!("idempotency key already used: `{key}` of agent `{agent_id}`"))
}

impl State {
    /// Refuses `commit` if applying it would break a uniqueness rule: a new action opened with
    /// an idempotency key another action of its agent was opened with, or a joining key
    /// recorded twice. Rewriting an existing action never changes its key, so it never
    /// conflicts.
    pub(super) fn check(&self, commit: &Commit) -> Result<()> {
        let mut new_actions = HashSet::new();
        let mut opening = HashSet::new();
        let mut joining = HashSet::new();
        for projection in &commit.projections {
            match projection {
                Projection::Action(a) => {
                    if self.actions.contains(&a.id) || !new_actions.insert(a.id.as_str()) {
                        continue;
                    }
                    if let Some(key) = &a.idempotency_key {
                        let taken = self.opening_keys.contains_key(&(a.agent_id.clone(), key.clone()));
                        if taken || !opening.insert((a.agent_id.as_str(), key.as_str())) {
                            return Err(key_used(&a.agent_id, key));
                        }
                    }
                }
                Projection::IdempotencyKey { agent_id, key, .. } => {
                    let taken = self.joining_keys.contains_key(&(agent_id.clone(), key.clone()));
                    if taken || !joining.insert((agent_id.as_str(), key.as_str())) {
                        return Err(key_used(agent_id, key));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies a commit that [`State::check`] accepted; `prepared` holds its texts.
    pub(super) fn apply(&mut self, commit: Commit, prepared: Prepared) {
        let Commit { events, projections, outbox, deliveries, checkpoint } = commit;
        for (event, payload) in events.iter().zip(prepared.payloads) {
            let index = self.events.len();
            let record = EventRecord::chained(self.heads.get(&event.stream), event, payload, index as i64 + 1);
            self.heads.insert(record.stream.clone(), (record.seq, record.hash.clone()));
            self.streams.entry(record.stream.clone()).or_default().push(index);
            self.events.push(record);
        }
        if let Some((size, note, at)) = checkpoint {
            self.checkpoints.push(StoredCheckpoint { size, note, created_at: fmt_time(&at) });
        }
        for n in outbox {
            let at = fmt_time(&n.at);
            self.outbox.push(OutboxRow {
                id: self.outbox.len() as i64 + 1,
                endpoint: n.endpoint,
                event: n.event,
                body: serde_json::to_string(&n.body).unwrap_or_default(),
                next_at: Some(at),
                attempts: 0,
                last_error: None,
                delivered_at: None,
            });
        }
        for d in deliveries {
            self.deliver(d);
        }
        for (projection, body) in projections.into_iter().zip(prepared.documents) {
            self.project(projection, body);
        }
    }

    fn deliver(&mut self, update: DeliveryUpdate) {
        let id = match &update {
            DeliveryUpdate::Delivered { id, .. } | DeliveryUpdate::Failed { id, .. } => *id,
            DeliveryUpdate::RetryAll { at } => {
                let at = fmt_time(at);
                for row in self.outbox.iter_mut().filter(|n| n.delivered_at.is_none()) {
                    if row.next_at.as_ref().is_some_and(|next| *next > at) {
                        row.next_at = Some(at.clone());
                    }
                }
                return;
            }
        };
        // Outbox ids are positions (from 1); an unknown id changes nothing, as in SQL.
        let Some(row) = id.checked_sub(1).and_then(|i| usize::try_from(i).ok()).and_then(|i| self.outbox.get_mut(i))
        else {
            return;
        };
        row.attempts += 1;
        match update {
            DeliveryUpdate::Delivered { at, .. } => {
                row.delivered_at = Some(fmt_time(&at));
                row.next_at = None;
                row.last_error = None;
            }
            DeliveryUpdate::Failed { error, next_at, .. } => {
                row.last_error = Some(error);
                row.next_at = next_at.as_ref().map(fmt_time);
            }
            DeliveryUpdate::RetryAll { .. } => {}
        }
    }

    /// Writes one projection with its document. Like the SQLite upserts, rewriting a row
    /// changes only its state columns and document; what identifies it (owner, creation time,
    /// an action's key) stays as first written.
    fn project(&mut self, projection: Projection, body: String) {
        match projection {
            Projection::Session(s) => {
                let status = status_name(&s.status);
                self.sessions.upsert(
                    &s.id,
                    || SessionRow {
                        agent_id: s.agent_id.clone(),
                        status: status.clone(),
                        created_at: fmt_time(&s.created_at),
                        body: body.clone(),
                    },
                    |row| {
                        row.status = status.clone();
                        row.body = body.clone();
                    },
                );
            }
            Projection::Action(a) => {
                let status = a.status.as_str().to_string();
                let mut opened = false;
                self.actions.upsert(
                    &a.id,
                    || {
                        opened = true;
                        ActionRow {
                            session_id: a.session_id.clone(),
                            seq: a.seq,
                            agent_id: a.agent_id.clone(),
                            status: status.clone(),
                            created_at: fmt_time(&a.created_at),
                            body: body.clone(),
                        }
                    },
                    |row| {
                        row.status = status.clone();
                        row.body = body.clone();
                    },
                );
                if opened && let Some(key) = &a.idempotency_key {
                    self.opening_keys.insert((a.agent_id.clone(), key.clone()), a.id.clone());
                }
            }
            Projection::Approval(p) => {
                let (status, expires_at) = (p.status.as_str().to_string(), fmt_time(&p.expires_at));
                self.approvals.upsert(
                    &p.id,
                    || ApprovalRow {
                        status: status.clone(),
                        expires_at: expires_at.clone(),
                        created_at: fmt_time(&p.created_at),
                        body: body.clone(),
                    },
                    |row| {
                        row.status = status.clone();
                        row.expires_at = expires_at.clone();
                        row.body = body.clone();
                    },
                );
            }
            Projection::PolicyRevision(r) => {
                let activated_at = fmt_time(&r.activated_at);
                self.policy_revisions.upsert(
                    &r.revision,
                    || PolicyRow { activated_at: activated_at.clone(), body: body.clone() },
                    |row| {
                        row.activated_at = activated_at.clone();
                        row.body = body.clone();
                    },
                );
            }
            Projection::IdempotencyKey { agent_id, key, action_id } => {
                self.joining_keys.insert((agent_id, key), action_id);
            }
            Projection::Breaker(b) => {
                self.breakers.upsert(&b.tool, || BreakerRow { body: body.clone() }, |row| row.body = body.clone());
            }
            Projection::MfaGuard(g) => {
                self.mfa_guards.upsert(&g.human, || BreakerRow { body: body.clone() }, |row| row.body = body.clone());
            }
            Projection::KillSwitch(k) => {
                let active = k.is_active();
                self.kill_switches.upsert(
                    &k.id,
                    || KillSwitchRow { active, engaged_at: fmt_time(&k.engaged_at), body: body.clone() },
                    |row| {
                        row.active = active;
                        row.body = body.clone();
                    },
                );
            }
        }
    }
}

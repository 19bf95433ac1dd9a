//! The monitors of plans in force: stuck plans (no step progress for `stuck_after_seconds`) and
//! cascading errors (failed calls on several steps within a window), `docs/plans.md#monitors`.

use super::*;

impl Engine {
    /// When the version in force last made progress: its approval, a call matched to one of its
    /// steps (in its session, or under a lease in an executor's), or such a call changing status.
    pub(super) async fn last_progress(&self, record: &PlanRecord, version: &Version) -> Result<DateTime<Utc>> {
        let mut last = version.approved.as_ref().map_or(version.proposed_at, |(_, _, at)| *at);
        for m in self.all_matched(record).await?.iter().filter(|m| m.step.is_some()) {
            if let Some(a) = self.action_status(&m.action_id).await? {
                last = last.max(a.updated_at).max(a.created_at);
            }
        }
        Ok(last)
    }

    /// Stuck plans: for each session with a plan in force that has `stuck_after_seconds`, when
    /// no step has made progress for that long, journals `plan.stuck`, queues its webhook and,
    /// with `pause_when_stuck`, pauses the session. Once per stretch without progress. Runs with
    /// the other periodic work (on the leader). Returns how many plans it found stuck.
    pub async fn check_plans(&self) -> Result<usize> {
        let reseed = {
            let mut seeded = lock(&self.inner.planned_seeded);
            let due = seeded.is_none();
            if due {
                *seeded = Some(std::time::Instant::now());
            }
            due
        };
        if reseed {
            let open = self
                .inner
                .store
                .sessions(airlock_store::SessionFilter {
                    agent_id: None,
                    status: Some(SessionStatus::Active),
                    limit: 100_000,
                })
                .await?;
            for s in open {
                if lock(&self.inner.planned).contains_key(&s.id) {
                    continue;
                }
                let mut guard = self.lock_session(&s.id).await?;
                if let Some(state) = guard.as_mut() {
                    self.plan_book(state).await?;
                }
            }
        }
        let now = self.now();
        let ids: Vec<String> =
            lock(&self.inner.planned).iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
        let mut n = 0;
        for id in ids {
            let mut guard = self.lock_session(&id).await?;
            let Some(state) = guard.as_mut() else {
                lock(&self.inner.planned).remove(&id);
                continue;
            };
            if state.session.status == SessionStatus::Closed {
                lock(&self.inner.planned).remove(&id);
                continue;
            }
            let book = self.plan_book(state).await?.clone();
            let Some((record, version)) = book.in_force() else {
                lock(&self.inner.planned).remove(&id);
                continue;
            };
            let Some(after) = version.draft.stuck_after_seconds else {
                lock(&self.inner.planned).remove(&id);
                continue;
            };
            let (steps, _) = self.progress(record, &version.draft).await?;
            if finished(&steps) {
                lock(&self.inner.planned).remove(&id);
                continue;
            }
            if state.session.status != SessionStatus::Active {
                continue;
            }
            let since = self.last_progress(record, version).await?;
            let at = since + pipeline::seconds(after);
            if now < at {
                // Progress only moves this later: no need to look before then.
                lock(&self.inner.planned).insert(id.clone(), at);
                continue;
            }
            // Reported, or about to be: only progress after now can make it stuck again.
            lock(&self.inner.planned).insert(id.clone(), now + pipeline::seconds(after));
            if record.stuck.iter().any(|s| *s >= since) {
                continue;
            }
            let view = self.plan_view_locked(state, &record.id).await?;
            let mut session = state.session.clone();
            let mut commit = Commit::default();
            commit.event(
                &id,
                EventKind::PlanStuck,
                now,
                json!({"plan_id": record.id, "version": version.version, "since": since,
                       "stuck_after_seconds": after, "pause": version.draft.pause_when_stuck}),
            );
            crate::notify::enqueue_plan(&self.inner.config, &mut commit, "plan.stuck", &session, to_value(&view), now);
            if version.draft.pause_when_stuck {
                let reason = format!(
                    "plan {} made no step progress for {after} s (since {})",
                    record.id,
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                session.updated_at = now;
                self.pause(&mut session, &Pause { rule: RULE_PLAN_STUCK, reason }, &mut commit, now);
                commit.project(Projection::Session(session.clone()));
            }
            self.commit(commit).await?;
            tracing::warn!(session = %id, plan = %record.id, since = %since, "plan stuck");
            metrics::counter!(tm::PLANS_STUCK).increment(1);
            state.session = session;
            state.plans = None;
            n += 1;
        }
        Ok(n)
    }

    /// The stuck-plan sweep looks at `session_id` on its next run. Only the leader sweeps, so
    /// only the leader keeps the list (a new leader rebuilds it from the open sessions).
    pub(super) fn note_planned(&self, session_id: &str) {
        if self.is_leader() {
            lock(&self.inner.planned).insert(session_id.to_string(), DateTime::<Utc>::MIN_UTC);
        }
    }

    /// The stuck-plan sweep looks at every open session again on its next run (this process
    /// became the leader, or may have missed changes made by other replicas).
    pub(in crate::engine) fn reseed_plans(&self) {
        *lock(&self.inner.planned_seeded) = None;
    }

    /// Another replica changed action `id`: if it is an adopted plan proposal whose plan can get
    /// stuck, the stuck-plan sweep of this process (the leader) learns of its session.
    pub(in crate::engine) async fn note_plan_action(&self, id: &str) {
        let Ok(Some(action)) = self.inner.store.action(id).await else { return };
        if action.tool == PLAN_TOOL
            && action.upstream.is_none()
            && action.status == ActionStatus::Succeeded
            && action.arguments["plan"].get("stuck_after_seconds").is_some_and(|v| !v.is_null())
        {
            self.note_planned(&action.session_id);
        }
    }

    /// Cascading errors: when a failed call of a plan step brings the failed distinct steps
    /// within the plan's window to its `cascade_failures`, journals `plan.cascade` and pauses
    /// the session (in the commit that records the failure). `action` is the failed call.
    pub(in crate::engine) async fn plan_cascade(
        &self,
        state: &mut SessionCell,
        session: &mut Session,
        action: &Action,
        commit: &mut Commit,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let book = self.plan_book(state).await?.clone();
        let Some((record, version)) = book.in_force() else { return Ok(()) };
        let Some((threshold, window)) = version.draft.cascade() else { return Ok(()) };
        let matched = self.all_matched(record).await?;
        if !matched.iter().any(|m| m.action_id == action.id && m.step.is_some()) {
            return Ok(());
        }
        let from = record.cascade_at.map_or(now - window, |c| c.max(now - window));
        let mut steps = std::collections::BTreeSet::new();
        for m in &matched {
            let Some(step) = &m.step else { continue };
            if m.action_id == action.id {
                steps.insert(step.clone());
                continue;
            }
            if let Some(a) = self.action_status(&m.action_id).await?
                && matches!(a.status, ActionStatus::Failed | ActionStatus::Unknown)
                && a.updated_at > from
            {
                steps.insert(step.clone());
            }
        }
        if steps.len() < threshold {
            return Ok(());
        }
        let failed: Vec<String> = steps.into_iter().collect();
        let reason = format!(
            "calls for {} steps of plan {} failed within {} s ({}); a human must resume the session",
            failed.len(),
            record.id,
            window.num_seconds(),
            failed.join(", ")
        );
        commit.event(
            &session.id,
            EventKind::PlanCascade,
            now,
            json!({"plan_id": record.id, "version": version.version, "action_id": action.id, "steps": failed,
                   "window_seconds": window.num_seconds(), "reason": reason}),
        );
        self.pause(session, &Pause { rule: RULE_PLAN_CASCADE, reason }, commit, now);
        state.plans = None;
        Ok(())
    }

    /// The session of the plan whose step's lease the call `action_id` of this session ran
    /// under, if it ran under one.
    pub(in crate::engine) async fn handed_from(
        &self,
        state: &mut SessionCell,
        action_id: &str,
    ) -> Result<Option<String>> {
        Ok(self.plan_book(state).await?.handed.get(action_id).cloned())
    }

    /// Cascading errors for a failed call made under a lease in an executor's session: checked,
    /// and the plan's session paused, under the plan's session lock. The caller has released
    /// the executor's session lock first: no session's lock is taken under another's.
    pub(in crate::engine) async fn handoff_cascade(&self, plan_session: &str, action: &Action) -> Result<()> {
        let mut guard = self.lock_session(plan_session).await?;
        let Some(state) = guard.as_mut() else { return Ok(()) };
        if state.session.status != SessionStatus::Active {
            return Ok(());
        }
        let now = self.now();
        let mut session = state.session.clone();
        let mut commit = Commit::default();
        self.plan_cascade(state, &mut session, action, &mut commit, now).await?;
        if commit.events.is_empty() {
            return Ok(());
        }
        session.updated_at = now;
        commit.project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        Ok(())
    }
}

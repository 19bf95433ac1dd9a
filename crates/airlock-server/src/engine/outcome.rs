use super::*;

impl Engine {
    pub async fn report_result(
        &self,
        agent: &AgentConfig,
        action_id: &str,
        report: ResultReport,
    ) -> Result<ActionView> {
        let ResultReport { ok, output, error, cost_usd } = report;
        if let Some(Err(e)) = cost_usd.map(airlock_core::money::Usd::new) {
            return Err(Error::Invalid(format!("`cost_usd` {e}")));
        }
        let found = self.inner.store.action(action_id).await?;
        let Some(action) = found.filter(|a| a.agent_id == agent.agent.id) else {
            return Err(Error::NotFound { what: "action", id: action_id.to_string() });
        };
        let mut guard = self.lock_session(&action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        // Re-read under the session lock: the status may have moved.
        let mut action = self.stored_action(action_id).await?;
        if !matches!(action.status, ActionStatus::Executing | ActionStatus::Approved) {
            return Err(Error::Conflict(format!(
                "action {} is `{}`; a result can only be reported for an `executing` or `approved` action, once",
                action.id, action.status
            )));
        }
        if action.upstream.is_some() {
            return Err(Error::Conflict(format!(
                "action {} is executed by airlock against upstream `{}`; agents don't report its result",
                action.id,
                action.upstream.as_deref().unwrap_or_default()
            )));
        }
        let now = self.now();
        action.status = if ok { ActionStatus::Succeeded } else { ActionStatus::Failed };
        action.result = Some(ActionResult {
            ok,
            output,
            error,
            reported_by: Reporter::Agent,
            duration_ms: None,
            cost_usd,
            at: now,
        });
        action.updated_at = now;
        let mut session = state.session.clone();
        session.updated_at = now;
        let counted = self.count_reported_cost(&mut session, &action, now).await?;
        let mut commit = Commit::default();
        commit.event(&action.session_id, EventKind::ActionCompleted, now, completed_payload(&action, counted));
        let error = action.result.as_ref().and_then(|r| r.error.clone());
        self.count_outcome(&mut session, &action, ok, error.as_deref(), &mut commit, now);
        let mut handed = None;
        if !ok {
            // Before the check, which may leave the plans to be folded again after the commit.
            handed = self.handed_from(state, &action.id).await?;
            self.plan_cascade(state, &mut session, &action, &mut commit, now).await?;
        }
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        state.waiting.retain(|_, id| id != &action.id);
        drop(guard);
        self.notify(&action.id);
        self.handed_failure(handed, &action).await;
        self.view(action).await
    }

    /// Takes an approved upstream action for execution: `approved → executing`, journaled before
    /// the call leaves airlock. Exactly one caller gets [`Claim::Run`]; the others learn that it
    /// is already running or finished.
    pub async fn claim_execution(&self, action_id: &str) -> Result<Claim> {
        self.kill_switches_certain()?;
        let action = self.stored_action(action_id).await?;
        let mut guard = self.lock_session(&action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        let mut action = self.stored_action(action_id).await?;
        match action.status {
            ActionStatus::Approved => {}
            ActionStatus::Executing => return Ok(Claim::Running(Box::new(action))),
            s if s.is_final() => return Ok(Claim::Finished(Box::new(action))),
            _ => return Ok(Claim::NotRunnable(Box::new(action))),
        }
        // Approved before the session was paused: it waits for the resume, as new calls do.
        if let Some(reason) = guard::session_state(&state.session) {
            return Err(Error::Forbidden { rule: guard::RULE_SESSION_STATE, msg: reason.msg });
        }
        // A kill switch engaged after the approval still stops the call.
        let kills = self.kill_switch_list();
        if let Some(ks) = kills
            .iter()
            .find(|k| guard::kill_switch_covers(k, &action.agent_id, action.upstream.as_deref(), &action.tool))
        {
            self.cancel_unrun_locked(state, &mut action, ks).await?;
            drop(guard);
            self.notify(&action.id);
            return Ok(Claim::Finished(Box::new(action)));
        }
        let now = self.now();
        action.status = ActionStatus::Executing;
        action.updated_at = now;
        if action.upstream.is_some() {
            action.replica = self.replica_id();
        }
        let mut commit = Commit::default();
        commit
            .event(&action.session_id, EventKind::ActionExecuting, now, json!({"action_id": action.id}))
            .project(Projection::Action(Box::new(action.clone())));
        self.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        drop(guard);
        self.notify(&action.id);
        Ok(Claim::Run(Box::new(action)))
    }

    /// Records the outcome of an upstream call airlock made: `executing → succeeded | failed`
    /// when the upstream answered, `executing → unknown` when it did not (see [`CallEnd`]).
    pub async fn record_execution(&self, action_id: &str, result: ActionResult, end: CallEnd) -> Result<Action> {
        let action = self.stored_action(action_id).await?;
        let mut guard = self.lock_session(&action.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: action.session_id.clone() });
        };
        let mut action = self.stored_action(action_id).await?;
        if action.status != ActionStatus::Executing {
            return Err(Error::Conflict(format!("action {} is `{}`, not `executing`", action.id, action.status)));
        }
        let now = self.now();
        action.status = match (end, result.ok) {
            (CallEnd::Unanswered, _) => ActionStatus::Unknown,
            (CallEnd::Answered, true) => ActionStatus::Succeeded,
            (CallEnd::Answered, false) => ActionStatus::Failed,
        };
        action.updated_at = now;
        // An unanswered call counts toward failure streaks and the breaker as a failure: a
        // time-out is what they are there for.
        let ok = result.ok && end == CallEnd::Answered;
        let error = result.error.clone();
        action.result = Some(result);
        let mut session = state.session.clone();
        session.updated_at = now;
        let counted = self.count_reported_cost(&mut session, &action, now).await?;
        let mut commit = Commit::default();
        commit.event(&action.session_id, EventKind::ActionCompleted, now, completed_payload(&action, counted));
        self.count_outcome(&mut session, &action, ok, error.as_deref(), &mut commit, now);
        let mut handed = None;
        if !ok {
            // Before the check, which may leave the plans to be folded again after the commit.
            handed = self.handed_from(state, &action.id).await?;
            self.plan_cascade(state, &mut session, &action, &mut commit, now).await?;
        }
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        drop(guard);
        self.notify(&action.id);
        self.handed_failure(handed, &action).await;
        Ok(action)
    }

    /// After a failed call made under a plan step's lease is recorded (and its session's lock
    /// released): the plan's cascading-errors check, in the plan's session. The outcome is
    /// recorded whatever this finds; a journal error here is logged.
    async fn handed_failure(&self, plan_session: Option<String>, action: &Action) {
        let Some(plan_session) = plan_session else { return };
        if let Err(e) = self.handoff_cascade(&plan_session, action).await {
            tracing::warn!(action = %action.id, session = %plan_session, error = %e, "cannot check the plan's cascading errors");
        }
    }
}

pub(super) fn completed_payload(action: &Action, counted_usd: f64) -> Value {
    let mut payload = json!({"action_id": action.id, "status": action.status, "result": action.result});
    if action.result.as_ref().is_some_and(|r| r.cost_usd.is_some())
        && let Value::Object(map) = &mut payload
    {
        map.insert("cost_counted_usd".into(), json!(counted_usd));
    }
    payload
}

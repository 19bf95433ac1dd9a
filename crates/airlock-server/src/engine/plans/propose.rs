//! Proposing a plan or an amendment, and adopting it when its approval resolves.

use super::*;

impl Engine {
    /// Proposes a plan in a session (`plan_id` `None`), or a new version of one of its plans (an
    /// amendment). Policy decides it with `input.kind = "plan.propose"`; it is recorded as an
    /// action of tool [`PLAN_TOOL`] with an ordinary approval when one is required.
    pub async fn propose_plan(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        plan_id: Option<&str>,
        proposal: PlanProposal,
    ) -> Result<PlanView> {
        let now = self.now();
        let draft = proposal.draft.normalise(now).map_err(|e| Error::Invalid(e.0))?;
        for (i, step) in draft.steps.iter().enumerate() {
            if let Err(e) = compile_schema(&step.arguments) {
                return Err(Error::Invalid(format!("`steps[{i}].arguments` is not a usable JSON Schema: {e}")));
            }
        }
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if state.session.agent_id != agent.agent.id {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        }
        self.check_disk_floor()?;
        let book = self.plan_book(state).await?.clone();
        let (id, version, previous) = match plan_id {
            Some(pid) => {
                let Some(record) = book.plans.iter().find(|r| r.id == pid) else {
                    return Err(Error::NotFound { what: "plan", id: pid.to_string() });
                };
                if let Some(last) = record.versions.last()
                    && self.version_status(record, last).await? == PlanStatus::Pending
                {
                    return Err(Error::Conflict(format!(
                        "version {} of plan {pid} is still waiting for approval; amend it once it is decided",
                        last.version
                    )));
                }
                let next = record.versions.last().map_or(1, |v| v.version + 1);
                (pid.to_string(), next, record.in_force().map(|v| v.draft.clone()))
            }
            None => {
                for record in &book.plans {
                    let last = record.versions.last();
                    let pending = match last {
                        Some(v) => self.version_status(record, v).await? == PlanStatus::Pending,
                        None => false,
                    };
                    if record.in_force().is_some() || pending {
                        return Err(Error::Conflict(format!(
                            "session {session_id} already has plan {}; propose a new version with \
                             POST /v1/sessions/{session_id}/plans/{}/amend",
                            record.id, record.id
                        )));
                    }
                }
                (new_id("pln"), 1, None)
            }
        };
        let diff = previous.as_ref().map(|old| plan::diff(old, &draft));
        let arguments = json!({"plan_id": id, "version": version, "plan": draft, "diff": diff});
        let digest = action_digest(PLAN_TOOL, &arguments);
        let (policy, _) = self.policy_for(session_id);
        let mut action = Action {
            id: new_id("act"),
            session_id: session_id.to_string(),
            seq: state.session.actions + 1,
            agent_id: agent.agent.id.clone(),
            tool: PLAN_TOOL.to_string(),
            upstream: None,
            name: "propose_plan".to_string(),
            server: None,
            arguments,
            annotations: json!({}),
            justification: draft.goal.clone(),
            digest: digest.clone(),
            status: ActionStatus::Denied,
            decision: airlock_core::decision::policy_failure(String::new(), policy.revision(), 0),
            approval_id: None,
            replica: None,
            result: None,
            idempotency_key: None,
            created_at: now,
            updated_at: now,
            trace: None,
        };
        // The guards that apply to a plan: kill switches (all, the agent, the tool name), the
        // agent's allowlist (which must cover `airlock__propose_plan`, as on `/mcp`), the
        // session's state, the tier (an `advisory` agent changes nothing, so it plans nothing).
        let kills = self.kill_switch_list();
        let ctx = guard::GuardContext {
            agent: &agent.agent,
            session: &state.session,
            tool: PLAN_TOOL,
            upstream: None,
            read_only: false,
            tool_allowed: agent.allows_tool(PLAN_TOOL),
            kill_switches: &kills,
        };
        let mut recorded: Option<(Value, PolicyFacts)> = None;
        let decision = match guard::check(&ctx) {
            Some(reason) => pipeline::guard_deny(reason, policy.revision(), None),
            None => {
                let mut input = pipeline::read_input(
                    &agent.agent,
                    agent.identity.as_ref(),
                    &state.session,
                    KIND_PLAN_PROPOSE,
                    Value::Null,
                    now,
                );
                if let Value::Object(doc) = &mut input {
                    doc.remove("read");
                    doc.insert(
                        "plan".into(),
                        json!({
                            "id": id, "version": version, "goal": draft.goal, "steps": draft.steps,
                            "budget_usd": draft.budget_usd, "deadline": draft.deadline,
                            "stuck_after_seconds": draft.stuck_after_seconds, "pause_when_stuck": draft.pause_when_stuck,
                            "cascade_failures": draft.cascade().map_or(0, |(n, _)| n),
                            "cascade_window_seconds": draft.cascade().map(|(_, w)| w.num_seconds()),
                            "previous": previous, "diff": diff,
                        }),
                    );
                }
                let facts = PolicyFacts {
                    tier: agent.agent.tier,
                    read_only: false,
                    catalog_cost_usd: None,
                    budget_usd_per_day: 0.0,
                    budget_usd_per_session: 0.0,
                    on_budget_exceeded: limits::OnBudgetExceeded::Deny,
                    agent_spent_today_usd: 0.0,
                    session_spent_usd: state.session.spent_usd,
                    reserved: Default::default(),
                    default_ttl_seconds: self.inner.defaults.ttl_seconds,
                    plan: None,
                };
                let (answer, input) = evaluate(policy.clone(), input).await;
                let decision = pipeline::conclude(answer, &facts);
                recorded = Some((input, facts));
                decision
            }
        };
        let settled = pipeline::settle(&state.session, &decision, &agent.limits, None, &self.inner.defaults, now);
        let mut session = settled.session;
        let approval = settled.approval.map(|requirements| Approval {
            id: new_id("apr"),
            action_id: action.id.clone(),
            session_id: session_id.to_string(),
            agent_id: agent.agent.id.clone(),
            digest: digest.clone(),
            expires_at: now
                .checked_add_signed(pipeline::seconds(requirements.ttl_seconds))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            requirements,
            status: ApprovalStatus::Pending,
            votes: Vec::new(),
            created_at: now,
            resolved_at: None,
        });
        action.approval_id = approval.as_ref().map(|a| a.id.clone());
        action.status = settled.status;
        action.decision = decision;
        let allowed = action.status == ActionStatus::Executing;
        if allowed {
            adopt(&mut action, now);
        }

        let mut commit = Commit::default();
        self.journal_decision(&mut commit, &action, recorded.as_ref(), None, approval.as_ref(), now);
        commit.event(
            session_id,
            EventKind::PlanProposed,
            now,
            json!({"plan_id": id, "version": version, "agent_id": agent.agent.id, "action_id": action.id,
                   "approval_id": action.approval_id, "effect": action.decision.effect, "plan": draft, "diff": diff}),
        );
        if allowed {
            commit.event(
                session_id,
                EventKind::PlanApproved,
                now,
                json!({"plan_id": id, "version": version, "action_id": action.id, "votes": [], "mfa": false, "by": "policy"}),
            );
        }
        if let Some(pause) = &settled.pause {
            self.pause(&mut session, pause, &mut commit, now);
        }
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session;
        // Folded again from the journal on next use.
        state.plans = None;
        let view = self.plan_view_locked(state, &id).await?;
        drop(guard);
        if approval.is_some() {
            metrics::gauge!(tm::APPROVALS_PENDING).increment(1.0);
            self.bump_approvals();
        }
        Ok(view)
    }

    /// When the approval of a plan proposal resolves (in [`Engine::vote`]'s commit): an approved
    /// proposal is adopted (the action `succeeded`, the version in force) and `plan.approved` is
    /// journaled with the votes that approved it.
    pub(in crate::engine) fn plan_vote_settled(
        &self,
        state: &mut SessionCell,
        approval: &Approval,
        action: &mut Action,
        commit: &mut Commit,
        now: DateTime<Utc>,
    ) {
        if action.tool != PLAN_TOOL || action.upstream.is_some() || action.status != ActionStatus::Approved {
            return;
        }
        adopt(action, now);
        commit.event(
            &approval.session_id,
            EventKind::PlanApproved,
            now,
            json!({"plan_id": action.arguments["plan_id"], "version": action.arguments["version"], "action_id": action.id,
                   "approval_id": approval.id, "votes": approval.votes, "mfa": approval.requirements.mfa}),
        );
        commit.project(Projection::Action(Box::new(action.clone())));
        if action.arguments["plan"].get("stuck_after_seconds").is_some_and(|v| !v.is_null()) {
            self.note_planned(&approval.session_id);
        }
        state.plans = None;
    }
}

/// An allowed or approved proposal is adopted at once: nothing runs, so its action is done.
fn adopt(action: &mut Action, now: DateTime<Utc>) {
    action.status = ActionStatus::Succeeded;
    action.updated_at = now;
    action.result = Some(ActionResult {
        ok: true,
        output: json!({"plan_id": action.arguments["plan_id"], "version": action.arguments["version"], "status": "approved"}),
        error: None,
        reported_by: Reporter::Airlock,
        duration_ms: None,
        cost_usd: None,
        at: now,
    });
}

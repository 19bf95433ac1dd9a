use super::*;

impl Engine {
    pub(super) fn approval_closed(
        &self,
        approval: &Approval,
        parent: Option<&airlock_core::TraceRef>,
        status: ApprovalStatus,
        now: DateTime<Utc>,
    ) {
        metrics::gauge!(tm::APPROVALS_PENDING).decrement(1.0);
        let waited = (now - approval.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(tm::APPROVAL_WAIT_SECONDS, "status" => status.as_str()).record(waited);
        if self.inner.tracing.enabled() {
            let approvers: Vec<String> = approval.votes.iter().map(|v| v.human.clone()).collect();
            self.inner.tracing.record(
                "approval.wait".into(),
                parent,
                approval.created_at.into(),
                now.into(),
                vec![
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_ID, approval.id.clone()),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_VERDICT, status.as_str()),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVAL_WAIT, waited),
                    opentelemetry::KeyValue::new(crate::otel::attr::APPROVERS, approvers.join(",")),
                ],
            );
        }
    }

    pub async fn approval(&self, id: &str) -> Result<(Approval, Action)> {
        let approval = self
            .inner
            .store
            .approval(id)
            .await?
            .ok_or_else(|| Error::NotFound { what: "approval", id: id.to_string() })?;
        let action = self.stored_action(&approval.action_id).await?;
        Ok((approval, action))
    }

    /// Approvals, newest first.
    pub async fn approvals(&self, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>> {
        Ok(self.inner.store.approvals(status, limit).await?)
    }

    /// Casts a human's vote. Refusals are journaled and returned as [`Error::Forbidden`] naming
    /// the rule.
    pub async fn vote(&self, human: &HumanConfig, approval_id: &str, vote: VoteRequest) -> Result<ActionView> {
        let (approval, _) = self.approval(approval_id).await?;
        let mut guard = self.lock_session(&approval.session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: approval.session_id.clone() });
        };
        let (mut approval, mut action) = self.approval(approval_id).await?;
        let now = self.now();
        let mut budget = None;

        if approval.status == ApprovalStatus::Pending && approval.expires_at <= now {
            self.expire_locked(state, &mut approval, &mut action, now).await?;
        }
        if approval.status != ApprovalStatus::Pending {
            return Err(Error::Conflict(format!(
                "approval {} is already `{}`; votes are only taken while it is pending",
                approval.id, approval.status
            )));
        }
        // With other replicas, a TOTP code used or a failure counted on one counts on all: the
        // human's codes are checked under a lock they share, against what the journal holds,
        // until this vote (or its refusal) is committed.
        let _codes = if approval.requirements.mfa { self.lock_human_codes(&human.human.id).await? } else { None };
        // What the TOTP check changes (a failure count, a lock) is journaled with the vote or
        // with its refusal.
        let mut commit = Commit::default();
        let mfa_step = match self.check_vote(human, &approval, &state.session, &vote, now, &mut commit) {
            Ok(step) => step,
            Err(Refusal { rule, msg }) => {
                commit.event(
                    &approval.session_id,
                    EventKind::VoteRefused,
                    now,
                    json!({"approval_id": approval.id, "human": human.human.id, "verdict": vote.verdict, "rule": rule, "reason": msg}),
                );
                self.commit(commit).await?;
                return Err(Error::Forbidden { rule, msg });
            }
        };

        let record = Vote {
            human: human.human.id.clone(),
            verdict: vote.verdict,
            comment: vote.comment.trim().to_string(),
            mfa: approval.requirements.mfa,
            totp_step: mfa_step,
            groups: human.human.groups.clone(),
            at: now,
        };
        approval.votes.push(record.clone());
        commit.event(
            &approval.session_id,
            EventKind::VoteCast,
            now,
            json!({"approval_id": approval.id, "action_id": action.id, "vote": record}),
        );
        let resolved = match airlock_core::vote::resolve(&approval) {
            Some(ApprovalStatus::Denied) => Some((ApprovalStatus::Denied, ActionStatus::Denied)),
            Some(ApprovalStatus::Approved) => Some((ApprovalStatus::Approved, ActionStatus::Approved)),
            _ => None,
        };
        if let Some((approval_status, action_status)) = resolved {
            self.approval_closed(&approval, action.trace.as_ref(), approval_status, now);
            approval.status = approval_status;
            approval.resolved_at = Some(now);
            action.status = action_status;
            action.updated_at = now;
            commit.event(
                &approval.session_id,
                EventKind::ApprovalResolved,
                now,
                json!({"approval_id": approval.id, "action_id": action.id, "status": approval.status, "action_status": action.status}),
            );
            let mut session = state.session.clone();
            session.updated_at = now;
            // The budgets again, now: what was spent while the call waited counts.
            let overrun = match action_status {
                ActionStatus::Approved => {
                    // Held until the commit below has spent it.
                    budget = self.lock_budget(&action.agent_id).await?;
                    self.budget_recheck(&action, &session, now).await?
                }
                _ => None,
            };
            if let Some(reason) = overrun {
                action.status = ActionStatus::Denied;
                action.decision.reasons.insert(0, reason.clone());
                commit.event(
                    &approval.session_id,
                    EventKind::ActionCancelled,
                    now,
                    json!({"action_id": action.id, "reason": reason, "rule": limits::RULE_BUDGET}),
                );
                session.denials += 1;
            } else if action_status == ActionStatus::Denied {
                session.denials += 1;
            } else {
                // The cost counts once the action is approved.
                let cost = pipeline::counted_price(action.decision.cost_usd);
                session.spent_usd += cost;
                if cost > 0.0 {
                    self.spent_today(&action.agent_id, now).await?;
                    self.add_spend(&action.agent_id, cost, now);
                }
            }
            commit.project(Projection::Action(Box::new(action.clone())));
            commit.project(Projection::Session(session.clone()));
            state.session = session;
        }
        // An approved plan proposal is adopted in the same commit.
        self.plan_vote_settled(state, &approval, &mut action, &mut commit, now);
        commit.project(Projection::Approval(approval.clone()));
        if resolved.is_some() {
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", &approval, &action, now);
        }
        self.commit(commit).await?;
        drop(budget);
        if !action.status.is_waiting() {
            state.waiting.retain(|_, id| id != &action.id);
        }
        drop(guard);
        self.notify(&action.id);
        self.bump_approvals();
        Ok(ActionView { action, approval: Some(approval) })
    }

    /// On a shared journal: takes the lock of `human`'s TOTP codes and reads their failures,
    /// lock and newest code used from the journal, which other replicas may have changed.
    async fn lock_human_codes(&self, human: &str) -> Result<Option<airlock_store::Held>> {
        let store = &self.inner.store;
        let Some(held) = store.lock(airlock_store::LockScope::Human(human)).await? else { return Ok(None) };
        let guard = store.mfa_guards().await?.into_iter().find(|g| g.human == human);
        let newest = store
            .approvals(None, 1000)
            .await?
            .into_iter()
            .flat_map(|a| a.votes)
            .filter(|v| v.human == human)
            .filter_map(|v| v.totp_step)
            .max();
        lock(&self.inner.mfa_guards).insert(human.to_string(), guard.unwrap_or_else(|| MfaGuard::new(human)));
        if let Some(step) = newest {
            let mut steps = lock(&self.inner.totp_steps);
            let last = steps.entry(human.to_string()).or_insert(step);
            *last = (*last).max(step);
        }
        Ok(Some(held))
    }

    /// Checks a vote against the one eligibility rule (`airlock_core::vote`), then verifies and
    /// consumes the TOTP code when the approval needs MFA. Returns the TOTP step used.
    pub(super) fn check_vote(
        &self,
        human: &HumanConfig,
        approval: &Approval,
        session: &Session,
        vote: &VoteRequest,
        now: DateTime<Utc>,
        commit: &mut Commit,
    ) -> std::result::Result<Option<u64>, Refusal> {
        let h = &human.human;
        let allow_requester = self.inner.config.approvals.allow_requester;
        let needs_mfa = airlock_core::vote::check_vote(h, approval, session, &vote.comment, allow_requester)?;
        if !needs_mfa {
            return Ok(None);
        }
        let refuse = |msg: String| Refusal { rule: airlock_core::vote::RULE_MFA, msg };
        let Some(secret) = &human.totp_secret else {
            return Err(refuse(format!(
                "approval {} needs MFA and `{}` has no TOTP secret configured",
                approval.id, h.id
            )));
        };
        let Some(code) = vote.totp.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(refuse(format!("approval {} needs MFA: send a current TOTP code as `totp`", approval.id)));
        };
        // Check and consume the code in one step: votes in different sessions run concurrently,
        // and one code must not pass twice, nor one guess be counted twice. A code consumed by a
        // vote whose commit then fails stays used; the approver waits for the next one.
        let mut guards = lock(&self.inner.mfa_guards);
        let mut steps = lock(&self.inner.totp_steps);
        let guard = guards.entry(h.id.clone()).or_insert_with(|| MfaGuard::new(&h.id));
        if let Some(until) = guard.locked_at(now) {
            return Err(guard.refusal(until));
        }
        let checked =
            crate::mfa::verify(secret, code, now).map_err(|e| format!("TOTP code refused: {e}")).and_then(|step| {
                match steps.get(&h.id) {
                    Some(&last) if step <= last => {
                        Err("TOTP code refused: this code was already used; wait for the next one".to_string())
                    }
                    _ => Ok(step),
                }
            });
        match checked {
            Ok(step) => {
                steps.insert(h.id.clone(), step);
                if guard.failures > 0 {
                    guard.record_success();
                    commit.project(Projection::MfaGuard(guard.clone()));
                }
                Ok(Some(step))
            }
            Err(msg) => {
                let limits = self.inner.config.approvals.mfa;
                let locked = guard.record_failure(now, limits);
                commit.project(Projection::MfaGuard(guard.clone()));
                if let Some(until) = locked {
                    commit.event(
                        SYSTEM_STREAM,
                        EventKind::MfaLocked,
                        now,
                        json!({"human": h.id, "failures": guard.failures, "locked_until": until}),
                    );
                    tracing::warn!(human = %h.id, failures = guard.failures, %until, "TOTP codes locked after failed attempts");
                    return Err(guard.refusal(until));
                }
                let left = limits.max_failures.saturating_sub(guard.failures);
                Err(refuse(format!(
                    "{msg} ({} failed in a row; {left} more and `{}`'s TOTP codes are locked for {} s)",
                    guard.failures, h.id, limits.lockout_seconds
                )))
            }
        }
    }

    /// Lifts a human's TOTP lock and clears the failure count (admins); journaled.
    pub async fn unlock_mfa(&self, by: &HumanConfig, human_id: &str) -> Result<MfaGuard> {
        if !by.human.has_role(airlock_core::Role::Admin) {
            return Err(Error::Forbidden {
                rule: "role",
                msg: format!("`{}` needs the `admin` role to lift a TOTP lock", by.human.id),
            });
        }
        if !self.inner.config.humans.iter().any(|h| h.human.id == human_id) {
            return Err(Error::NotFound { what: "human", id: human_id.to_string() });
        }
        let now = self.now();
        let guard = {
            let mut guards = lock(&self.inner.mfa_guards);
            let guard = guards.entry(human_id.to_string()).or_insert_with(|| MfaGuard::new(human_id));
            let was = guard.clone();
            guard.record_success();
            (was, guard.clone())
        };
        let (was, guard) = guard;
        let mut commit = Commit::default();
        commit
            .event(
                SYSTEM_STREAM,
                EventKind::MfaUnlocked,
                now,
                json!({"human": human_id, "by": by.human.id, "failures": was.failures, "was_locked_until": was.locked_until}),
            )
            .project(Projection::MfaGuard(guard.clone()));
        self.commit(commit).await?;
        Ok(guard)
    }

    /// Humans whose TOTP codes are locked now, with the end of each lock.
    pub fn mfa_locks(&self) -> Vec<(String, DateTime<Utc>)> {
        let now = self.now();
        let mut out: Vec<_> = lock(&self.inner.mfa_guards)
            .values()
            .filter_map(|g| g.locked_at(now).map(|u| (g.human.clone(), u)))
            .collect();
        out.sort();
        out
    }

    pub(super) async fn expire_locked(
        &self,
        state: &mut SessionCell,
        approval: &mut Approval,
        action: &mut Action,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.approval_closed(approval, action.trace.as_ref(), ApprovalStatus::Expired, now);
        approval.status = ApprovalStatus::Expired;
        approval.resolved_at = Some(now);
        action.status = ActionStatus::Expired;
        action.updated_at = now;
        let mut commit = Commit::default();
        commit
            .event(
                &approval.session_id,
                EventKind::ApprovalExpired,
                now,
                json!({"approval_id": approval.id, "action_id": action.id, "expires_at": approval.expires_at, "votes": approval.votes.len()}),
            )
            .project(Projection::Approval(approval.clone()))
            .project(Projection::Action(Box::new(action.clone())));
        crate::notify::enqueue(&self.inner.config, &mut commit, "approval.expired", approval, action, now);
        self.commit(commit).await?;
        state.waiting.retain(|_, id| id != &action.id);
        self.notify(&action.id);
        self.bump_approvals();
        Ok(())
    }

    /// Expires every pending approval past its time, and every approved action not run within
    /// `[approvals] execute_within_seconds`. Returns how many expired.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = self.now();
        let mut n = self.expire_unused(now).await?;
        let due = self.inner.store.approvals_due(now).await?;
        for approval in due {
            let mut guard = self.lock_session(&approval.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let (mut approval, mut action) = self.approval(&approval.id).await?;
            if approval.status == ApprovalStatus::Pending && approval.expires_at <= now {
                self.expire_locked(state, &mut approval, &mut action, now).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// An approval is consent to run an action soon, not whenever: approved actions that were not
    /// run (claimed by the gateway, or reported by the agent) in time expire.
    pub(super) async fn expire_unused(&self, now: DateTime<Utc>) -> Result<usize> {
        let window = chrono::Duration::seconds(self.inner.config.approvals.execute_within_seconds as i64);
        let approved = self.inner.store.actions_in_status(ActionStatus::Approved).await?;
        let mut n = 0;
        for action in approved.into_iter().filter(|a| a.updated_at + window <= now) {
            let mut guard = self.lock_session(&action.session_id).await?;
            let Some(state) = guard.as_mut() else { continue };
            let Some(mut action) = self.inner.store.action(&action.id).await? else { continue };
            if action.status != ActionStatus::Approved || action.updated_at + window > now {
                continue;
            }
            let approved_at = action.updated_at;
            action.status = ActionStatus::Expired;
            action.updated_at = now;
            let reason = Reason::new(
                RULE_APPROVAL_UNUSED,
                format!(
                    "approved at {} but not run within {} s ([approvals] execute_within_seconds); ask again",
                    approved_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    window.num_seconds()
                ),
            );
            let mut commit = Commit::default();
            commit
                .event(
                    &action.session_id,
                    EventKind::ActionExpired,
                    now,
                    json!({"action_id": action.id, "approved_at": approved_at, "reason": reason}),
                )
                .project(Projection::Action(Box::new(action.clone())));
            self.commit(commit).await?;
            state.waiting.retain(|_, id| id != &action.id);
            drop(guard);
            self.notify(&action.id);
            n += 1;
        }
        Ok(n)
    }
}

use super::*;

impl Engine {
    /// Resumes a paused session. Humans with `approve` or `admin` may, with a comment, except
    /// the human the session acts for (maker-checker, as for votes).
    pub async fn resume_session(&self, human: &HumanConfig, session_id: &str, comment: &str) -> Result<Session> {
        let h = &human.human;
        let mut guard = self.lock_session(session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        airlock_core::vote::check_resume(h, &state.session, comment, self.inner.config.approvals.allow_requester)?;
        if state.session.status != SessionStatus::Paused {
            return Err(Error::Conflict(format!(
                "session {session_id} is `{}`, not paused",
                status_name(state.session.status)
            )));
        }
        let now = self.now();
        let mut session = state.session.clone();
        let was = session.status_reason.take();
        session.status = SessionStatus::Active;
        session.consecutive_failures = 0;
        session.consecutive_denials = 0;
        session.updated_at = now;
        session.resumed_at = Some(now);
        let mut commit = Commit::default();
        commit
            .event(
                session_id,
                EventKind::SessionStatusChanged,
                now,
                json!({"status": "active", "by": h.id, "comment": comment.trim(), "was": was}),
            )
            .project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session.clone();
        state.recent.clear();
        Ok(session)
    }

    /// Closes a session: no new actions, and what still waits in it (pending approvals, approved
    /// actions that have not run) is cancelled, all in one journal commit. The session's own
    /// agent or an admin may close it; closing a closed session returns it unchanged.
    pub async fn close_session(&self, by: SessionCloser<'_>, session_id: &str, reason: &str) -> Result<Session> {
        let by_id = match by {
            SessionCloser::Agent(a) => a.agent.id.clone(),
            SessionCloser::Human(h) => {
                if !h.human.has_role(airlock_core::Role::Admin) {
                    return Err(Error::Forbidden {
                        rule: "role",
                        msg: format!("`{}` needs the `admin` role to close another's session", h.human.id),
                    });
                }
                h.human.id.clone()
            }
        };
        let mut guard = self.lock_session(session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if let SessionCloser::Agent(a) = by
            && state.session.agent_id != a.agent.id
        {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        }
        if state.session.status == SessionStatus::Closed {
            return Ok(state.session.clone());
        }
        let now = self.now();
        let reason = match reason.trim() {
            "" => format!("closed by {by_id}"),
            r => r.to_string(),
        };
        let mut commit = Commit::default();
        let why = Reason::new(guard::RULE_SESSION_STATE, format!("session closed: {reason}"));
        let mut cancelled = Vec::new();
        let mut approvals_closed = false;
        for mut action in self.inner.store.waiting_actions(session_id).await? {
            let mut approval = match &action.approval_id {
                Some(id) if action.status == ActionStatus::PendingApproval => self.inner.store.approval(id).await?,
                _ => None,
            };
            action.status = ActionStatus::Cancelled;
            action.updated_at = now;
            commit.event(
                session_id,
                EventKind::ActionCancelled,
                now,
                json!({"action_id": action.id, "approval_id": approval.as_ref().map(|a| a.id.clone()), "reason": why}),
            );
            if let Some(approval) = approval.as_mut().filter(|a| a.status == ApprovalStatus::Pending) {
                self.approval_closed(approval, action.trace.as_ref(), ApprovalStatus::Cancelled, now);
                approval.status = ApprovalStatus::Cancelled;
                approval.resolved_at = Some(now);
                crate::notify::enqueue(&self.inner.config, &mut commit, "approval.resolved", approval, &action, now);
                commit.project(Projection::Approval(approval.clone()));
                approvals_closed = true;
            }
            commit.project(Projection::Action(Box::new(action.clone())));
            cancelled.push(action.id);
        }
        let mut session = state.session.clone();
        session.status = SessionStatus::Closed;
        session.status_reason = Some(reason.clone());
        session.updated_at = now;
        commit
            .event(
                session_id,
                EventKind::SessionStatusChanged,
                now,
                json!({"status": "closed", "by": by_id, "reason": reason, "cancelled": cancelled}),
            )
            .project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        state.session = session.clone();
        state.waiting.clear();
        drop(guard);
        for id in &cancelled {
            self.notify(id);
        }
        if approvals_closed {
            self.bump_approvals();
        }
        Ok(session)
    }

    /// The human a new session of `agent` acts for (its requester, whom maker-checker keeps from
    /// approving the session's actions or resuming it), given what the agent `claimed`, where
    /// `source` says where the claim came from (`` `on_behalf_of` ``, a header, a `_meta` key).
    ///
    /// The agent's configured `on_behalf_of` is the floor: such an agent may repeat it, but can
    /// neither drop it (which would let that human approve) nor name another human instead.
    /// Without one, the claim is taken as it is, and must name a configured human.
    pub fn requester(&self, agent: &AgentConfig, claimed: Option<&str>, source: &str) -> Result<Option<String>> {
        if let Some(h) = claimed
            && !self.inner.config.humans.iter().any(|c| c.human.id == h)
        {
            return Err(Error::Invalid(format!("{source} names `{h}`, who is not a configured human")));
        }
        match (&agent.on_behalf_of, claimed) {
            (Some(configured), Some(h)) if configured != h => Err(Error::Forbidden {
                rule: airlock_core::vote::RULE_MAKER_CHECKER,
                msg: format!(
                    "agent `{}` acts for `{configured}` (its `on_behalf_of` in the configuration), so its sessions \
                     can't act for `{h}` ({source})",
                    agent.agent.id
                ),
            }),
            (Some(configured), _) => Ok(Some(configured.clone())),
            (None, claimed) => Ok(claimed.map(str::to_string)),
        }
    }

    /// Opens a session for `agent`, acting for the human [`Engine::requester`] settles on from
    /// `on_behalf_of`.
    pub async fn open_session(
        &self,
        agent: &AgentConfig,
        task: String,
        labels: std::collections::BTreeMap<String, String>,
        on_behalf_of: Option<String>,
    ) -> Result<Session> {
        let on_behalf_of = self.requester(agent, on_behalf_of.as_deref(), "`on_behalf_of`")?;
        let now = self.now();
        self.check_disk_floor()?;
        let per_minute = agent.limits.sessions_per_minute;
        if per_minute > 0 {
            let mut buckets = lock(&self.inner.session_buckets);
            let bucket = buckets.entry(agent.agent.id.clone()).or_insert_with(|| TokenBucket::new(per_minute, 0, now));
            if let Err(wait) = bucket.take(per_minute, now) {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(Error::RateLimited {
                    msg: format!(
                        "agent `{}` opened more than {per_minute} sessions in a minute ([guards] sessions_per_minute); retry after {secs}s, or reuse a session",
                        agent.agent.id
                    ),
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        let mut session =
            Session { labels, on_behalf_of, ..Session::opened(new_id("ses"), agent.agent.id.clone(), task, now) };
        session.trace = self.inner.tracing.session_root(&session);
        let mut commit = Commit::default();
        commit
            .event(&session.id, EventKind::SessionOpened, now, to_value(&session))
            .project(Projection::Session(session.clone()));
        self.commit(commit).await?;
        let cell = self.cell(&session.id);
        *cell.lock().await = Some(SessionCell {
            session: session.clone(),
            waiting: HashMap::new(),
            recent: Default::default(),
            plans: None,
        });
        Ok(session)
    }

    /// A session, if `viewer` may see it (its agent, or any human).
    pub async fn session(&self, id: &str, agent_viewer: Option<&str>) -> Result<Session> {
        let session = self.inner.store.session(id).await?;
        match session {
            Some(s) if agent_viewer.is_none_or(|a| a == s.agent_id) => Ok(s),
            _ => Err(Error::NotFound { what: "session", id: id.to_string() }),
        }
    }

    /// Sessions visible to the caller.
    pub async fn sessions(&self, filter: SessionFilter) -> Result<Vec<Session>> {
        Ok(self.inner.store.sessions(filter).await?)
    }
}

pub(super) fn status_name(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Active => "active",
        SessionStatus::Paused => "paused",
        SessionStatus::Closed => "closed",
    }
}

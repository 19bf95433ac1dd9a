use super::*;

impl Engine {
    /// An action with its approval, if the viewer may see it (its agent, or any human).
    pub async fn action_view(&self, id: &str, agent_viewer: Option<&str>) -> Result<ActionView> {
        let action = self.inner.store.action(id).await?;
        let action = match action {
            Some(a) if agent_viewer.is_none_or(|v| v == a.agent_id) => a,
            _ => return Err(Error::NotFound { what: "action", id: id.to_string() }),
        };
        self.view(action).await
    }

    pub(super) async fn view(&self, action: Action) -> Result<ActionView> {
        let approval = match &action.approval_id {
            Some(id) => self.inner.store.approval(id).await?,
            None => None,
        };
        Ok(ActionView { action, approval })
    }

    /// Runs the pipeline for one requested call: intake (idempotency replay, joining an
    /// identical waiting call), the guards, policy, the tier floor and budgets
    /// (`airlock_core::pipeline`), then journals the decision before returning it.
    pub async fn submit(&self, agent: &AgentConfig, session_id: &str, request: ActionRequest) -> Result<Submission> {
        let started = std::time::Instant::now();
        check_request(&request)?;
        self.kill_switches_certain()?;
        let info = self.resolve_tool(&request.tool, request.reported_annotations.as_ref())?;
        let digest = action_digest(&request.tool, &request.arguments);
        let mut guard = self.lock_session(session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if state.session.agent_id != agent.agent.id {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        }
        if let Some(first) = self.idempotent_replay(agent, session_id, &request, &digest).await? {
            return Ok(first);
        }
        let now = self.now();
        // A paused or closed session joins nothing: the call goes through the guards, which deny it.
        if guard::session_state(&state.session).is_none()
            && let Some(joined) = self.join_waiting(state, agent, session_id, &request, &digest, now).await?
        {
            return Ok(joined);
        }
        // Nothing new starts when the disk is nearly full.
        self.check_disk_floor()?;

        // A session in the canary's share is decided by the candidate.
        let (policy, canary) = self.policy_for(session_id);
        let mut action = Action {
            id: new_id("act"),
            session_id: session_id.to_string(),
            seq: state.session.actions + 1,
            agent_id: agent.agent.id.clone(),
            tool: request.tool.clone(),
            upstream: info.upstream.clone(),
            name: info.name.clone(),
            server: request.server.clone(),
            arguments: request.arguments,
            annotations: info.annotations.clone(),
            justification: request.justification,
            digest: digest.clone(),
            status: ActionStatus::Denied,
            decision: airlock_core::decision::policy_failure(String::new(), policy.revision(), 0),
            approval_id: None,
            replica: None,
            result: None,
            idempotency_key: request.idempotency_key,
            created_at: now,
            updated_at: now,
            trace: None,
        };
        let tracing_on = self.inner.tracing.enabled();
        let mut span = if tracing_on {
            let parent = request
                .traceparent
                .as_deref()
                .and_then(crate::otel::parse_traceparent)
                .or_else(|| state.session.trace.clone());
            let attrs = self.inner.tracing.action_attributes(&action, request.mcp_session.as_deref());
            self.inner.tracing.start(
                format!("execute_tool {}", action.tool),
                opentelemetry::trace::SpanKind::Internal,
                parent.as_ref(),
                std::time::SystemTime::now() - started.elapsed(),
                attrs,
            )
        } else {
            crate::otel::OpenSpan::none()
        };
        action.trace = span.reference();

        // What the guards need that only IO can tell: the rate-limit bucket after a restart,
        // the agent's spend today.
        let limits = &agent.limits;
        // The daily budget is read here and spent by the commit below: no other replica's call
        // spends it in between.
        let _budget = self.lock_budget(&agent.agent.id).await?;
        self.seed_bucket(agent, now).await?;
        let spent_today =
            if limits.budget_usd_per_day > 0.0 { self.spent_today(&agent.agent.id, now).await? } else { 0.0 };
        let reserved = self.reserved(agent, session_id, now).await?;
        let window = pipeline::loop_window(limits);
        while state.recent.front().is_some_and(|(_, at)| *at < now - window) {
            state.recent.pop_front();
        }
        let repeats = u32::try_from(state.recent.iter().filter(|(d, _)| *d == digest).count())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let kills = self.kill_switch_list();
        let input = self.check_input(&info, &action.arguments);
        let mut commit = Commit::default();
        let screened = {
            let intake = Intake {
                agent: &agent.agent,
                identity: agent.identity.as_ref(),
                limits,
                session: &state.session,
                action: &action,
                read_only: info.read_only,
                tool_allowed: agent.allows_tool(&action.tool),
                input: &input,
                catalog_cost_usd: info.cost_usd,
                kill_switches: &kills,
                repeats,
                agent_spent_today_usd: spent_today,
                reserved,
                defaults: &self.inner.defaults,
                policy_revision: policy.revision(),
                now,
            };
            let mut buckets = lock(&self.inner.buckets);
            let mut breakers = lock(&self.inner.breakers);
            let screened = pipeline::screen(
                &intake,
                GuardState { bucket: buckets.get_mut(&agent.agent.id), breaker: breakers.get_mut(&action.tool) },
            );
            if let (Some(t), Some(breaker)) = (screened.breaker_transition, breakers.get(&action.tool)) {
                Self::journal_breaker(breaker, t, &mut commit, now);
                export_breakers(&self.inner.labels, &breakers);
            }
            screened
        };
        // The exact policy input and facts, journaled with the decision so it can be replayed.
        let mut recorded: Option<(Value, PolicyFacts)> = None;
        let mut policy_span = None;
        let mut plan_link = None;
        let (decision, guard_pause) = match screened.screening {
            Screening::Decided { decision, pause } => (decision, pause),
            Screening::Policy { mut input, mut facts } => {
                // A call under a lease is held to the leased step of another session's plan;
                // any other call to the plan in force in its session, if any: policy sees the
                // step the call matches, or drift.
                let leased = match &request.plan_lease {
                    Some(lease) => Some(self.hold_to_lease(state, &action, lease, &mut input, &mut facts, now).await?),
                    None => None,
                };
                match leased {
                    Some(Err(refused)) => {
                        metrics::counter!(tm::PLAN_LEASE_REFUSED).increment(1);
                        (pipeline::guard_deny(plans::lease_refusal(refused), policy.revision(), None), None)
                    }
                    leased => {
                        plan_link = match leased {
                            Some(Ok(link)) => Some(link),
                            _ => self.hold_to_plan(state, &action, &mut input, &mut facts, now).await?,
                        };
                        let p0 = std::time::SystemTime::now();
                        let (answer, input) = evaluate(policy.clone(), input).await;
                        policy_span = Some((p0, std::time::SystemTime::now()));
                        let decision = pipeline::conclude(answer, &facts);
                        recorded = Some((input, facts));
                        (decision, None)
                    }
                }
            }
        };
        state.recent.push_back((digest.clone(), now));

        let settled = pipeline::settle(&state.session, &decision, limits, guard_pause, &self.inner.defaults, now);
        let mut session = settled.session;
        if settled.spend_usd > 0.0 {
            // Load the day's spend first, so that the cache holds it before the addition.
            self.spent_today(&agent.agent.id, now).await?;
            self.add_spend(&agent.agent.id, settled.spend_usd, now);
        }
        let approval = settled.approval.map(|requirements| {
            let ttl = pipeline::seconds(requirements.ttl_seconds);
            Approval {
                id: new_id("apr"),
                action_id: action.id.clone(),
                session_id: session_id.to_string(),
                agent_id: agent.agent.id.clone(),
                digest: digest.clone(),
                requirements,
                status: ApprovalStatus::Pending,
                votes: Vec::new(),
                created_at: now,
                // Policy bounds the expiry; saturate all the same rather than panic.
                expires_at: now.checked_add_signed(ttl).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
                resolved_at: None,
            }
        });
        action.approval_id = approval.as_ref().map(|a| a.id.clone());
        action.status = settled.status;
        if action.status == ActionStatus::Executing && action.upstream.is_some() {
            action.replica = self.replica_id();
        }
        action.decision = decision;

        // A flood of rate-limited calls must not fill the journal: one per agent per sample period
        // is recorded in full (with the count left out before it); the others are counted.
        let mut unjournaled = None;
        if action.status == ActionStatus::Denied
            && action.decision.reasons.first().is_some_and(|r| r.rule == limits::RULE_RATE_LIMIT)
        {
            match self.sample_rate_limited(&agent.agent.id, now) {
                Some(skipped) => unjournaled = Some(skipped),
                None => {
                    span.end_at(std::time::SystemTime::now());
                    drop(guard);
                    metrics::counter!(tm::DECISIONS, "effect" => "deny", "rule" => limits::RULE_RATE_LIMIT)
                        .increment(1);
                    return Ok(Submission { view: ActionView { action, approval: None }, outcome: Outcome::New });
                }
            }
        }
        // A denied call never runs: oversized arguments are kept as digest, size and a prefix.
        if action.status == ActionStatus::Denied
            && let Some(stored) = super::storage::stored_denied_arguments(&action.arguments, &digest)
        {
            if let Some((Value::Object(input), _)) = recorded.as_mut()
                && let Some(Value::Object(called)) = input.get_mut("action")
            {
                called.insert("arguments".into(), stored.clone());
            }
            action.arguments = stored;
        }

        self.journal_decision(&mut commit, &action, recorded.as_ref(), unjournaled, approval.as_ref(), now);
        if let Some(pause) = &settled.pause {
            self.pause(&mut session, pause, &mut commit, now);
        }
        if let Some(link) = &plan_link {
            Self::journal_plan_link(link, &action, &mut commit, now);
        }
        commit.project(Projection::Action(Box::new(action.clone()))).project(Projection::Session(session.clone()));
        let j0 = std::time::SystemTime::now();
        match self.commit(commit).await {
            Ok(()) => {}
            Err(Error::Store(airlock_store::Error::Conflict(_))) if action.idempotency_key.is_some() => {
                return Err(Error::Conflict("the `Idempotency-Key` was used concurrently; retry the request".into()));
            }
            Err(e) => return Err(e),
        }
        state.session = session;
        if action.status.is_waiting() {
            state.waiting.insert(digest, action.id.clone());
        }
        if tracing_on {
            self.record_decision_spans(&action, &mut span, policy_span, j0);
        }
        if let Some(link) = plan_link {
            self.plan_linked(state, link, &action, &mut span);
        }
        span.end_at(std::time::SystemTime::now());
        if let Some((input, facts)) = recorded
            && !canary
        {
            self.shadow_evaluate(&action, input, facts);
        }
        drop(guard);
        if approval.is_some() {
            metrics::gauge!(tm::APPROVALS_PENDING).increment(1.0);
            self.bump_approvals();
        }
        let rule = action.decision.reasons.first().map_or("none", |r| r.rule.as_str());
        let rule = self.inner.labels.rule(rule);
        metrics::counter!(tm::DECISIONS, "effect" => action.decision.effect.as_str(), "rule" => rule).increment(1);
        metrics::histogram!(tm::DECISION_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(tm::POLICY_SECONDS).record(action.decision.eval_us as f64 / 1e6);
        if action.status == ActionStatus::Denied {
            metrics::counter!(tm::ACTIONS, "tool" => self.inner.labels.tool(&action.tool), "outcome" => "denied")
                .increment(1);
        }
        Ok(Submission { view: ActionView { action, approval }, outcome: Outcome::New })
    }

    /// What airlock knows about a tool. A name of the form `{upstream}__{tool}` must name a
    /// configured upstream: over HTTP and over MCP alike, `foo__bar` with no upstream `foo` is
    /// refused rather than becoming an action the agent runs itself.
    pub fn resolve_tool(&self, tool: &str, reported: Option<&Value>) -> Result<ToolInfo> {
        if let Some((upstream, _)) = tool.split_once(crate::catalog::TOOL_SEPARATOR)
            && !self.inner.catalog.is_upstream(upstream)
        {
            return Err(Error::Invalid(format!(
                "there is no tool `{tool}`: no upstream is named `{upstream}`; tool names with `{sep}` are \
                 `{{upstream}}{sep}{{tool}}` as listed by tools/list and GET /v1/upstreams",
                sep = crate::catalog::TOOL_SEPARATOR
            )));
        }
        Ok(self.inner.catalog.resolve(tool, reported))
    }

    /// Intake 1: a retry with the same `Idempotency-Key` returns the first outcome.
    pub(super) async fn idempotent_replay(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        request: &ActionRequest,
        digest: &str,
    ) -> Result<Option<Submission>> {
        let Some(key) = &request.idempotency_key else { return Ok(None) };
        let Some(first) = self.inner.store.action_by_idempotency_key(&agent.agent.id, key).await? else {
            return Ok(None);
        };
        if first.digest != digest || first.session_id != session_id {
            return Err(Error::Conflict(format!(
                "`Idempotency-Key` `{key}` was first used for action {} with a different call; use a new key for a new call",
                first.id
            )));
        }
        Ok(Some(Submission { view: self.view(first).await?, outcome: Outcome::Replayed }))
    }

    /// Intake 2: an identical call still waiting in this session joins it.
    pub(super) async fn join_waiting(
        &self,
        state: &mut SessionCell,
        agent: &AgentConfig,
        session_id: &str,
        request: &ActionRequest,
        digest: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Submission>> {
        let Some(existing_id) = state.waiting.get(digest).cloned() else { return Ok(None) };
        let existing = match self.inner.store.action(&existing_id).await? {
            Some(existing) if existing.status.is_waiting() => existing,
            _ => {
                state.waiting.remove(digest);
                return Ok(None);
            }
        };
        let mut commit = Commit::default();
        commit.event(
            session_id,
            EventKind::ActionJoined,
            now,
            json!({"action_id": existing.id, "digest": digest, "status": existing.status}),
        );
        // A retry with this call's key must find the action it joined, not run anew.
        if let Some(key) = &request.idempotency_key {
            commit.project(Projection::IdempotencyKey {
                agent_id: agent.agent.id.clone(),
                key: key.clone(),
                action_id: existing.id.clone(),
            });
        }
        self.commit(commit).await?;
        Ok(Some(Submission { view: self.view(existing).await?, outcome: Outcome::Joined }))
    }

    /// The `policy.evaluate` and `journal.append` spans of a decision, and its span's attributes.
    pub(super) fn record_decision_spans(
        &self,
        action: &Action,
        span: &mut crate::otel::OpenSpan,
        policy_span: Option<(std::time::SystemTime, std::time::SystemTime)>,
        journal_started: std::time::SystemTime,
    ) {
        use opentelemetry::KeyValue;
        let t = &self.inner.tracing;
        let parent = action.trace.clone();
        let revision = action.decision.policy_revision.clone();
        if let Some((p0, p1)) = policy_span {
            t.record(
                "policy.evaluate".into(),
                parent.as_ref(),
                p0,
                p1,
                vec![
                    KeyValue::new(crate::otel::attr::POLICY_REVISION, revision.clone()),
                    KeyValue::new(crate::otel::attr::EFFECT, action.decision.effect.as_str()),
                    KeyValue::new(crate::otel::attr::POLICY_DURATION_US, action.decision.eval_us as i64),
                ],
            );
        }
        t.record("journal.append".into(), parent.as_ref(), journal_started, std::time::SystemTime::now(), vec![]);
        let rules: Vec<String> = action.decision.reasons.iter().map(|r| r.rule.clone()).collect();
        span.set(t.arguments_attribute(action).into_iter().collect());
        span.set(vec![
            KeyValue::new(crate::otel::attr::EFFECT, action.decision.effect.as_str()),
            KeyValue::new(crate::otel::attr::RULES, rules.join(",")),
            KeyValue::new(crate::otel::attr::POLICY_REVISION, revision),
            KeyValue::new(crate::otel::attr::ACTION_STATUS, action.status.as_str()),
        ]);
        if action.status == ActionStatus::Denied {
            span.error(action.decision.reasons.first().map(|r| format!("[{}] {}", r.rule, r.msg)).unwrap_or_default());
        }
    }

    /// Waits until the action's status differs from `from` or `timeout` passes, then returns it.
    pub async fn wait_for_change(&self, id: &str, agent_viewer: Option<&str>, timeout: Duration) -> Result<ActionView> {
        let deadline = tokio::time::Instant::now() + timeout;
        let first = self.action_view(id, agent_viewer).await?;
        let from = first.action.status;
        if timeout.is_zero() || from.is_final() {
            return Ok(first);
        }
        let _waiting = Waiting::new();
        loop {
            let watcher = self.watcher(id);
            let notified = watcher.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let current = self.action_view(id, agent_viewer).await?;
            if current.action.status != from {
                return Ok(current);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.action_view(id, agent_viewer).await;
            }
        }
    }
}

/// One caller blocked in [`Engine::wait_for_change`], counted in
/// [`crate::telemetry::ACTION_WAITERS`] while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Waiting {
        metrics::gauge!(crate::telemetry::ACTION_WAITERS).increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::ACTION_WAITERS).decrement(1.0);
    }
}

/// Checks the shape of a request before anything is locked or recorded.
fn check_request(request: &ActionRequest) -> Result<()> {
    if request.tool.is_empty() || request.tool.len() > 256 {
        return Err(Error::Invalid("`tool` must be 1 to 256 characters".into()));
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 255)
    {
        return Err(Error::Invalid("`Idempotency-Key` must be 1 to 255 characters".into()));
    }
    if let Some(lease) = &request.plan_lease {
        lease.check().map_err(Error::Invalid)?;
    }
    Ok(())
}

impl Engine {
    /// Journals a decided call (or plan proposal): `action.requested`, `action.decided` with the
    /// exact policy input and facts (so that it can be replayed), and its approval with the
    /// `approval.requested` notifications when it is held.
    pub(super) fn journal_decision(
        &self,
        commit: &mut Commit,
        action: &Action,
        recorded: Option<&(Value, PolicyFacts)>,
        rate_limited_unjournaled: Option<u64>,
        approval: Option<&Approval>,
        now: DateTime<Utc>,
    ) {
        let session_id = &action.session_id;
        commit.event(session_id, EventKind::ActionRequested, now, requested_payload(action));
        commit.event(
            session_id,
            EventKind::ActionDecided,
            now,
            json!({
                "action_id": action.id,
                "status": action.status,
                "decision": action.decision,
                "input": recorded.map(|(input, _)| input),
                "facts": recorded.map(|(_, facts)| facts),
                "rate_limited_unjournaled": rate_limited_unjournaled,
            }),
        );
        if let Some(a) = approval {
            commit.event(session_id, EventKind::ApprovalRequested, now, to_value(a));
            commit.project(Projection::Approval(a.clone()));
            crate::notify::enqueue(&self.inner.config, commit, "approval.requested", a, action, now);
        }
    }
}

/// The `action.requested` event.
fn requested_payload(action: &Action) -> Value {
    json!({
        "action_id": action.id,
        "seq": action.seq,
        "agent_id": action.agent_id,
        "tool": action.tool,
        "upstream": action.upstream,
        "name": action.name,
        "server": action.server,
        "arguments": action.arguments,
        "annotations": action.annotations,
        "justification": action.justification,
        "digest": action.digest,
        "idempotency_key": action.idempotency_key,
    })
}

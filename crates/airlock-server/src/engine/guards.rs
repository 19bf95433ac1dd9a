use super::*;

impl Engine {
    /// Makes sure the agent has a rate-limit bucket, seeded from the journal after a restart
    /// (the calls of the last minute count as spent).
    pub(super) async fn seed_bucket(&self, agent: &AgentConfig, now: DateTime<Utc>) -> Result<()> {
        let per_minute = agent.limits.actions_per_minute;
        if per_minute == 0 || lock(&self.inner.buckets).contains_key(&agent.agent.id) {
            return Ok(());
        }
        let used = self.inner.store.agent_actions_since(&agent.agent.id, now - chrono::Duration::seconds(60)).await?;
        lock(&self.inner.buckets)
            .entry(agent.agent.id.clone())
            .or_insert_with(|| TokenBucket::new(per_minute, used, now));
        Ok(())
    }

    /// What the agent spent today (UTC), from memory or, after a restart or at midnight, the journal.
    /// What the agent's calls held for approval today, and the session's, would cost: read
    /// only for the budgets that are set.
    pub(super) async fn reserved(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        now: DateTime<Utc>,
    ) -> Result<pipeline::Reserved> {
        let limits = &agent.limits;
        let store = &self.inner.store;
        let midnight = now.date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
        let agent_today_usd = if limits.budget_usd_per_day > 0.0 {
            store.reserved_since(&agent.agent.id, None, midnight).await?
        } else {
            0.0
        };
        let session_usd = if limits.budget_usd_per_session > 0.0 {
            store.reserved_since(&agent.agent.id, Some(session_id), DateTime::<Utc>::MIN_UTC).await?
        } else {
            0.0
        };
        Ok(pipeline::Reserved { agent_today_usd, session_usd })
    }

    pub(super) async fn spent_today(&self, agent_id: &str, now: DateTime<Utc>) -> Result<f64> {
        let today = now.date_naive();
        // Other replicas spend too: only the journal knows what was spent.
        let cached = if self.inner.store.shared() { None } else { lock(&self.inner.spend).get(agent_id).copied() };
        if let Some((day, amount)) = cached
            && day == today
        {
            return Ok(amount);
        }
        let midnight = today.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
        let amount = self.inner.store.agent_spend_since(agent_id, midnight).await?;
        lock(&self.inner.spend).insert(agent_id.to_string(), (today, amount));
        Ok(amount)
    }

    pub(super) fn add_spend(&self, agent_id: &str, amount: f64, now: DateTime<Utc>) {
        if amount <= 0.0 {
            return;
        }
        metrics::gauge!(tm::SPEND_USD, "agent" => agent_id.to_string()).increment(amount);
        if let Some((day, total)) = lock(&self.inner.spend).get_mut(agent_id)
            && *day == now.date_naive()
        {
            *total += amount;
        }
    }

    /// Adds the counted part of a cost reported with `action`'s result to the session and the
    /// agent's day (the caller commits the session); returns it.
    pub(super) async fn count_reported_cost(
        &self,
        session: &mut Session,
        action: &Action,
        now: DateTime<Utc>,
    ) -> Result<f64> {
        let reported = action.result.as_ref().and_then(|r| r.cost_usd);
        let counted = limits::reported_cost_counted(action.decision.cost_usd, reported);
        if counted > 0.0 {
            session.spent_usd += counted;
            // Load the day's spend first, so that the cache holds it before the addition.
            self.spent_today(&action.agent_id, now).await?;
            self.add_spend(&action.agent_id, counted, now);
        }
        Ok(counted)
    }

    /// Pauses `session` (the caller commits): every further action is denied until a human
    /// resumes it; the agent's owner and on-call hear of it.
    pub(super) fn pause(&self, session: &mut Session, pause: &Pause, commit: &mut Commit, now: DateTime<Utc>) {
        if !pipeline::pause_session(session, pause, now) {
            return;
        }
        let Pause { rule, reason } = pause;
        metrics::counter!(tm::SESSIONS_PAUSED, "rule" => rule.to_string()).increment(1);
        commit.event(
            &session.id,
            EventKind::SessionStatusChanged,
            now,
            json!({"status": "paused", "rule": rule, "reason": reason, "by": "airlock"}),
        );
        crate::notify::enqueue_session(&self.inner.config, commit, "session.paused", session, rule, reason, now);
        tracing::warn!(session = %session.id, agent = %session.agent_id, rule, %reason, "session paused");
    }

    /// Records a call's outcome in its tool's breaker; journals state changes.
    pub(super) fn breaker_record(
        &self,
        action: &Action,
        ok: bool,
        error: Option<&str>,
        limits: &GuardLimits,
        now: DateTime<Utc>,
        commit: &mut Commit,
    ) {
        let (tool, agent) = (action.tool.as_str(), action.agent_id.as_str());
        if !limits.breaker_enabled() {
            return;
        }
        let mut breakers = lock(&self.inner.breakers);
        let breaker = breakers.entry(tool.to_string()).or_insert_with(|| Breaker::new(tool));
        let before = breaker.clone();
        let transition = breaker.record(ok, error, now, limits);
        if let Some(t) = transition {
            Self::journal_breaker(breaker, t, commit, now);
            if t == Transition::Opened {
                crate::notify::enqueue_breaker(&self.inner.config, commit, breaker, agent, now);
                tracing::warn!(tool, failures = breaker.consecutive_failures, "circuit breaker opened");
            }
            export_breakers(&self.inner.labels, &breakers);
        } else if *breaker != before {
            commit.project(Projection::Breaker(breaker.clone()));
        }
    }

    pub(super) fn journal_breaker(breaker: &Breaker, t: Transition, commit: &mut Commit, now: DateTime<Utc>) {
        let state = match t {
            Transition::Opened => "open",
            Transition::HalfOpened => "half_open",
            Transition::Closed => "closed",
        };
        commit
            .event(
                SYSTEM_STREAM,
                EventKind::BreakerChanged,
                now,
                json!({"tool": breaker.tool, "state": state, "consecutive_failures": breaker.consecutive_failures, "last_error": breaker.last_error, "tripped_by": breaker.tripped_by}),
            )
            .project(Projection::Breaker(breaker.clone()));
    }

    /// Circuit breakers, by tool.
    pub fn breakers(&self) -> Vec<Breaker> {
        let mut list: Vec<Breaker> = lock(&self.inner.breakers).values().cloned().collect();
        list.sort_by(|a, b| a.tool.cmp(&b.tool));
        list
    }

    /// Counts an outcome in the session (failure streaks) and the tool's breaker; pauses the
    /// session when its failure streak reaches the limit.
    pub(super) fn count_outcome(
        &self,
        session: &mut Session,
        action: &Action,
        ok: bool,
        error: Option<&str>,
        commit: &mut Commit,
        now: DateTime<Utc>,
    ) {
        // `succeeded`, `failed` or `unknown`: the status the action just got.
        let outcome = action.status.as_str();
        metrics::counter!(tm::ACTIONS, "tool" => self.inner.labels.tool(&action.tool), "outcome" => outcome)
            .increment(1);
        let limits = self.limits_of(&action.agent_id);
        if let Some(pause) = pipeline::count_outcome(session, action, ok, error, &limits) {
            self.pause(session, &pause, commit, now);
        }
        self.breaker_record(action, ok, error, &limits, now, commit);
    }
}

/// Sets the breaker-state gauges: one series per known tool, and one for all the others
/// ([`tm::OTHER`]) holding the worst of their states, so an open breaker on a tool the labels
/// don't name still shows.
pub(super) fn export_breakers(labels: &tm::Labels, breakers: &HashMap<String, Breaker>) {
    let mut others: Option<f64> = None;
    for b in breakers.values() {
        let label = labels.tool(&b.tool);
        if label == tm::OTHER {
            others = Some(others.unwrap_or(0.0).max(breaker_gauge(b)));
        } else {
            metrics::gauge!(tm::BREAKER_STATE, "tool" => label).set(breaker_gauge(b));
        }
    }
    if let Some(worst) = others {
        metrics::gauge!(tm::BREAKER_STATE, "tool" => tm::OTHER).set(worst);
    }
}

fn breaker_gauge(b: &Breaker) -> f64 {
    match b.state {
        limits::BreakerState::Closed => 0.0,
        limits::BreakerState::HalfOpen => 1.0,
        limits::BreakerState::Open => 2.0,
    }
}

impl Engine {
    /// The budgets checked again when a held call is approved: what the agent and the session
    /// spent while it waited counts. `Some(reason)` when its price no longer fits. A call held
    /// because it was over budget (`on_budget_exceeded = "require_approval"`) is exempt: its
    /// approver chose to spend past the budget.
    pub(super) async fn budget_recheck(
        &self,
        action: &Action,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<Option<Reason>> {
        let cost = pipeline::counted_price(action.decision.cost_usd);
        let deliberate = action.decision.reasons.iter().any(|r| r.rule == limits::RULE_BUDGET);
        let Some(agent) = self.agent(&action.agent_id) else {
            return Ok(None);
        };
        let limits = &agent.limits;
        if cost <= 0.0 || deliberate {
            return Ok(None);
        }
        let mut over = Vec::new();
        if limits.budget_usd_per_day > 0.0 {
            let spent = self.spent_today(&action.agent_id, now).await?;
            if spent + cost > limits.budget_usd_per_day + 1e-9 {
                over.push(format!(
                    "the agent's daily budget of ${:.2} (spent ${spent:.2} today while it waited, this costs ${cost:.2})",
                    limits.budget_usd_per_day
                ));
            }
        }
        if limits.budget_usd_per_session > 0.0 && session.spent_usd + cost > limits.budget_usd_per_session + 1e-9 {
            over.push(format!(
                "the session budget of ${:.2} (spent ${:.2} while it waited, this costs ${cost:.2})",
                limits.budget_usd_per_session, session.spent_usd
            ));
        }
        Ok((!over.is_empty()).then(|| {
            Reason::new(
                limits::RULE_BUDGET,
                format!("approved, but it would now exceed {}; it was not run", over.join(" and ")),
            )
        }))
    }
}

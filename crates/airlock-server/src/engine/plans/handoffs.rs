//! Hand-offs: steps of a plan assigned to other agents (`docs/plans.md#hand-offs`, ADR 0024).
//!
//! An assigned agent claims a step and gets a **lease**: a time limit and a **fencing token**,
//! one more than the step's last. A call for the step, made in the executor's own session,
//! names the lease (`plan_lease`); it is admitted only if the token is the step's newest, the
//! lease is the caller's, has not expired, was not given back and has not admitted a call
//! before. So a planner hands work to executors without either trusting the other: an executor
//! that stalls past its lease and wakes up later is refused once another took the step, and a
//! step runs once however many executors try.
//!
//! Claims and the calls admitted under them are journaled in the plan's own stream (named by
//! its id) and decided under the plan's lock ([`airlock_store::LockScope::Plan`]), which is
//! always taken last: a claim holds the plan's session and then the plan; a call holds its own
//! session and then the plan. No one holds a plan's lock and waits for a session's, so the two
//! cannot deadlock.

use airlock_core::plan::RULE_PLAN_LEASE;

use super::*;

/// What a call names to run under a lease: `plan_lease` in `POST /v1/sessions/{id}/actions`,
/// `_meta["airlock/plan_lease"]` over MCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    /// The plan (`pln_…`).
    pub plan_id: String,
    /// The step's id.
    pub step: String,
    /// The fencing token the claim returned.
    pub token: u64,
}

impl LeaseRef {
    /// Checks the shape of what a call names before anything is locked or read: a plan id as
    /// airlock makes them and a step id as plans allow them.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !valid_plan_id(&self.plan_id) {
            return Err("`plan_lease.plan_id` must be a plan id (`pln_…`, at most 64 characters)".into());
        }
        if self.step.is_empty() || self.step.len() > 64 {
            return Err("`plan_lease.step` must be a step id of 1 to 64 characters".into());
        }
        Ok(())
    }
}

/// Whether `id` looks like a plan id airlock makes: only such names a plan's stream.
fn valid_plan_id(id: &str) -> bool {
    id.len() <= 64
        && id
            .strip_prefix("pln_")
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// One claim of a step, as the plan's stream recorded it.
#[derive(Debug, Clone)]
struct Claim {
    token: u64,
    step: String,
    step_digest: String,
    version: u32,
    agent_id: String,
    attempt: u32,
    claimed_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    released_at: Option<DateTime<Utc>>,
    /// The call the lease admitted (a lease admits one).
    used_by: Option<String>,
}

/// A plan's hand-offs, folded from its stream.
#[derive(Debug, Clone, Default)]
pub(super) struct Handoffs {
    /// The session the plan belongs to.
    plan_session: Option<String>,
    claims: Vec<Claim>,
    /// The calls admitted under leases.
    pub(super) matched: Vec<Matched>,
}

impl Handoffs {
    fn fold(events: &[airlock_store::StoredEvent]) -> Handoffs {
        let mut h = Handoffs::default();
        for e in events {
            let p = &e.payload;
            let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let time = |k: &str| p.get(k).cloned().and_then(|v| serde_json::from_value::<DateTime<Utc>>(v).ok());
            let token = p.get("token").and_then(Value::as_u64).unwrap_or(0);
            match e.kind.as_str() {
                "plan.step_claimed" => {
                    h.plan_session = Some(text("session_id"));
                    let (Some(claimed_at), Some(expires_at)) = (time("claimed_at"), time("expires_at")) else {
                        continue;
                    };
                    h.claims.push(Claim {
                        token,
                        step: text("step"),
                        step_digest: text("step_digest"),
                        version: p
                            .get("version")
                            .and_then(Value::as_u64)
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or(0),
                        agent_id: text("agent_id"),
                        attempt: p
                            .get("attempt")
                            .and_then(Value::as_u64)
                            .and_then(|v| u32::try_from(v).ok())
                            .unwrap_or(0),
                        claimed_at,
                        expires_at,
                        released_at: None,
                        used_by: None,
                    });
                }
                "plan.lease_released" => {
                    let step = text("step");
                    if let Some(c) = h.claims.iter_mut().find(|c| c.step == step && c.token == token) {
                        c.released_at = time("at");
                    }
                }
                "plan.step_matched" => {
                    let step = text("step");
                    let action_id = text("action_id");
                    if let Some(c) = h.claims.iter_mut().find(|c| c.step == step && c.token == token) {
                        c.used_by = Some(action_id.clone());
                    }
                    h.matched.push(Matched { step: Some(step), step_digest: Some(text("step_digest")), action_id });
                }
                _ => {}
            }
        }
        h
    }

    /// The step's newest claim: the one whose token is honoured.
    fn newest(&self, step: &str) -> Option<&Claim> {
        self.claims.iter().filter(|c| c.step == step).max_by_key(|c| c.token)
    }

    /// Claims of the step as it is now (same digest): the attempts used.
    fn attempts(&self, step: &str, digest: &str) -> u32 {
        u32::try_from(self.claims.iter().filter(|c| c.step == step && c.step_digest == digest).count())
            .unwrap_or(u32::MAX)
    }
}

/// A step's lease as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// The plan.
    pub plan_id: String,
    /// The plan's session.
    pub session_id: String,
    /// The version of the plan the step was claimed under.
    pub version: u32,
    /// The step.
    pub step: String,
    /// The fencing token: calls for the step name it in `plan_lease`.
    pub token: u64,
    /// The agent holding it.
    pub agent_id: String,
    /// Which claim of the step this is (1 for the first).
    pub attempt: u32,
    /// How many claims the step allows.
    pub max_attempts: u32,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
    /// When it stops admitting calls.
    pub expires_at: DateTime<Utc>,
    /// `held` (it admits one call until it expires), `used` (it admitted `action_id`),
    /// `expired`, `released`, or `superseded` (a newer claim of the step exists).
    pub status: &'static str,
    /// The call it admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
}

/// A plan's lock, held while a claim or a call under a lease is decided and committed.
pub(super) struct PlanLock {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _shared: Option<airlock_store::Held>,
}

impl std::fmt::Debug for PlanLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanLock")
    }
}

/// The lease a call was admitted under, with the plan's lock until its decision is committed.
#[derive(Debug)]
pub(in crate::engine) struct LeaseHeld {
    pub(super) token: u64,
    pub(super) plan_session: String,
    _lock: PlanLock,
}

fn view(h: &Handoffs, c: &Claim, plan_id: &str, max_attempts: u32, now: DateTime<Utc>) -> LeaseView {
    let newest = h.newest(&c.step).map(|n| n.token) == Some(c.token);
    let status = if c.used_by.is_some() {
        "used"
    } else if !newest {
        "superseded"
    } else if c.released_at.is_some() {
        "released"
    } else if now >= c.expires_at {
        "expired"
    } else {
        "held"
    };
    LeaseView {
        plan_id: plan_id.to_string(),
        session_id: h.plan_session.clone().unwrap_or_default(),
        version: c.version,
        step: c.step.clone(),
        token: c.token,
        agent_id: c.agent_id.clone(),
        attempt: c.attempt,
        max_attempts,
        claimed_at: c.claimed_at,
        expires_at: c.expires_at,
        status,
        action_id: c.used_by.clone(),
    }
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Engine {
    /// Takes plan `plan_id`'s lock: this process's, then the replicas' shared one.
    async fn lock_plan(&self, plan_id: &str) -> Result<PlanLock> {
        let cell = {
            let mut locks = lock(&self.inner.plan_locks);
            if locks.len() > 10_000 {
                // Drop the locks nobody holds or waits for; they are made again on demand.
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(plan_id.to_string()).or_default().clone()
        };
        let local = cell.lock_owned().await;
        let shared = self.inner.store.lock(airlock_store::LockScope::Plan(plan_id)).await?;
        Ok(PlanLock { _local: local, _shared: shared })
    }

    async fn handoffs(&self, plan_id: &str) -> Result<Handoffs> {
        Ok(Handoffs::fold(&self.inner.store.events(plan_id).await?))
    }

    /// The calls matched to a plan's steps: those of its session, and, when any version assigns
    /// a step, those admitted under leases (each once).
    pub(super) async fn all_matched(&self, record: &PlanRecord) -> Result<Vec<Matched>> {
        let mut matched = record.matched.clone();
        if record.versions.iter().any(|v| v.draft.steps.iter().any(|s| s.assignee.is_some())) {
            for m in self.handoffs(&record.id).await?.matched {
                if !matched.iter().any(|x| x.action_id == m.action_id) {
                    matched.push(m);
                }
            }
        }
        Ok(matched)
    }

    /// The leases of each step of a plan, for its view.
    pub(super) async fn leases(
        &self,
        record: &PlanRecord,
        draft: &PlanDraft,
    ) -> Result<HashMap<String, Vec<LeaseView>>> {
        let mut out: HashMap<String, Vec<LeaseView>> = HashMap::new();
        if !draft.steps.iter().any(|s| s.assignee.is_some()) {
            return Ok(out);
        }
        let h = self.handoffs(&record.id).await?;
        let now = self.now();
        for c in &h.claims {
            let max = draft.step(&c.step).map_or(plan::DEFAULT_MAX_ATTEMPTS, PlanStep::attempts);
            out.entry(c.step.clone()).or_default().push(view(&h, c, &record.id, max, now));
        }
        Ok(out)
    }

    /// Whether `agent_id` is assigned a step of some version of the plan (and so may read it).
    pub(super) fn assigned_any(record: &PlanRecord, agent_id: &str) -> bool {
        record.versions.iter().any(|v| v.draft.steps.iter().any(|s| s.assigned_to(agent_id)))
    }

    /// `agent` claims step `step_id` of plan `plan_id` in session `session_id`: a lease with the
    /// step's next fencing token, for the step's `lease_seconds`. The holder of a live lease
    /// gets it back unchanged (`false`: nothing new); anyone else waits for it to end.
    pub async fn claim_step(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        plan_id: &str,
        step_id: &str,
    ) -> Result<(LeaseView, bool)> {
        let agent_id = agent.agent.id.as_str();
        let mut guard = self.lock_session(session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        let book = self.plan_book(state).await?.clone();
        let Some(record) = book.plans.iter().find(|r| r.id == plan_id) else {
            return Err(Error::NotFound { what: "plan", id: plan_id.to_string() });
        };
        if state.session.agent_id != agent_id && !Self::assigned_any(record, agent_id) {
            return Err(Error::NotFound { what: "plan", id: plan_id.to_string() });
        }
        let Some(version) = record.in_force() else {
            return Err(Error::Conflict(format!(
                "plan {plan_id} has no approved version yet; claim its steps once it is approved"
            )));
        };
        let Some(step) = version.draft.step(step_id) else {
            return Err(Error::NotFound { what: "step", id: format!("{plan_id}/{step_id}") });
        };
        let Some(assignee) = &step.assignee else {
            return Err(Error::Conflict(format!(
                "step `{step_id}` of plan {plan_id} is not assigned to anyone: it runs in the plan's own session, without a claim"
            )));
        };
        if !step.assigned_to(agent_id) {
            return Err(Error::Forbidden {
                rule: "assignee",
                msg: format!(
                    "step `{step_id}` of plan {plan_id} is assigned to `{assignee}`, not to agent `{agent_id}`"
                ),
            });
        }
        // The same allowlist as `airlock__claim_step` over MCP, over HTTP too.
        if !agent.allows_tool(plan::CLAIM_TOOL) {
            return Err(Error::Forbidden {
                rule: guard::RULE_TOOL_ALLOWLIST,
                msg: format!(
                    "agent `{agent_id}` may not claim plan steps: its `tools` do not cover `{}`",
                    plan::CLAIM_TOOL
                ),
            });
        }
        // A stopped agent holds nothing: it could not use a lease, and would keep the step from
        // the executors that can.
        if let Some(ks) =
            self.kill_switch_list().iter().find(|k| guard::kill_switch_covers(k, agent_id, None, plan::CLAIM_TOOL))
        {
            return Err(Error::Forbidden {
                rule: guard::RULE_KILL_SWITCH,
                msg: format!("kill switch {} stops agent `{agent_id}`: {}", ks.id, ks.reason),
            });
        }
        if state.session.status != SessionStatus::Active {
            return Err(Error::Conflict(format!(
                "the plan's session {session_id} is {}: nothing of it can be claimed until a human resumes it",
                sessions::status_name(state.session.status)
            )));
        }
        // Under the plan's lock: a call admitted under a lease meanwhile has made the step
        // running, and is seen.
        let _plan = self.lock_plan(plan_id).await?;
        let (steps, _) = self.progress(record, &version.draft).await?;
        let calls = steps.iter().find(|(s, _)| s.id == step_id).map(|(_, c)| c.clone()).unwrap_or_default();
        let statuses: Vec<ActionStatus> = calls.iter().map(|(_, s)| *s).collect();
        match step_status(&statuses) {
            "done" | "running" | "unknown" => {
                let last = calls.last().map(|(a, _)| a.as_str()).unwrap_or_default();
                return Err(Error::Conflict(format!(
                    "step `{step_id}` of plan {plan_id} is {} (action {last}): it runs once",
                    step_status(&statuses)
                )));
            }
            _ => {}
        }
        let h = self.handoffs(plan_id).await?;
        let now = self.now();
        let digest = step_digest(step);
        if let Some(c) = h.newest(step_id)
            && c.used_by.is_none()
            && c.released_at.is_none()
            && now < c.expires_at
        {
            if c.agent_id == agent_id {
                return Ok((view(&h, c, plan_id, step.attempts(), now), false));
            }
            return Err(Error::Conflict(format!(
                "step `{step_id}` of plan {plan_id} is claimed by agent `{}` until {} (token {}); claim it after that",
                c.agent_id,
                at(c.expires_at),
                c.token
            )));
        }
        let attempts = h.attempts(step_id, &digest);
        if attempts >= step.attempts() {
            return Err(Error::Conflict(format!(
                "step `{step_id}` of plan {plan_id} was claimed {attempts} times, its `max_attempts`; \
                 amend the plan to try it again"
            )));
        }
        let token = h.newest(step_id).map_or(1, |c| c.token + 1);
        let expires_at = now.checked_add_signed(step.lease()).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut commit = Commit::default();
        commit.event(
            plan_id,
            EventKind::PlanStepClaimed,
            now,
            json!({"plan_id": plan_id, "session_id": session_id, "version": version.version, "step": step_id,
                   "step_digest": digest, "token": token, "agent_id": agent_id, "attempt": attempts + 1,
                   "max_attempts": step.attempts(), "claimed_at": now, "expires_at": expires_at}),
        );
        self.commit(commit).await?;
        metrics::counter!(tm::PLAN_CLAIMS).increment(1);
        tracing::info!(plan = %plan_id, step = %step_id, agent = %agent_id, token, "plan step claimed");
        let claim = Claim {
            token,
            step: step_id.to_string(),
            step_digest: digest,
            version: version.version,
            agent_id: agent_id.to_string(),
            attempt: attempts + 1,
            claimed_at: now,
            expires_at,
            released_at: None,
            used_by: None,
        };
        let mut h = h;
        h.plan_session = Some(session_id.to_string());
        h.claims.push(claim.clone());
        Ok((view(&h, &claim, plan_id, step.attempts(), now), true))
    }

    /// The holder of a live lease gives it back: the step can be claimed again at once (a new
    /// attempt). A lease that admitted its call, expired or was superseded can't be given back.
    pub async fn release_step(
        &self,
        agent: &AgentConfig,
        session_id: &str,
        plan_id: &str,
        step_id: &str,
        token: u64,
    ) -> Result<LeaseView> {
        let agent_id = agent.agent.id.as_str();
        if !valid_plan_id(plan_id) {
            return Err(Error::NotFound { what: "plan", id: plan_id.chars().take(64).collect() });
        }
        let _plan = self.lock_plan(plan_id).await?;
        let h = self.handoffs(plan_id).await?;
        let now = self.now();
        let claim = h
            .claims
            .iter()
            .find(|c| c.step == step_id && c.token == token && h.plan_session.as_deref() == Some(session_id))
            .filter(|c| c.agent_id == agent_id)
            .ok_or_else(|| Error::NotFound { what: "lease", id: format!("{plan_id}/{step_id}#{token}") })?;
        let current = view(&h, claim, plan_id, 0, now);
        if current.status != "held" {
            return Err(Error::Conflict(format!(
                "lease {token} of step `{step_id}` is {}: only a held lease can be given back",
                current.status
            )));
        }
        let mut commit = Commit::default();
        commit.event(
            plan_id,
            EventKind::PlanLeaseReleased,
            now,
            json!({"plan_id": plan_id, "session_id": session_id, "step": step_id, "token": token,
                   "agent_id": agent_id, "at": now}),
        );
        self.commit(commit).await?;
        Ok(LeaseView { status: "released", ..current })
    }

    /// Decides whether a call may run under the lease it names. `Ok(Err(reason))` refuses it
    /// (rule [`RULE_PLAN_LEASE`]); `Ok(Ok(link))` admits it for policy to decide as a step of
    /// the plan (`input.plan`, `input.plan_step`, `input.plan_lease`), holding the plan's lock
    /// until the decision is committed.
    pub(in crate::engine) async fn hold_to_lease(
        &self,
        state: &mut SessionCell,
        action: &Action,
        lease: &LeaseRef,
        input: &mut Value,
        facts: &mut PolicyFacts,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<PlanLink, String>> {
        let LeaseRef { plan_id, step: step_id, token } = lease;
        let token = *token;
        let plan_lock = self.lock_plan(plan_id).await?;
        let h = self.handoffs(plan_id).await?;
        let refuse = |m: String| Ok(Err(m));
        let Some(claim) = h.claims.iter().find(|c| c.step == *step_id && c.token == token) else {
            return refuse(format!(
                "no lease with token {token} on step `{step_id}` of plan {plan_id}; claim the step first \
                 (POST /v1/sessions/{{plan session}}/plans/{plan_id}/steps/{step_id}/claim)"
            ));
        };
        if claim.agent_id != action.agent_id {
            return refuse(format!(
                "lease {token} of step `{step_id}` is held by agent `{}`, not `{}`",
                claim.agent_id, action.agent_id
            ));
        }
        if let Some(newer) = h.newest(step_id).filter(|n| n.token != token) {
            return refuse(format!(
                "stale fencing token {token}: step `{step_id}` of plan {plan_id} was claimed again by agent `{}` at {} \
                 (token {})",
                newer.agent_id,
                at(newer.claimed_at),
                newer.token
            ));
        }
        if let Some(used) = &claim.used_by {
            return refuse(format!(
                "lease {token} of step `{step_id}` already admitted action {used}: a lease admits one call; \
                 claim the step again to retry it"
            ));
        }
        if claim.released_at.is_some() {
            return refuse(format!("lease {token} of step `{step_id}` was given back"));
        }
        if now >= claim.expires_at {
            return refuse(format!(
                "lease {token} of step `{step_id}` expired at {}; claim the step again",
                at(claim.expires_at)
            ));
        }
        let plan_session = h.plan_session.clone().unwrap_or_default();
        let book = if plan_session == state.session.id {
            self.plan_book(state).await?.clone()
        } else {
            PlanBook::fold(&self.inner.store.events(&plan_session).await?)
        };
        let Some(record) = book.plans.iter().find(|r| r.id == *plan_id) else {
            return refuse(format!("plan {plan_id} is not found"));
        };
        let Some(version) = record.in_force() else {
            return refuse(format!("plan {plan_id} has no version in force"));
        };
        let Some(step) = version.draft.step(step_id).filter(|s| step_digest(s) == claim.step_digest) else {
            return refuse(format!(
                "step `{step_id}` changed or went away in version {} of plan {plan_id} after lease {token} was \
                 granted; claim it again",
                version.version
            ));
        };
        let plan_state = if plan_session == state.session.id {
            Some(state.session.status)
        } else {
            self.inner.store.session(&plan_session).await?.map(|s| s.status)
        };
        if plan_state != Some(SessionStatus::Active) {
            return refuse(format!(
                "the plan's session {plan_session} is {}: its steps run again when a human resumes it",
                plan_state.map_or("gone", sessions::status_name)
            ));
        }
        let (steps, spent) = self.progress(record, &version.draft).await?;
        if let Some((_, calls)) = steps.iter().find(|(s, _)| s.id == *step_id) {
            let statuses: Vec<ActionStatus> = calls.iter().map(|(_, s)| *s).collect();
            if step_status(&statuses) != "pending" {
                return refuse(format!(
                    "step `{step_id}` of plan {plan_id} is {}: it runs once",
                    step_status(&statuses)
                ));
            }
        }
        if !plan::tool_matches(&step.tool, &action.tool) {
            return refuse(format!(
                "the call's tool `{}` is not step `{step_id}`'s (`{}`); a lease covers its step only",
                action.tool, step.tool
            ));
        }
        if !schema_admits(&step.arguments, &action.arguments) {
            return refuse(format!(
                "the call's arguments do not satisfy step `{step_id}`'s argument schema; a lease covers its step only"
            ));
        }
        plan_input(record, version, &steps, spent, Some(step), input, facts, now);
        if let Value::Object(doc) = input {
            doc.insert(
                "plan_lease".into(),
                json!({"token": token, "agent_id": claim.agent_id, "attempt": claim.attempt,
                       "claimed_at": claim.claimed_at, "expires_at": claim.expires_at, "session_id": plan_session}),
            );
        }
        Ok(Ok(PlanLink {
            plan_id: plan_id.clone(),
            version: version.version,
            step: Some(step_id.clone()),
            step_digest: Some(claim.step_digest.clone()),
            lease: Some(LeaseHeld { token, plan_session, _lock: plan_lock }),
        }))
    }
}

/// The reason a refused lease gives, as a decision reason.
pub(in crate::engine) fn refusal(msg: String) -> Reason {
    Reason::new(RULE_PLAN_LEASE, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: Value) -> airlock_store::StoredEvent {
        airlock_store::StoredEvent {
            pos: 1,
            stream: "pln_1".into(),
            seq: 1,
            kind: kind.into(),
            at: "2026-12-03T10:00:00Z".into(),
            payload,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn claimed(token: u64, agent: &str) -> airlock_store::StoredEvent {
        event(
            "plan.step_claimed",
            json!({"plan_id": "pln_1", "session_id": "ses_p", "version": 1, "step": "s", "step_digest": "d",
                   "token": token, "agent_id": agent, "attempt": token, "claimed_at": "2026-12-03T10:00:00Z",
                   "expires_at": "2026-12-03T10:05:00Z"}),
        )
    }

    #[test]
    fn the_newest_claim_is_the_one_honoured_and_a_used_lease_is_shown_used() {
        let h = Handoffs::fold(&[
            claimed(1, "exec-a"),
            claimed(2, "exec-b"),
            event(
                "plan.step_matched",
                json!({"plan_id": "pln_1", "step": "s", "step_digest": "d", "token": 2, "action_id": "act_1"}),
            ),
        ]);
        assert_eq!(h.newest("s").map(|c| c.token), Some(2));
        assert_eq!(h.attempts("s", "d"), 2);
        assert_eq!(h.attempts("s", "other digest"), 0, "an amended step starts its attempts afresh");
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:01:00Z").unwrap().with_timezone(&Utc);
        let first = view(&h, &h.claims[0], "pln_1", 3, now);
        assert_eq!(first.status, "superseded");
        let second = view(&h, &h.claims[1], "pln_1", 3, now);
        assert_eq!((second.status, second.action_id.as_deref()), ("used", Some("act_1")));
        assert_eq!(h.matched.len(), 1);
    }

    #[test]
    fn a_lease_expires_at_its_time_and_a_given_back_one_is_released() {
        let h = Handoffs::fold(&[
            claimed(1, "exec-a"),
            event("plan.lease_released", json!({"step": "s", "token": 1, "at": "2026-12-03T10:01:00Z"})),
        ]);
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        assert_eq!(view(&h, &h.claims[0], "pln_1", 3, at("2026-12-03T10:02:00Z")).status, "released");
        let h = Handoffs::fold(&[claimed(1, "exec-a")]);
        assert_eq!(view(&h, &h.claims[0], "pln_1", 3, at("2026-12-03T10:04:59Z")).status, "held");
        assert_eq!(view(&h, &h.claims[0], "pln_1", 3, at("2026-12-03T10:05:00Z")).status, "expired");
    }
}

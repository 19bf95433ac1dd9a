//! Plans in a session: proposing one (and amending it), its approval, and holding each call of
//! the session to the version in force (`docs/plans.md`, ADR 0023).
//!
//! Why one file of over 800 lines: proposal, approval, step matching and the monitors all read
//! and write one fold of the session's plan events under the session's lock; the monitors
//! (stuck plans, cascading failures) are the part to move out next, with the hand-offs that
//! will join them.
//!
//! A proposal is decided like a call and recorded as one: an action of tool
//! [`PLAN_TOOL`] whose arguments are the plan, decided by policy with `input.kind =
//! "plan.propose"`, and, when policy asks for it, an ordinary approval of that action. Votes,
//! quorum, groups, MFA, maker-checker, expiry, kill switches, webhooks and the review queue
//! therefore work on plans unchanged. When the approval resolves, [`Engine::plan_vote_settled`]
//! marks the proposal `succeeded` and journals `plan.approved`.
//!
//! A session's plans are folded from its own journal stream (`plan.*` events, and the status of
//! the actions they name) when the session is loaded, and kept with the session's cell, under
//! its lock. Nothing about plans lives outside the journal, so they survive restarts as the
//! journal does.

use airlock_core::pipeline::Pause;
use airlock_core::plan::{
    self, KIND_PLAN_PROPOSE, PLAN_TOOL, PlanDiff, PlanDraft, PlanFacts, PlanStatus, PlanStep, RULE_PLAN_CASCADE,
    RULE_PLAN_STUCK,
};
use serde::Deserialize;

use super::*;

/// One version of a plan, as the journal recorded it.
#[derive(Debug, Clone)]
struct Version {
    version: u32,
    action_id: String,
    approval_id: Option<String>,
    proposed_at: DateTime<Utc>,
    draft: PlanDraft,
    /// The votes that approved it, once approved.
    approved: Option<(Vec<Vote>, bool, DateTime<Utc>)>,
}

/// A call matched to a plan (a step, or none: drift).
#[derive(Debug, Clone)]
struct Matched {
    step: Option<String>,
    step_digest: Option<String>,
    action_id: String,
}

#[derive(Debug, Clone)]
struct PlanRecord {
    id: String,
    agent_id: String,
    versions: Vec<Version>,
    matched: Vec<Matched>,
    /// The times of last progress that `plan.stuck` reported, oldest first.
    stuck: Vec<DateTime<Utc>>,
    /// When cascading errors last paused the session (`plan.cascade`): failures before then
    /// don't count again.
    cascade_at: Option<DateTime<Utc>>,
}

impl PlanRecord {
    /// The newest approved version: the one in force.
    fn in_force(&self) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.approved.is_some())
    }
}

/// A session's plans, folded from its journal stream.
#[derive(Debug, Clone, Default)]
pub(super) struct PlanBook {
    plans: Vec<PlanRecord>,
}

impl PlanBook {
    fn fold(events: &[airlock_store::StoredEvent]) -> PlanBook {
        let mut book = PlanBook::default();
        for e in events {
            let p = &e.payload;
            let id = p.get("plan_id").and_then(Value::as_str).unwrap_or_default().to_string();
            let version = p.get("version").and_then(Value::as_u64).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
            let action_id = p.get("action_id").and_then(Value::as_str).unwrap_or_default().to_string();
            match e.kind.as_str() {
                "plan.proposed" => {
                    let Ok(draft) = serde_json::from_value::<PlanDraft>(p["plan"].clone()) else { continue };
                    let at = DateTime::parse_from_rfc3339(&e.at).map(|t| t.with_timezone(&Utc)).unwrap_or_default();
                    let v = Version {
                        version,
                        action_id,
                        approval_id: p.get("approval_id").and_then(Value::as_str).map(str::to_string),
                        proposed_at: at,
                        draft,
                        approved: None,
                    };
                    match book.plans.iter_mut().find(|r| r.id == id) {
                        Some(r) => r.versions.push(v),
                        None => book.plans.push(PlanRecord {
                            id,
                            agent_id: p.get("agent_id").and_then(Value::as_str).unwrap_or_default().to_string(),
                            versions: vec![v],
                            matched: Vec::new(),
                            stuck: Vec::new(),
                            cascade_at: None,
                        }),
                    }
                }
                "plan.approved" => {
                    let votes: Vec<Vote> = serde_json::from_value(p["votes"].clone()).unwrap_or_default();
                    let mfa = p.get("mfa").and_then(Value::as_bool).unwrap_or(false);
                    let at = DateTime::parse_from_rfc3339(&e.at).map(|t| t.with_timezone(&Utc)).unwrap_or_default();
                    if let Some(v) = book.version_mut(&id, version) {
                        v.approved = Some((votes, mfa, at));
                    }
                }
                "plan.step_matched" | "plan.drift" => {
                    if let Some(r) = book.plans.iter_mut().find(|r| r.id == id) {
                        r.matched.push(Matched {
                            step: p.get("step").and_then(Value::as_str).map(str::to_string),
                            step_digest: p.get("step_digest").and_then(Value::as_str).map(str::to_string),
                            action_id,
                        });
                    }
                }
                "plan.stuck" => {
                    let since = p.get("since").cloned().and_then(|v| serde_json::from_value::<DateTime<Utc>>(v).ok());
                    if let (Some(r), Some(since)) = (book.plans.iter_mut().find(|r| r.id == id), since) {
                        r.stuck.push(since);
                    }
                }
                "plan.cascade" => {
                    let at = DateTime::parse_from_rfc3339(&e.at).map(|t| t.with_timezone(&Utc)).ok();
                    if let Some(r) = book.plans.iter_mut().find(|r| r.id == id) {
                        r.cascade_at = at;
                    }
                }
                _ => {}
            }
        }
        book
    }

    fn version_mut(&mut self, id: &str, version: u32) -> Option<&mut Version> {
        self.plans.iter_mut().find(|r| r.id == id)?.versions.iter_mut().find(|v| v.version == version)
    }

    /// The plan whose version is in force (the newest plan that has one).
    fn in_force(&self) -> Option<(&PlanRecord, &Version)> {
        self.plans.iter().rev().find_map(|r| r.in_force().map(|v| (r, v)))
    }
}

/// What a call's decision linked it to, journaled with the decision.
#[derive(Debug, Clone)]
pub(super) struct PlanLink {
    plan_id: String,
    version: u32,
    step: Option<String>,
    step_digest: Option<String>,
}

/// A plan step with its progress.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// The step as declared.
    #[serde(flatten)]
    pub step: PlanStep,
    /// `pending` (not run yet, or its call was denied, expired or failed), `running` (its call
    /// waits for approval or runs), `done`, or `unknown` (its call's outcome is unknown).
    pub status: &'static str,
    /// The calls matched to the step, oldest first.
    pub actions: Vec<String>,
}

/// One version of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    /// 1 for the first proposal, then one more per amendment.
    pub version: u32,
    /// Its lifecycle state.
    pub status: PlanStatus,
    /// The proposal's action (tool `airlock__propose_plan`).
    pub action_id: String,
    /// Its approval, when policy asked for one.
    pub approval_id: Option<String>,
    /// When it was proposed.
    pub proposed_at: DateTime<Utc>,
    /// Who approved it.
    pub approved_by: Vec<String>,
    /// The plan as proposed.
    pub plan: PlanDraft,
}

/// A plan as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    /// `pln_…`
    pub id: String,
    /// The session the plan belongs to.
    pub session_id: String,
    /// The agent that proposed it.
    pub agent_id: String,
    /// The status of the newest version, or `approved` while a version is in force and an
    /// amendment waits.
    pub status: PlanStatus,
    /// The version in force, if any.
    pub in_force: Option<u32>,
    /// The version waiting for approval, if any.
    pub pending: Option<u32>,
    /// The goal of the version in force (else the newest).
    pub goal: String,
    /// The steps of the version in force (else the newest), with their progress.
    pub steps: Vec<StepView>,
    /// What the plan's calls have cost.
    pub spent_usd: f64,
    /// How the pending version differs from the version in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<PlanDiff>,
    /// Every step of the version in force is done.
    pub finished: bool,
    /// When a step of the version in force last made progress (its approval, a call matched to
    /// a step, or a step's call changing status).
    pub last_progress_at: Option<DateTime<Utc>>,
    /// Set while the plan is stuck: no step progress for its `stuck_after_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<StuckView>,
    /// Every version, oldest first.
    pub versions: Vec<VersionView>,
}

/// A stuck plan.
#[derive(Debug, Clone, Serialize)]
pub struct StuckView {
    /// The last progress.
    pub since: DateTime<Utc>,
    /// When it became stuck (`since` plus `stuck_after_seconds`).
    pub at: DateTime<Utc>,
    /// Whether `plan.stuck` was journaled (and its webhook queued) for it yet.
    pub reported: bool,
}

/// What `airlock__propose_plan` and `POST /v1/sessions/{id}/plans` take.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct PlanProposal {
    /// The plan.
    pub draft: PlanDraft,
}

fn step_digest(step: &PlanStep) -> String {
    action_digest("plan.step", &to_value(step))
}

/// Compiles a step's argument schema offline (references outside it are refused), catching a
/// compiler that panics on a hostile schema.
fn compile_schema(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    let built =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jsonschema::options().offline().build(schema)));
    match built {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the schema compiler failed on it".into()),
    }
}

/// Whether `arguments` satisfy a step's schema; a schema that does not compile matches nothing.
fn schema_admits(schema: &Value, arguments: &Value) -> bool {
    match compile_schema(schema) {
        Ok(v) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.is_valid(arguments))).unwrap_or(false),
        Err(_) => false,
    }
}

/// What progress a step's matched calls show: their statuses decide.
fn step_status(statuses: &[ActionStatus]) -> &'static str {
    if statuses.contains(&ActionStatus::Succeeded) {
        "done"
    } else if statuses.iter().any(|s| s.is_waiting() || *s == ActionStatus::Executing) {
        "running"
    } else if statuses.contains(&ActionStatus::Unknown) {
        "unknown"
    } else {
        "pending"
    }
}

impl Engine {
    async fn plan_book<'a>(&self, state: &'a mut SessionCell) -> Result<&'a mut PlanBook> {
        if state.plans.is_none() {
            let events = self.inner.store.events(&state.session.id).await?;
            let book = PlanBook::fold(&events);
            if book.in_force().is_some_and(|(_, v)| v.draft.stuck_after_seconds.is_some()) {
                self.note_planned(&state.session.id);
            }
            state.plans = Some(book);
        }
        Ok(state.plans.get_or_insert_with(PlanBook::default))
    }

    async fn action_status(&self, id: &str) -> Result<Option<Action>> {
        Ok(self.inner.store.action(id).await?)
    }

    /// The status of one version: approved (or superseded by a newer approved one), else what
    /// its proposal's action says.
    async fn version_status(&self, record: &PlanRecord, v: &Version) -> Result<PlanStatus> {
        if v.approved.is_some() {
            let newer = record.versions.iter().any(|o| o.version > v.version && o.approved.is_some());
            return Ok(if newer { PlanStatus::Superseded } else { PlanStatus::Approved });
        }
        Ok(match self.action_status(&v.action_id).await?.map(|a| a.status) {
            Some(ActionStatus::Denied) => PlanStatus::Denied,
            Some(ActionStatus::Expired) => PlanStatus::Expired,
            Some(ActionStatus::Cancelled) => PlanStatus::Cancelled,
            _ => PlanStatus::Pending,
        })
    }

    /// When the version in force last made progress: its approval, a call matched to one of its
    /// steps, or such a call changing status.
    async fn last_progress(&self, record: &PlanRecord, version: &Version) -> Result<DateTime<Utc>> {
        let mut last = version.approved.as_ref().map_or(version.proposed_at, |(_, _, at)| *at);
        for m in record.matched.iter().filter(|m| m.step.is_some()) {
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
    fn note_planned(&self, session_id: &str) {
        if self.is_leader() {
            lock(&self.inner.planned).insert(session_id.to_string(), DateTime::<Utc>::MIN_UTC);
        }
    }

    /// The stuck-plan sweep looks at every open session again on its next run (this process
    /// became the leader, or may have missed changes made by other replicas).
    pub(super) fn reseed_plans(&self) {
        *lock(&self.inner.planned_seeded) = None;
    }

    /// Another replica changed action `id`: if it is an adopted plan proposal whose plan can get
    /// stuck, the stuck-plan sweep of this process (the leader) learns of its session.
    pub(super) async fn note_plan_action(&self, id: &str) {
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
    pub(super) async fn plan_cascade(
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
        if !record.matched.iter().any(|m| m.action_id == action.id && m.step.is_some()) {
            return Ok(());
        }
        let from = record.cascade_at.map_or(now - window, |c| c.max(now - window));
        let mut steps = std::collections::BTreeSet::new();
        for m in &record.matched {
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

    /// Each step of `draft` with its matched calls' statuses, and what the plan's calls cost.
    async fn progress(
        &self,
        record: &PlanRecord,
        draft: &PlanDraft,
    ) -> Result<(Vec<(PlanStep, Vec<(String, ActionStatus)>)>, f64)> {
        let mut spent = 0.0;
        let mut statuses: HashMap<String, (ActionStatus, Option<f64>, Option<f64>)> = HashMap::new();
        for m in record.matched.iter().filter(|m| m.step.is_some()) {
            if let Some(a) = self.action_status(&m.action_id).await? {
                let reported = a.result.as_ref().and_then(|r| r.cost_usd);
                statuses.insert(m.action_id.clone(), (a.status, a.decision.cost_usd, reported));
            }
        }
        for (status, decided, reported) in statuses.values() {
            if ActionStatus::SPENDING.contains(status) {
                spent += pipeline::action_cost(*decided, *reported);
            }
        }
        let steps = draft
            .steps
            .iter()
            .map(|s| {
                let digest = step_digest(s);
                let calls = record
                    .matched
                    .iter()
                    .filter(|m| m.step.as_deref() == Some(s.id.as_str()) && m.step_digest.as_deref() == Some(&digest))
                    .filter_map(|m| statuses.get(&m.action_id).map(|(st, _, _)| (m.action_id.clone(), *st)))
                    .collect();
                (s.clone(), calls)
            })
            .collect();
        Ok((steps, spent))
    }

    /// Matches a call to the plan in force in its session, if any, and adds what the decision
    /// needs to know to the policy input (`input.plan`, `input.plan_step`, `input.plan_drift`)
    /// and to the facts. The call takes the first step, in plan order, that is not done or
    /// running and whose tool glob and argument schema it satisfies.
    pub(super) async fn hold_to_plan(
        &self,
        state: &mut SessionCell,
        action: &Action,
        input: &mut Value,
        facts: &mut PolicyFacts,
        now: DateTime<Utc>,
    ) -> Result<Option<PlanLink>> {
        let book = self.plan_book(state).await?.clone();
        let Some((record, version)) = book.in_force() else { return Ok(None) };
        let (steps, spent) = self.progress(record, &version.draft).await?;
        let mut matched: Option<&PlanStep> = None;
        for (step, calls) in &steps {
            let statuses: Vec<ActionStatus> = calls.iter().map(|(_, s)| *s).collect();
            if step_status(&statuses) != "pending" {
                continue;
            }
            if plan::tool_matches(&step.tool, &action.tool) && schema_admits(&step.arguments, &action.arguments) {
                matched = Some(step);
                break;
            }
        }
        let (votes, mfa, _) = version.approved.clone().unwrap_or_default();
        let step_views: Vec<Value> = steps
            .iter()
            .map(|(s, calls)| {
                let statuses: Vec<ActionStatus> = calls.iter().map(|(_, st)| *st).collect();
                json!({"id": s.id, "tool": s.tool, "arguments": s.arguments, "description": s.description,
                       "expected_cost_usd": s.expected_cost_usd, "assignee": s.assignee, "status": step_status(&statuses)})
            })
            .collect();
        if let Value::Object(doc) = input {
            doc.insert(
                "plan".into(),
                json!({
                    "id": record.id,
                    "version": version.version,
                    "goal": version.draft.goal,
                    "steps": step_views,
                    "budget_usd": version.draft.budget_usd,
                    "deadline": version.draft.deadline,
                    "spent_usd": spent,
                    "approved_by": votes.iter().filter(|v| v.verdict == Verdict::Approve).map(|v| v.human.clone()).collect::<Vec<_>>(),
                }),
            );
            let step_doc = matched.and_then(|m| step_views.iter().find(|s| s["id"] == m.id.as_str()).cloned());
            doc.insert("plan_step".into(), step_doc.unwrap_or(Value::Null));
            doc.insert("plan_drift".into(), Value::Bool(matched.is_none()));
        }
        facts.plan = Some(PlanFacts {
            plan_id: record.id.clone(),
            version: version.version,
            step: matched.map(|s| s.id.clone()),
            votes,
            mfa,
            budget_usd: version.draft.budget_usd,
            spent_usd: spent,
            deadline_passed: version.draft.deadline.is_some_and(|d| d <= now),
        });
        Ok(Some(PlanLink {
            plan_id: record.id.clone(),
            version: version.version,
            step: matched.map(|s| s.id.clone()),
            step_digest: matched.map(step_digest),
        }))
    }

    /// Journals what a call was linked to (in the decision's commit).
    pub(super) fn journal_plan_link(link: &PlanLink, action: &Action, commit: &mut Commit, now: DateTime<Utc>) {
        let kind = if link.step.is_some() { EventKind::PlanStepMatched } else { EventKind::PlanDrift };
        commit.event(
            &action.session_id,
            kind,
            now,
            json!({"plan_id": link.plan_id, "version": link.version, "step": link.step, "step_digest": link.step_digest,
                   "action_id": action.id, "tool": action.tool, "effect": action.decision.effect}),
        );
    }

    /// After the decision's commit: the session's plans learn of the call; metrics and the
    /// call's span say whether it was drift.
    pub(super) fn plan_linked(
        &self,
        state: &mut SessionCell,
        link: PlanLink,
        action: &Action,
        span: &mut crate::otel::OpenSpan,
    ) {
        use opentelemetry::KeyValue;
        let drift = link.step.is_none();
        if drift {
            metrics::counter!(tm::PLAN_DRIFT).increment(1);
        } else {
            metrics::counter!(tm::PLAN_STEPS).increment(1);
        }
        span.set(vec![
            KeyValue::new("airlock.plan.id", link.plan_id.clone()),
            KeyValue::new("airlock.plan.version", i64::from(link.version)),
            KeyValue::new("airlock.plan.drift", drift),
            KeyValue::new("airlock.plan.step", link.step.clone().unwrap_or_default()),
        ]);
        if let Some(book) = state.plans.as_mut()
            && let Some(record) = book.plans.iter_mut().find(|r| r.id == link.plan_id)
        {
            record.matched.push(Matched {
                step: link.step,
                step_digest: link.step_digest,
                action_id: action.id.clone(),
            });
        }
    }

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
        commit.event(
            session_id,
            EventKind::ActionRequested,
            now,
            json!({"action_id": action.id, "seq": action.seq, "agent_id": action.agent_id, "tool": action.tool,
                   "name": action.name, "arguments": action.arguments, "justification": action.justification,
                   "digest": action.digest}),
        );
        let (input, facts) = match &recorded {
            Some((input, facts)) => (Some(input), Some(facts)),
            None => (None, None),
        };
        commit.event(
            session_id,
            EventKind::ActionDecided,
            now,
            json!({"action_id": action.id, "status": action.status, "decision": action.decision, "input": input, "facts": facts}),
        );
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
        if let Some(a) = &approval {
            commit.event(session_id, EventKind::ApprovalRequested, now, to_value(a));
            commit.project(Projection::Approval(a.clone()));
            crate::notify::enqueue(&self.inner.config, &mut commit, "approval.requested", a, &action, now);
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
    pub(super) fn plan_vote_settled(
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

    /// The plans of a session, if the viewer may see it.
    pub async fn plans(&self, session_id: &str, agent_viewer: Option<&str>) -> Result<Vec<PlanView>> {
        self.session(session_id, agent_viewer).await?;
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        let ids: Vec<String> = self.plan_book(state).await?.plans.iter().map(|r| r.id.clone()).collect();
        let mut out = Vec::new();
        for id in ids {
            out.push(self.plan_view_locked(state, &id).await?);
        }
        Ok(out)
    }

    /// One plan of a session, if the viewer may see it.
    pub async fn plan(&self, session_id: &str, plan_id: &str, agent_viewer: Option<&str>) -> Result<PlanView> {
        self.session(session_id, agent_viewer).await?;
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        self.plan_view_locked(state, plan_id).await
    }

    async fn plan_view_locked(&self, state: &mut SessionCell, plan_id: &str) -> Result<PlanView> {
        let session_id = state.session.id.clone();
        let book = self.plan_book(state).await?.clone();
        let Some(record) = book.plans.iter().find(|r| r.id == plan_id) else {
            return Err(Error::NotFound { what: "plan", id: plan_id.to_string() });
        };
        let mut versions = Vec::new();
        for v in &record.versions {
            versions.push(VersionView {
                version: v.version,
                status: self.version_status(record, v).await?,
                action_id: v.action_id.clone(),
                approval_id: v.approval_id.clone(),
                proposed_at: v.proposed_at,
                approved_by: v
                    .approved
                    .as_ref()
                    .map(|(votes, _, _)| {
                        votes.iter().filter(|x| x.verdict == Verdict::Approve).map(|x| x.human.clone()).collect()
                    })
                    .unwrap_or_default(),
                plan: v.draft.clone(),
            });
        }
        let in_force = record.in_force();
        let pending = versions.iter().rev().find(|v| v.status == PlanStatus::Pending).map(|v| v.version);
        let shown = in_force.or(record.versions.last());
        let (steps, spent) = match shown {
            Some(v) => self.progress(record, &v.draft).await?,
            None => (Vec::new(), 0.0),
        };
        let diff = match (in_force, pending.and_then(|p| record.versions.iter().find(|v| v.version == p))) {
            (Some(old), Some(new)) => Some(plan::diff(&old.draft, &new.draft)),
            _ => None,
        };
        let finished_now = in_force.is_some() && finished(&steps);
        let mut last_progress_at = None;
        let mut stuck = None;
        if let Some(v) = in_force {
            let since = self.last_progress(record, v).await?;
            last_progress_at = Some(since);
            if let Some(after) = v.draft.stuck_after_seconds
                && !finished_now
            {
                let at = since + pipeline::seconds(after);
                if self.now() >= at {
                    stuck = Some(StuckView { since, at, reported: record.stuck.iter().any(|s| *s >= since) });
                }
            }
        }
        let status = match (in_force, versions.last()) {
            (Some(_), _) => PlanStatus::Approved,
            (None, Some(last)) => last.status,
            (None, None) => PlanStatus::Pending,
        };
        Ok(PlanView {
            id: record.id.clone(),
            session_id,
            agent_id: record.agent_id.clone(),
            status,
            in_force: in_force.map(|v| v.version),
            pending,
            goal: shown.map(|v| v.draft.goal.clone()).unwrap_or_default(),
            steps: steps
                .into_iter()
                .map(|(step, calls)| {
                    let statuses: Vec<ActionStatus> = calls.iter().map(|(_, s)| *s).collect();
                    StepView {
                        status: step_status(&statuses),
                        actions: calls.into_iter().map(|(a, _)| a).collect(),
                        step,
                    }
                })
                .collect(),
            spent_usd: spent,
            diff,
            finished: finished_now,
            last_progress_at,
            stuck,
            versions,
        })
    }
}

/// Whether every step is done.
fn finished(steps: &[(PlanStep, Vec<(String, ActionStatus)>)]) -> bool {
    steps.iter().all(|(_, calls)| step_status(&calls.iter().map(|(_, s)| *s).collect::<Vec<_>>()) == "done")
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

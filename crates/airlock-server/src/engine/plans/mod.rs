//! Plans in a session: proposing one (and amending it), its approval, and holding each call of
//! the session to the version in force (`docs/plans.md`, ADR 0023).
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

mod handoffs;
mod monitors;
mod propose;

pub(super) use handoffs::refusal as lease_refusal;
pub use handoffs::{LeaseRef, LeaseView};

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
    /// Calls of this session made under the lease of another session's plan step: the plan's
    /// session, by action id.
    handed: HashMap<String, String>,
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
                    } else if let Some(plan_session) = p.get("plan_session_id").and_then(Value::as_str) {
                        book.handed.insert(action_id, plan_session.to_string());
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
#[derive(Debug)]
pub(super) struct PlanLink {
    plan_id: String,
    version: u32,
    step: Option<String>,
    step_digest: Option<String>,
    /// The lease the call ran under, for a step handed off to its agent.
    lease: Option<handoffs::LeaseHeld>,
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
    /// Its claims, oldest first, when it is assigned to other agents.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseView>,
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

    /// Each step of `draft` with its matched calls' statuses, and what the plan's calls cost.
    /// The calls are those of the plan's session and those made under its steps' leases.
    async fn progress(
        &self,
        record: &PlanRecord,
        draft: &PlanDraft,
    ) -> Result<(Vec<(PlanStep, Vec<(String, ActionStatus)>)>, f64)> {
        let matched = self.all_matched(record).await?;
        let mut spent = 0.0;
        let mut statuses: HashMap<String, (ActionStatus, Option<f64>, Option<f64>)> = HashMap::new();
        for m in matched.iter().filter(|m| m.step.is_some()) {
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
                let calls = matched
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
    /// running, is not assigned to other agents (those run under leases), and whose tool glob
    /// and argument schema it satisfies.
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
            if step_status(&statuses) != "pending" || step.assignee.is_some() {
                continue;
            }
            if plan::tool_matches(&step.tool, &action.tool) && schema_admits(&step.arguments, &action.arguments) {
                matched = Some(step);
                break;
            }
        }
        plan_input(record, version, &steps, spent, matched, input, facts, now);
        Ok(Some(PlanLink {
            plan_id: record.id.clone(),
            version: version.version,
            step: matched.map(|s| s.id.clone()),
            step_digest: matched.map(step_digest),
            lease: None,
        }))
    }

    /// Journals what a call was linked to (in the decision's commit).
    pub(super) fn journal_plan_link(link: &PlanLink, action: &Action, commit: &mut Commit, now: DateTime<Utc>) {
        let kind = if link.step.is_some() { EventKind::PlanStepMatched } else { EventKind::PlanDrift };
        let mut payload = json!({"plan_id": link.plan_id, "version": link.version, "step": link.step,
                                 "step_digest": link.step_digest, "action_id": action.id, "tool": action.tool,
                                 "effect": action.decision.effect});
        if let Some(lease) = &link.lease {
            payload["token"] = json!(lease.token);
            payload["session_id"] = json!(action.session_id);
            payload["agent_id"] = json!(action.agent_id);
            payload["plan_session_id"] = json!(lease.plan_session);
            // The plan's own stream: what its steps' leases admitted.
            commit.event(&link.plan_id, kind, now, payload.clone());
        }
        commit.event(&action.session_id, kind, now, payload);
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
        if let Some(lease) = &link.lease {
            span.set(vec![KeyValue::new("airlock.plan.lease_token", i64::try_from(lease.token).unwrap_or(i64::MAX))]);
        }
        let Some(book) = state.plans.as_mut() else { return };
        if let Some(record) = book.plans.iter_mut().find(|r| r.id == link.plan_id) {
            record.matched.push(Matched {
                step: link.step,
                step_digest: link.step_digest,
                action_id: action.id.clone(),
            });
        } else if let Some(lease) = link.lease {
            book.handed.insert(action.id.clone(), lease.plan_session);
        }
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

    /// One plan of a session, if the viewer may see it: a human, the session's agent, or an
    /// agent one of the plan's steps is assigned to.
    pub async fn plan(&self, session_id: &str, plan_id: &str, agent_viewer: Option<&str>) -> Result<PlanView> {
        let owner = self.session(session_id, agent_viewer).await.is_ok();
        let cell = self.cell(session_id);
        let mut guard = cell.lock().await;
        self.load_cell(&mut guard, session_id).await?;
        let Some(state) = guard.as_mut() else {
            return Err(Error::NotFound { what: "session", id: session_id.to_string() });
        };
        if !owner {
            let book = self.plan_book(state).await?;
            let assigned = match (agent_viewer, book.plans.iter().find(|r| r.id == plan_id)) {
                (Some(agent), Some(record)) => Self::assigned_any(record, agent),
                _ => false,
            };
            if !assigned {
                return Err(Error::NotFound { what: "session", id: session_id.to_string() });
            }
        }
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
        let mut leases = match shown {
            Some(v) => self.leases(record, &v.draft).await?,
            None => HashMap::new(),
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
                        leases: leases.remove(&step.id).unwrap_or_default(),
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

/// What policy and the facts learn of the plan in force when a call is decided under it:
/// `input.plan`, `input.plan_step` (the step it matched) and `input.plan_drift`.
#[allow(clippy::too_many_arguments)]
fn plan_input(
    record: &PlanRecord,
    version: &Version,
    steps: &[(PlanStep, Vec<(String, ActionStatus)>)],
    spent: f64,
    matched: Option<&PlanStep>,
    input: &mut Value,
    facts: &mut PolicyFacts,
    now: DateTime<Utc>,
) {
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
                "agent_id": record.agent_id,
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
}

//! Plans in the review UI: the approval page of a plan proposal shows the plan (its goal, limits,
//! monitors and steps, and for an amendment what changes from the version in force) instead of
//! raw JSON, and `/ui/sessions/{session}/plans/{plan}` shows one plan: its status, its steps'
//! progress, its versions and the amendment waiting for approval.
//!
//! An action is shown as a plan proposal only when the session's journal names it as one (a
//! version of a plan whose `action_id` is the action's id): an agent can call a tool named
//! `airlock__propose_plan` with whatever arguments it likes, and such a call must not look like
//! a plan to the human approving it. The plan shown is the version the journal recorded, which
//! is what the proposal's approval adopts. Everything the agent wrote (goal, descriptions, tool
//! globs, schemas, step ids) is spliced in through `maud`, which escapes it, and through
//! `reveal`, which shows hidden characters as markers.

use std::collections::HashMap;

use airlock_core::Action;
use airlock_core::plan::{PLAN_TOOL, PlanDiff, PlanDraft, PlanStatus, PlanStep};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

use super::Ui;
use super::html::{Nav, absolute, json_diff, pretty, shell, status_badge, until, when};
use super::invisible::reveal;
use super::respond::{failure_page, page, to_login};
use crate::engine::{PlanView, VersionView};

/// An action that proposed a version of a plan, with the plan as it is now.
pub(super) struct Proposal {
    pub(super) plan: PlanView,
    /// The version the action proposed.
    pub(super) version: u32,
}

impl Proposal {
    /// The version this action proposed, as the journal recorded it.
    fn proposed(&self) -> Option<&VersionView> {
        self.plan.versions.iter().find(|v| v.version == self.version)
    }

    /// The version in force when this one was proposed (what it amends): the newest approved
    /// version before it. Versions are decided in order (an amendment waits until the version
    /// before it is decided), so no older version was approved after this one was proposed.
    fn base(&self) -> Option<&VersionView> {
        self.plan
            .versions
            .iter()
            .filter(|v| v.version < self.version && matches!(v.status, PlanStatus::Approved | PlanStatus::Superseded))
            .max_by_key(|v| v.version)
    }
}

/// Whether `action` claims to be a plan proposal by its tool name (true or not).
pub(super) fn named_like_proposal(action: &Action) -> bool {
    action.tool == PLAN_TOOL
}

/// The plan proposal `action` is, if the session's plans name it as one.
pub(super) fn proposal_of(action: &Action, plans: &[PlanView]) -> Option<Proposal> {
    if !named_like_proposal(action) || action.upstream.is_some() {
        return None;
    }
    plans.iter().find_map(|p| {
        let v = p.versions.iter().find(|v| v.action_id == action.id)?;
        Some(Proposal { plan: p.clone(), version: v.version })
    })
}

/// The link to a plan's page.
pub(super) fn plan_href(session_id: &str, plan_id: &str) -> String {
    format!("/ui/sessions/{session_id}/plans/{plan_id}")
}

fn usd(v: f64) -> String {
    format!("${v:.2}")
}

/// `600` → "10 min", `7200` → "2 h", `45` → "45 s".
fn seconds_text(s: u64) -> String {
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn budget_text(d: &PlanDraft) -> String {
    d.budget_usd.map_or_else(|| "none".to_string(), usd)
}

fn deadline_text(d: &PlanDraft, now: DateTime<Utc>) -> String {
    d.deadline.map_or_else(|| "none".to_string(), |t| format!("{} ({})", absolute(t), until(t, now)))
}

/// The plan's monitors in words.
fn monitors_text(d: &PlanDraft) -> String {
    let stuck = match d.stuck_after_seconds {
        Some(s) if d.pause_when_stuck => {
            format!("stuck after {} without progress, then the session pauses", seconds_text(s))
        }
        Some(s) => format!("stuck after {} without progress", seconds_text(s)),
        None => "never stuck".to_string(),
    };
    let cascade = match d.cascade() {
        Some((n, window)) => format!(
            "failed calls on {n} steps within {} pause the session",
            seconds_text(u64::try_from(window.num_seconds()).unwrap_or(0))
        ),
        None => "no cascade check".to_string(),
    };
    format!("{stuck}; {cascade}")
}

/// The plan-wide facts of one version: goal, budget, deadline, monitors.
fn draft_facts(d: &PlanDraft, now: DateTime<Utc>) -> Markup {
    html! {
        dt { "Goal" } dd { p.justification.goal { (reveal(&d.goal)) } }
        dt { "Budget" } dd { (budget_text(d)) }
        dt { "Deadline" } dd { (deadline_text(d, now)) }
        dt { "Monitors" } dd { (monitors_text(d)) }
    }
}

/// One step: its position, id, tool, cost, assignee (with its lease and attempts, when the step
/// sets them), description and argument schema, with
/// `mark` (`added`, `changed`) and `extra` (progress, on the plan page) after its head.
fn step_item(n: usize, step: &PlanStep, mark: Option<&str>, extra: Markup) -> Markup {
    let schema_is_any = step.arguments.as_object().is_some_and(|o| o.is_empty()) || step.arguments == Value::Bool(true);
    html! {
        li.step.{ "step-" (mark.unwrap_or("same")) } data-step=(step.id) {
            div.step-head {
                span.step-n { (n) "." }
                " "
                code.step-id title="step id" { (reveal(&step.id)) }
                " "
                code.step-tool title="tool" { (reveal(&step.tool)) }
                @if let Some(c) = step.expected_cost_usd { " " span.badge.tag title="expected cost" { (usd(c)) } }
                @if let Some(a) = &step.assignee {
                    " "
                    span.small.assignee title="the agents that run this step, each under a lease" {
                        "assignee " strong { (reveal(a)) }
                        @if let Some(secs) = step.lease_seconds { " · lease " (seconds_text(secs)) }
                        @if let Some(n) = step.max_attempts {
                            " · " (n) @if n == 1 { " attempt" } @else { " attempts" }
                        }
                    }
                }
                @match mark {
                    Some("added") => { " " span.badge.diff-add { "new" } }
                    Some("changed") => { " " span.badge.diff-chg { "changed" } }
                    _ => {}
                }
                (extra)
            }
            @if step.description.is_empty() {
                p.small { "No description." }
            } @else {
                p.step-desc { (reveal(&step.description)) }
            }
            @if schema_is_any {
                p.small { "Any arguments." }
            } @else {
                pre.json.schema aria-label="argument schema" { (reveal(&pretty(&step.arguments))) }
            }
        }
    }
}

/// What `diff` says changed from `old` to `new`: plan-wide fields, then added, removed and
/// changed steps, each marked `+`, `−` or `~`.
fn diff_list(diff: &PlanDiff, old: &PlanDraft, new: &PlanDraft, now: DateTime<Utc>) -> Markup {
    let fields = [
        (diff.goal_changed, "goal", old.goal.clone(), new.goal.clone()),
        (diff.budget_changed, "budget", budget_text(old), budget_text(new)),
        (diff.deadline_changed, "deadline", deadline_text(old, now), deadline_text(new, now)),
        (diff.monitors_changed, "monitors", monitors_text(old), monitors_text(new)),
    ];
    let nothing =
        !fields.iter().any(|f| f.0) && diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty();
    html! {
        ul.plan-diff aria-label="changes from the version in force" {
            @for (changed, name, was, is) in &fields {
                @if *changed {
                    li.chg data-field=(name) {
                        span.mark aria-label="changed" { "~" } " " strong { (name) } ": "
                        del { (reveal(was)) } " → " ins { (reveal(is)) }
                    }
                }
            }
            @for s in &diff.added {
                li.add data-step=(s.id) {
                    span.mark aria-label="added" { "+" } " step " code { (reveal(&s.id)) } " " code { (reveal(&s.tool)) }
                    @if !s.description.is_empty() { " — " (reveal(&s.description)) }
                }
            }
            @for s in &diff.removed {
                li.del data-step=(s.id) {
                    span.mark aria-label="removed" { "−" } " step " code { (reveal(&s.id)) } " " code { (reveal(&s.tool)) }
                    @if !s.description.is_empty() { " — " (reveal(&s.description)) }
                }
            }
            @for c in &diff.changed {
                @let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
                li.chg data-step=(id) {
                    span.mark aria-label="changed" { "~" } " step " code { (reveal(id)) }
                    (json_diff(&pretty(&c["from"]), &pretty(&c["to"])))
                }
            }
            @if !diff.unchanged.is_empty() {
                li.same {
                    span.mark aria-label="unchanged" { "=" } " unchanged: "
                    @for (i, id) in diff.unchanged.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (reveal(id)) }
                    }
                }
            }
            @if nothing { li.same { "Nothing changes." } }
        }
    }
}

/// How a step is marked in a version that `diff` compares with the one before it.
fn step_mark(diff: Option<&PlanDiff>, id: &str) -> Option<&'static str> {
    let d = diff?;
    if d.added.iter().any(|s| s.id == id) {
        Some("added")
    } else if d.changed.iter().any(|c| c.get("id").and_then(Value::as_str) == Some(id)) {
        Some("changed")
    } else {
        None
    }
}

/// The panels of a plan proposal's approval page, in place of the raw arguments: the plan, what
/// changes from the version in force (for an amendment), the steps, and the arguments as sent.
pub(super) fn proposal_panels(p: &Proposal, action: &Action, now: DateTime<Utc>) -> Markup {
    let href = plan_href(&p.plan.session_id, &p.plan.id);
    let Some(this) = p.proposed() else { return html! {} };
    let base = p.base();
    let diff = base.map(|b| airlock_core::plan::diff(&b.plan, &this.plan));
    html! {
        section.panel.plan aria-labelledby="h-plan" {
            h2 #h-plan { "Plan proposal" }
            dl.facts {
                dt { "Plan" } dd { a #plan-link href=(href) { (p.plan.id) } " · version " (this.version) }
                dt { "Amends" } dd {
                    @match base {
                        Some(b) => { "version " (b.version) ", in force when this was proposed" }
                        None => { "nothing: this is the plan's first version in force" }
                    }
                }
                (draft_facts(&this.plan, now))
            }
            p.hint { "Approving adopts the whole plan: each later call of the session that matches a step runs \
                      on this approval (unless a policy rule asks for each call), within the budget and before \
                      the deadline. A call that matches no step waits for an approval of its own." }
        }
        @if let (Some(b), Some(d)) = (base, &diff) {
            section.panel aria-labelledby="h-plan-diff" {
                h2 #h-plan-diff { "Change from version " (b.version) " in force" }
                p.legend {
                    span.mono { "+" } " added, " span.mono { "−" } " removed, " span.mono { "~" } " changed."
                }
                (diff_list(d, &b.plan, &this.plan, now))
            }
        }
        section.panel aria-labelledby="h-steps" {
            h2 #h-steps { "Steps (" (this.plan.steps.len()) ")" }
            ol.steps {
                @for (i, s) in this.plan.steps.iter().enumerate() {
                    (step_item(i + 1, s, step_mark(diff.as_ref(), &s.id), html! {}))
                }
            }
        }
        section.panel aria-labelledby="h-args" {
            h2 #h-args { "Arguments" }
            details {
                summary { "The proposal as recorded (JSON)" }
                pre.json { (reveal(&pretty(&action.arguments))) }
            }
        }
    }
}

/// A warning for an action named like a plan proposal that the journal does not know as one.
pub(super) fn not_a_proposal() -> Markup {
    html! {
        div.flash.error role="alert" {
            "This action is named like a plan proposal, but no plan was proposed with it: approving it approves \
             a call of that name with the arguments below, not a plan."
        }
    }
}

/// The session's plans, linked, for the approval page's facts.
pub(super) fn plan_links(plans: &[PlanView]) -> Markup {
    html! {
        @if !plans.is_empty() {
            dt { "Plans" }
            dd {
                @for p in plans {
                    div {
                        a href=(plan_href(&p.session_id, &p.id)) { (p.id) } " " (status_badge(p.status.as_str()))
                        @if let Some(v) = p.in_force { " " span.small { "version " (v) " in force" } }
                        @if let Some(v) = p.pending { " " span.small { "version " (v) " waits" } }
                    }
                }
            }
        }
    }
}

/// For a call an executor makes under the lease of another session's plan step: which step of
/// which plan it runs, linked, so that the reviewer judges it as part of that plan. Read from
/// the session's journal (`plan.step_matched` with the lease's token).
pub(super) fn lease_link(events: &[airlock_store::StoredEvent], action_id: &str) -> Markup {
    let leased = events.iter().find(|e| {
        e.kind == "plan.step_matched"
            && e.payload.get("action_id").and_then(Value::as_str) == Some(action_id)
            && e.payload.get("token").is_some_and(Value::is_u64)
    });
    let Some(e) = leased else { return html! {} };
    let text = |k: &str| e.payload.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (plan, session, step) = (text("plan_id"), text("plan_session_id"), text("step"));
    let token = e.payload.get("token").and_then(Value::as_u64).unwrap_or_default();
    html! {
        dt { "Plan step" }
        dd {
            "step " span.mono { (reveal(&step)) } " of plan "
            a href=(plan_href(&session, &plan)) { (plan) }
            " " span.small { "handed to this agent: lease " (token) ", plan's session " span.mono { (session) } }
        }
    }
}

/// A call matched to a step, linked to its approval when it had one.
fn matched_call(id: &str, action: Option<&Action>) -> Markup {
    html! {
        li {
            @match action {
                Some(call) => {
                    @match &call.approval_id {
                        Some(apr) => a.mono href={ "/ui/approvals/" (apr) } { (call.id) },
                        None => span.mono { (call.id) },
                    }
                    " #" (call.seq) " " (status_badge(call.status.as_str()))
                }
                None => span.mono { (id) },
            }
        }
    }
}

/// The plan page's body.
fn plan_body(p: &PlanView, calls: &HashMap<String, Action>, now: DateTime<Utc>) -> Markup {
    let shown = p.in_force.or(p.versions.last().map(|v| v.version));
    let draft = shown.and_then(|n| p.versions.iter().find(|v| v.version == n)).map(|v| &v.plan);
    let pending = p.pending.and_then(|n| p.versions.iter().find(|v| v.version == n));
    let in_force = p.in_force.and_then(|n| p.versions.iter().find(|v| v.version == n));
    html! {
        p.small { a href="/ui/inbox" { "← inbox" } }
        div.head-row {
            h1 { "Plan " (p.id) }
            div { span #plan-status .badge.{ "st-" (p.status.as_str()) } { (p.status.as_str()) } }
        }
        p.sub { "Proposed by " (p.agent_id) " in session " span.mono { (p.session_id) } "." }
        @if let Some(s) = &p.stuck {
            div.flash.error role="alert" {
                "Stuck: no step has made progress since " (absolute(s.since)) " (stuck since " (when(s.at, now)) "). "
                @if s.reported { "airlock journaled it and sent the plan.stuck webhook." }
                @else { "airlock will report it on its next check." }
            }
        }
        div.grid {
            div {
                section.panel aria-labelledby="h-plan" {
                    h2 #h-plan { "Plan" }
                    dl.facts {
                        dt { "In force" } dd {
                            @match p.in_force { Some(v) => { "version " (v) }, None => { "no version yet" } }
                        }
                        @if let Some(v) = pending {
                            dt { "Waiting" } dd {
                                "version " (v.version)
                                @if let Some(apr) = &v.approval_id { " · " a #pending-approval href={ "/ui/approvals/" (apr) } { "its approval" } }
                            }
                        }
                        @if let Some(d) = draft { (draft_facts(d, now)) }
                        dt { "Spent" } dd { (usd(p.spent_usd)) }
                        dt { "Progress" } dd {
                            @if p.finished { "every step is done" }
                            @else if let Some(t) = p.last_progress_at { "last progress " (when(t, now)) }
                            @else { "none yet" }
                        }
                    }
                }
                section.panel aria-labelledby="h-steps" {
                    h2 #h-steps {
                        "Steps"
                        @if let Some(v) = shown { span.small { " of version " (v) } }
                    }
                    ol.steps {
                        @for (i, s) in p.steps.iter().enumerate() {
                            @let progress = html! {
                                " " span.step-status { (status_badge(s.status)) }
                                @if !s.actions.is_empty() {
                                    ul.calls aria-label="calls matched to this step" {
                                        @for id in &s.actions { (matched_call(id, calls.get(id))) }
                                    }
                                }
                                @if !s.leases.is_empty() {
                                    ul.calls.leases aria-label="claims of this step" {
                                        @for l in &s.leases {
                                            li {
                                                "lease " span.mono { (l.token) } " · " strong { (reveal(&l.agent_id)) }
                                                " · attempt " (l.attempt) " of " (l.max_attempts)
                                                " · " span.small { (l.status) }
                                                @if l.status == "held" { " until " (when(l.expires_at, now)) }
                                            }
                                        }
                                    }
                                }
                            };
                            (step_item(i + 1, &s.step, None, progress))
                        }
                    }
                }
                @if let (Some(old), Some(new), Some(d)) = (in_force, pending, &p.diff) {
                    section.panel aria-labelledby="h-plan-diff" {
                        h2 #h-plan-diff { "Amendment waiting: version " (new.version) }
                        p.legend {
                            "Against version " (old.version) " in force: "
                            span.mono { "+" } " added, " span.mono { "−" } " removed, " span.mono { "~" } " changed."
                            @if let Some(apr) = &new.approval_id { " " a href={ "/ui/approvals/" (apr) } { "Review it" } "." }
                        }
                        (diff_list(d, &old.plan, &new.plan, now))
                    }
                }
            }
            div {
                section.panel aria-labelledby="h-versions" {
                    h2 #h-versions { "Versions" }
                    ul.votes {
                        @for v in p.versions.iter().rev() {
                            li data-version=(v.version) {
                                strong { "Version " (v.version) } " " (status_badge(v.status.as_str()))
                                " " span.small { "proposed " (when(v.proposed_at, now)) }
                                div.small {
                                    @match &v.approval_id {
                                        Some(apr) => {
                                            @if !v.approved_by.is_empty() { "approved by " (v.approved_by.join(", ")) " · " }
                                            a href={ "/ui/approvals/" (apr) } { "its approval" }
                                        }
                                        None => {
                                            @if matches!(v.status, PlanStatus::Approved | PlanStatus::Superseded) {
                                                "allowed by policy"
                                            }
                                        }
                                    }
                                }
                                div.small { (reveal(&v.plan.goal)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/sessions/{session}/plans/{plan}`.
pub(super) async fn plan_page(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path((session_id, plan_id)): Path<(String, String)>,
) -> Response {
    let Some(viewer) = ui.viewer(&headers) else { return to_login() };
    let view = match ui.engine().plan(&session_id, &plan_id, None).await {
        Ok(v) => v,
        Err(e) => return failure_page(Some(&viewer), &e),
    };
    let mut calls = HashMap::new();
    for id in view.steps.iter().flat_map(|s| s.actions.iter()) {
        match ui.engine().store().action(id).await {
            Ok(Some(a)) => {
                calls.insert(id.clone(), a);
            }
            Ok(None) => {}
            Err(e) => return failure_page(Some(&viewer), &e.into()),
        }
    }
    let pending = ui.pending_count().await;
    let title = format!("Plan {}", view.id);
    page(StatusCode::OK, shell(&title, Some(&viewer), Nav::None, pending, plan_body(&view, &calls, Utc::now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::StepView;

    fn draft(v: serde_json::Value) -> PlanDraft {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_plan_with_an_amendment_waiting_shows_what_it_changes() {
        let now = Utc::now();
        let v1 = draft(serde_json::json!({"goal": "back up", "steps": [{"id": "a", "tool": "db.backup"}],
                                          "stuck_after_seconds": 60, "pause_when_stuck": true}));
        let v2 = draft(
            serde_json::json!({"goal": "back up <em>and</em> vacuum", "steps": [{"id": "b", "tool": "db.vacuum"}],
                                          "stuck_after_seconds": 60, "pause_when_stuck": true}),
        );
        let version = |n: u32, status, plan: &PlanDraft, apr: &str| VersionView {
            version: n,
            status,
            action_id: format!("act_{n}"),
            approval_id: Some(apr.to_string()),
            proposed_at: now,
            approved_by: if status == PlanStatus::Approved { vec!["alice".into()] } else { Vec::new() },
            plan: plan.clone(),
        };
        let view = PlanView {
            id: "pln_1".into(),
            session_id: "ses_1".into(),
            agent_id: "bot".into(),
            status: PlanStatus::Approved,
            in_force: Some(1),
            pending: Some(2),
            goal: v1.goal.clone(),
            steps: vec![StepView {
                step: v1.steps[0].clone(),
                status: "running",
                actions: vec!["act_gone".into()],
                leases: vec![],
            }],
            spent_usd: 0.0,
            diff: Some(airlock_core::plan::diff(&v1, &v2)),
            finished: false,
            last_progress_at: Some(now),
            stuck: None,
            versions: vec![
                version(1, PlanStatus::Approved, &v1, "apr_1"),
                version(2, PlanStatus::Pending, &v2, "apr_2"),
            ],
        };
        let html = plan_body(&view, &HashMap::new(), now).into_string();
        assert!(html.contains("stuck after 1 min without progress, then the session pauses"), "{html}");
        assert!(html.contains(r#"<a id="pending-approval" href="/ui/approvals/apr_2">"#), "{html}");
        assert!(
            html.contains(r#"<li class="add" data-step="b">"#) && html.contains(r#"<li class="del" data-step="a">"#)
        );
        assert!(html.contains("<ins>back up &lt;em&gt;and&lt;/em&gt; vacuum</ins>"), "{html}");
        assert!(html.contains(r#"<span class="mono">act_gone</span>"#), "a call missing from the store: {html}");
        assert!(html.contains("approved by alice"), "{html}");
    }

    #[test]
    fn durations_read_plainly() {
        assert_eq!(seconds_text(600), "10 min");
        assert_eq!(seconds_text(7200), "2 h");
        assert_eq!(seconds_text(90), "90 s");
    }
}
